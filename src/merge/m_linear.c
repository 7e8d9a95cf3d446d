// linear (Wortsman et al., model soups): R = Σ w_i X_i, divided by Σ w_i when `normalize` (default).
#include <string.h>
#include "engine.h"

static const struct graft_mparam params[] = {
    {"weight", true, true, 0},
    {"normalize", false, false, 1},
};

static int validate(const struct graft_mt *mt, struct graft_err *err) {
    double sw = 0;
    for (int i = 0; i < mt->n_in; i++) sw += PM(mt, i, "weight");
    if (GP(mt, "normalize") != 0 && sw == 0)
        return graft_err_set(err, GRAFT_E_CONFIG, NULL, mt->name, __builtin_strlen(mt->name),
                             "linear weights sum to 0 and normalize is on (the result would be NaN)");
    return GRAFT_OK;
}

// out = (Σ w_i x_i)·scale, input by input so that the loops vectorize; per element the sum is still
// in input order.
GRAFT_KERNEL static void weighted_sum(const float *const *x, const float *w, int n_in, float scale, uint64_t n, float *restrict out) {
    const float *restrict x0 = x[0];
    for (uint64_t e = 0; e < n; e++) out[e] = 0.0f + w[0] * x0[e];
    for (int i = 1; i < n_in; i++) {
        const float *restrict xi = x[i];
        const float wi = w[i];
        for (uint64_t e = 0; e < n; e++) out[e] += wi * xi[e];
    }
    for (uint64_t e = 0; e < n; e++) out[e] *= scale;
}

// weighted_sum straight from bf16 inputs (the common checkpoint dtype): the same operations in the
// same order per element, without the f32 staging copies.
GRAFT_KERNEL static void weighted_sum_bf16(const uint16_t *const *x, const float *w, int n_in, float scale, uint64_t n,
                                           float *restrict out) {
    const uint16_t *restrict x0 = x[0];
    for (uint64_t e = 0; e < n; e++) out[e] = 0.0f + w[0] * graft__bf16_to_f32(x0[e]);
    for (int i = 1; i < n_in; i++) {
        const uint16_t *restrict xi = x[i];
        const float wi = w[i];
        for (uint64_t e = 0; e < n; e++) out[e] += wi * graft__bf16_to_f32(xi[e]);
    }
    for (uint64_t e = 0; e < n; e++) out[e] *= scale;
}

// The weights as floats in w[], and the final scale (1/Σw when normalizing, else 1).
static float weights(const struct graft_mt *mt, float *w) {
    double sw = 0;
    for (int i = 0; i < mt->n_in; i++) sw += PM(mt, i, "weight"), w[i] = (float)PM(mt, i, "weight");
    return GP(mt, "normalize") != 0 ? (float)(1.0 / sw) : 1.0f;
}

static bool apply_raw(const struct graft_mt *mt, const struct graft_chunk *c, const void *const *raw, const enum graft_dtype *dt, float *out) {
    uint64_t n = c->n;
    for (int i = 0; i < mt->n_in; i++)
        if (dt[i] != GRAFT_DTYPE_BF16) return false;
    float w[GRAFT_MAX_INPUTS], scale = weights(mt, w);
    weighted_sum_bf16((const uint16_t *const *)raw, w, mt->n_in, scale, n, out);
    return true;
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    float w[GRAFT_MAX_INPUTS], scale = weights(mt, w);
    weighted_sum(c->in, w, mt->n_in, scale, c->n, out);
}

const struct graft_method graft_method_linear = {
    .name = "linear", .pretty = "Linear", .base = GRAFT_BASE_IGNORED, .min_models = 1, .max_models = -1,
    .params = params, .n_params = 2, .apply = apply, .apply_raw = apply_raw, .validate = validate,
};
