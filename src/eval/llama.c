// Llama-family forward pass (include/graft/eval.h): Llama, Mistral and Qwen2 decoders as transformers
// computes them — RMSNorm, RoPE with the rotate-half convention (rope_scaling llama3 / linear),
// grouped-query attention with a causal (and optional sliding-window) mask, SiLU-gated MLP, tied or
// untied head. Every matrix product is OpenBLAS sgemm on blocks of 256 weight rows converted to f32
// just before use; the blocks are fixed, so the result does not depend on the thread count.
#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "graft/eval.h"
#include "graft/gguf.h"
#include "graft/util.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "eval-impl.h"

#define NB 256 // weight rows per block

struct w { const void *p; enum graft_dtype dt; uint64_t rows, cols; uint32_t gq; }; // gq: a quantized ggml type (0: dt)

// Bytes of one row of w, and its rows decoded to f32.
static size_t row_bytes(const struct w *W) {
    return W->gq ? (size_t)(W->cols / graft_ggml_block_size(W->gq) * graft_ggml_type_size(W->gq)) : (size_t)W->cols * graft_dtype_traits(W->dt)->bits / 8;
}
static void rows_to_f32(const struct w *W, size_t r0, size_t nr, float *out) {
    const uint8_t *src = (const uint8_t *)W->p + r0 * row_bytes(W);
    if (W->gq) graft_ggml_to_f32(W->gq, src, out, nr * W->cols);
    else graft_row_to_f32(W->dt, src, out, nr * W->cols);
}

struct layer {
    struct w q, k, v, o, gate, up, down;
    float   *bq, *bk, *bv, *bo; // NULL when absent
    float   *g_in, *g_post;
    float   *qn, *kn;           // Qwen3, Gemma 3: RMSNorm gains over each head of q and k (head_dim), else NULL
    float   *g_preff, *g_postff; // Gemma 2/3: norms before and after the MLP (g_post then norms the attention output)
    int      sliding;           // this layer's attention window (0: global)
    const float *inv;           // this layer's rotary frequencies (Gemma 3: local or global)
    struct w router, *w1, *w2, *w3; // Mixtral: block_sparse_moe.gate and experts.e.{w1, w2, w3}
};

struct graft_llama {
    char   *name;
    int     nl, H, ni, nh, nkv, hd, V, sliding;
    int     n_exp, top_k;         // Mixtral experts per layer and per token (0: a dense MLP)
    bool    fused;                // Phi-3: fused qkv_proj and gate_up_proj
    int     gemma;                // 2 or 3: Gemma 2 / Gemma 3 (sandwich norms, (1 + w) gains, GeGLU, scaled embeddings), else 0
    float   attn_scale;           // on q·k: 1/√head_dim, Gemma: 1/√query_pre_attn_scalar
    float   attn_cap, final_cap;  // soft-capping of attention scores and of the logits: c·tanh(x/c) (0: none)
    float   embed_scale;          // Gemma: √hidden in the embedding's dtype; MiniCPM: scale_emb (1 otherwise)
    float   res_scale;            // MiniCPM: scale_depth / √layers on each residual branch (1 otherwise)
    float   logit_scale;          // MiniCPM: dim_model_base / hidden on the final hidden state (1 otherwise)
    float  *inv_freq_local;       // Gemma 3's sliding layers: 1/rope_local_base_freq^(2i/d), no scaling
    char    pre[32];              // "model." or, for Gemma 3 vision-language checkpoints, "language_model.model."
    float   eps;
    float  *inv_freq;             // hd/2 rotary frequencies (scaled)
    float  *inv_freq_long;        // LongRoPE (Phi-3): the frequencies for windows longer than rope_orig, else NULL
    int     rope_orig;            // LongRoPE: original_max_position_embeddings
    float   rope_mscale;          // LongRoPE: attention factor on cos and sin (1 otherwise)
    struct layer *layers;
    bool   *skip;                 // layers the forward pass leaves out (graft_llama_skip_layers), or NULL
    struct w embed, head;
    float  *g_final;
    int     n_threads;
    enum graft_matmul matmul;     // BF16 weights: f32 products, or bf16 activations (graft_llama_set_matmul)
    uint64_t n_params;
    void   *aux;                  // what the tensor source owns (GGUF: un-permuted q/k), freed with L
    void  (*aux_free)(void *);
};

void graft__llama_set_aux(struct graft_llama *L, void *aux, void (*aux_free)(void *)) { L->aux = aux, L->aux_free = aux_free; }

struct graft_llama_stats {
    enum graft_collect what;
    int     L;
    size_t  dim[4];              // each input's width (IMPORTANCE: dim[1] = heads, of hd values each)
    int     hd;
    float  **rows;               // MLP_ROWS: per layer, the MLP and down_proj inputs of the first cap tokens
    size_t   cap, *used;
    double **acc; // per layer 4 inputs: attention in (q,k,v), o_proj in, MLP in (gate, up), down_proj in
    bool    fused; // Phi-3: the inputs of qkv_proj and gate_up_proj
    char    pre[32]; // the layers' name prefix
};

// ---- loading -----------------------------------------------------------------------------------------

static bool model_lookup(void *ctx, const char *name, struct graft_tensor_ref *out) {
    const struct graft_model *m = ctx;
    const struct graft_model_tensor *t = graft_model_find(m, name, strlen(name));
    if (!t) return false;
    out->data = graft_model_data(m, t);
    out->dtype = t->info->dtype;
    out->n_dims = t->info->n_dims;
    out->ne[0] = t->info->n_dims > 0 ? t->info->ne[0] : 1;
    out->ne[1] = t->info->n_dims > 1 ? t->info->ne[1] : 1;
    return true;
}

int graft_llama_open(const struct graft_model *m, int n_threads, struct graft_llama **out, struct graft_err *err) {
    const char *cfg = graft_model_config_json(m);
    if (!cfg) return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "no config.json: the forward pass needs the architecture");
    return graft_llama_new(cfg, model_lookup, (void *)m, graft_model_path(m), n_threads, out, err);
}

static bool float_dt(enum graft_dtype d) { return d == GRAFT_DTYPE_F32 || d == GRAFT_DTYPE_F16 || d == GRAFT_DTYPE_BF16; }

static int get_w(struct graft_llama *L, graft_tensor_lookup lk, void *ctx, const char *nm, uint64_t rows, uint64_t cols, bool optional,
                 struct w *w, struct graft_err *err) {
    struct graft_tensor_ref r = {0};
    memset(w, 0, sizeof *w);
    if (!lk(ctx, nm, &r)) {
        if (optional) return GRAFT_OK;
        return graft_err_set(err, GRAFT_E_FORMAT, L->name, nm, strlen(nm), "missing: the forward pass needs this tensor");
    }
    bool vec = cols == 0;
    uint64_t inner = vec ? rows : cols;
    if (r.ggml_type) { // a quantized GGUF tensor: decoded block by block like the float types
        uint32_t blck = graft_ggml_block_size(r.ggml_type);
        float probe[256];
        if (!blck || blck > 256 || inner % blck || !graft_ggml_to_f32(r.ggml_type, r.data, probe, blck))
            return graft_err_set(err, GRAFT_E_FORMAT, L->name, nm, strlen(nm), "ggml type %s is not decoded by the evaluator", graft_ggml_type_name(r.ggml_type));
    } else if (!float_dt(r.dtype))
        return graft_err_set(err, GRAFT_E_FORMAT, L->name, nm, strlen(nm), "dtype %s: the forward pass reads F32, F16 or BF16", graft_dtype_traits(r.dtype)->name);
    if (vec ? (r.n_dims != 1 || r.ne[0] != rows) : (r.n_dims != 2 || r.ne[0] != rows || r.ne[1] != cols))
        return graft_err_set(err, GRAFT_E_FORMAT, L->name, nm, strlen(nm), "shape [%llu%s%llu], config.json implies [%llu%s%llu]",
                             (unsigned long long)r.ne[0], r.n_dims > 1 ? ", " : "", r.n_dims > 1 ? (unsigned long long)r.ne[1] : 0ull,
                             (unsigned long long)rows, vec ? "" : ", ", vec ? 0ull : (unsigned long long)cols);
    *w = (struct w){r.data, r.dtype, rows, vec ? 1 : cols, r.ggml_type};
    if (!vec) L->n_params += rows * cols;
    return GRAFT_OK;
}

// Rows [r0, r0 + n) of W as a weight of its own (a fused projection's part).
static struct w rows_view(const struct w *W, uint64_t r0, uint64_t n) {
    struct w v = *W;
    v.p = (const uint8_t *)W->p + r0 * row_bytes(W), v.rows = n;
    return v;
}

