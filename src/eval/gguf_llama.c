// The evaluator over a GGUF file (graft_llama_open_gguf): a transformers config.json rebuilt from the
// GGUF metadata, tensors found by llama.cpp's names, q/k rows of `llama` files un-permuted into f32
// copies (the converter's permutation is exact, so F32 files compute what the HF folder does).
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graft/eval.h"
#include "graft/gguf.h"
#include "../core/impl.h"

void graft__llama_set_aux(struct graft_llama *L, void *aux, void (*aux_free)(void *));

struct src {
    const struct graft_gguf *g;
    bool permuted;          // llama: q/k rows were permuted by the converter
    uint64_t n_head, n_kv, head_dim;
    float **own;            // un-permuted q/k copies
    size_t n_own;
    bool failed;            // out of memory while un-permuting
};

static void src_free(void *p) {
    struct src *s = p;
    if (!s) return;
    for (size_t i = 0; i < s->n_own; i++) graft__free(s->own[i]);
    graft__free(s->own), graft__free(s);
}

static bool lookup(void *ctx, const char *name, struct graft_tensor_ref *out) {
    struct src *s = ctx;
    char gn[128];
    if (!graft_gguf_hf_name(name, gn, sizeof gn)) return false;
    const struct graft_gguf_tensor *t = graft_gguf_find(s->g, gn);
    if (!t || t->n_dims < 1 || t->n_dims > 2) return false;
    out->n_dims = (int)t->n_dims;
    out->ne[0] = t->n_dims == 2 ? t->ne[1] : t->ne[0], out->ne[1] = t->n_dims == 2 ? t->ne[0] : 1;
    out->data = graft_gguf_data(s->g, t), out->dtype = GRAFT_DTYPE_F32, out->ggml_type = 0;
    switch (t->type) {
    case GRAFT_GGML_F32: break;
    case GRAFT_GGML_F16: out->dtype = GRAFT_DTYPE_F16; break;
    case GRAFT_GGML_BF16: out->dtype = GRAFT_DTYPE_BF16; break;
    default: out->ggml_type = t->type; break;
    }
    bool q = strstr(gn, ".attn_q.") != NULL, k = strstr(gn, ".attn_k.") != NULL;
    if (!s->permuted || (!q && !k)) return true;
    // un-permute: GGUF row r holds HF row graft_gguf_permuted_row(r, d)
    uint64_t rows = out->ne[0], cols = out->ne[1], n = rows * cols;
    float *dec = graft__malloc((size_t)n * sizeof *dec), *hf = graft__malloc((size_t)n * sizeof *hf);
    float **no = graft__realloc(s->own, (s->n_own + 1) * sizeof *no);
    if (no) s->own = no;
    if (!dec || !hf || !no || !graft_ggml_to_f32(t->type, out->data, dec, n) || rows % s->head_dim) {
        graft__free(dec), graft__free(hf);
        s->failed = true;
        return false;
    }
    for (uint64_t r = 0; r < rows; r++) memcpy(hf + graft_gguf_permuted_row(r, s->head_dim) * cols, dec + r * cols, (size_t)cols * sizeof *hf);
    graft__free(dec);
    s->own[s->n_own++] = hf;
    out->data = hf, out->dtype = GRAFT_DTYPE_F32, out->ggml_type = 0;
    return true;
}

int graft_llama_open_gguf(const struct graft_gguf *g, int n_threads, struct graft_llama **out, struct graft_err *err) {
    *out = NULL;
    const char *a;
    size_t al;
    char arch[32], key[96];
    if (!graft_gguf_get_str(g, "general.architecture", &a, &al) || al >= sizeof arch)
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "GGUF file without general.architecture");
    memcpy(arch, a, al), arch[al] = 0;
    const char *hf = !strcmp(arch, "llama") ? "LlamaForCausalLM" : !strcmp(arch, "qwen2") ? "Qwen2ForCausalLM" : NULL;
    if (!hf) return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "GGUF architecture '%s': the evaluator runs llama and qwen2", arch);
    if (graft_gguf_find(g, "rope_freqs.weight"))
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, "rope_freqs.weight", 17, "per-frequency RoPE factors (llama3 scaling) are not evaluated from GGUF yet");
    uint64_t H = 0, I = 0, L = 0, nh = 0, nkv = 0, hd = 0, ctx = 2048;
    double eps = 1e-6, theta = 10000.0, factor = 0;
#define U(name, v) (snprintf(key, sizeof key, "%s." name, arch), graft_gguf_get_u64(g, key, &(v)))
#define F(name, v) (snprintf(key, sizeof key, "%s." name, arch), graft_gguf_get_f64(g, key, &(v)))
    if (!U("embedding_length", H) || !U("feed_forward_length", I) || !U("block_count", L) || !U("attention.head_count", nh))
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "GGUF metadata lacks %s.embedding_length, feed_forward_length, block_count or attention.head_count", arch);
    if (!U("attention.head_count_kv", nkv)) nkv = nh;
    if (!U("attention.key_length", hd) && (!U("rope.dimension_count", hd) || !hd)) hd = nh ? H / nh : 0;
    U("context_length", ctx);
    F("attention.layer_norm_rms_epsilon", eps);
    F("rope.freq_base", theta);
    const char *st;
    size_t sl;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    bool linear = graft_gguf_get_str(g, key, &st, &sl) && sl == 6 && !memcmp(st, "linear", 6);
    if (linear) F("rope.scaling.factor", factor);
#undef U
#undef F
    const struct graft_gguf_tensor *emb = graft_gguf_find(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) return graft_err_set(err, GRAFT_E_FORMAT, NULL, "token_embd.weight", 17, "missing or not 2-D");
    json_t *c = json_object();
    json_object_set_new(c, "architectures", json_pack("[s]", hf));
    json_object_set_new(c, "hidden_size", json_integer((json_int_t)H));
    json_object_set_new(c, "intermediate_size", json_integer((json_int_t)I));
    json_object_set_new(c, "num_hidden_layers", json_integer((json_int_t)L));
    json_object_set_new(c, "num_attention_heads", json_integer((json_int_t)nh));
    json_object_set_new(c, "num_key_value_heads", json_integer((json_int_t)nkv));
    json_object_set_new(c, "head_dim", json_integer((json_int_t)hd));
    json_object_set_new(c, "vocab_size", json_integer((json_int_t)emb->ne[1]));
    json_object_set_new(c, "max_position_embeddings", json_integer((json_int_t)ctx));
    json_object_set_new(c, "rms_norm_eps", json_real(eps));
    json_object_set_new(c, "rope_theta", json_real(theta));
    json_object_set_new(c, "hidden_act", json_string("silu"));
    json_object_set_new(c, "tie_word_embeddings", json_boolean(!graft_gguf_find(g, "output.weight")));
    if (linear) json_object_set_new(c, "rope_scaling", json_pack("{s:s, s:f}", "type", "linear", "factor", factor));
    char *cfg = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    struct src *s = graft__calloc(1, sizeof *s);
    if (!cfg || !s) { free(cfg), graft__free(s); return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }
    *s = (struct src){.g = g, .permuted = !strcmp(arch, "llama"), .n_head = nh, .n_kv = nkv, .head_dim = hd};
    int rc = graft_llama_new(cfg, lookup, s, "GGUF model", n_threads, out, err);
    free(cfg);
    if (s->failed) {
        graft_llama_free(*out), *out = NULL;
        graft_err_clear(err);
        rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory un-permuting q/k");
    }
    if (rc) { src_free(s); return rc; }
    graft__llama_set_aux(*out, s, src_free);
    return GRAFT_OK;
}
