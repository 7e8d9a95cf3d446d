// CMA-ES (src/eval/cmaes.c) on standard test functions with known optima: the sphere and a shifted
// ellipsoid (to 1e-10), Rosenbrock in 4 dimensions (to its minimum at (1, …, 1)); default λ; the same
// seed gives the same candidates; NaN fitness ranks last; bad parameters are refused.
#include <math.h>
#include <string.h>
#include "harness.h"
#include "graft/cmaes.h"

typedef double (*objective)(const double *x, int n);
static double sphere(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i] * x[i];
    return s;
}
static double ellipsoid(const double *x, int n) { // condition 1e4, optimum at x_i = i
    double s = 0;
    for (int i = 0; i < n; i++) s += pow(1e4, (double)i / (n - 1)) * (x[i] - i) * (x[i] - i);
    return s;
}
static double rosenbrock(const double *x, int n) {
    double s = 0;
    for (int i = 0; i + 1 < n; i++) s += 100 * (x[i + 1] - x[i] * x[i]) * (x[i + 1] - x[i] * x[i]) + (1 - x[i]) * (1 - x[i]);
    return s;
}

// Run up to max_gen generations; return the best fitness seen and its point in best[].
static double run(objective f, int n, double x0v, double sigma, int max_gen, double target, uint64_t seed, double *best, int *gens) {
    double x0[16];
    for (int i = 0; i < n; i++) x0[i] = x0v;
    struct graft_cmaes_params p = {n, 0, sigma, x0, seed};
    struct graft_cmaes *c;
    struct graft_err err;
    if (graft_cmaes_new(&p, &c, &err)) return INFINITY;
    double fb = INFINITY, fit[64];
    int g;
    for (g = 0; g < max_gen && fb > target; g++) {
        const double *X = graft_cmaes_ask(c);
        for (int k = 0; k < graft_cmaes_lambda(c); k++) {
            fit[k] = f(X + (size_t)k * n, n);
            if (fit[k] < fb) fb = fit[k], memcpy(best, X + (size_t)k * n, (size_t)n * sizeof *best);
        }
        if (graft_cmaes_tell(c, fit, &err)) break;
    }
    *gens = g;
    graft_cmaes_free(c);
    return fb;
}

TEST(cmaes_sphere_and_ellipsoid) {
    double b[16];
    int g;
    CHECK(run(sphere, 8, 3.0, 1.0, 2000, 1e-10, 1, b, &g) <= 1e-10);
    for (int i = 0; i < 8; i++) CHECK(fabs(b[i]) < 1e-4);
    CHECK(run(ellipsoid, 5, 0.0, 2.0, 3000, 1e-10, 2, b, &g) <= 1e-10);
    for (int i = 0; i < 5; i++) CHECK(fabs(b[i] - i) < 1e-3);
}

TEST(cmaes_rosenbrock) {
    double b[16];
    int g;
    CHECK(run(rosenbrock, 4, 0.0, 0.5, 5000, 1e-12, 3, b, &g) <= 1e-12);
    for (int i = 0; i < 4; i++) CHECK(fabs(b[i] - 1) < 1e-4);
}

TEST(cmaes_defaults_determinism_nan) {
    double x0[6] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
    struct graft_cmaes_params p = {6, 0, 1.0 / 6, x0, 42};
    struct graft_cmaes *a, *b;
    struct graft_err err;
    CHECK_EQ(graft_cmaes_new(&p, &a, &err), GRAFT_OK);
    CHECK_EQ(graft_cmaes_new(&p, &b, &err), GRAFT_OK);
    CHECK_EQ(graft_cmaes_lambda(a), 4 + (int)floor(3 * log(6.0))); // 9
    double fit[16];
    for (int gen = 0; gen < 5; gen++) {
        const double *xa = graft_cmaes_ask(a), *xb = graft_cmaes_ask(b);
        CHECK(memcmp(xa, xb, 9 * 6 * sizeof(double)) == 0);
        for (int k = 0; k < 9; k++) fit[k] = k == 0 ? NAN : sphere(xa + k * 6, 6);
        CHECK_EQ(graft_cmaes_tell(a, fit, &err), GRAFT_OK);
        CHECK_EQ(graft_cmaes_tell(b, fit, &err), GRAFT_OK);
    }
    CHECK(graft_cmaes_generation(a) == 5 && graft_cmaes_sigma(a) == graft_cmaes_sigma(b));
    graft_cmaes_free(a), graft_cmaes_free(b);
    struct graft_cmaes *c;
    struct graft_cmaes_params bad = {0, 0, 1, NULL, 1};
    CHECK_EQ(graft_cmaes_new(&bad, &c, &err), GRAFT_E_USAGE);
    bad.dim = 2, bad.sigma0 = 0;
    CHECK_EQ(graft_cmaes_new(&bad, &c, &err), GRAFT_E_USAGE);
}

// Degenerate landscapes must not blow the search up: a ridge (Σx)², where C loses a direction, and a
// plateau, where σ grows every generation. Without the condition-number floor the ridge gave a negative
// eigenvalue, ‖p_σ‖ ≈ 1e132 and σ = ∞ by generation 491 (n = 5, seed 1); the plateau σ = ∞ by 2416.
static double ridge(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return s * s;
}
static double plateau(const double *x, int n) { return (void)x, (void)n, 1.0; }

TEST(cmaes_degenerate_landscapes_stay_finite) {
    objective fs[2] = {ridge, plateau};
    for (int which = 0; which < 2; which++) {
        double x0[5] = {0.5, 0.5, 0.5, 0.5, 0.5}, fit[16];
        struct graft_cmaes_params p = {5, 0, 1.0 / 6, x0, 1};
        struct graft_cmaes *c;
        struct graft_err err;
        CHECK_EQ(graft_cmaes_new(&p, &c, &err), GRAFT_OK);
        bool finite = true;
        for (int gen = 0; gen < 3000 && finite; gen++) {
            const double *X = graft_cmaes_ask(c);
            for (int k = 0; k < graft_cmaes_lambda(c); k++) {
                for (int i = 0; i < 5; i++) finite &= isfinite(X[k * 5 + i]) != 0;
                fit[k] = fs[which](X + k * 5, 5);
            }
            if (graft_cmaes_tell(c, fit, &err)) finite = false;
            finite &= isfinite(graft_cmaes_sigma(c)) != 0 && graft_cmaes_sigma(c) <= 1e3;
        }
        CHECK(finite);
        graft_cmaes_free(c);
    }
}