// A 1-D tensor (norm gain, bias) as a fresh f32 array; NULL and OK when optional and absent.
static int get_vec(struct graft_llama *L, graft_tensor_lookup lk, void *ctx, const char *nm, uint64_t n, bool optional, float **out,
                   struct graft_err *err) {
    struct w w;
    *out = NULL;
    int rc = get_w(L, lk, ctx, nm, n, 0, optional, &w, err);
    if (rc || !w.p) return rc;
    if (!(*out = graft__malloc(n * sizeof(float)))) return graft_err_set(err, GRAFT_E_NOMEM, L->name, NULL, 0, "out of memory");
    if (w.gq) graft_ggml_to_f32(w.gq, w.p, *out, n);
    else graft_row_to_f32(w.dt, w.p, *out, n);
    return GRAFT_OK;
}

// Rotary frequencies as transformers computes them: 1/θ^(2i/d), then the rope_scaling rule.
static int rope_init(struct graft_llama *L, json_t *c, struct graft_err *err) {
    int half = L->hd / 2;
    if (!(L->inv_freq = graft__malloc((size_t)half * sizeof(float)))) return graft_err_set(err, GRAFT_E_NOMEM, L->name, NULL, 0, "out of memory");
    double theta = graft__json_num(c, "rope_theta", 10000.0);
    for (int i = 0; i < half; i++) L->inv_freq[i] = (float)(1.0 / pow(theta, (double)(2 * i) / L->hd));
    json_t *rs = json_object_get(c, "rope_scaling");
    if (!rs || json_is_null(rs)) return GRAFT_OK;
    json_t *tv = json_object_get(rs, "rope_type");
    if (!json_is_string(tv)) tv = json_object_get(rs, "type");
    const char *type = json_string_value(tv);
    double factor = graft__json_num(rs, "factor", 1.0);
    if (!type || !strcmp(type, "default")) return GRAFT_OK;
    if (!strcmp(type, "longrope") || !strcmp(type, "su")) { // Phi-3: per-frequency divisors, short and long
        json_t *sf = json_object_get(rs, "short_factor"), *lf = json_object_get(rs, "long_factor");
        double orig = graft__json_num(rs, "original_max_position_embeddings", graft__json_num(c, "original_max_position_embeddings", 0));
        double maxp = graft__json_num(c, "max_position_embeddings", 0);
        if (json_array_size(sf) != (size_t)half || json_array_size(lf) != (size_t)half || !(orig > 0) || !(maxp > 0))
            return graft_err_set(err, GRAFT_E_FORMAT, L->name, NULL, 0,
                                 "config.json: longrope needs short_factor and long_factor of head_dim/2 = %d values, original_max_position_embeddings and "
                                 "max_position_embeddings", half);
        if (!(L->inv_freq_long = graft__malloc((size_t)half * sizeof(float)))) return graft_err_set(err, GRAFT_E_NOMEM, L->name, NULL, 0, "out of memory");
        for (int i = 0; i < half; i++) {
            double s = json_number_value(json_array_get(sf, (size_t)i)), l = json_number_value(json_array_get(lf, (size_t)i));
            if (!(s > 0) || !(l > 0)) return graft_err_set(err, GRAFT_E_FORMAT, L->name, NULL, 0, "config.json: longrope factors must be positive");
            double base = 1.0 / pow(theta, (double)(2 * i) / L->hd);
            L->inv_freq[i] = (float)(base / s), L->inv_freq_long[i] = (float)(base / l);
        }
        L->rope_orig = (int)orig;
        double f = maxp / orig, af = graft__json_num(rs, "attention_factor", 0);
        L->rope_mscale = (float)(af > 0 ? af : f <= 1 ? 1.0 : sqrt(1 + log(f) / log(orig)));
        return GRAFT_OK;
    }
    if (!(factor > 0)) return graft_err_set(err, GRAFT_E_FORMAT, L->name, NULL, 0, "config.json: rope_scaling.factor must be positive");
    if (!strcmp(type, "linear")) {
        for (int i = 0; i < half; i++) L->inv_freq[i] = (float)(L->inv_freq[i] / factor);
        return GRAFT_OK;
    }
    if (!strcmp(type, "llama3")) {
        double lo = graft__json_num(rs, "low_freq_factor", 1.0), hi = graft__json_num(rs, "high_freq_factor", 4.0);
        double old = graft__json_num(rs, "original_max_position_embeddings", 8192.0);
        if (!(hi > lo)) return graft_err_set(err, GRAFT_E_FORMAT, L->name, NULL, 0, "config.json: rope_scaling needs high_freq_factor > low_freq_factor");
        double lo_wl = old / lo, hi_wl = old / hi;
        for (int i = 0; i < half; i++) {
            double f = L->inv_freq[i], wl = 2 * M_PI / f;
            if (wl < hi_wl) continue;
            if (wl > lo_wl) f /= factor;
            else {
                double s = (old / wl - lo) / (hi - lo);
                f = (1 - s) * f / factor + s * f;
            }
            L->inv_freq[i] = (float)f;
        }
        return GRAFT_OK;
    }
    return graft_err_set(err, GRAFT_E_FORMAT, L->name, NULL, 0, "config.json: rope_scaling type \"%s\" is not supported (default, linear, llama3, longrope)", type);
}

