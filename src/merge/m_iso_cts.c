// iso_cts — Isotropic merging in common and task-specific subspaces (Marczak et al., ICML 2025;
// methods-research.md A7). Per m×n matrix, r = min(m, n), T tasks, f = common_space_fraction:
//   k_c = ⌊r·f⌋; k_ts = round((r − k_c)/T)·T (round half to even, as Python); k_c = r − k_ts; s = k_ts/T
//   Uc, Sc, Vhc = top k_c of svd(Σ_t τ_t)
//   per task: τ⊥ = τ_t − Uc·Ucᵀ·τ_t, its top s singular triplets fill columns t·s … of U, S, Vh
//   the common triplets fill the last k_c; U = polar(U), Vh = polar(Vh); Δ = mean(S)·U·Vh
// θ = θ0 + α·Δ; other tensors θ0 + α·mean_t τ_t. Cost: one full SVD (the sum's); per task, for m ≤ n an
// SVD of (r − k_c) × n (see combine), else a full SVD (randomized_svd: true — a randomized top-s SVD,
// not what the reference computes); both polar factors by a low-rank correction (the common part is
// orthonormal already) — about 1.3 sgesdd per matrix for m ≤ n. (When k_ts would exceed r —
// possible only with f near 0 — it is lowered by T; the reference would index out of range.)
#include <math.h>
#include <string.h>
#include "lowrank.h"

static const struct graft_mparam params[] = {{"scaling_factor", false, false, 1.0}, {"common_space_fraction", false, false, 0.8},
                                             {"randomized_svd", false, false, 0}};

static int init(struct graft_mt *mt, struct graft_err *err) { return graft__lr_init(mt, false, err); }

static int validate(const struct graft_mt *mt, struct graft_err *err) {
    double f = GP(mt, "common_space_fraction");
    if (!(f >= 0 && f <= 1)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "common_space_fraction must be in [0, 1], got %g", f);
    return GRAFT_OK;
}

static int combine(struct graft_mt *mt, int pass, const double *partials, void *const *accs, int n_accs, struct graft_err *err) {
    (void)pass, (void)partials, (void)accs, (void)n_accs;
    struct graft_lr *lr = mt->state;
    size_t m = (size_t)lr->m, n = (size_t)lr->n, r = m < n ? m : n, T = (size_t)lr->T, mn = m * n;
    long kc = (long)((double)r * GP(mt, "common_space_fraction"));
    long kts = (long)nearbyint((double)((long)r - kc) / (double)T) * (long)T;
    while (kts > (long)r) kts -= (long)T;
    kc = (long)r - kts;
    size_t s = (size_t)kts / T, ts = T * s;
    bool rnd = GP(mt, "randomized_svd") != 0;
    // m ≤ n: the sum's U is square, so τ⊥ = U⊥·(U⊥ᵀ·τ) with U⊥ its last r − k_c columns, and τ⊥'s SVD is
    // U⊥ times the SVD of the (r − k_c) × n matrix U⊥ᵀ·τ — exact, at a fraction of a full SVD's cost
    bool reduce = kc > 0 && m <= n && ts > 0;
    float *sum = graft__malloc(mn * sizeof(float)), *U = graft__malloc(m * r * sizeof(float)), *S = graft__malloc(r * sizeof(float));
    float *Vt = graft__malloc(r * n * sizeof(float)), *Uo = graft__calloc(m * r, sizeof(float)), *So = graft__calloc(r, sizeof(float));
    float *Vo = graft__calloc(r * n, sizeof(float));
    float *P = reduce ? NULL : graft__malloc((size_t)(kc > 0 ? kc : 1) * n * sizeof(float)); // τ's projection on Uc (not needed when reducing)
    float *Ub = reduce ? graft__malloc(ts * s * sizeof(float)) : NULL;
    int rc = sum && U && S && Vt && Uo && So && Vo && (P || reduce) && (Ub || !reduce) ? GRAFT_OK : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (size_t e = 0; !rc && e < mn; e++) {
        float a = 0;
        for (size_t t = 0; t < T; t++) a += lr->tv[t * mn + e];
        sum[e] = a;
    }
    if (!rc) rc = graft__svd_thin(sum, m, n, U, S, Vt, err);
    // common subspace: the last k_c slots
    for (size_t i = 0; !rc && i < m; i++) memcpy(Uo + i * r + ts, U + i * r, (size_t)kc * sizeof(float));
    if (!rc) memcpy(So + ts, S, (size_t)kc * sizeof(float)), memcpy(Vo + ts * n, Vt, (size_t)kc * n * sizeof(float));
    for (size_t t = 0; !rc && s && t < T; t++) {
        float *x = lr->tv + t * mn;
        if (reduce) { // U⊥ᵀ·τ (ts × n, in `sum`), its top s: U⊥·Ub (into Uo's zero columns), S, Vh
            memset(sum, 0, ts * n * sizeof(float));
            graft__sgemm_acc(true, false, ts, n, m, 1.0f, U + kc, r, x, n, sum, n);
            rc = graft__lr_top(sum, ts, n, s, false, 0, Ub, s, So + t * s, Vo + t * s * n, err);
            if (!rc) graft__sgemm_acc(false, false, m, s, ts, 1.0f, U + kc, r, Ub, s, Uo + t * s, r);
            continue;
        }
        if (kc > 0) { // τ⊥ = τ − Uc·(Ucᵀ·τ), in place
            memset(P, 0, (size_t)kc * n * sizeof(float));
            graft__sgemm_acc(true, false, (size_t)kc, n, m, 1.0f, U, r, x, n, P, n);
            graft__sgemm_acc(false, false, m, n, (size_t)kc, -1.0f, U, r, P, n, x, n);
        }
        rc = graft__lr_top(x, m, n, s, rnd, mt->key[lr->tin[t]], Uo + t * s, r, So + t * s, Vo + t * s * n, err);
    }
    graft__free(lr->tv), lr->tv = NULL;
    // the common columns of U and rows of Vh are orthonormal already: the polar factors need only a
    // 2·T·s × 2·T·s SVD (graft__polar_partial)
    if (!rc) rc = graft__polar_partial(Uo, m, r, ts, false, err);
    if (!rc) rc = graft__polar_partial(Vo, r, n, ts, true, err);
    double mean = 0;
    for (size_t j = 0; !rc && j < r; j++) mean += So[j];
    if (!rc) rc = graft__lr_product(lr, Uo, Vo, r, (float)(mean / (double)r), err);
    graft__free(sum), graft__free(U), graft__free(S), graft__free(Vt), graft__free(Uo), graft__free(So), graft__free(Vo), graft__free(P), graft__free(Ub);
    return rc;
}

const struct graft_method graft_method_iso_cts = {
    .name = "iso_cts", .pretty = "Iso-CTS (isotropic merging in common and task-specific subspaces)", .base = GRAFT_BASE_REQUIRED, .heavy_combine = true,
    .min_models = 1, .max_models = -1, .params = params, .n_params = 3, .init = init, .n_passes = graft__lr_passes,
    .partial_len = graft__lr_partial_len, .stat = graft__lr_stat, .combine = combine, .apply = graft__lr_apply,
    .validate = validate, .free_state = graft__lr_free,
};
