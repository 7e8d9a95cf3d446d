// Real checkpoint layouts from config.json (see layout.h). Facts carried over from transformers'
// modeling files: which modules each decoder layer registers and in which order, their shapes
// ([out, in] for Linear), which have biases, and the config classes' defaults for keys a config.json
// leaves out (Gemma 3's published config omits its head counts, head_dim and vocabulary size).
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include "layout.h"
#include "graft/convert.h"
#include "graft/dtype.h"
#include "../io/io-impl.h"

enum kind { K_LLAMA, K_MISTRAL, K_QWEN2, K_QWEN3, K_GEMMA, K_GEMMA2, K_GEMMA3, K_PHI3, K_MIXTRAL };

// Config class defaults (transformers' *Config __init__), for keys the file does not set.
static const struct kdef {
    const char *type;
    enum kind   kind;
    int64_t     vocab, hidden, inter, layers, heads, kv, head_dim; // kv 0: = heads; head_dim 0: hidden / heads
    bool        tie;
} kdefs[] = {
    {"llama", K_LLAMA, 32000, 4096, 11008, 32, 32, 0, 0, false},
    {"mistral", K_MISTRAL, 32000, 4096, 14336, 32, 32, 8, 0, false},
    {"qwen2", K_QWEN2, 151936, 4096, 22016, 32, 32, 32, 0, false},
    {"qwen3", K_QWEN3, 151936, 4096, 22016, 32, 32, 32, 128, false},
    {"gemma", K_GEMMA, 256000, 3072, 24576, 28, 16, 16, 256, true},
    {"gemma2", K_GEMMA2, 256000, 2304, 9216, 26, 8, 4, 256, true},
    {"gemma3_text", K_GEMMA3, 262208, 2304, 9216, 26, 8, 4, 256, true},
    {"phi3", K_PHI3, 32064, 3072, 8192, 32, 32, 0, 0, false},
    {"mixtral", K_MIXTRAL, 32000, 4096, 14336, 32, 32, 8, 0, false},
};

struct shape {
    enum kind kind;
    int64_t   vocab, hidden, inter, layers, heads, kv, head_dim, experts;
    bool      tie, attn_bias, mlp_bias;
    bool      vl;                                                   // Gemma 3 vision–language
    int64_t   v_hidden, v_inter, v_layers, v_channels, v_image, v_patch; // its SigLIP tower
};

struct out {
    struct graft__spec *s;
    size_t n, cap;
    bool oom;
};

static void add(struct out *o, const char *name, int n_dims, uint64_t a, uint64_t b, uint64_t c, uint64_t d, enum graft__init k) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 256;
        struct graft__spec *s = graft__realloc(o->s, cap * sizeof *s);
        if (!s) { o->oom = true; return; }
        o->s = s, o->cap = cap;
    }
    struct graft__spec *x = &o->s[o->n++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->n_dims = n_dims, x->ne[0] = a, x->ne[1] = b, x->ne[2] = c, x->ne[3] = d, x->kind = k;
}

#define M(fmt, ...) (snprintf(nm, sizeof nm, fmt, __VA_ARGS__), nm)
#define W2(name, a, b) add(o, name, 2, (uint64_t)(a), (uint64_t)(b), 1, 1, GRAFT_INIT_NORMAL)
#define B1(name, a) add(o, name, 1, (uint64_t)(a), 1, 1, 1, GRAFT_INIT_NORMAL)