int graft_llama_new(const char *config_json, graft_tensor_lookup lk, void *ctx, const char *name, int n_threads, struct graft_llama **out,
                    struct graft_err *err) {
    *out = NULL;
    json_error_t je;
    json_t *root = json_loads(config_json, 0, &je), *c = root;
    struct graft_llama *L = graft__calloc(1, sizeof *L);
    int rc = GRAFT_OK;
    if (!L || !(L->name = graft__strdup(name))) { rc = graft_err_set(err, GRAFT_E_NOMEM, name, NULL, 0, "out of memory"); goto out; }
    if (!json_is_object(c)) { rc = graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "config.json is not a JSON object"); goto out; }
    const char *arch = json_string_value(json_array_get(json_object_get(c, "architectures"), 0));
    if (!arch || (strcmp(arch, "LlamaForCausalLM") && strcmp(arch, "MistralForCausalLM") && strcmp(arch, "Qwen2ForCausalLM") &&
                  strcmp(arch, "Qwen3ForCausalLM") && strcmp(arch, "Phi3ForCausalLM") && strcmp(arch, "MixtralForCausalLM") &&
                  strcmp(arch, "Gemma2ForCausalLM") && strcmp(arch, "Gemma3ForCausalLM") && strcmp(arch, "Gemma3ForConditionalGeneration") &&
                  strcmp(arch, "MiniCPMForCausalLM"))) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, name, NULL, 0, // does not apply: exit 4
                           "config.json: architecture %s is not supported by the evaluator (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                           "Qwen3ForCausalLM, Phi3ForCausalLM, MixtralForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, "
                           "MiniCPMForCausalLM)",
                           arch ? arch : "(none)");
        goto out;
    }
    bool phi3 = !strcmp(arch, "Phi3ForCausalLM"), qwen3 = !strcmp(arch, "Qwen3ForCausalLM");
    L->fused = phi3;
    snprintf(L->pre, sizeof L->pre, "model.");
    L->gemma = !strcmp(arch, "Gemma2ForCausalLM") ? 2 : !strncmp(arch, "Gemma3", 6) ? 3 : 0;
    if (!strcmp(arch, "Gemma3ForConditionalGeneration")) { // the text decoder: its config and tensors under language_model.
        if (!json_is_object(c = json_object_get(root, "text_config"))) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "config.json: Gemma3ForConditionalGeneration without a text_config");
            goto out;
        }
        snprintf(L->pre, sizeof L->pre, "language_model.model.");
    }
    if (!strcmp(arch, "MixtralForCausalLM")) {
        L->n_exp = (int)graft__json_int(c, "num_local_experts", -1), L->top_k = (int)graft__json_int(c, "num_experts_per_tok", 2);
        if (L->n_exp < 1 || L->n_exp > 1024 || L->top_k < 1 || L->top_k > L->n_exp) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "config.json: num_local_experts / num_experts_per_tok are missing or inconsistent");
            goto out;
        }
    }
    const char *act = json_string_value(json_object_get(c, L->gemma ? "hidden_activation" : "hidden_act"));
    if (!act && L->gemma) act = json_string_value(json_object_get(c, "hidden_act"));
    if (act && strcmp(act, L->gemma ? "gelu_pytorch_tanh" : "silu")) {
        rc = graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "config.json: hidden activation \"%s\" (the evaluator computes %s)", act,
                           L->gemma ? "gelu_pytorch_tanh" : "silu");
        goto out;
    }
    L->n_threads = n_threads < 1 ? 1 : n_threads;
    L->nl = (int)graft__json_int(c, "num_hidden_layers", -1), L->H = (int)graft__json_int(c, "hidden_size", -1), L->ni = (int)graft__json_int(c, "intermediate_size", -1);
    L->nh = (int)graft__json_int(c, "num_attention_heads", L->gemma == 3 ? 8 : -1);
    L->nkv = (int)graft__json_int(c, "num_key_value_heads", L->gemma == 3 ? 4 : L->nh), L->V = (int)graft__json_int(c, "vocab_size", L->gemma == 3 ? 262208 : -1);
    L->hd = (int)graft__json_int(c, "head_dim", L->gemma ? 256 : L->nh > 0 ? L->H / L->nh : -1);
    bool mixtral = !strcmp(arch, "MixtralForCausalLM"), mistral = !strcmp(arch, "MistralForCausalLM");
    L->eps = (float)graft__json_num(c, "rms_norm_eps", phi3 || mixtral ? 1e-5 : 1e-6); // (the config classes' defaults)
    L->attn_scale = (float)(1.0 / sqrt(L->gemma ? graft__json_num(c, "query_pre_attn_scalar", 256) : (double)(L->hd > 0 ? L->hd : 1)));
    // soft-caps: Gemma2Config's defaults are 50 and 30 (a null turns them off)
    json_t *ac = json_object_get(c, "attn_logit_softcapping"), *fc = json_object_get(c, "final_logit_softcapping");
    L->attn_cap = (float)(json_is_number(ac) ? json_number_value(ac) : !ac && L->gemma == 2 ? 50.0 : 0.0);
    L->final_cap = (float)(json_is_number(fc) ? json_number_value(fc) : !fc && L->gemma == 2 ? 30.0 : 0.0);
    graft__rope_parameters_compat(c); // (transformers ≥ 5's rope_parameters, read as the older keys)
    // what the evaluator does not compute is refused rather than ignored
    if (json_is_true(json_object_get(c, "mlp_bias"))) {
        rc = graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "config.json: mlp_bias (MLP projections with biases) is not computed by the evaluator");
        goto out;
    }
    json_t *prf = json_object_get(c, "partial_rotary_factor");
    if (json_is_number(prf) && json_number_value(prf) != 1.0) {
        rc = graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "config.json: partial_rotary_factor %g (rotating part of each head) is not computed by the evaluator",
                           json_number_value(prf));
        goto out;
    }
    L->embed_scale = L->res_scale = L->logit_scale = 1.0f;
    if (!strcmp(arch, "MiniCPMForCausalLM")) { // μP scalars (MiniCPMConfig's defaults: 1, 1, 1)
        double se = graft__json_num(c, "scale_emb", 1), sd = graft__json_num(c, "scale_depth", 1), dmb = graft__json_num(c, "dim_model_base", 1);
        if (!(se > 0 && se < 1e30) || !(sd > 0 && sd < 1e30) || !(dmb > 0 && dmb < 1e30) || json_object_get(c, "q_lora_rank") ||
            graft__json_int(c, "num_experts", 0) > 0) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "config.json: MiniCPM needs positive scale_emb, scale_depth and dim_model_base "
                                                                   "(and no latent attention or experts)");
            goto out;
        }
        long nl = graft__json_int(c, "num_hidden_layers", 1), hs = graft__json_int(c, "hidden_size", 1);
        L->embed_scale = (float)se, L->res_scale = (float)(sd / sqrt((double)(nl > 0 ? nl : 1))), L->logit_scale = (float)(dmb / (double)(hs > 0 ? hs : 1));
    }
    if (L->nl < 1 || L->nl > 4096 || L->H < 1 || L->H > (1 << 20) || L->ni < 1 || L->ni > (1 << 22) || L->nh < 1 || L->nh > 4096 || L->nkv < 1 ||
        L->nh % L->nkv || L->V < 1 || L->V > (1 << 24) || L->hd < 2 || L->hd % 2 || L->hd > 4096) {
        rc = graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "config.json: layer, width, head or vocabulary counts are missing or inconsistent");
        goto out;
    }
    json_t *usw = json_object_get(c, "use_sliding_window");
    // sliding windows: Mistral's default 4096 (Mixtral's none); Qwen2/Qwen3 (use_sliding_window) slide only the
    // layers layer_types names, else those from max_window_layers on (Qwen2Config's rule; default 28)
    bool qwen_sw = json_is_true(usw) && !mistral && !mixtral && !phi3;
    if (mistral || mixtral || phi3 || qwen_sw) L->sliding = (int)graft__json_int(c, "sliding_window", mistral || qwen_sw ? 4096 : 0);
    long max_window = graft__json_int(c, "max_window_layers", 28);
    L->rope_mscale = 1.0f;
    if (L->gemma == 3 && !json_object_get(c, "rope_theta")) json_object_set_new(c, "rope_theta", json_real(1000000.0)); // Gemma3TextConfig's default
    if ((rc = rope_init(L, c, err))) goto out;
    if (L->gemma == 3) { // sliding layers rotate with the local base, unscaled
        double base = graft__json_num(c, "rope_local_base_freq", 10000.0);
        if (!(L->inv_freq_local = graft__malloc((size_t)(L->hd / 2) * sizeof(float)))) { rc = graft_err_set(err, GRAFT_E_NOMEM, name, NULL, 0, "out of memory"); goto out; }
        for (int i = 0; i < L->hd / 2; i++) L->inv_freq_local[i] = (float)(1.0 / pow(base, (double)(2 * i) / L->hd));
    }
    if (!(L->layers = graft__calloc((size_t)L->nl, sizeof *L->layers))) { rc = graft_err_set(err, GRAFT_E_NOMEM, name, NULL, 0, "out of memory"); goto out; }
    uint64_t H = (uint64_t)L->H, qd = (uint64_t)L->nh * L->hd, kd = (uint64_t)L->nkv * L->hd, In = (uint64_t)L->ni;
    char nm[128];
