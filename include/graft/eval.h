// graft — a Llama-family forward pass on the CPU (Llama, Mistral, Qwen2): perplexity and the
// activation statistics other methods need (Gram matrices for RegMean/MaTS, input norms for Wanda).
//
// Weights stay where they are (a mapped file, or memory the caller owns) in F32, F16 or BF16 and are
// converted to f32 one block of rows at a time, right before the sgemm that uses them; the math is
// float32 throughout (log-sum-exp in double). Work is split into fixed blocks, so results are
// bit-identical for any thread count.
#ifndef GRAFT_EVAL_H
#define GRAFT_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "dtype.h"
#include "model.h"
#include "status.h"
#include "dist.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_llama;

// Where a tensor's bytes are: return false when the model has no tensor of that name.
struct graft_tensor_ref {
    const void      *data;
    enum graft_dtype dtype;
    int              n_dims;
    uint64_t         ne[2];     // HF order: [rows, cols]
    uint32_t         ggml_type; // a quantized ggml type (Q8_0, Q4_0, …) the data is stored in; 0: dtype says
};
typedef bool (*graft_tensor_lookup)(void *ctx, const char *name, struct graft_tensor_ref *out);

// Build a forward pass from config.json text and a tensor lookup (`name` is used in messages). The
// tensors must stay valid until graft_llama_free(). Errors: GRAFT_E_FORMAT (unsupported architecture
// or config, missing tensor, wrong shape or dtype), GRAFT_E_NOMEM.
int  graft_llama_new(const char *config_json, graft_tensor_lookup lookup, void *ctx, const char *name, int n_threads,
                     struct graft_llama **out, struct graft_err *err);
// The same over an open model (its mapping).
int  graft_llama_open(const struct graft_model *m, int n_threads, struct graft_llama **out, struct graft_err *err);
// Over a GGUF file (architectures llama and qwen2): config from its metadata, tensors by llama.cpp's
// names, q/k rows un-permuted (decoded to f32 once), quantized matrices decoded block by block.
struct graft_gguf;
int  graft_llama_open_gguf(const struct graft_gguf *g, int n_threads, struct graft_llama **out, struct graft_err *err);
void graft_llama_free(struct graft_llama *L); // NULL-safe

int32_t graft_llama_vocab(const struct graft_llama *L);
int     graft_llama_n_layers(const struct graft_llama *L);
int     graft_llama_hidden(const struct graft_llama *L);
uint64_t graft_llama_n_params(const struct graft_llama *L); // weights a token passes through (for FLOP counts)
// Floating-point operations of one graft_llama_forward call: 2 per weight per token, plus the
// attention products (computed over full len × len score matrices).
double   graft_llama_flops(const struct graft_llama *L, int n_seq, int len);

// What to collect while running (graft_llama_collect_new).
// GRAFT_COLLECT_IMPORTANCE: Σ_tokens |x_j| of every linear input, except o_proj's, which holds each
// attention head's Σ_tokens ‖output‖₂ (Minitron's activation importance; graft_llama_stats_sums reads
// it, graft_llama_stats_save does not write it).
// GRAFT_COLLECT_MLP_ROWS: the first max_tokens rows of every MLP's input and of its down_proj's input
// (graft_llama_stats_rows; graft_llama_stats_new_rows).
enum graft_collect { GRAFT_COLLECT_NONE, GRAFT_COLLECT_GRAM, GRAFT_COLLECT_ACT_NORM, GRAFT_COLLECT_IMPORTANCE, GRAFT_COLLECT_MLP_ROWS };
struct graft_llama_stats;
int  graft_llama_stats_new(const struct graft_llama *L, enum graft_collect what, struct graft_llama_stats **out, struct graft_err *err);
void graft_llama_stats_free(struct graft_llama_stats *s);
// Write the statistics as safetensors (F32), one tensor per linear weight name: `gram` [in, in] =
// Σ_tokens x xᵀ, or `act-norm` [in] = Σ_tokens x_j² (docs/eval.md). Atomic like every output.
int  graft_llama_stats_new_rows(const struct graft_llama *L, size_t max_tokens, struct graft_llama_stats **out, struct graft_err *err);
// GRAFT_COLLECT_MLP_ROWS: layer's MLP inputs (which = 2, hidden wide) or down_proj inputs (3,
// intermediate wide), row-major; *n_tokens rows kept so far, *dim their width. NULL otherwise.
const float *graft_llama_stats_rows(const struct graft_llama_stats *s, int layer, int which, size_t *n_tokens, size_t *dim);
// The accumulated sums of `layer`'s input `which` (0 attention input, 1 o_proj input, 2 MLP input,
// 3 down_proj input) for GRAFT_COLLECT_ACT_NORM / IMPORTANCE; *n: their count. NULL when out of range.
const double *graft_llama_stats_sums(const struct graft_llama_stats *s, int layer, int which, size_t *n);
int  graft_llama_stats_save(const struct graft_llama_stats *s, const char *path, uint64_t n_tokens, struct graft_err *err);

