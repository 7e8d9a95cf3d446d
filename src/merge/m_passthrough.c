// passthrough: one input tensor, optionally scaled (frankenmerges, layer stacking).
#include "engine.h"

static const struct graft_mparam params[] = {{"scale", true, false, 1}};

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    float s = (float)PM(mt, 0, "scale");
    for (uint64_t e = 0; e < c->n; e++) out[e] = s * c->in[0][e];
}

const struct graft_method graft_method_passthrough = {
    .name = "passthrough", .pretty = "Passthrough", .base = GRAFT_BASE_IGNORED, .min_models = 1, .max_models = 1,
    .params = params, .n_params = 1, .apply = apply,
};