#define W(field, fmt, r, cl) (snprintf(nm, sizeof nm, "%slayers.%d." fmt, L->pre, l), rc = get_w(L, lk, ctx, nm, r, cl, false, &ly->field, err))
#define B(field, fmt, n, opt) (snprintf(nm, sizeof nm, "%slayers.%d." fmt, L->pre, l), rc = get_vec(L, lk, ctx, nm, n, opt, &ly->field, err))
    json_t *types = json_object_get(c, "layer_types");
    int pattern = (int)graft__json_int(c, "sliding_window_pattern", 6);
    for (int l = 0; l < L->nl && !rc; l++) {
        struct layer *ly = &L->layers[l];
        ly->sliding = L->sliding, ly->inv = L->inv_freq;
        if (qwen_sw) {
            const char *ty = json_string_value(json_array_get(types, (size_t)l));
            if (ty ? strcmp(ty, "sliding_attention") != 0 : l < max_window) ly->sliding = 0;
        }
        if (L->gemma) { // Gemma 2: even layers slide; Gemma 3: all but every pattern-th (or as layer_types says)
            const char *ty = json_string_value(json_array_get(types, (size_t)l));
            bool slide = ty ? !strcmp(ty, "sliding_attention") : L->gemma == 2 ? l % 2 == 0 : pattern < 1 || (l + 1) % pattern != 0;
            ly->sliding = slide ? (int)graft__json_int(c, "sliding_window", 4096) : 0;
            if (L->gemma == 3 && slide) ly->inv = L->inv_freq_local;
            if (B(g_preff, "pre_feedforward_layernorm.weight", H, false) || B(g_postff, "post_feedforward_layernorm.weight", H, false) ||
                (L->gemma == 3 && (B(qn, "self_attn.q_norm.weight", (uint64_t)L->hd, false) || B(kn, "self_attn.k_norm.weight", (uint64_t)L->hd, false))))
                break;
        }
        if (L->n_exp) {
            if (!(ly->w1 = graft__calloc(3 * (size_t)L->n_exp, sizeof *ly->w1))) { rc = graft_err_set(err, GRAFT_E_NOMEM, name, NULL, 0, "out of memory"); break; }
            ly->w2 = ly->w1 + L->n_exp, ly->w3 = ly->w2 + L->n_exp;
            if (W(router, "block_sparse_moe.gate.weight", (uint64_t)L->n_exp, H)) break;
            L->n_params -= (uint64_t)L->n_exp * H;
            for (int e = 0; e < L->n_exp && !rc; e++)
                for (int k = 0; k < 3 && !rc; k++) {
                    snprintf(nm, sizeof nm, "%slayers.%d.block_sparse_moe.experts.%d.w%d.weight", L->pre, l, e, k + 1);
                    struct w *dst = k == 0 ? &ly->w1[e] : k == 1 ? &ly->w2[e] : &ly->w3[e];
                    rc = get_w(L, lk, ctx, nm, k == 1 ? H : In, k == 1 ? In : H, false, dst, err);
                    L->n_params -= In * H; // a token passes through top_k experts, counted below
                }
            if (rc) break;
            L->n_params += (uint64_t)L->top_k * 3 * In * H + (uint64_t)L->n_exp * H;
        }
        if (phi3) { // fused projections: q, k, v rows of qkv_proj and gate, up rows of gate_up_proj, as views
            if (W(q, "self_attn.qkv_proj.weight", qd + 2 * kd, H) || W(gate, "mlp.gate_up_proj.weight", 2 * In, H) || W(o, "self_attn.o_proj.weight", H, qd) ||
                W(down, "mlp.down_proj.weight", H, In) || B(g_in, "input_layernorm.weight", H, false) || B(g_post, "post_attention_layernorm.weight", H, false))
                break;
            ly->k = rows_view(&ly->q, qd, kd), ly->v = rows_view(&ly->q, qd + kd, kd), ly->q = rows_view(&ly->q, 0, qd);
            ly->up = rows_view(&ly->gate, In, In), ly->gate = rows_view(&ly->gate, 0, In);
            continue;
        }
        if (qwen3 && (B(qn, "self_attn.q_norm.weight", (uint64_t)L->hd, false) || B(kn, "self_attn.k_norm.weight", (uint64_t)L->hd, false))) break;
        if (W(q, "self_attn.q_proj.weight", qd, H) || W(k, "self_attn.k_proj.weight", kd, H) || W(v, "self_attn.v_proj.weight", kd, H) ||
            W(o, "self_attn.o_proj.weight", H, qd) || (!L->n_exp && (W(gate, "mlp.gate_proj.weight", In, H) || W(up, "mlp.up_proj.weight", In, H) ||
            W(down, "mlp.down_proj.weight", H, In))) || B(g_in, "input_layernorm.weight", H, false) || B(g_post, "post_attention_layernorm.weight", H, false) ||
            B(bq, "self_attn.q_proj.bias", qd, true) || B(bk, "self_attn.k_proj.bias", kd, true) || B(bv, "self_attn.v_proj.bias", kd, true) ||
            B(bo, "self_attn.o_proj.bias", H, true))
            break;
    }
#undef W
#undef B
    if (rc) goto out;
    char en[64], fn[64];
    snprintf(en, sizeof en, "%sembed_tokens.weight", L->pre), snprintf(fn, sizeof fn, "%snorm.weight", L->pre);
    // tied (tie_word_embeddings, whose default is true for Gemma only): transformers ties lm_head to the
    // embeddings after loading, so a stored lm_head.weight is not used
    json_t *tie = json_object_get(c, "tie_word_embeddings");
    bool tied = json_is_true(tie) || (!tie && L->gemma);
    if ((rc = get_w(L, lk, ctx, en, (uint64_t)L->V, H, false, &L->embed, err)) || (rc = get_vec(L, lk, ctx, fn, H, false, &L->g_final, err)) ||
        (!tied && (rc = get_w(L, lk, ctx, L->pre[0] == 'l' ? "language_model.lm_head.weight" : "lm_head.weight", (uint64_t)L->V, H, true, &L->head, err))))
        goto out;
    if (L->gemma) { // gains stored as w − 1: the norms multiply by 1 + w; embeddings scaled by √hidden rounded to their dtype
        for (int l = 0; l < L->nl; l++) {
            struct layer *ly = &L->layers[l];
            float *g[] = {ly->g_in, ly->g_post, ly->g_preff, ly->g_postff, ly->qn, ly->kn};
            for (int k = 0; k < 6; k++)
                for (int i = 0; g[k] && i < (k < 4 ? L->H : L->hd); i++) g[k][i] += 1.0f;
        }
        for (int i = 0; i < L->H; i++) L->g_final[i] += 1.0f;
        float sc = sqrtf((float)L->H);
        uint8_t tmp[8];
        if (!L->embed.gq && L->embed.dt != GRAFT_DTYPE_F32) graft_row_from_f32(L->embed.dt, &sc, tmp, 1), graft_row_to_f32(L->embed.dt, tmp, &sc, 1);
        L->embed_scale = sc;
    }
    L->n_params -= (uint64_t)L->V * H; // the embedding is a lookup, not a product
    if (!L->head.p) {
        if (json_is_false(tie)) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, name, "lm_head.weight", 14, "missing, and config.json says tie_word_embeddings: false");
            goto out;
        }
        L->head = L->embed, L->n_params += (uint64_t)L->V * H;
    }
out:
    json_decref(root);
    if (rc) graft_llama_free(L);
    else *out = L;
    return rc;
}

void graft_llama_free(struct graft_llama *L) {
    if (!L) return;
    if (L->layers)
        for (int l = 0; l < L->nl; l++) {
            struct layer *y = &L->layers[l];
            graft__free(y->bq), graft__free(y->bk), graft__free(y->bv), graft__free(y->bo), graft__free(y->g_in), graft__free(y->g_post);
            graft__free(y->w1), graft__free(y->qn), graft__free(y->kn), graft__free(y->g_preff), graft__free(y->g_postff);
        }
    graft__free(L->skip);
    graft__free(L->layers), graft__free(L->inv_freq), graft__free(L->inv_freq_long), graft__free(L->inv_freq_local), graft__free(L->g_final), graft__free(L->name);
    if (L->aux_free) L->aux_free(L->aux);
    graft__free(L);
}

int32_t  graft_llama_vocab(const struct graft_llama *L) { return L->V; }
int      graft_llama_n_layers(const struct graft_llama *L) { return L->nl; }
int      graft_llama_hidden(const struct graft_llama *L) { return L->H; }
uint64_t graft_llama_n_params(const struct graft_llama *L) { return L->n_params; }
double   graft_llama_flops(const struct graft_llama *L, int n_seq, int len) {
    double T = len;
    return (double)n_seq * (2.0 * (double)L->n_params * T + 4.0 * T * T * L->hd * L->nh * L->nl);
}

// ---- kernels -----------------------------------------------------------------------------------------

// Y[M × N] (+)= X[M × K] · Wᵀ (+ bias), W [N × K] in its stored dtype, by blocks of NB rows. In head
// mode the block's logits go to scratch, and each row's max, Σexp and the target's logit are kept per
// block (combined in block order afterwards).
struct lin {
    const float *X;
    size_t M, K;
    const struct w *W;
    float *Y;
    size_t ldy;
    const float *bias;
    bool accumulate;
    float **wbuf, **ybuf; // per thread: NB × K converted weights; head mode: M × NB logits
    // head mode
    const int32_t *target; // per row: the next token, or -1
    double *bmax, *bsum;   // [block × M]
    float *tlogit;         // per row
    float *logits;         // optional full M × N copy
    float cap;             // Gemma 2: logits soft-capped, c·tanh(x/c) (0: none)
    const uint16_t *Xb;    // bf16 products: X rounded to bf16, rows padded (graft__bf16_gemm), else NULL
};

static const float *weight_block(const struct w *W, size_t r0, size_t nr, float *buf) {
    const uint8_t *src = (const uint8_t *)W->p + r0 * row_bytes(W);
    if (!W->gq && W->dt == GRAFT_DTYPE_F32 && ((uintptr_t)src & 3) == 0) return (const float *)src;
    rows_to_f32(W, r0, nr, buf);
    return buf;
}

// Y[M × nr] (+)= X · (weight rows r0 …)ᵀ: sgemm on the rows widened to f32, or bf16 dot products.
static void block_product(const struct lin *j, size_t r0, size_t nr, int ith, float *Y, size_t ldy, bool accumulate) {
    if (j->Xb) {
        graft__bf16_gemm(j->M, nr, j->K, j->Xb, (const uint8_t *)j->W->p + r0 * row_bytes(j->W), Y, ldy, accumulate, (uint32_t *)j->wbuf[ith]);
        return;
    }
    const float *Wb = weight_block(j->W, r0, nr, j->wbuf[ith]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->M, (int)nr, (int)j->K, 1.0f, j->X, (int)j->K, Wb, (int)j->K,
                accumulate ? 1.0f : 0.0f, Y, (int)ldy);
}

