// CMA-ES (include/graft/cmaes.h). Formulas and defaults: Hansen, "The CMA Evolution Strategy: A
// Tutorial" (arXiv:1604.00772), Table 1 and Fig. 7 (without the negative-weight extension).
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "graft/cmaes.h"
#include "../core/impl.h"

struct graft_cmaes {
    int     n, lambda, mu, gen;
    double  sigma, mueff, cs, ds, cc, c1, cmu, chi;
    double *w;            // μ recombination weights
    double *m, *ps, *pc;  // mean and evolution paths
    double *C, *B, *D;    // covariance, its eigenvectors (columns of B) and √eigenvalues
    double *z, *y, *x;    // λ × n: standard normal draws, B·D·z, candidates
    uint64_t seed, draws;
    bool    asked;
};

void graft_cmaes_free(struct graft_cmaes *c) {
    if (!c) return;
    graft__free(c->w), graft__free(c->m), graft__free(c->ps), graft__free(c->pc), graft__free(c->C), graft__free(c->B);
    graft__free(c->D), graft__free(c->z), graft__free(c->y), graft__free(c->x);
    graft__free(c);
}

int graft_cmaes_default_lambda(int dim) { return 4 + (int)floor(3 * log((double)(dim > 1 ? dim : 1))); }

int graft_cmaes_new(const struct graft_cmaes_params *p, struct graft_cmaes **out, struct graft_err *err) {
    *out = NULL;
    if (p->dim < 1 || p->dim > 10000 || !(p->sigma0 > 0) || p->lambda < 0 || p->lambda == 1)
        return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "CMA-ES needs n ≥ 1, σ0 > 0 and λ ≥ 2");
    struct graft_cmaes *c = graft__calloc(1, sizeof *c);
    if (!c) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    int n = c->n = p->dim;
    c->lambda = p->lambda ? p->lambda : graft_cmaes_default_lambda(n);
    c->mu = c->lambda / 2, c->sigma = p->sigma0, c->seed = p->seed;
    size_t nn = (size_t)n * n, ln = (size_t)c->lambda * n;
    c->w = graft__malloc((size_t)c->mu * sizeof(double));
    c->m = graft__malloc((size_t)n * sizeof(double)), c->ps = graft__calloc((size_t)n, sizeof(double)), c->pc = graft__calloc((size_t)n, sizeof(double));
    c->C = graft__calloc(nn, sizeof(double)), c->B = graft__calloc(nn, sizeof(double)), c->D = graft__malloc((size_t)n * sizeof(double));
    c->z = graft__malloc(ln * sizeof(double)), c->y = graft__malloc(ln * sizeof(double)), c->x = graft__malloc(ln * sizeof(double));
    if (!c->w || !c->m || !c->ps || !c->pc || !c->C || !c->B || !c->D || !c->z || !c->y || !c->x) {
        graft_cmaes_free(c);
        return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    }
    double sw = 0, sw2 = 0;
    for (int i = 0; i < c->mu; i++) sw += (c->w[i] = log(c->lambda / 2.0 + 0.5) - log(i + 1.0));
    for (int i = 0; i < c->mu; i++) c->w[i] /= sw, sw2 += c->w[i] * c->w[i];
    c->mueff = 1 / sw2;
    double N = n, me = c->mueff;
    c->cs = (me + 2) / (N + me + 5);
    c->ds = 1 + 2 * fmax(0, sqrt((me - 1) / (N + 1)) - 1) + c->cs;
    c->cc = (4 + me / N) / (N + 4 + 2 * me / N);
    c->c1 = 2 / ((N + 1.3) * (N + 1.3) + me);
    c->cmu = fmin(1 - c->c1, 2 * (me - 2 + 1 / me) / ((N + 2) * (N + 2) + me));
    c->chi = sqrt(N) * (1 - 1 / (4 * N) + 1 / (21 * N * N)); // E‖N(0, I)‖
    for (int i = 0; i < n; i++) c->m[i] = p->x0 ? p->x0[i] : 0, c->C[(size_t)i * n + i] = c->B[(size_t)i * n + i] = 1, c->D[i] = 1;
    *out = c;
    return GRAFT_OK;
}

int graft_cmaes_lambda(const struct graft_cmaes *c) { return c->lambda; }
int graft_cmaes_generation(const struct graft_cmaes *c) { return c->gen; }
double graft_cmaes_sigma(const struct graft_cmaes *c) { return c->sigma; }
const double *graft_cmaes_mean(const struct graft_cmaes *c) { return c->m; }

const double *graft_cmaes_ask(struct graft_cmaes *c) {
    if (c->asked) return c->x;
    int n = c->n;
    for (int k = 0; k < c->lambda; k++) {
        double *z = c->z + (size_t)k * n, *y = c->y + (size_t)k * n, *x = c->x + (size_t)k * n;
        for (int i = 0; i < n; i++) z[i] = graft__rng_normal(c->seed, c->draws++, 1.0);
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < n; j++) s += c->B[(size_t)i * n + j] * c->D[j] * z[j];
            y[i] = s, x[i] = c->m[i] + c->sigma * s;
        }
    }
    c->asked = true;
    return c->x;
}

