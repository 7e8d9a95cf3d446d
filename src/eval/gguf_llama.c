// The evaluator over a GGUF file (graft_llama_open_gguf): a transformers config.json rebuilt from the
// GGUF metadata (graft_gguf_hf_config), tensors found by llama.cpp's names (Mixtral's experts as slices of
// the stacked tensors), q/k rows of `llama` files un-permuted (row copies in the file's type) and Gemma's
// 1 + w norms shifted back into f32 copies (both exact, so F32 files compute what the HF folder does).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graft/eval.h"
#include "graft/gguf.h"
#include "../core/impl.h"

void graft__llama_set_aux(struct graft_llama *L, void *aux, void (*aux_free)(void *));

struct src {
    const struct graft_gguf *g;
    struct graft_gguf_heads h; // architecture, q/k permutation, Gemma's 1 + w norms
    float **own;               // un-permuted q/k and w = (1 + w) − 1 norm copies
    size_t n_own;
    bool failed;               // out of memory while un-permuting
};

static void src_free(void *p) {
    struct src *s = p;
    if (!s) return;
    for (size_t i = 0; i < s->n_own; i++) graft__free(s->own[i]);
    graft__free(s->own), graft__free(s);
}

static float *own(struct src *s, uint64_t n) {
    float **no = graft__realloc(s->own, (s->n_own + 1) * sizeof *no);
    float *f = no ? graft__malloc((size_t)n * sizeof *f) : NULL;
    if (no) s->own = no;
    if (!f) return s->failed = true, NULL;
    return s->own[s->n_own++] = f;
}

static bool lookup(void *ctx, const char *name, struct graft_tensor_ref *out) {
    struct src *s = ctx;
    char gn[128];
    int expert;
    if (!graft_gguf_hf_name(s->h.arch, name, gn, sizeof gn, &expert)) return false;
    const struct graft_gguf_tensor *t = graft_gguf_find(s->g, gn);
    if (!t || t->n_dims < 1 || t->n_dims > (expert >= 0 ? 3u : 2u) || (expert >= 0 && (t->n_dims != 3 || (uint64_t)expert >= t->ne[2]))) return false;
    out->n_dims = t->n_dims >= 2 ? 2 : 1;
    out->ne[0] = t->n_dims >= 2 ? t->ne[1] : t->ne[0], out->ne[1] = t->n_dims >= 2 ? t->ne[0] : 1;
    out->data = graft_gguf_data(s->g, t), out->dtype = GRAFT_DTYPE_F32, out->ggml_type = 0;
    if (expert > 0) // one expert's rows of the stacked tensor
        out->data = (const uint8_t *)out->data + (uint64_t)expert * t->ne[1] * (t->ne[0] / graft_ggml_block_size(t->type) * graft_ggml_type_size(t->type));
    switch (t->type) {
    case GRAFT_GGML_F32: break;
    case GRAFT_GGML_F16: out->dtype = GRAFT_DTYPE_F16; break;
    case GRAFT_GGML_BF16: out->dtype = GRAFT_DTYPE_BF16; break;
    default: out->ggml_type = t->type; break;
    }
    uint64_t rows = out->ne[0], cols = out->ne[1], n = rows * cols;
    if (s->h.norm_plus_one && strstr(gn, "norm.weight")) { // the evaluator takes transformers' w
        float *w = own(s, n);
        if (!w || !graft_ggml_to_f32(t->type, out->data, w, n)) return s->failed = true, false;
        for (uint64_t i = 0; i < n; i++) w[i] -= 1.0f;
        out->data = w, out->dtype = GRAFT_DTYPE_F32, out->ggml_type = 0;
        return true;
    }
    bool q = strstr(gn, ".attn_q.") != NULL, k = strstr(gn, ".attn_k.") != NULL;
    if (!s->h.permuted || (!q && !k)) return true;
    // un-permute: GGUF row r holds HF row graft_gguf_permuted_row(r, d). Whole rows are moved in the
    // file's own type (quantized blocks run along a row), so the weights keep their dtype: exact, and
    // `--matmul bf16` sees BF16 q/k as it sees every other BF16 weight.
    // A vector (a bias) in a block-quantized type has no whole rows to move: it is decoded to f32 first.
    if (rows % s->h.head_dim) return s->failed = true, false;
    bool whole = cols % graft_ggml_block_size(t->type) == 0;
    size_t rb = whole ? (size_t)(cols / graft_ggml_block_size(t->type) * graft_ggml_type_size(t->type)) : (size_t)cols * sizeof(float);
    float *hf = own(s, (rows * rb + sizeof(float) - 1) / sizeof(float)), *dec = NULL;
    if (hf && !whole && (!(dec = graft__malloc((size_t)n * sizeof *dec)) || !graft_ggml_to_f32(t->type, out->data, dec, n))) hf = NULL;
    if (!hf) return graft__free(dec), s->failed = true, false;
    const uint8_t *src = whole ? out->data : (const uint8_t *)dec;
    for (uint64_t r = 0; r < rows; r++) memcpy((uint8_t *)hf + graft_gguf_permuted_row(r, s->h.head_dim) * rb, src + r * rb, rb);
    graft__free(dec);
    out->data = hf;
    if (!whole) out->dtype = GRAFT_DTYPE_F32, out->ggml_type = 0;
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
    *s = (struct src){.g = g, .h = h};
    rc = graft_llama_new(cfg, lookup, s, "GGUF model", n_threads, out, err);
    free(cfg);
    if (s->failed) {
        graft_llama_free(*out), *out = NULL;
        graft_err_clear(err);
        rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "cannot decode or copy a q/k matrix or a norm (out of memory, or an undecodable type)");
    }
    if (rc) { src_free(s); return rc; }
    graft__llama_set_aux(*out, s, src_free);
    return GRAFT_OK;
}
