// Shared machinery of the SVD-based task-vector merges (iso_c, iso_cts, tsv): each 2-D tensor's task
// matrices τ_t = θ_t − θ0 are gathered whole in one statistic pass (chunks write disjoint ranges), the
// method's combine turns them into Δ on one thread (LAPACK), and apply writes θ0 + α·Δ. Other tensors
// (1-D, scalars, > 2-D, names containing "text_projection" as in the reference code) take the running
// mean of the task vectors, θ0 + α·mean_t τ_t. Memory: the T task matrices of the current tensor plus
// the method's factors, a few m×n matrices.
#ifndef GRAFT_MERGE_LOWRANK_H
#define GRAFT_MERGE_LOWRANK_H
#include "engine.h"

struct graft_lr {
    int       T;                        // task vectors: inputs other than the base
    int       tin[GRAFT_MAX_INPUTS];    // input index of task t
    bool      mat;                      // handled as a matrix
    bool      sum_only;                 // gather Σ_t τ_t only (iso_c)
    uint64_t  m, n;
    float    *tv;                       // T × m × n (or m × n when sum_only)
    float    *delta;                    // Δ (m × n) once combined
};

int    graft__lr_init(struct graft_mt *mt, bool sum_only, struct graft_err *err);
int    graft__lr_passes(const struct graft_mt *mt);
size_t graft__lr_partial_len(const struct graft_mt *mt, int pass);
void   graft__lr_stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *partial, void *acc);
void   graft__lr_apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out);
void   graft__lr_free(struct graft_mt *mt);
// Δ = scale · A·B for A m×k and B k×n (row-major), into lr->delta (allocated here).
// Top s singular triplets of x (m×n): U into columns 0..s of the row-major U (leading dimension
// ldu), S, and the s rows of Vt (s×n). randomized: a randomized range finder (oversampling
// GRAFT_LR_OVERSAMPLE, GRAFT_LR_POWER subspace iterations, test vectors from key) when s + oversample
// is at most a quarter of min(m, n) (beyond that it costs more than sgesdd: bench/scale.sh), else (and
// by default) one exact thin SVD, as the references compute.
#define GRAFT_LR_OVERSAMPLE 10
#define GRAFT_LR_POWER      2
int    graft__lr_top(const float *x, size_t m, size_t n, size_t s, bool randomized, uint64_t key, float *U, size_t ldu, float *S, float *Vt,
                     struct graft_err *err);
int    graft__lr_product(struct graft_lr *lr, const float *A, const float *B, size_t k, float scale, struct graft_err *err);
#endif

// Every input of a tensor gathered whole (regmean, mats: the weights themselves, base included), and
// the result those methods solve for. `mat`: the tensor has statistics (a Gram matrix per model).
struct graft_gather {
    bool   mat;
    int    T, tin[GRAFT_MAX_INPUTS]; // inputs other than the base
    float *w;                        // n_in × numel
    float *res;                      // numel, once solved
};
int    graft__gather_init(struct graft_mt *mt, struct graft_err *err);
int    graft__gather_passes(const struct graft_mt *mt);
void   graft__gather_stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *partial, void *acc);
void   graft__gather_free(struct graft_mt *mt);
// The normal equations of the Gram-based merges over inputs ins[0..n): A = Σ G̃_i (in × in) and
// B = Σ G̃_i·W_iᵀ (in × out), in double, with G̃_i input i's Gram matrix whose diagonal is multiplied by
// scale[k] and its off-diagonals by scale[k]·lam. A and B are overwritten.
int    graft__gram_system(const struct graft_mt *mt, const int *ins, const double *scale, int n, double lam, double *A, double *B,
                          struct graft_err *err);
