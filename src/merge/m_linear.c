// linear (Wortsman et al., model soups): R = Σ w_i X_i, divided by Σ w_i when `normalize` (default).
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

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    double sw = 0;
    for (int i = 0; i < mt->n_in; i++) sw += PM(mt, i, "weight");
    float scale = GP(mt, "normalize") != 0 ? (float)(1.0 / sw) : 1.0f;
    for (uint64_t e = 0; e < c->n; e++) {
        float acc = 0;
        for (int i = 0; i < mt->n_in; i++) acc += (float)PM(mt, i, "weight") * c->in[i][e];
        out[e] = acc * scale;
    }
}

const struct graft_method graft_method_linear = {
    .name = "linear", .pretty = "Linear", .base = GRAFT_BASE_IGNORED, .min_models = 1, .max_models = -1,
    .params = params, .n_params = 2, .apply = apply, .validate = validate,
};
