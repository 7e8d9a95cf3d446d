// Internal to the evaluator and its callers in graft (graft evolve): the scoring windows.
#ifndef GRAFT_EVAL_IMPL_H
#define GRAFT_EVAL_IMPL_H
#include <stddef.h>
#include <stdint.h>
#include "graft/eval.h"

// A window as graft_eval_ppl cuts the documents: n tokens from src (after the BOS when o->bos ≥ 0),
// positions from score_from on scored, of document doc.
struct graft__window { const int32_t *src; size_t n; int score_from, doc; };
// Every window of the documents under o (ctx, stride, bos, max_tokens), in document order; *out is
// graft__malloc'd (graft__free it). Errors: GRAFT_E_USAGE (ctx too short), GRAFT_E_NOMEM.
int graft__ppl_windows(const int32_t *const *docs, const size_t *lens, int n_docs, const struct graft_ppl_opts *o, struct graft__window **out,
                       size_t *n_out, struct graft_err *err);

// bf16 products (bf16gemm.c, graft_llama_set_matmul): X (M × K f32) rounded to bf16 into Xb, whose
// rows are padded with zeros to graft__bf16_rows_padded(M); graft__bf16_gemm: Y[M × N] (+)= Xb · Wᵀ
// for N ≤ 256 rows W of K (even) bf16 values as stored, pack ≥ (N + 63)·K/2 words of scratch; only
// where graft__bf16_gemm_cpu() (AVX512-BF16).
size_t graft__bf16_rows_padded(size_t M);
void   graft__bf16_round_rows(const float *X, size_t M, size_t K, uint16_t *Xb);
bool   graft__bf16_gemm_cpu(void);
void   graft__bf16_gemm(size_t M, size_t N, size_t K, const uint16_t *Xb, const void *W, float *Y, size_t ldy, bool accumulate, uint32_t *pack);
#endif
