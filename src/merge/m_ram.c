// ram / ramplus_tl (Reinforced Agent Merging): τ_i = X_i − B, A_i = |τ_i| > ε, c = Σ A_i.
// Entries changed by one model take its change; entries changed by several take the mean change of
// those models. ramplus_tl scales each model's unique changes by λ_i = 1 + r·clamp(ρ_i, 0, α), with
// ρ_i = (its entries in overlaps) / max(its unique entries, ε), counted in one pass.
#include <math.h>
#include <string.h>
#include "engine.h"
#include "../core/impl.h"

static const struct graft_mparam p_ram[] = {{"epsilon", false, false, 1e-5}};
static const struct graft_mparam p_plus[] = {{"r", false, false, 0.1}, {"alpha", false, false, 0.2}, {"epsilon", false, false, 1e-5}};

struct st { double lambda[GRAFT_MAX_INPUTS]; };

static bool plus(const struct graft_mt *mt) { return mt->m->n_params == 3; }
static int n_passes(const struct graft_mt *mt) { return plus(mt) ? 1 : 0; }
static size_t partial_len(const struct graft_mt *mt, int pass) { (void)pass; return 2 * (size_t)mt->n_in; }

static int init(struct graft_mt *mt, struct graft_err *err) {
    struct st *s = mt->state = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (int i = 0; i < mt->n_in; i++) s->lambda[i] = 1.0;
    return GRAFT_OK;
}

static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *part, void *acc) {
    (void)pass, (void)acc;
    float eps = (float)GP(mt, "epsilon");
    const float *B = c->in[mt->base];
    for (uint64_t e = 0; e < c->n; e++) {
        int cnt = 0;
        for (int i = 0; i < mt->n_in; i++) cnt += i != mt->base && fabsf(c->in[i][e] - B[e]) > eps;
        for (int i = 0; i < mt->n_in; i++)
            if (i != mt->base && fabsf(c->in[i][e] - B[e]) > eps) part[2 * i + (cnt > 1)] += 1; // [unique, shared]
    }
}

static int combine(struct graft_mt *mt, int pass, const double *part, void *const *accs, int n_accs, struct graft_err *err) {
    (void)pass, (void)accs, (void)n_accs, (void)err;
    struct st *s = mt->state;
    size_t L = 2 * (size_t)mt->n_in;
    for (int i = 0; i < mt->n_in; i++) {
        double uniq = 0, shared = 0;
        for (size_t k = 0; k < mt->n_chunks; k++) uniq += part[k * L + 2 * (size_t)i], shared += part[k * L + 2 * (size_t)i + 1];
        double rho = shared / fmax(uniq, GP(mt, "epsilon"));
        s->lambda[i] = 1 + GP(mt, "r") * fmin(fmax(rho, 0), GP(mt, "alpha"));
    }
    return GRAFT_OK;
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct st *s = mt->state;
    float eps = (float)GP(mt, "epsilon");
    const float *B = c->in[mt->base];
    for (uint64_t e = 0; e < c->n; e++) {
        int cnt = 0;
        for (int i = 0; i < mt->n_in; i++) cnt += i != mt->base && fabsf(c->in[i][e] - B[e]) > eps;
        float acc = 0;
        for (int i = 0; i < mt->n_in; i++) {
            if (i == mt->base) continue;
            float t = c->in[i][e] - B[e];
            if (fabsf(t) <= eps) continue;
            acc += cnt == 1 ? (float)s->lambda[i] * t : t / (float)cnt;
        }
        out[e] = B[e] + acc;
    }
}

const struct graft_method graft_method_ram = {
    .name = "ram", .pretty = "RAM", .base = GRAFT_BASE_REQUIRED, .min_models = 1, .max_models = -1, .params = p_ram,
    .n_params = 1, .init = init, .apply = apply,
};
const struct graft_method graft_method_ramplus_tl = {
    .name = "ramplus_tl", .pretty = "RAM+ (TL)", .base = GRAFT_BASE_REQUIRED, .min_models = 1, .max_models = -1, .params = p_plus,
    .n_params = 3, .init = init, .n_passes = n_passes, .partial_len = partial_len, .stat = stat, .combine = combine, .apply = apply,
};