// Fitness order with NaN last; ties keep the earlier candidate first (deterministic).
static bool better(const double *f, int i, int j) {
    double fi = isnan(f[i]) ? INFINITY : f[i], fj = isnan(f[j]) ? INFINITY : f[j];
    return fi < fj || (fi == fj && i < j);
}

int graft_cmaes_tell(struct graft_cmaes *c, const double *f, struct graft_err *err) {
    if (!c->asked) graft_cmaes_ask(c);
    int n = c->n, lam = c->lambda;
    int *idx = graft__malloc((size_t)lam * sizeof *idx);
    double *yw = graft__calloc((size_t)n, sizeof(double)), *t = graft__malloc((size_t)n * sizeof(double));
    double *ev = graft__malloc((size_t)n * sizeof(double));
    int rc = GRAFT_OK;
    if (!idx || !yw || !t || !ev) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto out; }
    for (int k = 0; k < lam; k++) { // insertion sort: λ is small
        int j = k;
        while (j > 0 && better(f, k, idx[j - 1])) idx[j] = idx[j - 1], j--;
        idx[j] = k;
    }
    // mean ← m + σ·y_w, y_w = Σ w_i y_{i:λ}
    for (int i = 0; i < c->mu; i++)
        for (int j = 0; j < n; j++) yw[j] += c->w[i] * c->y[(size_t)idx[i] * n + j];
    for (int j = 0; j < n; j++) c->m[j] += c->sigma * yw[j];
    // C^{-1/2} y_w = B D⁻¹ Bᵀ y_w
    for (int j = 0; j < n; j++) {
        double s = 0;
        for (int i = 0; i < n; i++) s += c->B[(size_t)i * n + j] * yw[i];
        t[j] = s / c->D[j];
    }
    double a = sqrt(c->cs * (2 - c->cs) * c->mueff), psn = 0;
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += c->B[(size_t)i * n + j] * t[j];
        c->ps[i] = (1 - c->cs) * c->ps[i] + a * s;
        psn += c->ps[i] * c->ps[i];
    }
    psn = sqrt(psn);
    c->gen++;
    bool hs = psn / sqrt(1 - pow(1 - c->cs, 2.0 * c->gen)) < (1.4 + 2 / (n + 1.0)) * c->chi;
    double b = sqrt(c->cc * (2 - c->cc) * c->mueff);
    for (int i = 0; i < n; i++) c->pc[i] = (1 - c->cc) * c->pc[i] + (hs ? b * yw[i] : 0);
    double dh = (1 - hs) * c->cc * (2 - c->cc);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            double rmu = 0;
            for (int k = 0; k < c->mu; k++) rmu += c->w[k] * c->y[(size_t)idx[k] * n + i] * c->y[(size_t)idx[k] * n + j];
            double v = (1 - c->c1 - c->cmu) * c->C[(size_t)i * n + j] + c->c1 * (c->pc[i] * c->pc[j] + dh * c->C[(size_t)i * n + j]) + c->cmu * rmu;
            c->C[(size_t)i * n + j] = c->C[(size_t)j * n + i] = v;
        }
    // σ beyond 1e3 in a [0, 1] search space means nothing but can overflow to ∞ on a plateau
    c->sigma = fmin(c->sigma * exp(c->cs / c->ds * (psn / c->chi - 1)), 1e3);
    // B, D from C; LAPACK on one thread, as OpenBLAS's threaded paths may round differently and
    // candidates must replay exactly
    graft__blas_single_thread();
    memcpy(c->B, c->C, (size_t)n * n * sizeof(double));
    if (LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'V', 'U', n, c->B, n, ev)) { rc = graft_err_set(err, GRAFT_E_INTERNAL, NULL, NULL, 0, "CMA-ES: eigendecomposition failed"); goto out; }
    // Condition number at most 1e14 (Hansen's reference code): a plateau or a flat direction drives an
    // eigenvalue to round-off (or below 0), and D⁻¹ then blows the evolution path and σ up. Adding δ·I
    // to C shifts every eigenvalue by δ and keeps the eigenvectors.
    double emax = ev[n - 1] > 0 ? ev[n - 1] : 1, lo = emax * 1e-14;
    if (ev[0] < lo) {
        double delta = lo - ev[0];
        for (int i = 0; i < n; i++) c->C[(size_t)i * n + i] += delta, ev[i] += delta;
    }
    for (int i = 0; i < n; i++) c->D[i] = sqrt(ev[i]);
    c->asked = false;
out:
    graft__free(idx), graft__free(yw), graft__free(t), graft__free(ev);
    return rc;
}
