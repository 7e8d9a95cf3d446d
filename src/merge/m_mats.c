// mats — MaTS, merging by matching models in task parameter subspaces (Tam et al., TMLR 2024;
// methods-research.md A6), the forward-only ("blockwise", RegMean-objective) variant: per linear
// weight, with Gram matrices G_i as for regmean (`parameters: {gram: PATH}`) and
// scale(G, λ) = λ·G + (1 − λ)·diag(G) (model_lambda, default 1: no shrinking),
//   A(V) = Σ_i scale(G_i)·V,   b = Σ_i scale(G_i)·W_iᵀ,   V = Wᵀ [in × out]
// solved by conjugate gradients as scipy.sparse.linalg.cg runs it on the flattened V (no
// preconditioner; stop when ‖r‖ ≤ 1e-5·‖b‖ or after `iterations`, default 100), warm-started from the
// task-arithmetic merge θ0 + init_lambda·Σ_i(θ_i − θ0) (init_lambda 0.3, the README's) when base_model
// is given, else from the average. Other tensors: the mean of the models. The K-FAC variant (output-
// gradient Grams) is not provided. In double; the early stop makes the result depend on the start.
#include <cblas.h>
#include <math.h>
#include <string.h>
#include "lowrank.h"

static const struct graft_mparam params[] = {{"iterations", false, false, 100}, {"model_lambda", false, false, 1.0}, {"init_lambda", false, false, 0.3}};

static int validate(const struct graft_mt *mt, struct graft_err *err) {
    double it = GP(mt, "iterations"), l = GP(mt, "model_lambda");
    if (!(it >= 0 && it <= 100000 && it == floor(it))) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "iterations must be an integer in [0, 100000], got %g", it);
    if (!(l >= 0 && l <= 1)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "model_lambda must be in [0, 1], got %g", l);
    return GRAFT_OK;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t k = 0; k < n; k++) s += a[k] * b[k];
    return s;
}

static int combine(struct graft_mt *mt, int pass, const double *partials, void *const *accs, int n_accs, struct graft_err *err) {
    (void)pass, (void)partials, (void)accs, (void)n_accs;
    struct graft_gather *s = mt->state;
    size_t out = (size_t)mt->dim0, in = (size_t)mt->row_len, N = in * out, numel = (size_t)mt->numel;
    double lam = GP(mt, "model_lambda"), il = GP(mt, "init_lambda");
    double *A = graft__malloc(in * in * sizeof *A), *b = graft__malloc(N * sizeof *b), scale[GRAFT_MAX_INPUTS];
    double *x = graft__calloc(N, sizeof *x), *r = graft__malloc(N * sizeof *r), *p = graft__malloc(N * sizeof *p), *q = graft__malloc(N * sizeof *q);
    for (int t = 0; t < s->T; t++) scale[t] = mt->stat_scale[s->tin[t]];
    int rc = A && b && x && r && p && q ? graft__gram_system(mt, s->tin, scale, s->T, lam, A, b, err)
                                        : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for %zu×%zu Gram matrices", in, in);
    // start: task arithmetic from the base, else the average
    for (size_t o = 0; !rc && o < out; o++)
        for (size_t c = 0; c < in; c++) {
            size_t e = o * in + c;
            double v;
            if (mt->base >= 0) {
                double B = s->w[(size_t)mt->base * numel + e], d = 0;
                for (int t = 0; t < s->T; t++) d += (double)s->w[(size_t)s->tin[t] * numel + e] - B;
                v = B + il * d;
            } else {
                v = 0;
                for (int t = 0; t < s->T; t++) v += s->w[(size_t)s->tin[t] * numel + e];
                v /= s->T;
            }
            x[c * out + o] = v;
        }
    if (!rc) { // conjugate gradients (scipy.sparse.linalg.cg: rtol 1e-5, atol 0, no preconditioner)
        memcpy(r, b, N * sizeof *r);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)in, (int)out, (int)in, -1.0, A, (int)in, x, (int)out, 1.0, r, (int)out);
        double tol = 1e-5 * sqrt(dot(b, b, N)), rho_prev = 0;
        int iters = (int)GP(mt, "iterations");
        for (int it = 0; it < iters; it++) {
            if (sqrt(dot(r, r, N)) < tol) break;
            double rho = dot(r, r, N);
            if (it == 0) memcpy(p, r, N * sizeof *p);
            else for (size_t k = 0; k < N; k++) p[k] = r[k] + rho / rho_prev * p[k];
            memset(q, 0, N * sizeof *q);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)in, (int)out, (int)in, 1.0, A, (int)in, p, (int)out, 0.0, q, (int)out);
            double pq = dot(p, q, N);
            if (!(pq > 0)) break; // A is not positive definite along p (a zero Gram direction): stop
            double alpha = rho / pq;
            for (size_t k = 0; k < N; k++) x[k] += alpha * p[k], r[k] -= alpha * q[k];
            rho_prev = rho;
        }
        for (size_t k = 0; k < N && !rc; k++)
            if (!isfinite(x[k])) rc = graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "conjugate gradients diverged (non-finite Gram matrices?)");
    }
    if (!rc && !(s->res = graft__malloc(numel * sizeof(float)))) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (size_t o = 0; !rc && o < out; o++)
        for (size_t c = 0; c < in; c++) s->res[o * in + c] = (float)x[c * out + o];
    graft__free(A), graft__free(b), graft__free(x), graft__free(r), graft__free(p), graft__free(q);
    graft__free(s->w), s->w = NULL;
    return rc;
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct graft_gather *s = mt->state;
    if (s->mat) { memcpy(out, s->res + c->e0, (size_t)c->n * sizeof(float)); return; }
    for (uint64_t e = 0; e < c->n; e++) {
        float acc = 0;
        for (int t = 0; t < s->T; t++) acc += c->in[s->tin[t]][e];
        out[e] = s->T ? acc / (float)s->T : c->in[0][e];
    }
}

const struct graft_method graft_method_mats = {
    .name = "mats", .pretty = "MaTS (conjugate gradient, blockwise)", .base = GRAFT_BASE_OPTIONAL, .min_models = 2, .max_models = -1, .params = params,
    .n_params = 3, .stats = "gram", .stats_kind = GRAFT_STATS_GRAM, .init = graft__gather_init, .n_passes = graft__gather_passes, .partial_len = graft__lr_partial_len, .stat = graft__gather_stat,
    .combine = combine, .apply = apply, .validate = validate, .free_state = graft__gather_free,
};
