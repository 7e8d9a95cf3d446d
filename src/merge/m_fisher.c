// fisher — Fisher-weighted averaging (Matena & Raffel, NeurIPS 2022; methods-research.md A4), as the
// official merging code computes it. Each model i comes with its diagonal Fisher F_i
// (`parameters: {fisher: PATH}`: a safetensors file with a tensor of the same name and shape for every
// merged tensor; docs/merge.md). Per element:
//   c_i = w_i / ‖F_i‖₂            (normalize_fishers: the L2 norm over every value of model i's file)
//   F̃_i = max(F_i, fisher_floor)   for every model, or only the first (favor_target_model, the default)
//   θ = Σ_i c_i·F̃_i·θ_i / Σ_i c_i·F̃_i
// Defaults: fisher_floor 1e-6, favor_target_model true, normalize_fishers true, weight 1. Where the
// denominator is 0 (all Fishers 0 without a floor) the weighted mean is taken instead of NaN.
#include <math.h>
#include "engine.h"

static const struct graft_mparam params[] = {{"weight", true, false, 1.0}, {"fisher_floor", false, false, 1e-6},
                                             {"favor_target_model", false, false, 1}, {"normalize_fishers", false, false, 1}};

static int validate(const struct graft_mt *mt, struct graft_err *err) {
    for (int i = 0; i < mt->n_in; i++)
        if (!(PM(mt, i, "weight") >= 0)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "fisher weights must be ≥ 0, got %g", PM(mt, i, "weight"));
    if (!(GP(mt, "fisher_floor") >= 0)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "fisher_floor must be ≥ 0");
    return GRAFT_OK;
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    int n = mt->n_in;
    float coef[GRAFT_MAX_INPUTS], floor_ = (float)GP(mt, "fisher_floor");
    bool favor = GP(mt, "favor_target_model") != 0, norm = GP(mt, "normalize_fishers") != 0;
    float *F = c->tmp; // n × chunk: each model's Fisher values of this chunk
    double sw = 0;
    for (int i = 0; i < n; i++) {
        size_t es = (size_t)graft_dtype_traits(mt->stat_dt[i])->bits / 8;
        graft_row_to_f32(mt->stat_dt[i], mt->stat[i] + c->e0 * es, F + (size_t)i * c->n, (size_t)c->n);
        double nrm = sqrt(mt->stat_norm2[i]);
        coef[i] = (float)(norm && nrm > 0 ? PM(mt, i, "weight") / nrm : PM(mt, i, "weight"));
        sw += PM(mt, i, "weight");
    }
    for (uint64_t e = 0; e < c->n; e++) {
        float lhs = 0, rhs = 0;
        for (int i = 0; i < n; i++) {
            float f = F[(size_t)i * c->n + e];
            if (!favor || i == 0) f = fmaxf(f, floor_);
            float cf = coef[i] * f;
            lhs += cf, rhs += cf * c->in[i][e];
        }
        if (lhs != 0) out[e] = rhs / lhs;
        else {
            float acc = 0;
            for (int i = 0; i < n; i++) acc += (float)PM(mt, i, "weight") * c->in[i][e];
            out[e] = sw > 0 ? acc / (float)sw : 0.0f;
        }
    }
}

const struct graft_method graft_method_fisher = {
    .name = "fisher", .pretty = "Fisher merging", .base = GRAFT_BASE_IGNORED, .min_models = 2, .max_models = -1, .params = params, .n_params = 4,
    .stats = "fisher", .stats_kind = GRAFT_STATS_SAME, .apply = apply, .validate = validate,
};