// Run `n_seq` sequences of `len` tokens each (tokens[s·len + i]). For every position i < len − 1 with
// i + 1 ≥ score_from[s] (score_from NULL: all), adds −log p(tokens[i+1] | tokens[≤ i]) to *nll and
// one to *n_scored. `logits` (may be NULL) receives all n_seq·len·vocab logits. `stats` (may be NULL)
// accumulates the inputs of every linear layer over all tokens.
int graft_llama_forward(struct graft_llama *L, const int32_t *tokens, int n_seq, int len, const int *score_from, double *nll,
                        uint64_t *n_scored, float *logits, struct graft_llama_stats *stats, struct graft_err *err);

// The input of every decoder layer (the residual stream, transformers' hidden_states[l]) for one
// sequence: out[l · len · hidden + i · hidden + j], n_layers × len × hidden floats.
int graft_llama_layer_inputs(struct graft_llama *L, const int32_t *tokens, int len, float *out, struct graft_err *err);
// The same and, after them, the last layer's output (before the final norm): (n_layers + 1) × len ×
// hidden floats, transformers' hidden_states[0 … L] without the final norm on the last.
int graft_llama_hidden_states(struct graft_llama *L, const int32_t *tokens, int len, float *out, struct graft_err *err);
// Leave layers out of every later forward pass (skip[l], n_layers entries; NULL: none), as a model
// without them would compute (used to measure what dropping layers costs).
int graft_llama_skip_layers(struct graft_llama *L, const bool *skip, struct graft_err *err);

// How products with BF16 weights run in every later forward pass: GRAFT_MATMUL_F32 (the default) widens
// the weights and multiplies in f32, as transformers does in float32; GRAFT_MATMUL_BF16 rounds the
// activations to bf16 first (to nearest even) and accumulates in f32, as llama.cpp and a bfloat16
// transformers run do — about twice as fast on CPUs with AVX512-BF16, logits within bf16 rounding of the
// f32 route. Other weight dtypes are not affected.
enum graft_matmul { GRAFT_MATMUL_F32, GRAFT_MATMUL_BF16 };
void graft_llama_set_matmul(struct graft_llama *L, enum graft_matmul mode);

// Perplexity over documents (token ids, no BOS): windows of `ctx` tokens, BOS first when bos ≥ 0,
// never spanning two documents; with stride > 0 they slide by `stride` tokens and only tokens not
// scored before count. Consecutive windows of equal length run `batch` at a time.
struct graft_ppl_opts {
    int      ctx, stride, batch;
    int32_t  bos;          // BOS id, or -1
    size_t   max_tokens;   // per document, 0 = all
    FILE    *dump_logits;  // optional: f32 logits [window][position][vocab]
    struct graft_llama_stats *stats; // optional
    const volatile int *cancel;      // optional: set nonzero by another thread, stops before the next batch (GRAFT_E_CANCELLED)
    // Several processes (MPI ranks, graft/dist.h) share the batches of windows (batch j on rank
    // j mod size), or NULL; every rank gets the single-process result bit for bit (the batches' sums
    // added in batch order). Not with dump_logits or stats.
    const struct graft_dist *dist;
};
struct graft_ppl_result {
    double   nll;          // sum of −log p over scored tokens
    uint64_t scored, positions, windows;
    double   flop, seconds; // forward passes only
};
int graft_eval_ppl(struct graft_llama *L, const int32_t *const *docs, const size_t *lens, int n_docs, const struct graft_ppl_opts *o,
                   struct graft_ppl_result *r, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