static int lin_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)err;
    struct lin *j = ctx;
    size_t r0 = item * NB, nr = j->W->rows - r0 < NB ? j->W->rows - r0 : NB;
    if (!j->target) {
        float *Y = j->Y + r0;
        block_product(j, r0, nr, ith, Y, j->ldy, j->accumulate);
        if (j->bias)
            for (size_t m = 0; m < j->M; m++)
                for (size_t n = 0; n < nr; n++) Y[m * j->ldy + n] += j->bias[r0 + n];
        return GRAFT_OK;
    }
    float *Y = j->ybuf[ith];
    block_product(j, r0, nr, ith, Y, nr, false);
    if (j->cap > 0)
        for (size_t i = 0; i < j->M * nr; i++) Y[i] = j->cap * tanhf(Y[i] / j->cap);
    for (size_t m = 0; m < j->M; m++) {
        const float *y = Y + m * nr;
        float mx = -INFINITY;
        for (size_t n = 0; n < nr; n++) mx = y[n] > mx ? y[n] : mx;
        float s = 0; // ≤ 256 terms, each ≤ 1: float is plenty, and expf is several times cheaper
        for (size_t n = 0; n < nr; n++) s += expf(y[n] - mx);
        j->bmax[item * j->M + m] = mx, j->bsum[item * j->M + m] = s;
        int32_t t = j->target[m];
        if (t >= (int32_t)r0 && t < (int32_t)(r0 + nr)) j->tlogit[m] = y[t - r0];
        if (j->logits) memcpy(j->logits + m * j->W->rows + r0, y, nr * sizeof(float));
    }
    return GRAFT_OK;
}

// GRAFT_MATMUL_BF16 on BF16 weights: X rounded to bf16 once per product, shared by the blocks; without
// AVX512-BF16 (or for an odd K) the rounded values go through sgemm (the same products, summed in
// another order).
static int linear(struct graft_llama *L, struct lin *j, struct graft_err *err) {
    size_t items = (j->W->rows + NB - 1) / NB;
    if (L->matmul != GRAFT_MATMUL_BF16 || j->W->gq || j->W->dt != GRAFT_DTYPE_BF16) return graft_pool_run(L->n_threads, items, lin_item, j, NULL, NULL, err);
    bool dot = graft__bf16_gemm_cpu() && j->K % 2 == 0; // the kernel takes K in pairs
    size_t rows = graft__bf16_rows_padded(j->M);
    uint16_t *Xb = graft__malloc(rows * j->K * sizeof *Xb);
    float *Xr = dot ? NULL : graft__malloc(j->M * j->K * sizeof *Xr);
    if (!Xb || (!dot && !Xr)) {
        graft__free(Xb);
        return graft_err_set(err, GRAFT_E_NOMEM, L->name, NULL, 0, "out of memory for bf16 activations (%zu × %zu)", j->M, j->K);
    }
    graft__bf16_round_rows(j->X, j->M, j->K, Xb);
    struct lin jb = *j;
    if (dot) jb.Xb = Xb;
    else graft_row_to_f32(GRAFT_DTYPE_BF16, Xb, Xr, j->M * j->K), jb.X = Xr;
    int rc = graft_pool_run(L->n_threads, items, lin_item, &jb, NULL, NULL, err);
    graft__free(Xb), graft__free(Xr);
    return rc;
}

void graft_llama_set_matmul(struct graft_llama *L, enum graft_matmul mode) { L->matmul = mode; }

// g ← silu(g) ⊙ u over n elements, in fixed 64 Ki-element items on the pool.
struct swiglu { float *g; const float *u; size_t n; };
static int swiglu_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith, (void)err;
    struct swiglu *a = ctx;
    size_t b = item << 16, e = b + (1u << 16) < a->n ? b + (1u << 16) : a->n;
    for (size_t i = b; i < e; i++) a->g[i] = a->g[i] / (1.0f + expf(-a->g[i])) * a->u[i];
    return GRAFT_OK;
}
// Gemma: g ← gelu_tanh(g) ⊙ u, gelu_tanh(x) = x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³))).
static int geglu_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith, (void)err;
    struct swiglu *a = ctx;
    size_t b = item << 16, e = b + (1u << 16) < a->n ? b + (1u << 16) : a->n;
    const float c = 0.7978845608028654f; // √(2/π)
    for (size_t i = b; i < e; i++) {
        float x = a->g[i];
        a->g[i] = 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x))) * a->u[i];
    }
    return GRAFT_OK;
}
static int swiglu(const struct graft_llama *L, float *g, const float *u, size_t n, struct graft_err *err) {
    struct swiglu a = {g, u, n};
    return graft_pool_run(L->n_threads, (n + 0xFFFF) >> 16, L->gemma ? geglu_item : swiglu_item, &a, NULL, NULL, err);
}

static void rmsnorm(const float *x, const float *g, float eps, size_t M, size_t H, float *out) {
    for (size_t m = 0; m < M; m++) {
        const float *r = x + m * H;
        double ss = 0;
        for (size_t i = 0; i < H; i++) ss += (double)r[i] * r[i];
        float inv = (float)(1.0 / sqrt(ss / (double)H + eps));
        for (size_t i = 0; i < H; i++) out[m * H + i] = g[i] * (r[i] * inv);
    }
}

// Rotate-half RoPE on every head of rows [s·T, s·T + T): position = row index within its sequence.
static void rope(const struct graft_llama *L, const float *inv_freq, float *x, size_t M, size_t T, int heads) {
    int half = L->hd / 2;
    size_t ld = (size_t)heads * L->hd;
    for (size_t m = 0; m < M; m++) {
        double pos = (double)(m % T);
        for (int i = 0; i < half; i++) {
            float ang = (float)pos * inv_freq[i]; // float32 product, as transformers
            float c = cosf(ang) * L->rope_mscale, s = sinf(ang) * L->rope_mscale; // LongRoPE scales cos and sin
            for (int h = 0; h < heads; h++) {
                float *p = x + m * ld + (size_t)h * L->hd;
                float a = p[i], b = p[i + half];
                p[i] = a * c - b * s;
                p[i + half] = b * c + a * s;
            }
        }
    }
}

struct attn {
    const struct graft_llama *L;
    const float *q, *k, *v;
    float *o;
    size_t T;
    float **sbuf; // per thread T × T
    int sliding;  // this layer's window (0: global)
};

// One (sequence, head): softmax(q kᵀ / √d + causal mask) v.
static int attn_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)err;
    struct attn *a = ctx;
    const struct graft_llama *L = a->L;
    size_t s = item / (size_t)L->nh, h = item % (size_t)L->nh, kv = h / (size_t)(L->nh / L->nkv), T = a->T;
    size_t qd = (size_t)L->nh * L->hd, kd = (size_t)L->nkv * L->hd;
    const float *q = a->q + s * T * qd + h * L->hd, *k = a->k + s * T * kd + kv * L->hd, *v = a->v + s * T * kd + kv * L->hd;
    float *S = a->sbuf[ith], *o = a->o + s * T * qd + h * L->hd;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, L->hd, L->attn_scale, q, (int)qd, k, (int)kd, 0.0f, S, (int)T);
    for (size_t i = 0; i < T; i++) {
        float *r = S + i * T;
        size_t j0 = a->sliding > 0 && i >= (size_t)a->sliding ? i - (size_t)a->sliding + 1 : 0;
        if (L->attn_cap > 0) // Gemma 2: scores soft-capped before the mask and softmax
            for (size_t j = j0; j <= i; j++) r[j] = L->attn_cap * tanhf(r[j] / L->attn_cap);
        float mx = -INFINITY;
        for (size_t j = j0; j <= i; j++) mx = r[j] > mx ? r[j] : mx;
        float sum = 0;
        for (size_t j = j0; j <= i; j++) sum += (r[j] = expf(r[j] - mx));
        float inv = 1.0f / sum;
        for (size_t j = 0; j < j0; j++) r[j] = 0;
        for (size_t j = j0; j <= i; j++) r[j] *= inv;
        for (size_t j = i + 1; j < T; j++) r[j] = 0;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, L->hd, (int)T, 1.0f, S, (int)T, v, (int)kd, 0.0f, o, (int)qd);
    return GRAFT_OK;
}

