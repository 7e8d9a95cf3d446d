// karcher: the Riemannian (Karcher) mean of the inputs on the unit sphere, scaled by their mean norm.
// Every iterate stays in the span of the inputs, so one pass computing the Gram matrix G = [X_i·X_j]
// is enough: the fixed-point iteration then runs on M coefficients, exactly as MergeKit's on vectors
// (up to summation order), and the apply pass writes Σ coef_i X_i. All inputs, the base included,
// weigh 1/M.
#include <math.h>
#include <string.h>
#include "engine.h"
#include "../core/impl.h"

static const struct graft_mparam params[] = {{"max_iter", false, false, 10}, {"tol", false, false, 1e-5}};

struct st { double coef[GRAFT_MAX_INPUTS]; };

static int n_passes(const struct graft_mt *mt) { (void)mt; return 1; }
static size_t partial_len(const struct graft_mt *mt, int pass) { (void)pass; return (size_t)mt->n_in * (size_t)mt->n_in; }

static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *g, void *acc) {
    (void)pass, (void)acc;
    int M = mt->n_in;
    for (int i = 0; i < M; i++)
        for (int j = i; j < M; j++) {
            double s = 0;
            for (uint64_t e = 0; e < c->n; e++) s += (double)c->in[i][e] * c->in[j][e];
            g[i * M + j] = g[j * M + i] = s;
        }
}

// x^T G y over the unit vectors U_i (G already normalised).
static double qf(const double *G, const double *x, const double *y, int M) {
    double s = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < M; j++) s += x[i] * G[i * M + j] * y[j];
    return s;
}

static int combine(struct graft_mt *mt, int pass, const double *part, void *const *accs, int n_accs, struct graft_err *err) {
    (void)pass, (void)accs, (void)n_accs;
    int M = mt->n_in;
    size_t L = (size_t)M * (size_t)M;
    double G[GRAFT_MAX_INPUTS * GRAFT_MAX_INPUTS] = {0}, n[GRAFT_MAX_INPUTS], a[GRAFT_MAX_INPUTS] = {0}, u[GRAFT_MAX_INPUTS] = {0};
    for (size_t k = 0; k < mt->n_chunks; k++)
        for (size_t q = 0; q < L; q++) G[q] += part[k * L + q];
    struct st *s = mt->state = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    double tol = GP(mt, "tol"), alpha = 1.0 / M, scale = 0;
    int n_valid = 0, first = -1;
    for (int i = 0; i < M; i++) {
        n[i] = sqrt(G[i * M + i]);
        scale += alpha * n[i]; // zero-norm inputs still count in the scale
        if (n[i] > tol) { n_valid++; if (first < 0) first = i; }
    }
    if (!n_valid) return GRAFT_OK; // all coefficients 0: zeros
    for (int i = 0; i < M; i++)
        for (int j = 0; j < M; j++) G[i * M + j] = n[i] > tol && n[j] > tol ? G[i * M + j] / (n[i] * n[j]) : 0;
    for (int i = 0; i < M; i++) a[i] = n[i] > tol ? 1.0 / n_valid : 0, u[i] = a[i];
    double un = sqrt(fmax(qf(G, u, u, M), 0));
    if (un < tol) { memset(u, 0, sizeof u); u[first] = 1; }
    else for (int i = 0; i < M; i++) u[i] /= un;
    for (int it = 0; it < (int)GP(mt, "max_iter"); it++) {
        double T[GRAFT_MAX_INPUTS] = {0}, Gu[GRAFT_MAX_INPUTS] = {0};
        for (int i = 0; i < M; i++)
            for (int j = 0; j < M; j++) Gu[i] += G[i * M + j] * u[j];
        for (int i = 0; i < M; i++) {
            if (!(n[i] > tol)) continue;
            double cs = fmin(fmax(Gu[i], -1.0), 1.0), th = acos(cs);
            if (th < tol) continue;
            double f = a[i] * th / sin(th);
            T[i] += f;
            for (int j = 0; j < M; j++) T[j] -= f * cs * u[j];
        }
        double tn = sqrt(fmax(qf(G, T, T, M), 0));
        if (tn < tol) break;
        for (int i = 0; i < M; i++) u[i] = cos(tn) * u[i] + sin(tn) * T[i] / tn;
        double nn = sqrt(fmax(qf(G, u, u, M), 0));
        if (nn > tol) for (int i = 0; i < M; i++) u[i] /= nn;
    }
    for (int i = 0; i < M; i++) s->coef[i] = n[i] > tol ? scale * u[i] / n[i] : 0; // back from U_i to X_i
    return GRAFT_OK;
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct st *s = mt->state;
    for (uint64_t e = 0; e < c->n; e++) {
        double acc = 0;
        for (int i = 0; i < mt->n_in; i++) acc += s->coef[i] * c->in[i][e];
        out[e] = (float)acc;
    }
}

const struct graft_method graft_method_karcher = {
    .name = "karcher", .pretty = "Karcher Mean", .base = GRAFT_BASE_IGNORED, .min_models = 1, .max_models = -1,
    .params = params, .n_params = 2, .n_passes = n_passes, .partial_len = partial_len, .stat = stat, .combine = combine,
    .apply = apply,
};
