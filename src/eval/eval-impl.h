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
#endif
