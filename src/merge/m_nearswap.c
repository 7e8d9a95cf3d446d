// nearswap: w = clamp(t / max(|B − b|, 1e-6), 0, 1); R = w·b + (1 − w)·B. Where the models differ by
// at most t the result is b; where they differ a lot it stays near the base.
#include <math.h>
#include "engine.h"

static const struct graft_mparam params[] = {{"t", false, true, 0}};

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const float *B = c->in[mt->base], *b = c->in[mt->base == 0 ? 1 : 0];
    float t = (float)GP(mt, "t");
    for (uint64_t e = 0; e < c->n; e++) {
        float w = t / fmaxf(fabsf(B[e] - b[e]), 1e-6f);
        w = w < 0 ? 0 : w > 1 ? 1 : w;
        out[e] = w * b[e] + (1 - w) * B[e];
    }
}

const struct graft_method graft_method_nearswap = {
    .name = "nearswap", .pretty = "NearSwap", .base = GRAFT_BASE_REQUIRED, .min_models = 1, .max_models = 1,
    .params = params, .n_params = 1, .apply = apply,
};