// Mixtral's sparse MoE block (transformers' MixtralSparseMoeBlock): router logits → softmax → the
// top-k experts (ties: lower index first), their weights renormalised to sum 1; each expert runs
// on the rows routed to it, x += Σ w_e · w2(silu(w1 h) ⊙ w3 h), experts added in index order.
// Scratch: g, u (M × I).
static int moe_block(struct graft_llama *L, const struct layer *ly, const float *h, size_t M, float *x, float *g, float *u,
                     float **wbuf, float **ybuf, struct graft_err *err) {
    size_t H = (size_t)L->H, In = (size_t)L->ni, E = (size_t)L->n_exp, K = (size_t)L->top_k;
    float *logit = graft__malloc(M * E * sizeof(float)), *wt = graft__malloc(M * K * sizeof(float)), *y = graft__malloc(M * H * sizeof(float));
    float *xe = graft__malloc(M * H * sizeof(float));
    int *sel = graft__malloc(M * K * sizeof(int));
    size_t *rows = graft__malloc(M * sizeof(size_t));
    float *rw = graft__malloc(M * sizeof(float));
    int rc = GRAFT_OK;
    if (!logit || !wt || !y || !xe || !sel || !rows || !rw) { rc = graft_err_set(err, GRAFT_E_NOMEM, L->name, NULL, 0, "out of memory"); goto out; }
    struct lin jr = {h, M, H, &ly->router, logit, E, NULL, false, wbuf, ybuf, NULL, NULL, NULL, NULL, NULL, 0, NULL};
    if ((rc = linear(L, &jr, err))) goto out;
    for (size_t m = 0; m < M; m++) {
        float *r = logit + m * E, mx = -INFINITY, sum = 0;
        for (size_t e = 0; e < E; e++) mx = r[e] > mx ? r[e] : mx;
        for (size_t e = 0; e < E; e++) sum += (r[e] = expf(r[e] - mx));
        for (size_t e = 0; e < E; e++) r[e] /= sum;
        float tot = 0;
        for (size_t k = 0; k < K; k++) { // k-th largest, lower index first among equals
            int best = -1;
            for (size_t e = 0; e < E; e++) {
                bool taken = false;
                for (size_t j = 0; j < k; j++) taken |= sel[m * K + j] == (int)e;
                if (!taken && (best < 0 || r[e] > r[best])) best = (int)e;
            }
            sel[m * K + k] = best, wt[m * K + k] = r[best], tot += r[best];
        }
        for (size_t k = 0; k < K; k++) wt[m * K + k] /= tot;
    }
    for (size_t e = 0; e < E && !rc; e++) {
        size_t n = 0;
        for (size_t m = 0; m < M; m++)
            for (size_t k = 0; k < K; k++)
                if (sel[m * K + k] == (int)e) rows[n] = m, rw[n] = wt[m * K + k], n++;
        if (!n) continue;
        for (size_t i = 0; i < n; i++) memcpy(xe + i * H, h + rows[i] * H, H * sizeof(float));
        struct lin j1 = {xe, n, H, &ly->w1[e], g, In, NULL, false, wbuf, ybuf, NULL, NULL, NULL, NULL, NULL, 0, NULL}, j3 = j1;
        j3.W = &ly->w3[e], j3.Y = u;
        if ((rc = linear(L, &j1, err)) || (rc = linear(L, &j3, err))) break;
        if ((rc = swiglu(L, g, u, n * In, err))) break;
        struct lin j2 = {g, n, In, &ly->w2[e], y, H, NULL, false, wbuf, ybuf, NULL, NULL, NULL, NULL, NULL, 0, NULL};
        if ((rc = linear(L, &j2, err))) break;
        for (size_t i = 0; i < n; i++)
            for (size_t c = 0; c < H; c++) x[rows[i] * H + c] += rw[i] * y[i * H + c];
    }
out:
    graft__free(logit), graft__free(wt), graft__free(y), graft__free(xe), graft__free(sel), graft__free(rows), graft__free(rw);
    return rc;
}

// ---- statistics --------------------------------------------------------------------------------------

static int stats_new(const struct graft_llama *L, enum graft_collect what, size_t cap, struct graft_llama_stats **out, struct graft_err *err);

int graft_llama_stats_new(const struct graft_llama *L, enum graft_collect what, struct graft_llama_stats **out, struct graft_err *err) {
    if (what == GRAFT_COLLECT_MLP_ROWS) return graft_err_set(err, GRAFT_E_USAGE, L->name, NULL, 0, "rows are collected by graft_llama_stats_new_rows");
    return stats_new(L, what, 0, out, err);
}

int graft_llama_stats_new_rows(const struct graft_llama *L, size_t max_tokens, struct graft_llama_stats **out, struct graft_err *err) {
    if (max_tokens < 1 || max_tokens > ((size_t)1 << 24)) return graft_err_set(err, GRAFT_E_USAGE, L->name, NULL, 0, "max_tokens must be in 1…2^24");
    return stats_new(L, GRAFT_COLLECT_MLP_ROWS, max_tokens, out, err);
}

static int stats_new(const struct graft_llama *L, enum graft_collect what, size_t cap, struct graft_llama_stats **out, struct graft_err *err) {
    *out = NULL;
    if (L->n_exp) return graft_err_set(err, GRAFT_E_USAGE, L->name, NULL, 0, "statistics of mixture-of-experts layers are not collected (dense models only)");
    struct graft_llama_stats *s = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    s->what = what, s->L = L->nl, s->fused = L->fused, s->cap = cap;
    memcpy(s->pre, L->pre, sizeof s->pre);
    s->dim[0] = s->dim[2] = (size_t)L->H, s->dim[1] = (size_t)L->nh * L->hd, s->dim[3] = (size_t)L->ni, s->hd = L->hd;
    if (what == GRAFT_COLLECT_IMPORTANCE) s->dim[1] = (size_t)L->nh;
    if (!(s->acc = graft__calloc((size_t)L->nl * 4, sizeof *s->acc))) goto nomem;
    if (what == GRAFT_COLLECT_MLP_ROWS) {
        if (!(s->rows = graft__calloc((size_t)L->nl * 4, sizeof *s->rows)) || !(s->used = graft__calloc((size_t)L->nl * 4, sizeof *s->used))) goto nomem;
        for (int l = 0; l < L->nl; l++)
            for (int w = 2; w < 4; w++)
                if (!(s->rows[l * 4 + w] = graft__malloc((s->cap ? s->cap : 1) * s->dim[w] * sizeof(float)))) goto nomem;
        *out = s;
        return GRAFT_OK;
    }
    for (int l = 0; l < L->nl; l++)
        for (int w = 0; w < 4; w++) {
            size_t d = s->dim[w], n = what == GRAFT_COLLECT_GRAM ? d * d : d;
            if (!(s->acc[l * 4 + w] = graft__calloc(n, sizeof(double)))) goto nomem;
        }
    *out = s;
    return GRAFT_OK;
nomem:
    graft_llama_stats_free(s);
    return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for the statistics (Gram matrices take in² doubles per linear input)");
}

void graft_llama_stats_free(struct graft_llama_stats *s) {
    if (!s) return;
    if (s->acc)
        for (int i = 0; i < s->L * 4; i++) graft__free(s->acc[i]);
    if (s->rows)
        for (int i = 0; i < s->L * 4; i++) graft__free(s->rows[i]);
    graft__free(s->acc), graft__free(s->rows), graft__free(s->used);
    graft__free(s);
}

// Add the M rows of X (an input of linear group `which` of `layer`). tmp: d × d floats (Gram).
static void stats_add(struct graft_llama_stats *s, int layer, int which, const float *X, size_t M, float *tmp) {
    double *acc = s->acc[layer * 4 + which];
    size_t d = s->dim[which];
    if (s->what == GRAFT_COLLECT_MLP_ROWS) {
        size_t *u = &s->used[layer * 4 + which], n = s->cap - *u < M ? s->cap - *u : M;
        if (which < 2 || !n) return;
        memcpy(s->rows[layer * 4 + which] + *u * d, X, n * d * sizeof(float));
        *u += n;
        return;
    }
    if (s->what == GRAFT_COLLECT_IMPORTANCE) {
        size_t hd = which == 1 ? (size_t)s->hd : 1, w = d * hd; // o_proj's input: per head, its output's 2-norm
        for (size_t m = 0; m < M; m++)
            for (size_t i = 0; i < d; i++) {
                const float *x = X + m * w + i * hd;
                double a = 0;
                if (hd == 1) a = fabs((double)x[0]);
                else {
                    for (size_t j = 0; j < hd; j++) a += (double)x[j] * x[j];
                    a = sqrt(a);
                }
                acc[i] += a;
            }
        return;
    }
    if (s->what == GRAFT_COLLECT_ACT_NORM) {
        for (size_t m = 0; m < M; m++)
            for (size_t i = 0; i < d; i++) acc[i] += (double)X[m * d + i] * X[m * d + i];
        return;
    }
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)M, 1.0f, X, (int)d, 0.0f, tmp, (int)d);
    for (size_t i = 0; i < d; i++)
        for (size_t j = i; j < d; j++) acc[i * d + j] += tmp[i * d + j];
}

