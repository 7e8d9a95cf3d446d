// Synthetic models in the tensor layouts of common Hugging Face architectures (Llama/Mistral/Qwen2,
// Gemma, Phi-3, GPT-2, GPT-NeoX, Mixtral, Gemma 3 vision–language), with a small BPE tokenizer. Tensor values are pure functions
// of (seed, tensor name, index).
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <jansson.h>
#include "graft/synth.h"
#include "graft/convert.h"
#include "../io/io-impl.h"
#include "chunks.h"
#include "layout.h"

struct graft_synth_params graft_synth_default_params(void) {
    return (struct graft_synth_params){
        .arch = "llama", .n_layers = 2, .hidden = 64, .intermediate = 172, .n_heads = 4, .n_kv_heads = 2,
        .vocab = 256, .dtype = GRAFT_DTYPE_BF16, .seed = 1, .init_std = 0.02, .delta = 0.01f, .n_threads = 1,
    };
}

#define N_EXPERTS 4 // mixtral

struct job {
    const struct graft_synth_params *p;
    struct graft_writer *w;
    struct graft__spec         *specs;    // fresh mode
    size_t               n;
    struct graft__chunks c;
    enum graft_dtype     dtype;    // fresh mode: of every tensor
    float              **f32;      // per thread: chunk floats
    uint8_t            **out;      // per thread: chunk encoded
};