// One text decoder under `pre` ("model." or "language_model.model."), in registration order.
static void decoder(struct out *o, const struct shape *s, const char *pre) {
    char nm[160];
    bool gemma = s->kind == K_GEMMA || s->kind == K_GEMMA2 || s->kind == K_GEMMA3;
    enum graft__init norm = gemma ? GRAFT_INIT_NORM_OFFSET : GRAFT_INIT_NORM_WEIGHT; // Gemma stores w − 1
    int64_t h = s->hidden, q = s->heads * s->head_dim, kv = s->kv * s->head_dim, f = s->inter;
    W2(M("%sembed_tokens.weight", pre), s->vocab, h);
    for (int64_t l = 0; l < s->layers; l++) {
        char L[96];
        snprintf(L, sizeof L, "%slayers.%lld.", pre, (long long)l);
        if (s->kind == K_PHI3) { // Phi3Attention registers o_proj before the fused qkv_proj
            W2(M("%sself_attn.o_proj.weight", L), h, q);
            W2(M("%sself_attn.qkv_proj.weight", L), q + 2 * kv, h);
        } else {
            bool qkv_bias = s->attn_bias || s->kind == K_QWEN2; // Qwen2: q/k/v biases always, o_proj none
            W2(M("%sself_attn.q_proj.weight", L), q, h);
            if (qkv_bias) B1(M("%sself_attn.q_proj.bias", L), q);
            W2(M("%sself_attn.k_proj.weight", L), kv, h);
            if (qkv_bias) B1(M("%sself_attn.k_proj.bias", L), kv);
            W2(M("%sself_attn.v_proj.weight", L), kv, h);
            if (qkv_bias) B1(M("%sself_attn.v_proj.bias", L), kv);
            W2(M("%sself_attn.o_proj.weight", L), h, q);
            if (s->attn_bias) B1(M("%sself_attn.o_proj.bias", L), h);
            if (s->kind == K_QWEN3 || s->kind == K_GEMMA3) { // per-head RMSNorm of q and k
                add(o, M("%sself_attn.q_norm.weight", L), 1, (uint64_t)s->head_dim, 1, 1, 1, norm);
                add(o, M("%sself_attn.k_norm.weight", L), 1, (uint64_t)s->head_dim, 1, 1, 1, norm);
            }
        }
        if (s->kind == K_PHI3) {
            W2(M("%smlp.gate_up_proj.weight", L), 2 * f, h);
            W2(M("%smlp.down_proj.weight", L), h, f);
        } else if (s->kind == K_MIXTRAL) {
            W2(M("%sblock_sparse_moe.gate.weight", L), s->experts, h);
            for (int64_t e = 0; e < s->experts; e++) {
                W2(M("%sblock_sparse_moe.experts.%lld.w1.weight", L, (long long)e), f, h);
                W2(M("%sblock_sparse_moe.experts.%lld.w2.weight", L, (long long)e), h, f);
                W2(M("%sblock_sparse_moe.experts.%lld.w3.weight", L, (long long)e), f, h);
            }
        } else {
            W2(M("%smlp.gate_proj.weight", L), f, h);
            if (s->mlp_bias) B1(M("%smlp.gate_proj.bias", L), f);
            W2(M("%smlp.up_proj.weight", L), f, h);
            if (s->mlp_bias) B1(M("%smlp.up_proj.bias", L), f);
            W2(M("%smlp.down_proj.weight", L), h, f);
            if (s->mlp_bias) B1(M("%smlp.down_proj.bias", L), h);
        }
        add(o, M("%sinput_layernorm.weight", L), 1, (uint64_t)h, 1, 1, 1, norm);
        add(o, M("%spost_attention_layernorm.weight", L), 1, (uint64_t)h, 1, 1, 1, norm);
        if (s->kind == K_GEMMA2 || s->kind == K_GEMMA3) {
            add(o, M("%spre_feedforward_layernorm.weight", L), 1, (uint64_t)h, 1, 1, 1, norm);
            add(o, M("%spost_feedforward_layernorm.weight", L), 1, (uint64_t)h, 1, 1, 1, norm);
        }
    }
    add(o, M("%snorm.weight", pre), 1, (uint64_t)h, 1, 1, 1, norm);
}

// SigLIP vision tower and Gemma 3's projector (Gemma3ForConditionalGeneration registers the vision
// tower, the projector, then the language model).
static void vision(struct out *o, const struct shape *s) {
    char nm[160];
    int64_t h = s->v_hidden, p = s->v_patch, np = (s->v_image / p) * (s->v_image / p);
    const char *V = "vision_tower.vision_model.";
    add(o, M("%sembeddings.patch_embedding.weight", V), 4, (uint64_t)h, (uint64_t)s->v_channels, (uint64_t)p, (uint64_t)p, GRAFT_INIT_NORMAL);
    B1(M("%sembeddings.patch_embedding.bias", V), h);
    W2(M("%sembeddings.position_embedding.weight", V), np, h);
    for (int64_t l = 0; l < s->v_layers; l++) {
        char L[96];
        snprintf(L, sizeof L, "%sencoder.layers.%lld.", V, (long long)l);
        static const char *const proj[] = {"k_proj", "v_proj", "q_proj", "out_proj"}; // SiglipAttention's order
        for (int k = 0; k < 4; k++) {
            W2(M("%sself_attn.%s.weight", L, proj[k]), h, h);
            B1(M("%sself_attn.%s.bias", L, proj[k]), h);
        }
        add(o, M("%slayer_norm1.weight", L), 1, (uint64_t)h, 1, 1, 1, GRAFT_INIT_NORM_WEIGHT);
        B1(M("%slayer_norm1.bias", L), h);
        W2(M("%smlp.fc1.weight", L), s->v_inter, h);
        B1(M("%smlp.fc1.bias", L), s->v_inter);
        W2(M("%smlp.fc2.weight", L), h, s->v_inter);
        B1(M("%smlp.fc2.bias", L), h);
        add(o, M("%slayer_norm2.weight", L), 1, (uint64_t)h, 1, 1, 1, GRAFT_INIT_NORM_WEIGHT);
        B1(M("%slayer_norm2.bias", L), h);
    }
    add(o, M("%spost_layernorm.weight", V), 1, (uint64_t)h, 1, 1, 1, GRAFT_INIT_NORM_WEIGHT);
    B1(M("%spost_layernorm.bias", V), h);
    W2("multi_modal_projector.mm_input_projection_weight", h, s->hidden);
    add(o, "multi_modal_projector.mm_soft_emb_norm.weight", 1, (uint64_t)h, 1, 1, 1, GRAFT_INIT_NORM_OFFSET);
}
#undef M
#undef W2
#undef B1

