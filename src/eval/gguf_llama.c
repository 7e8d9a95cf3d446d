// The evaluator over a GGUF file (graft_llama_open_gguf): a transformers config.json rebuilt from the
// GGUF metadata (graft_gguf_hf_config), tensors found by llama.cpp's names, q/k rows of `llama` files un-permuted into f32
// copies (the converter's permutation is exact, so F32 files compute what the HF folder does).
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
    uint64_t head_dim;
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
    char *cfg = NULL;
    struct graft_gguf_heads h;
    int rc = graft_gguf_hf_config(g, &cfg, &h, err); // llama3 rope_freqs come back as config.json's rope_scaling
    if (rc) return rc;
    struct src *s = graft__calloc(1, sizeof *s);
    if (!s) { free(cfg); return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }
    *s = (struct src){.g = g, .permuted = h.permuted, .head_dim = h.head_dim};
    rc = graft_llama_new(cfg, lookup, s, "GGUF model", n_threads, out, err);
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
