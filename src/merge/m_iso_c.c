// iso_c — Isotropic merging in the common subspace (Marczak et al., "No Task Left Behind", ICML 2025;
// methods-research.md A7): per matrix Δ = Σ_t τ_t, U S Vh = svd(Δ), Δ_iso = mean(S)·U·Vh — the
// spectrum flattened to its mean; θ = θ0 + α·Δ_iso. Other tensors: θ0 + α·mean_t τ_t.
// Cost per matrix: one sgesdd and one GEMM; memory: Σ τ, its factors and Δ.
#include "lowrank.h"

static const struct graft_mparam params[] = {{"scaling_factor", false, false, 1.0}};

static int init(struct graft_mt *mt, struct graft_err *err) { return graft__lr_init(mt, true, err); }

static int combine(struct graft_mt *mt, int pass, const double *partials, void *const *accs, int n_accs, struct graft_err *err) {
    (void)pass, (void)partials, (void)accs, (void)n_accs;
    struct graft_lr *lr = mt->state;
    size_t m = (size_t)lr->m, n = (size_t)lr->n, k = m < n ? m : n;
    float *U = graft__malloc(m * k * sizeof *U), *S = graft__malloc(k * sizeof *S), *Vt = graft__malloc(k * n * sizeof *Vt);
    int rc = U && S && Vt ? graft__svd_thin(lr->tv, m, n, U, S, Vt, err) : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    double mean = 0;
    for (size_t j = 0; !rc && j < k; j++) mean += S[j];
    if (!rc) rc = graft__lr_product(lr, U, Vt, k, (float)(mean / (double)k), err);
    graft__free(U), graft__free(S), graft__free(Vt), graft__free(lr->tv);
    lr->tv = NULL;
    return rc;
}

const struct graft_method graft_method_iso_c = {
    .name = "iso_c", .pretty = "Iso-C (isotropic merging in common subspace)", .base = GRAFT_BASE_REQUIRED, .heavy_combine = true, .min_models = 1, .max_models = -1,
    .params = params, .n_params = 1, .init = init, .n_passes = graft__lr_passes, .partial_len = graft__lr_partial_len, .stat = graft__lr_stat,
    .combine = combine, .apply = graft__lr_apply, .free_state = graft__lr_free,
};
