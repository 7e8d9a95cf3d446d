// slerp: spherical interpolation between the base (t = 0) and one other model, the whole tensor
// treated as one vector. Pass 0 sums |v0|², |v1|², v0·v1 per chunk (combined in chunk order); the
// apply pass is R = c0·v0 + c1·v1. Near-parallel vectors (|cos| > 0.9995) fall back to LERP.
#include <math.h>
#include "engine.h"
#include "../core/impl.h"

static const struct graft_mparam params[] = {{"t", false, true, 0}};

struct st { double c0, c1; };

static int n_passes(const struct graft_mt *mt) { (void)mt; return 1; }
static size_t partial_len(const struct graft_mt *mt, int pass) { (void)mt, (void)pass; return 3; }

static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *part, void *acc) {
    (void)pass, (void)acc;
    const float *a = c->in[mt->base], *b = c->in[mt->base == 0 ? 1 : 0];
    double aa = 0, bb = 0, ab = 0;
    for (uint64_t e = 0; e < c->n; e++) aa += (double)a[e] * a[e], bb += (double)b[e] * b[e], ab += (double)a[e] * b[e];
    part[0] = aa, part[1] = bb, part[2] = ab;
}

static int combine(struct graft_mt *mt, int pass, const double *part, void *const *accs, int n_accs, struct graft_err *err) {
    (void)pass, (void)accs, (void)n_accs;
    double aa = 0, bb = 0, ab = 0;
    for (size_t k = 0; k < mt->n_chunks; k++) aa += part[3 * k], bb += part[3 * k + 1], ab += part[3 * k + 2];
    struct st *s = mt->state = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    double na = sqrt(aa), nb = sqrt(bb), t = GP(mt, "t");
    double dot = ab / ((na > 1e-8 ? na : 1.0) * (nb > 1e-8 ? nb : 1.0));
    if (fabs(dot) > 0.9995) {
        s->c0 = 1 - t, s->c1 = t;
    } else {
        double th0 = acos(dot), tht = th0 * t, s0 = sin(th0);
        s->c0 = sin(th0 - tht) / s0, s->c1 = sin(tht) / s0;
    }
    return GRAFT_OK;
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct st *s = mt->state;
    const float *a = c->in[mt->base], *b = c->in[mt->base == 0 ? 1 : 0];
    float c0 = (float)s->c0, c1 = (float)s->c1;
    for (uint64_t e = 0; e < c->n; e++) out[e] = c0 * a[e] + c1 * b[e];
}

const struct graft_method graft_method_slerp = {
    .name = "slerp", .pretty = "SLERP", .base = GRAFT_BASE_REQUIRED, .min_models = 1, .max_models = 1,
    .params = params, .n_params = 1, .n_passes = n_passes, .partial_len = partial_len, .stat = stat,
    .combine = combine, .apply = apply,
};