static void spec_add(struct graft__spec *s, size_t *n, const char *name, uint64_t a, uint64_t b, enum graft__init k) {
    struct graft__spec *x = &s[(*n)++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->n_dims = b ? 2 : 1, x->ne[0] = a, x->ne[1] = b, x->ne[2] = x->ne[3] = 1, x->kind = k;
}

static uint64_t spec_numel(const struct graft__spec *x) {
    uint64_t n = 1;
    for (int d = 0; d < x->n_dims; d++) n *= x->ne[d];
    return n;
}

// Gemma 3 vision–language layout (Gemma3ForConditionalGeneration as transformers 4.50 saves it): a
// Gemma 3 text decoder under "language_model.", a SigLIP vision tower and the projector.
#define VIS_H 32
#define VIS_I 64
static void gemma3vl_specs(const struct graft_synth_params *p, struct graft__spec *s, size_t *n) {
    uint64_t h = (uint64_t)p->hidden, hd = h / (uint64_t)p->n_heads, kv = hd * (uint64_t)p->n_kv_heads, f = (uint64_t)p->intermediate;
    char name[96];
#define T(fmt, x, y, k) (snprintf(name, sizeof name, "language_model.model.layers.%d." fmt, l), spec_add(s, n, name, x, y, k))
#define V(fmt, x, y, k) (snprintf(name, sizeof name, "vision_tower.vision_model.encoder.layers.%d." fmt, l), spec_add(s, n, name, x, y, k))
    spec_add(s, n, "language_model.model.embed_tokens.weight", (uint64_t)p->vocab, h, GRAFT_INIT_NORMAL);
    for (int l = 0; l < p->n_layers; l++) {
        T("input_layernorm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
        T("self_attn.q_proj.weight", hd * (uint64_t)p->n_heads, h, GRAFT_INIT_NORMAL);
        T("self_attn.q_norm.weight", hd, 0, GRAFT_INIT_NORM_WEIGHT);
        T("self_attn.k_proj.weight", kv, h, GRAFT_INIT_NORMAL);
        T("self_attn.k_norm.weight", hd, 0, GRAFT_INIT_NORM_WEIGHT);
        T("self_attn.v_proj.weight", kv, h, GRAFT_INIT_NORMAL);
        T("self_attn.o_proj.weight", h, hd * (uint64_t)p->n_heads, GRAFT_INIT_NORMAL);
        T("post_attention_layernorm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
        T("pre_feedforward_layernorm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
        T("mlp.gate_proj.weight", f, h, GRAFT_INIT_NORMAL);
        T("mlp.up_proj.weight", f, h, GRAFT_INIT_NORMAL);
        T("mlp.down_proj.weight", h, f, GRAFT_INIT_NORMAL);
        T("post_feedforward_layernorm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
    }
    spec_add(s, n, "language_model.model.norm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
    spec_add(s, n, "multi_modal_projector.mm_input_projection_weight", VIS_H, h, GRAFT_INIT_NORMAL);
    spec_add(s, n, "multi_modal_projector.mm_soft_emb_norm.weight", VIS_H, 0, GRAFT_INIT_NORM_WEIGHT);
    struct graft__spec *pe = &s[*n];
    spec_add(s, n, "vision_tower.vision_model.embeddings.patch_embedding.weight", VIS_H, 3, GRAFT_INIT_NORMAL);
    pe->n_dims = 4, pe->ne[2] = pe->ne[3] = 14; // [out, channels, 14, 14] convolution
    spec_add(s, n, "vision_tower.vision_model.embeddings.patch_embedding.bias", VIS_H, 0, GRAFT_INIT_NORMAL);
    spec_add(s, n, "vision_tower.vision_model.embeddings.position_embedding.weight", 16, VIS_H, GRAFT_INIT_NORMAL);
    for (int l = 0; l < p->n_layers; l++) {
        V("layer_norm1.weight", VIS_H, 0, GRAFT_INIT_NORM_WEIGHT);
        V("layer_norm1.bias", VIS_H, 0, GRAFT_INIT_NORMAL);
        V("self_attn.q_proj.weight", VIS_H, VIS_H, GRAFT_INIT_NORMAL);
        V("self_attn.k_proj.weight", VIS_H, VIS_H, GRAFT_INIT_NORMAL);
        V("self_attn.v_proj.weight", VIS_H, VIS_H, GRAFT_INIT_NORMAL);
        V("self_attn.out_proj.weight", VIS_H, VIS_H, GRAFT_INIT_NORMAL);
        V("layer_norm2.weight", VIS_H, 0, GRAFT_INIT_NORM_WEIGHT);
        V("layer_norm2.bias", VIS_H, 0, GRAFT_INIT_NORMAL);
        V("mlp.fc1.weight", VIS_I, VIS_H, GRAFT_INIT_NORMAL);
        V("mlp.fc1.bias", VIS_I, 0, GRAFT_INIT_NORMAL);
        V("mlp.fc2.weight", VIS_H, VIS_I, GRAFT_INIT_NORMAL);
        V("mlp.fc2.bias", VIS_H, 0, GRAFT_INIT_NORMAL);
    }
    spec_add(s, n, "vision_tower.vision_model.post_layernorm.weight", VIS_H, 0, GRAFT_INIT_NORM_WEIGHT);
    spec_add(s, n, "vision_tower.vision_model.post_layernorm.bias", VIS_H, 0, GRAFT_INIT_NORMAL);
#undef T
#undef V
}

// Tensor names and shapes of each layout ([out, in] for Linear; GPT-2's Conv1D is [in, out]).
static size_t arch_specs(const struct graft_synth_params *p, struct graft__spec *s) {
    size_t n = 0;
    uint64_t h = (uint64_t)p->hidden, hd = h / (uint64_t)p->n_heads, kv = hd * (uint64_t)p->n_kv_heads, f = (uint64_t)p->intermediate;
    uint64_t V = (uint64_t)p->vocab;
    const char *a = p->arch;
    char name[96];
    if (!strcmp(a, "gemma3vl")) {
        gemma3vl_specs(p, s, &n);
        return n;
    }
#define A(...) (spec_add(s, &n, __VA_ARGS__))
#define L(fmt, x, y, k) (snprintf(name, sizeof name, fmt, l), spec_add(s, &n, name, x, y, k))
    if (!strcmp(a, "gpt2")) {
        A("transformer.wte.weight", V, h, GRAFT_INIT_NORMAL);
        A("transformer.wpe.weight", 1024, h, GRAFT_INIT_NORMAL);
        for (int l = 0; l < p->n_layers; l++) {
            L("transformer.h.%d.ln_1.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
            L("transformer.h.%d.ln_1.bias", h, 0, GRAFT_INIT_NORMAL);
            L("transformer.h.%d.attn.c_attn.weight", h, 3 * h, GRAFT_INIT_NORMAL);
            L("transformer.h.%d.attn.c_attn.bias", 3 * h, 0, GRAFT_INIT_NORMAL);
            L("transformer.h.%d.attn.c_proj.weight", h, h, GRAFT_INIT_NORMAL);
            L("transformer.h.%d.attn.c_proj.bias", h, 0, GRAFT_INIT_NORMAL);
            L("transformer.h.%d.ln_2.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
            L("transformer.h.%d.ln_2.bias", h, 0, GRAFT_INIT_NORMAL);
            L("transformer.h.%d.mlp.c_fc.weight", h, f, GRAFT_INIT_NORMAL);
            L("transformer.h.%d.mlp.c_fc.bias", f, 0, GRAFT_INIT_NORMAL);
            L("transformer.h.%d.mlp.c_proj.weight", f, h, GRAFT_INIT_NORMAL);
            L("transformer.h.%d.mlp.c_proj.bias", h, 0, GRAFT_INIT_NORMAL);
        }
        A("transformer.ln_f.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
        A("transformer.ln_f.bias", h, 0, GRAFT_INIT_NORMAL);
        return n; // GPT-2 always ties lm_head
    }
    if (!strcmp(a, "gpt_neox")) {
        A("gpt_neox.embed_in.weight", V, h, GRAFT_INIT_NORMAL);
        for (int l = 0; l < p->n_layers; l++) {
            L("gpt_neox.layers.%d.input_layernorm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
            L("gpt_neox.layers.%d.input_layernorm.bias", h, 0, GRAFT_INIT_NORMAL);
            L("gpt_neox.layers.%d.post_attention_layernorm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
            L("gpt_neox.layers.%d.post_attention_layernorm.bias", h, 0, GRAFT_INIT_NORMAL);
            L("gpt_neox.layers.%d.attention.query_key_value.weight", 3 * h, h, GRAFT_INIT_NORMAL);
            L("gpt_neox.layers.%d.attention.query_key_value.bias", 3 * h, 0, GRAFT_INIT_NORMAL);
            L("gpt_neox.layers.%d.attention.dense.weight", h, h, GRAFT_INIT_NORMAL);
            L("gpt_neox.layers.%d.attention.dense.bias", h, 0, GRAFT_INIT_NORMAL);
            L("gpt_neox.layers.%d.mlp.dense_h_to_4h.weight", f, h, GRAFT_INIT_NORMAL);
            L("gpt_neox.layers.%d.mlp.dense_h_to_4h.bias", f, 0, GRAFT_INIT_NORMAL);
            L("gpt_neox.layers.%d.mlp.dense_4h_to_h.weight", h, f, GRAFT_INIT_NORMAL);
            L("gpt_neox.layers.%d.mlp.dense_4h_to_h.bias", h, 0, GRAFT_INIT_NORMAL);
        }
        A("gpt_neox.final_layer_norm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
        A("gpt_neox.final_layer_norm.bias", h, 0, GRAFT_INIT_NORMAL);
        if (!p->tie_embeddings) A("embed_out.weight", V, h, GRAFT_INIT_NORMAL);
        return n;
    }
    bool phi3 = !strcmp(a, "phi3"), mixtral = !strcmp(a, "mixtral"), qwen2 = !strcmp(a, "qwen2");
    A("model.embed_tokens.weight", V, h, GRAFT_INIT_NORMAL);
    for (int l = 0; l < p->n_layers; l++) {
        L("model.layers.%d.input_layernorm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
        if (phi3) {
            L("model.layers.%d.self_attn.qkv_proj.weight", hd * (uint64_t)p->n_heads + 2 * kv, h, GRAFT_INIT_NORMAL);
        } else {
            L("model.layers.%d.self_attn.q_proj.weight", hd * (uint64_t)p->n_heads, h, GRAFT_INIT_NORMAL);
            if (qwen2) L("model.layers.%d.self_attn.q_proj.bias", hd * (uint64_t)p->n_heads, 0, GRAFT_INIT_NORMAL);
            L("model.layers.%d.self_attn.k_proj.weight", kv, h, GRAFT_INIT_NORMAL);
            if (qwen2) L("model.layers.%d.self_attn.k_proj.bias", kv, 0, GRAFT_INIT_NORMAL);
            L("model.layers.%d.self_attn.v_proj.weight", kv, h, GRAFT_INIT_NORMAL);
            if (qwen2) L("model.layers.%d.self_attn.v_proj.bias", kv, 0, GRAFT_INIT_NORMAL);
        }
        L("model.layers.%d.self_attn.o_proj.weight", h, hd * (uint64_t)p->n_heads, GRAFT_INIT_NORMAL);
        L("model.layers.%d.post_attention_layernorm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
        if (phi3) {
            L("model.layers.%d.mlp.gate_up_proj.weight", 2 * f, h, GRAFT_INIT_NORMAL);
            L("model.layers.%d.mlp.down_proj.weight", h, f, GRAFT_INIT_NORMAL);
        } else if (mixtral) {
            L("model.layers.%d.block_sparse_moe.gate.weight", N_EXPERTS, h, GRAFT_INIT_NORMAL);
            for (int e = 0; e < N_EXPERTS; e++) {
                char fmt[96];
                snprintf(fmt, sizeof fmt, "model.layers.%%d.block_sparse_moe.experts.%d.w%%d.weight", e);
                snprintf(name, sizeof name, fmt, l, 1), A(name, f, h, GRAFT_INIT_NORMAL);
                snprintf(name, sizeof name, fmt, l, 2), A(name, h, f, GRAFT_INIT_NORMAL);
                snprintf(name, sizeof name, fmt, l, 3), A(name, f, h, GRAFT_INIT_NORMAL);
            }
        } else {
            L("model.layers.%d.mlp.gate_proj.weight", f, h, GRAFT_INIT_NORMAL);
            L("model.layers.%d.mlp.up_proj.weight", f, h, GRAFT_INIT_NORMAL);
            L("model.layers.%d.mlp.down_proj.weight", h, f, GRAFT_INIT_NORMAL);
        }
    }
#undef L
#undef A
    spec_add(s, &n, "model.norm.weight", h, 0, GRAFT_INIT_NORM_WEIGHT);
    if (!p->tie_embeddings && strcmp(a, "gemma")) spec_add(s, &n, "lm_head.weight", V, h, GRAFT_INIT_NORMAL);
    return n;
}

static size_t arch_max_specs(const struct graft_synth_params *p) { return 12 + (size_t)p->n_layers * (13 + 3 * N_EXPERTS); }

static int synth_chunk(void *ctx, size_t item, int ith, struct graft_err *err) {
    struct job *j = ctx;
    uint64_t e0;
    size_t ti = graft__chunks_locate(&j->c, item, &e0);
    const struct graft_synth_params *p = j->p;
    float *f = j->f32[ith];
    enum graft_dtype out;
    uint64_t n_elem, ne;
    if (p->like) {
        const struct graft_model_tensor *mt = graft_model_tensor(p->like, ti);
        const struct graft_tensor_info *t = mt->info;
        out = graft_convert_out_dtype(t->dtype, p->dtype), n_elem = t->n_elem;
        ne = graft__chunks_len(&j->c, e0, n_elem);
        uint64_t in_off, in_len;
        graft_dtype_nbytes(t->dtype, e0, &in_off);
        graft_dtype_nbytes(t->dtype, ne, &in_len);
        const uint8_t *src = graft_model_data(p->like, mt) + in_off;
        if (out == t->dtype && !graft_dtype_traits(t->dtype)->is_float) // integers: carried unchanged
            return graft_writer_write(j->w, (long)ti, in_off, src, (size_t)in_len, err);
        graft_row_to_f32(t->dtype, src, f, (size_t)ne);
        // Heavy-tailed delta: Laplace(0, delta) — most weights move a little, a few move a lot.
        uint64_t key = graft_rng_key(p->seed, 1, t->name, t->name_len);
        for (uint64_t i = 0; i < ne; i++) {
            float u = graft__rng_uniform(key, e0 + i) * 2.0f - 1.0f;
            float a = fabsf(u);
            float lap = -logf(1.0f - a + 0x1.0p-25f);
            f[i] += p->delta * (u < 0 ? -lap : lap);
        }
    } else {
        const struct graft__spec *s = &j->specs[ti];
        out = j->dtype, n_elem = spec_numel(s);
        ne = graft__chunks_len(&j->c, e0, n_elem);
        uint64_t key = graft_rng_key(p->seed, 0, s->name, strlen(s->name));
        for (uint64_t i = 0; i < ne; i++) {
            float z = graft_rng_normalish(key, e0 + i);
            f[i] = s->kind == GRAFT_INIT_NORM_WEIGHT ? 1.0f + 0.1f * z : s->kind == GRAFT_INIT_NORM_OFFSET ? 0.1f * z : (float)p->init_std * z;
        }
    }
    uint64_t off, len;
    graft_dtype_nbytes(out, e0, &off);
    graft_dtype_nbytes(out, ne, &len);
    graft_row_from_f32(out, f, j->out[ith], (size_t)ne);
    graft_progress_add(p->progress, len);
    return graft_writer_write(j->w, (long)ti, off, j->out[ith], (size_t)len, err);
}

static const struct { const char *arch, *cls, *type; } archs[] = {
    {"llama", "LlamaForCausalLM", "llama"},     {"mistral", "MistralForCausalLM", "mistral"}, {"qwen2", "Qwen2ForCausalLM", "qwen2"},
    {"gemma", "GemmaForCausalLM", "gemma"},     {"phi3", "Phi3ForCausalLM", "phi3"},          {"gpt2", "GPT2LMHeadModel", "gpt2"},
    {"gpt_neox", "GPTNeoXForCausalLM", "gpt_neox"}, {"mixtral", "MixtralForCausalLM", "mixtral"},
    {"gemma3vl", "Gemma3ForConditionalGeneration", "gemma3"},
};

static int arch_index(const char *a) {
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(archs[i].arch, a)) return (int)i;
    return -1;
}

static char *dump(json_t *c) {
    if (!c) return NULL;
    struct graft__buf b;
    graft__buf_init(&b, 64u << 20);
    graft__json_dump_pretty(&b, c);
    json_decref(c);
    if (b.failed) { graft__buf_free(&b); return NULL; }
    return b.data;
}

// config.json in the architecture's own key names (GPT-2 uses n_embd/n_layer/n_head).
static char *arch_config(const struct graft_synth_params *p) {
    int ai = arch_index(p->arch);
    const char *dt = graft_dtype_torch_name(p->dtype) ? graft_dtype_torch_name(p->dtype) : "float32";
    bool tied = p->tie_embeddings || !strcmp(p->arch, "gemma") || !strcmp(p->arch, "gemma3vl") || !strcmp(p->arch, "gpt2");
    json_t *c = json_pack("{s:[s], s:s}", "architectures", archs[ai].cls, "model_type", archs[ai].type);
    if (!c) return NULL;
    if (!strcmp(p->arch, "gpt2")) {
        json_object_set_new(c, "n_embd", json_integer(p->hidden));
        json_object_set_new(c, "n_inner", json_integer(p->intermediate));
        json_object_set_new(c, "n_head", json_integer(p->n_heads));
        json_object_set_new(c, "n_layer", json_integer(p->n_layers));
        json_object_set_new(c, "n_positions", json_integer(1024));
    } else {
        json_object_set_new(c, "hidden_size", json_integer(p->hidden));
        json_object_set_new(c, "intermediate_size", json_integer(p->intermediate));
        json_object_set_new(c, "num_attention_heads", json_integer(p->n_heads));
        if (strcmp(p->arch, "gpt_neox")) json_object_set_new(c, "num_key_value_heads", json_integer(p->n_kv_heads));
        json_object_set_new(c, "num_hidden_layers", json_integer(p->n_layers));
        json_object_set_new(c, "max_position_embeddings", json_integer(2048));
        json_object_set_new(c, "rope_theta", json_real(10000.0));
    }
    if (!strcmp(p->arch, "gpt2")) {
        json_object_set_new(c, "layer_norm_epsilon", json_real(1e-5));
        json_object_set_new(c, "activation_function", json_string("gelu_new"));
    } else if (!strcmp(p->arch, "gpt_neox")) {
        json_object_set_new(c, "layer_norm_eps", json_real(1e-5));
        json_object_set_new(c, "hidden_act", json_string("gelu"));
    } else {
        json_object_set_new(c, "rms_norm_eps", json_real(1e-5));
        json_object_set_new(c, "hidden_act", json_string(strncmp(p->arch, "gemma", 5) ? "silu" : "gelu_pytorch_tanh"));
        json_object_set_new(c, "attention_bias", json_boolean(!strcmp(p->arch, "qwen2")));
    }
    if (!strcmp(p->arch, "gemma")) json_object_set_new(c, "head_dim", json_integer(p->hidden / p->n_heads)); // GemmaConfig's default is 256
    if (!strcmp(p->arch, "mixtral")) {
        json_object_set_new(c, "num_local_experts", json_integer(N_EXPERTS));
        json_object_set_new(c, "num_experts_per_tok", json_integer(2));
    }
    json_object_set_new(c, "vocab_size", json_integer(p->vocab));
    json_object_set_new(c, "tie_word_embeddings", json_boolean(tied));
    json_object_set_new(c, "torch_dtype", json_string(dt));
    json_object_set_new(c, "bos_token_id", json_integer(1));
    json_object_set_new(c, "eos_token_id", json_integer(2));
    json_object_set_new(c, "initializer_range", json_real(p->init_std));
    json_object_set_new(c, "use_cache", json_true());
    if (!strcmp(p->arch, "gemma3vl")) { // text settings move into text_config, as in Gemma 3's config
        json_t *top = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:s, s:b}", "architectures", archs[ai].cls, "model_type", "gemma3",
                                "boi_token_index", 1, "eoi_token_index", 2, "mm_tokens_per_image", 16, "torch_dtype", dt, "tie_word_embeddings", 1);
        json_t *vis = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i}", "model_type", "siglip_vision_model", "hidden_size", VIS_H,
                                "intermediate_size", VIS_I, "num_hidden_layers", p->n_layers, "num_attention_heads", 2, "patch_size", 14, "image_size", 56);
        json_object_set_new(c, "model_type", json_string("gemma3_text"));
        json_object_del(c, "architectures");
        json_object_del(c, "torch_dtype");
        json_object_set_new(c, "head_dim", json_integer(p->hidden / p->n_heads));
        json_object_set_new(top, "text_config", c);
        json_object_set_new(top, "vision_config", vis);
        c = top;
    }
    return dump(c);
}

// A small BPE tokenizer.json whose vocabulary is <unk> <s> </s> (special, added) and t3…t{V-1}
// (regular), so vocabularies of different sizes overlap by id as real fine-tunes do.
static char *synth_tokenizer(int n_vocab) {
    json_t *vocab = json_object(), *added = json_array();
    static const char *const special[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < n_vocab; i++) {
        char t[32];
        if (i < 3) snprintf(t, sizeof t, "%s", special[i]);
        else snprintf(t, sizeof t, "t%d", i);
        json_object_set_new(vocab, t, json_integer(i));
        if (i < 3)
            json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", i, "content", t, "single_word", 0, "lstrip", 0,
                                                   "rstrip", 0, "normalized", 0, "special", 1));
    }
    return dump(json_pack("{s:s, s:n, s:n, s:o, s:n, s:n, s:n, s:n, s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:[]}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer", "pre_tokenizer", "post_processor", "decoder",
        "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
        "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges"));
}

// The vocabulary size of a real layout: its input embedding's rows.
static int layout_vocab(const struct job *j) {
    for (size_t i = 0; i < j->n; i++) {
        size_t l = strlen(j->specs[i].name);
        if (l >= 19 && !strcmp(j->specs[i].name + l - 19, "embed_tokens.weight")) return (int)j->specs[i].ne[0];
    }
    return 3;
}

// generation_config.json as transformers derives it from a config: its bos/eos/pad token ids.
static char *generation_config(const char *cfg) {
    json_t *c = json_loads(cfg, 0, NULL), *g = json_pack("{s:b}", "_from_model_config", 1);
    json_t *t = json_object_get(c, "text_config");
    static const char *const keys[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    for (int k = 0; g && k < 3; k++) {
        json_t *v = json_object_get(c, keys[k]);
        if (!v) v = json_object_get(t, keys[k]);
        if (v && !json_is_null(v)) json_object_set(g, keys[k], v);
    }
    json_decref(c);
    return dump(g);
}

int graft_synth(const char *target, const struct graft_synth_params *p, struct graft_err *err) {
    if (!p->like && !p->like_config) {
        if (arch_index(p->arch) < 0)
            return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0,
                                 "unknown --arch '%s' (supported: llama, mistral, qwen2, gemma, phi3, gpt2, gpt_neox, mixtral, gemma3vl)", p->arch);
        if (p->vocab < 3) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--vocab must be at least 3 (<unk>, <s>, </s>)");
        if (p->n_layers < 0 || p->hidden <= 0 || p->intermediate <= 0 || p->n_heads <= 0 || p->n_kv_heads <= 0 || p->vocab <= 0 ||
            p->hidden % p->n_heads || p->n_heads % p->n_kv_heads || p->n_layers > 100000)
            return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0,
                                 "invalid shape: need hidden divisible by heads and heads divisible by kv-heads, all positive");
    }
    if (!graft_dtype_is_float_target(p->dtype) && !(p->like_config && p->dtype == GRAFT_DTYPE_COUNT))
        return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--dtype must be a float type (f32, f16, bf16, f8_e4m3, f8_e5m2)");
    int n_threads = p->n_threads > 0 ? p->n_threads : 1;
    struct job j = {.p = p};
    struct graft_writer *w = NULL;
    char *cfg = NULL;
    int rc;
    size_t n = p->like ? graft_model_n_tensors(p->like) : arch_max_specs(p);
    j.dtype = p->dtype;
    if (!p->like && p->like_config) {
        if ((rc = graft__layout_from_config(p->like_config, p->like_config_label ? p->like_config_label : "config.json", p, &j.specs, &n, &cfg, &j.dtype,
                                            err)))
            return rc;
    } else if (!p->like) {
        if (!(j.specs = graft__calloc(n, sizeof *j.specs))) return graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory");
        n = arch_specs(p, j.specs);
    }
    j.n = n;
    struct graft_writer_params wp = graft_writer_default_params();
    wp.max_shard_bytes = p->max_shard_bytes, wp.flags = p->writer_flags;
    const char *protect[1] = {p->like ? graft_model_dir(p->like) : NULL};
    wp.protect = protect, wp.n_protect = p->like ? 1 : 0;
    if ((rc = graft_writer_open(target, &wp, &w, err))) goto out;
    j.w = w;
    j.f32 = graft__calloc((size_t)n_threads, sizeof *j.f32);
    j.out = graft__calloc((size_t)n_threads, sizeof *j.out);
    if (graft__chunks_init(&j.c, n, 1u << 18) || !j.f32 || !j.out) { rc = graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory"); goto out; }
    for (int i = 0; i < n_threads; i++) {
        j.f32[i] = graft__malloc((size_t)j.c.chunk * 4);
        j.out[i] = graft__malloc((size_t)j.c.chunk * 8);
        if (!j.f32[i] || !j.out[i]) { rc = graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory"); goto out; }
    }
    for (size_t i = 0; i < n; i++) {
        long id;
        if (p->like) {
            const struct graft_tensor_info *t = graft_model_tensor(p->like, i)->info;
            id = graft_writer_add_tensor(w, t->name, t->name_len, graft_convert_out_dtype(t->dtype, p->dtype), t->n_dims, t->ne, err);
            graft__chunks_set(&j.c, i, t->n_elem);
        } else {
            const struct graft__spec *s = &j.specs[i];
            id = graft_writer_add_tensor(w, s->name, strlen(s->name), j.dtype, s->n_dims, s->ne, err);
            graft__chunks_set(&j.c, i, spec_numel(s));
        }
        if (id < 0) { rc = (int)id; goto out; }
    }
    if ((rc = graft_writer_layout(w, err))) goto out;
    if (p->progress) p->progress->total = graft_writer_total_bytes(w);
    rc = graft_pool_run(n_threads, graft__chunks_items(&j.c), synth_chunk, &j,
                        p->progress && p->progress->enabled ? graft_progress_draw : NULL, p->progress, err);
    if (rc) goto out;
    if (p->like) {
        rc = graft_writer_copy_side_files(w, p->like, graft_dtype_torch_name(p->dtype), err);
    } else {
        static const char gen[] = "{\n  \"_from_model_config\": true,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2\n}\n";
        static const char tcfg[] = "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n  \"unk_token\": \"<unk>\",\n"
                                   "  \"model_max_length\": 2048,\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n";
        static const char stm[] = "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n  \"unk_token\": \"<unk>\"\n}\n";
        char *tok = synth_tokenizer(p->like_config ? layout_vocab(&j) : p->vocab);
        char *gcfg = p->like_config ? generation_config(cfg) : NULL;
        if (!cfg) cfg = arch_config(p);
        rc = cfg && tok ? graft_writer_add_file(w, "config.json", cfg, strlen(cfg), err)
                        : graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory");
        if (!rc) rc = gcfg ? graft_writer_add_file(w, "generation_config.json", gcfg, strlen(gcfg), err)
                           : graft_writer_add_file(w, "generation_config.json", gen, sizeof gen - 1, err);
        graft__free(gcfg);
        if (!rc) rc = graft_writer_add_file(w, "tokenizer.json", tok, strlen(tok), err);
        if (!rc) rc = graft_writer_add_file(w, "tokenizer_config.json", tcfg, sizeof tcfg - 1, err);
        if (!rc) rc = graft_writer_add_file(w, "special_tokens_map.json", stm, sizeof stm - 1, err);
        graft__free(tok);
    }
    if (!rc) rc = graft_writer_commit(w, err);
out:
    if (j.f32) for (int i = 0; i < n_threads; i++) graft__free(j.f32[i]);
    if (j.out) for (int i = 0; i < n_threads; i++) graft__free(j.out[i]);
    graft__free(j.f32);
    graft__free(j.out);
    graft__free(j.specs);
    graft__free(cfg);
    graft__chunks_free(&j.c);
    graft_writer_free(w);
    return rc;
}