const float *graft_llama_stats_rows(const struct graft_llama_stats *s, int layer, int which, size_t *n_tokens, size_t *dim) {
    if (!s || s->what != GRAFT_COLLECT_MLP_ROWS || layer < 0 || layer >= s->L || which < 2 || which > 3) return NULL;
    *n_tokens = s->used[layer * 4 + which], *dim = s->dim[which];
    return s->rows[layer * 4 + which];
}

const double *graft_llama_stats_sums(const struct graft_llama_stats *s, int layer, int which, size_t *n) {
    if (!s || s->what == GRAFT_COLLECT_GRAM || s->what == GRAFT_COLLECT_MLP_ROWS || layer < 0 || layer >= s->L || which < 0 || which > 3) return NULL;
    *n = s->dim[which];
    return s->acc[layer * 4 + which];
}

int graft_llama_stats_save(const struct graft_llama_stats *s, const char *path, uint64_t n_tokens, struct graft_err *err) {
    if (s->what != GRAFT_COLLECT_GRAM && s->what != GRAFT_COLLECT_ACT_NORM) return graft_err_set(err, GRAFT_E_USAGE, path, NULL, 0, "only gram and act-norm statistics are saved");
    static const char *const split[4][3] = {{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, {"self_attn.o_proj"},
                                            {"mlp.gate_proj", "mlp.up_proj"}, {"mlp.down_proj"}};
    static const char *const fused[4][3] = {{"self_attn.qkv_proj"}, {"self_attn.o_proj"}, {"mlp.gate_up_proj"}, {"mlp.down_proj"}};
    const char *const (*lin)[3] = s->fused ? fused : split;
    bool gram = s->what == GRAFT_COLLECT_GRAM;
    struct graft_writer_params wp = graft_writer_default_params();
    wp.flags = GRAFT_WRITER_SINGLE_FILE | GRAFT_WRITER_FORCE;
    struct graft_writer *w;
    int rc = graft_writer_open(path, &wp, &w, err);
    if (rc) return rc;
    char nm[160], num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)n_tokens);
    rc = graft_writer_set_meta(w, "graft_statistics", gram ? "gram" : "act-norm", err);
    if (!rc) rc = graft_writer_set_meta(w, "graft_tokens", num, err);
    float *row = NULL;
    // The writer plans the whole file first: one pass declares, the second writes.
    for (int pass = 0; pass < 2 && !rc; pass++) {
        long id = 0;
        if (pass == 1 && (rc = graft_writer_layout(w, err))) break;
        for (int l = 0; l < s->L && !rc; l++)
            for (int k = 0; k < 4 && !rc; k++)
                for (int n = 0; n < 3 && lin[k][n] && !rc; n++, id++) {
                    size_t d = s->dim[k];
                    snprintf(nm, sizeof nm, "%slayers.%d.%s.weight", s->pre, l, lin[k][n]);
                    if (pass == 0) {
                        uint64_t ne[2] = {d, d};
                        long r = graft_writer_add_tensor(w, nm, strlen(nm), GRAFT_DTYPE_F32, gram ? 2 : 1, ne, err);
                        if (r < 0) rc = (int)r;
                        continue;
                    }
                    const double *acc = s->acc[l * 4 + k];
                    float *nr = graft__realloc(row, d * sizeof(float));
                    if (!nr) { rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory"); break; }
                    row = nr;
                    for (size_t i = 0; i < (gram ? d : 1) && !rc; i++) {
                        for (size_t j = 0; j < d; j++) row[j] = (float)(gram ? (j >= i ? acc[i * d + j] : acc[j * d + i]) : acc[j]);
                        rc = graft_writer_write(w, id, i * d * sizeof(float), row, d * sizeof(float), err);
                    }
                }
    }
    graft__free(row);
    if (!rc) rc = graft_writer_commit(w, err);
    graft_writer_free(w);
    return rc;
}

// ---- the forward pass --------------------------------------------------------------------------------

static float **thread_bufs(int n, size_t each) {
    float **b = graft__calloc((size_t)n, sizeof *b);
    if (!b) return NULL;
    for (int i = 0; i < n; i++)
        if (!(b[i] = graft__malloc(each * sizeof(float)))) {
            for (int j = 0; j < i; j++) graft__free(b[j]);
            graft__free(b);
            return NULL;
        }
    return b;
}
static void free_bufs(float **b, int n) {
    if (!b) return;
    for (int i = 0; i < n; i++) graft__free(b[i]);
    graft__free(b);
}

