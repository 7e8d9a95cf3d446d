// graft — how related fine-tuned models are: statistics of their task vectors τ_i = θ_i − θ0 against
// a common base, per tensor, per layer and for the whole model (src/ops/analyze.c).
//
// For every tensor the base and all models share (same shape): ‖τ_i‖; for each pair: cosine, absolute
// cosine (Model Kinship's CS), Pearson correlation and Euclidean distance of the flattened τ; the
// sign-conflict rate (entries where τ_i and τ_j have opposite signs, among entries both changed); the
// overlap of their top-k masks by |τ| (k = ⌊d·density⌋, density 0.2, among the entries τ changed:
// k_i = min(k, nonzero), ties to the lower index; |M_i ∩ M_j| / max(k_i, k_j), so that two models that
// left a tensor alone do not "overlap" on it, and one that changed it does not with one that did not); and, for 2-D tensors, the effective rank of τ_i (exp of
// the entropy of its normalised singular values, Roy & Vetterli). Per layer and whole model, the sums
// behind each figure are added over tensors (so cosines are of the concatenated vectors, as Model
// Kinship computes them); effective ranks are averaged over the 2-D tensors τ_i changes. A NaN or
// infinite value in a tensor is an error (GRAFT_E_NONFINITE) naming it. Tensors are read one at a time (each worker holds one
// tensor of every model in f32), in parallel; sums are added in tensor order, so results do not depend
// on the thread count.
#ifndef GRAFT_ANALYZE_H
#define GRAFT_ANALYZE_H

#include <stdint.h>
#include "model.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GRAFT_ANALYZE_MAX_MODELS 16

// Sums over a set of elements (n models: pair (i, j), i < j, at index i·n + j).
struct graft_analyze_sums {
    uint64_t n_elem, n_tensors, n_matrices;
    double   sq[GRAFT_ANALYZE_MAX_MODELS], sum[GRAFT_ANALYZE_MAX_MODELS], erank[GRAFT_ANALYZE_MAX_MODELS];
    double   dot[GRAFT_ANALYZE_MAX_MODELS * GRAFT_ANALYZE_MAX_MODELS], dist2[GRAFT_ANALYZE_MAX_MODELS * GRAFT_ANALYZE_MAX_MODELS];
    uint64_t both[GRAFT_ANALYZE_MAX_MODELS * GRAFT_ANALYZE_MAX_MODELS], conflict[GRAFT_ANALYZE_MAX_MODELS * GRAFT_ANALYZE_MAX_MODELS];
    uint64_t topk, overlap[GRAFT_ANALYZE_MAX_MODELS * GRAFT_ANALYZE_MAX_MODELS];
    uint64_t overlap_k[GRAFT_ANALYZE_MAX_MODELS * GRAFT_ANALYZE_MAX_MODELS]; // Σ max(k_i, k_j): the overlap's denominator
    uint64_t n_changed[GRAFT_ANALYZE_MAX_MODELS];                         // 2-D tensors τ_i changes (erank's count)
};

struct graft_analyze_tensor {
    char *name;
    int   layer;                      // "layers.N." / "h.N." / "blocks.N." index (the leftmost), −1 when none
    int   n_dims;
    uint64_t ne[8];
    struct graft_analyze_sums s;
};

struct graft_analyze {
    int n_models;
    size_t n_tensors, n_skipped;      // analysed; skipped (missing in a model, or another shape)
    struct graft_analyze_tensor *tensors;
    int n_layers;                     // highest layer index + 1 (an index ≥ the tensor count is no layer)
    struct graft_analyze_sums *layers;
    struct graft_analyze_sums total;
};

struct graft_analyze_params {
    int    n_threads;
    double density;                   // top-k fraction (0.2)
    struct graft_progress *progress;  // optional
};

int  graft_analyze_run(const struct graft_model *base, const struct graft_model *const *models, int n_models,
                       const struct graft_analyze_params *p, struct graft_analyze **out, struct graft_err *err);
void graft_analyze_free(struct graft_analyze *a);

// Figures from sums (NaN when undefined, e.g. a zero vector's cosine).
double graft_analyze_norm(const struct graft_analyze_sums *s, int i);
double graft_analyze_cos(const struct graft_analyze_sums *s, int n, int i, int j);
double graft_analyze_pearson(const struct graft_analyze_sums *s, int n, int i, int j);
double graft_analyze_euclid(const struct graft_analyze_sums *s, int n, int i, int j);
double graft_analyze_conflict(const struct graft_analyze_sums *s, int n, int i, int j);
double graft_analyze_overlap(const struct graft_analyze_sums *s, int n, int i, int j);
double graft_analyze_erank(const struct graft_analyze_sums *s, int i);

#ifdef __cplusplus
}
#endif
#endif