static int64_t geti(const json_t *o, const char *k, int64_t dflt) {
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}
static bool getb(const json_t *o, const char *k, bool dflt) {
    const json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

// An override (> 0) or the config's value: written back into the config when either changes it or the
// key is there already.
static int64_t pick(json_t *o, const char *k, int64_t over, int64_t from_cfg) {
    int64_t v = over > 0 ? over : from_cfg;
    if (over > 0 || json_object_get(o, k)) json_object_set_new(o, k, json_integer((json_int_t)v));
    return v;
}

int graft__layout_from_config(const char *cfg, const char *label, const struct graft_synth_params *p, struct graft__spec **specs, size_t *n,
                              char **config, enum graft_dtype *dtype, struct graft_err *err) {
    *specs = NULL, *n = 0, *config = NULL;
    json_error_t je;
    json_t *root = json_loads(cfg, 0, &je);
    if (!json_is_object(root)) {
        json_decref(root);
        return graft_err_set(err, GRAFT_E_USAGE, label, NULL, 0, "not a JSON object (line %d: %s)", je.line, je.text);
    }
    struct shape s = {0};
    json_t *text = root, *vis = NULL;
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    if (mt && !strcmp(mt, "gemma3") && json_is_object(json_object_get(root, "text_config"))) {
        text = json_object_get(root, "text_config"), vis = json_object_get(root, "vision_config");
        s.vl = true;
        mt = "gemma3_text";
    }
    const struct kdef *d = NULL;
    for (size_t i = 0; mt && i < sizeof kdefs / sizeof kdefs[0]; i++)
        if (!strcmp(kdefs[i].type, mt)) d = &kdefs[i];
    int rc = GRAFT_OK;
    if (!d) {
        rc = graft_err_set(err, GRAFT_E_USAGE, label, NULL, 0,
                           "model_type '%s' has no known layout (llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, gemma3_text, phi3, mixtral)",
                           mt ? mt : "(none)");
        goto out;
    }
    s.kind = d->kind;
    bool reshaped = p->hidden > 0 || p->n_heads > 0;
    s.vocab = pick(text, "vocab_size", p->vocab, geti(text, "vocab_size", d->vocab));
    s.hidden = pick(text, "hidden_size", p->hidden, geti(text, "hidden_size", d->hidden));
    s.inter = pick(text, "intermediate_size", p->intermediate, geti(text, "intermediate_size", d->inter));
    s.layers = pick(text, "num_hidden_layers", p->n_layers, geti(text, "num_hidden_layers", d->layers));
    s.heads = pick(text, "num_attention_heads", p->n_heads, geti(text, "num_attention_heads", d->heads));
    s.kv = pick(text, "num_key_value_heads", p->n_kv_heads, geti(text, "num_key_value_heads", d->kv ? d->kv : s.heads));
    int64_t hd_cfg = geti(text, "head_dim", d->head_dim);
    if (reshaped || hd_cfg <= 0) hd_cfg = s.heads > 0 ? s.hidden / s.heads : 0;
    s.head_dim = p->head_dim > 0 ? p->head_dim : hd_cfg;
    // written where the key is there, or where transformers would otherwise take its default (Gemma 3)
    if (json_object_get(text, "head_dim") || p->head_dim > 0 || (d->head_dim > 0 && s.head_dim != d->head_dim))
        json_object_set_new(text, "head_dim", json_integer((json_int_t)s.head_dim));
    if (d->kind == K_MIXTRAL) s.experts = pick(text, "num_local_experts", p->experts, geti(text, "num_local_experts", 8));
    s.tie = getb(text, "tie_word_embeddings", getb(root, "tie_word_embeddings", d->tie));
    s.attn_bias = getb(text, "attention_bias", false);
    s.mlp_bias = d->kind == K_LLAMA && getb(text, "mlp_bias", false);
    if (s.vl) { // SigLIP defaults; a reshaped model gets a small tower too
        bool small = reshaped || p->n_layers > 0 || p->intermediate > 0 || p->vocab > 0;
        json_t *v = json_is_object(vis) ? vis : NULL;
        s.v_hidden = small ? 32 : geti(v, "hidden_size", 768);
        s.v_inter = small ? 64 : geti(v, "intermediate_size", 3072);
        s.v_layers = small ? s.layers : geti(v, "num_hidden_layers", 12);
        s.v_channels = geti(v, "num_channels", 3);
        s.v_patch = geti(v, "patch_size", 16);
        s.v_image = small ? 4 * s.v_patch : geti(v, "image_size", 224);
        if (small && v) {
            json_object_set_new(v, "hidden_size", json_integer(s.v_hidden));
            json_object_set_new(v, "intermediate_size", json_integer(s.v_inter));
            json_object_set_new(v, "num_hidden_layers", json_integer(s.v_layers));
            json_object_set_new(v, "num_attention_heads", json_integer(2));
            json_object_set_new(v, "image_size", json_integer(s.v_image));
        }
    }
    const int64_t LIM = (int64_t)1 << 24;
    if (s.vocab < 3 || s.hidden < 1 || s.inter < 1 || s.layers < 0 || s.heads < 1 || s.kv < 1 || s.head_dim < 1 || s.heads % s.kv ||
        s.vocab > LIM || s.hidden > LIM || s.inter > LIM || s.layers > 100000 || s.heads > 4096 || s.head_dim > 65536 ||
        (d->kind == K_MIXTRAL && (s.experts < 1 || s.experts > 1024)) ||
        (s.vl && (s.v_hidden < 1 || s.v_inter < 1 || s.v_layers < 0 || s.v_channels < 1 || s.v_patch < 1 || s.v_image < s.v_patch ||
                  s.v_hidden > LIM || s.v_inter > LIM || s.v_image > 65536 || s.v_layers > 100000))) {
        rc = graft_err_set(err, GRAFT_E_USAGE, label, NULL, 0,
                           "inconsistent shape: vocab %lld, hidden %lld, intermediate %lld, layers %lld, heads %lld, kv heads %lld, head_dim %lld "
                           "(need all positive, heads a multiple of kv heads)",
                           (long long)s.vocab, (long long)s.hidden, (long long)s.inter, (long long)s.layers, (long long)s.heads, (long long)s.kv,
                           (long long)s.head_dim);
        goto out;
    }
    // a tensor count no real checkpoint approaches (hostile layer × expert counts would otherwise ask
    // for gigabytes of names before anything is written)
    double n_tensors = (double)s.layers * (24 + 3.0 * (double)s.experts) + (s.vl ? (double)s.v_layers * 16 : 0) + 16;
    if (n_tensors > (double)(1 << 20)) {
        rc = graft_err_set(err, GRAFT_E_USAGE, label, NULL, 0, "%.0f tensors (layers × experts): more than graft synthesises (1048576)", n_tensors);
        goto out;
    }
    // dtype: --dtype, else torch_dtype (or the newer "dtype"), else float32 as transformers loads it
    const char *td = json_string_value(json_object_get(root, "torch_dtype"));
    if (!td) td = json_string_value(json_object_get(root, "dtype"));
    int t = td ? graft_dtype_from_cli_name(td) : GRAFT_DTYPE_F32;
    *dtype = p->dtype != GRAFT_DTYPE_COUNT ? p->dtype : t >= 0 && graft_dtype_is_float_target((enum graft_dtype)t) ? (enum graft_dtype)t : GRAFT_DTYPE_F32;
    if (p->dtype != GRAFT_DTYPE_COUNT && graft_dtype_torch_name(*dtype))
        json_object_set_new(root, json_object_get(root, "dtype") && !json_object_get(root, "torch_dtype") ? "dtype" : "torch_dtype",
                            json_string(graft_dtype_torch_name(*dtype)));
    struct out o = {0};
    if (s.vl) vision(&o, &s);
    decoder(&o, &s, s.vl ? "language_model.model." : "model.");
    if (!s.tie) add(&o, s.vl ? "language_model.lm_head.weight" : "lm_head.weight", 2, (uint64_t)s.vocab, (uint64_t)s.hidden, 1, 1, GRAFT_INIT_NORMAL);
    struct graft__buf b;
    graft__buf_init(&b, 64u << 20);
    graft__json_dump_pretty(&b, root);
    if (o.oom || b.failed) {
        graft__free(o.s), graft__buf_free(&b);
        rc = graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
        goto out;
    }
    *specs = o.s, *n = o.n, *config = b.data;
out:
    json_decref(root);
    return rc;
}