// The forward pass; with `capture` set, each layer's input (the residual stream) is copied to
// capture[l · M · H …] and the head is skipped.
static int run(struct graft_llama *L, const int32_t *tokens, int n_seq, int len, const int *score_from, double *nll, uint64_t *n_scored,
               float *logits, struct graft_llama_stats *stats, float *capture, bool capture_final, struct graft_err *err) {
    if (n_seq < 1 || len < 1) return graft_err_set(err, GRAFT_E_USAGE, L->name, NULL, 0, "nothing to evaluate");
    size_t T = (size_t)len, M = (size_t)n_seq * T, H = (size_t)L->H, In = (size_t)L->ni, qd = (size_t)L->nh * L->hd, kd = (size_t)L->nkv * L->hd;
    for (size_t m = 0; m < M; m++)
        if (tokens[m] < 0 || tokens[m] >= L->V)
            return graft_err_set(err, GRAFT_E_USAGE, L->name, NULL, 0, "token id %ld is outside the vocabulary (%d)", (long)tokens[m], L->V);
    size_t maxk = H > In ? H : In, maxk2 = qd > maxk ? qd : maxk;
    size_t nblk = ((size_t)L->V + NB - 1) / NB;
    float *x = graft__malloc(M * H * sizeof(float)), *h = graft__malloc(M * maxk2 * sizeof(float)), *q = graft__malloc(M * qd * sizeof(float));
    float *k = graft__malloc(M * kd * sizeof(float)), *v = graft__malloc(M * kd * sizeof(float)), *att = graft__malloc(M * qd * sizeof(float));
    float *g = graft__malloc(M * In * sizeof(float)), *u = graft__malloc(M * In * sizeof(float)), *tl = graft__malloc(M * sizeof(float));
    double *bmax = graft__malloc(nblk * M * sizeof(double)), *bsum = graft__malloc(nblk * M * sizeof(double));
    int32_t *target = graft__malloc(M * sizeof(int32_t));
    float *gtmp = stats && stats->what == GRAFT_COLLECT_GRAM ? graft__malloc(maxk2 * maxk2 * sizeof(float)) : NULL;
    int nt = L->n_threads;
    float **wbuf = thread_bufs(nt, NB * maxk2), **ybuf = thread_bufs(nt, M * NB), **sbuf = thread_bufs(nt, T * T);
    int rc = GRAFT_OK;
    if (!x || !h || !q || !k || !v || !att || !g || !u || !tl || !bmax || !bsum || !target || !wbuf || !ybuf || !sbuf ||
        (stats && stats->what == GRAFT_COLLECT_GRAM && !gtmp)) {
        rc = graft_err_set(err, GRAFT_E_NOMEM, L->name, NULL, 0, "out of memory for the activations of %zu tokens", M);
        goto out;
    }
    graft__blas_single_thread();
    for (size_t m = 0; m < M; m++) rows_to_f32(&L->embed, (size_t)tokens[m], 1, x + m * H);
    if (L->embed_scale != 1.0f)
        for (size_t i = 0; i < M * H; i++) x[i] *= L->embed_scale;
    // where the residual stream first holds NaN/Inf (-1: the embeddings), to name it if the result is
    // not finite; one scan of M × H floats per layer until found, nothing beside the GEMMs
    int bad_at = graft_count_nonfinite(GRAFT_DTYPE_F32, x, M * H, NULL) ? -1 : -2;
    for (int l = 0; l < L->nl && !rc; l++) {
        const struct layer *ly = &L->layers[l];
        if (L->skip && L->skip[l]) { // as if the layer were gone: its input passes through
            if (capture) memcpy(capture + (size_t)l * M * H, x, M * H * sizeof(float));
            continue;
        }
        if (l > 0 && bad_at == -2 && graft_count_nonfinite(GRAFT_DTYPE_F32, x, M * H, NULL)) bad_at = l - 1;
        if (capture) memcpy(capture + (size_t)l * M * H, x, M * H * sizeof(float));
        rmsnorm(x, ly->g_in, L->eps, M, H, h);
        if (stats) stats_add(stats, l, 0, h, M, gtmp);
        struct lin jq = {h, M, H, &ly->q, q, qd, ly->bq, false, wbuf, ybuf, NULL, NULL, NULL, NULL, NULL, 0, NULL}, jk = jq, jv = jq;
        jk.W = &ly->k, jk.Y = k, jk.ldy = kd, jk.bias = ly->bk;
        jv.W = &ly->v, jv.Y = v, jv.ldy = kd, jv.bias = ly->bv;
        if ((rc = linear(L, &jq, err)) || (rc = linear(L, &jk, err)) || (rc = linear(L, &jv, err))) break;
        if (ly->qn) rmsnorm(q, ly->qn, L->eps, M * (size_t)L->nh, (size_t)L->hd, q); // Qwen3: per head, before RoPE (in place)
        if (ly->kn) rmsnorm(k, ly->kn, L->eps, M * (size_t)L->nkv, (size_t)L->hd, k);
        const float *inv = L->inv_freq_long && T > (size_t)L->rope_orig ? L->inv_freq_long : ly->inv; // LongRoPE: by window length
        rope(L, inv, q, M, T, L->nh);
        rope(L, inv, k, M, T, L->nkv);
        struct attn a = {L, q, k, v, att, T, sbuf, ly->sliding};
        if ((rc = graft_pool_run(nt, (size_t)n_seq * L->nh, attn_item, &a, NULL, NULL, err))) break;
        if (stats) stats_add(stats, l, 1, att, M, gtmp);
        if (L->gemma) { // sandwich norms: x += norm(attn), h = norm(x), x += norm(mlp(h))
            struct lin jo = {att, M, qd, &ly->o, h, H, ly->bo, false, wbuf, ybuf, NULL, NULL, NULL, NULL, NULL, 0, NULL};
            if ((rc = linear(L, &jo, err))) break;
            rmsnorm(h, ly->g_post, L->eps, M, H, h);
            for (size_t i = 0; i < M * H; i++) x[i] += h[i];
            rmsnorm(x, ly->g_preff, L->eps, M, H, h);
            if (stats) stats_add(stats, l, 2, h, M, gtmp);
            struct lin jg = {h, M, H, &ly->gate, g, In, NULL, false, wbuf, ybuf, NULL, NULL, NULL, NULL, NULL, 0, NULL}, ju = jg;
            ju.W = &ly->up, ju.Y = u;
            if ((rc = linear(L, &jg, err)) || (rc = linear(L, &ju, err)) || (rc = swiglu(L, g, u, M * In, err))) break;
            if (stats) stats_add(stats, l, 3, g, M, gtmp);
            struct lin jd = {g, M, In, &ly->down, h, H, NULL, false, wbuf, ybuf, NULL, NULL, NULL, NULL, NULL, 0, NULL};
            if ((rc = linear(L, &jd, err))) break;
            rmsnorm(h, ly->g_postff, L->eps, M, H, h);
            for (size_t i = 0; i < M * H; i++) x[i] += h[i];
            continue;
        }
        bool scaled = L->res_scale != 1.0f; // MiniCPM: the branch into h, then x += c·h
        struct lin jo = {att, M, qd, &ly->o, scaled ? h : x, H, ly->bo, !scaled, wbuf, ybuf, NULL, NULL, NULL, NULL, NULL, 0, NULL};
        if ((rc = linear(L, &jo, err))) break;
        if (scaled)
            for (size_t i = 0; i < M * H; i++) x[i] += L->res_scale * h[i];
        rmsnorm(x, ly->g_post, L->eps, M, H, h);
        if (L->n_exp) {
            if ((rc = moe_block(L, ly, h, M, x, g, u, wbuf, ybuf, err))) break;
            continue;
        }
        if (stats) stats_add(stats, l, 2, h, M, gtmp);
        struct lin jg = {h, M, H, &ly->gate, g, In, NULL, false, wbuf, ybuf, NULL, NULL, NULL, NULL, NULL, 0, NULL}, ju = jg;
        ju.W = &ly->up, ju.Y = u;
        if ((rc = linear(L, &jg, err)) || (rc = linear(L, &ju, err))) break;
        if ((rc = swiglu(L, g, u, M * In, err))) break;
        if (stats) stats_add(stats, l, 3, g, M, gtmp);
        struct lin jd = {g, M, In, &ly->down, scaled ? h : x, H, NULL, !scaled, wbuf, ybuf, NULL, NULL, NULL, NULL, NULL, 0, NULL};
        if ((rc = linear(L, &jd, err))) break;
        if (scaled)
            for (size_t i = 0; i < M * H; i++) x[i] += L->res_scale * h[i];
    }
    if (!rc && capture && capture_final) memcpy(capture + (size_t)L->nl * M * H, x, M * H * sizeof(float)); // the last layer's output
    if (rc || capture) goto out;
    if (bad_at == -2 && graft_count_nonfinite(GRAFT_DTYPE_F32, x, M * H, NULL)) bad_at = L->nl - 1;
    rmsnorm(x, L->g_final, L->eps, M, H, h);
    if (L->logit_scale != 1.0f)
        for (size_t i = 0; i < M * H; i++) h[i] *= L->logit_scale;
    for (size_t m = 0; m < M; m++) {
        size_t s = m / T, i = m % T;
        bool scored = i + 1 < T && (!score_from || (int)(i + 1) >= score_from[s]);
        target[m] = scored ? tokens[m + 1] : -1;
        tl[m] = 0;
    }
    struct lin jh = {h, M, H, &L->head, NULL, 0, NULL, false, wbuf, ybuf, target, bmax, bsum, tl, logits, L->final_cap, NULL};
    if ((rc = linear(L, &jh, err))) goto out;
    double sum = 0;
    uint64_t cnt = 0;
    for (size_t m = 0; m < M; m++) {
        if (target[m] < 0) continue;
        double mx = -INFINITY, se = 0;
        for (size_t b = 0; b < nblk; b++) mx = bmax[b * M + m] > mx ? bmax[b * M + m] : mx;
        for (size_t b = 0; b < nblk; b++) se += bsum[b * M + m] * exp(bmax[b * M + m] - mx);
        sum += mx + log(se) - tl[m];
        cnt++;
    }
    if (!isfinite(sum)) {
        char where[96];
        if (bad_at == -1) snprintf(where, sizeof where, "in the embeddings");
        else if (bad_at >= 0) snprintf(where, sizeof where, "in layer %d (%slayers.%d)", bad_at, L->pre, bad_at);
        else snprintf(where, sizeof where, "in the final norm or lm_head");
        rc = graft_err_set(err, GRAFT_E_NONFINITE, L->name, NULL, 0, "the log-likelihood is not finite: activations first became NaN or infinite %s", where);
        goto out;
    }
    *nll += sum, *n_scored += cnt;
out:
    graft__free(x), graft__free(h), graft__free(q), graft__free(k), graft__free(v), graft__free(att), graft__free(g), graft__free(u);
    graft__free(tl), graft__free(bmax), graft__free(bsum), graft__free(target), graft__free(gtmp);
    free_bufs(wbuf, nt), free_bufs(ybuf, nt), free_bufs(sbuf, nt);
    return rc;
}

int graft_llama_forward(struct graft_llama *L, const int32_t *tokens, int n_seq, int len, const int *score_from, double *nll,
                        uint64_t *n_scored, float *logits, struct graft_llama_stats *stats, struct graft_err *err) {
    return run(L, tokens, n_seq, len, score_from, nll, n_scored, logits, stats, NULL, false, err);
}

int graft_llama_layer_inputs(struct graft_llama *L, const int32_t *tokens, int len, float *out, struct graft_err *err) {
    return run(L, tokens, 1, len, NULL, NULL, NULL, NULL, NULL, out, false, err);
}

int graft_llama_skip_layers(struct graft_llama *L, const bool *skip, struct graft_err *err) {
    if (!skip) { graft__free(L->skip), L->skip = NULL; return GRAFT_OK; }
    if (!L->skip && !(L->skip = graft__malloc((size_t)L->nl * sizeof *L->skip))) return graft_err_set(err, GRAFT_E_NOMEM, L->name, NULL, 0, "out of memory");
    memcpy(L->skip, skip, (size_t)L->nl * sizeof *L->skip);
    return GRAFT_OK;
}

int graft_llama_hidden_states(struct graft_llama *L, const int32_t *tokens, int len, float *out, struct graft_err *err) {
    return run(L, tokens, 1, len, NULL, NULL, NULL, NULL, NULL, out, true, err);
}
