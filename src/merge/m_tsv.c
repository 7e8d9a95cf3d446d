// tsv — Task Singular Vectors merge (Gargiulo et al., CVPR 2025; methods-research.md A8). Per m×n
// matrix, r = min(m, n), k = ⌊r/T⌋: each task's top k singular triplets fill columns t·k … of Ũ, s̃,
// Ṽh (the rest stay 0); Δ = polar(Ũ)·diag(s̃)·polar(Ṽh) (the "TSV orthogonalisation"); θ = θ0 + α·Δ.
// Other tensors: θ0 + α·mean_t τ_t. Guard: when r < T (k = 0) the reference gives Δ = 0; graft takes
// the plain sum Σ_t τ_t instead (task arithmetic), so such tensors still merge. Cost: T full SVDs
// (randomized_svd: true — randomized top-k SVDs, not what the reference computes) and two polar
// factors of m × T·k and T·k × n (Gram route, linalg.c graft__polar_gram; at T = 2 graft__polar_pair).
#include <string.h>
#include "lowrank.h"

static const struct graft_mparam params[] = {{"scaling_factor", false, false, 1.0}, {"randomized_svd", false, false, 0}};

static int init(struct graft_mt *mt, struct graft_err *err) { return graft__lr_init(mt, false, err); }

static int combine(struct graft_mt *mt, int pass, const double *partials, void *const *accs, int n_accs, struct graft_err *err) {
    (void)pass, (void)partials, (void)accs, (void)n_accs;
    struct graft_lr *lr = mt->state;
    size_t m = (size_t)lr->m, n = (size_t)lr->n, r = m < n ? m : n, T = (size_t)lr->T, mn = m * n, k = r / T;
    int rc = GRAFT_OK;
    if (!k) { // r < T: task arithmetic
        if (!(lr->delta = graft__calloc(mn, sizeof(float)))) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
        for (size_t e = 0; e < mn; e++)
            for (size_t t = 0; t < T; t++) lr->delta[e] += lr->tv[t * mn + e];
        graft__free(lr->tv), lr->tv = NULL;
        return GRAFT_OK;
    }
    // only the first T·k columns of Ũ (rows of Ṽh) are non-zero; the polar factor of [Ũ' | 0] is that of
    // Ũ' next to columns that meet s̃ = 0, so the product needs Ũ' and Ṽh' alone
    size_t K = T * k;
    bool rnd = GP(mt, "randomized_svd") != 0;
    float *Uo = graft__calloc(m * K, sizeof(float)), *So = graft__calloc(K, sizeof(float)), *Vo = graft__calloc(K * n, sizeof(float));
    if (!Uo || !So || !Vo) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (size_t t = 0; !rc && t < T; t++)
        rc = graft__lr_top(lr->tv + t * mn, m, n, k, rnd, mt->key[lr->tin[t]], Uo + t * k, K, So + t * k, Vo + t * k * n, err);
    graft__free(lr->tv), lr->tv = NULL;
    // polar factors by the Gram route (an eigensolve of the short side's Gram matrix and two GEMMs: the
    // same factors as the reference's SVDs at full rank, several times cheaper at 8B shapes); at T = 2
    // from a k × k SVD of the two tasks' orthonormal halves' cross product (graft__polar_pair)
    if (!rc) rc = T == 2 ? graft__polar_pair(Uo, m, K, false, NULL, err) : graft__polar_gram(Uo, m, K, err);
    if (!rc) rc = T == 2 ? graft__polar_pair(Vo, K, n, true, NULL, err) : graft__polar_gram(Vo, K, n, err);
    for (size_t i = 0; !rc && i < m; i++)
        for (size_t j = 0; j < K; j++) Uo[i * K + j] *= So[j];
    if (!rc) rc = graft__lr_product(lr, Uo, Vo, K, 1.0f, err);
    graft__free(Uo), graft__free(So), graft__free(Vo);
    return rc;
}

const struct graft_method graft_method_tsv = {
    .name = "tsv", .pretty = "TSV-Merge (task singular vectors)", .base = GRAFT_BASE_REQUIRED, .heavy_combine = true, .min_models = 1, .max_models = -1,
    .params = params, .n_params = 2, .init = init, .n_passes = graft__lr_passes, .partial_len = graft__lr_partial_len, .stat = graft__lr_stat,
    .combine = combine, .apply = graft__lr_apply, .free_state = graft__lr_free,
};
