// multislerp: weighted spherical mean of several models (task vectors when a base is given).
//   U_i = F_i/(|F_i| + eps); m = normalise(Σ w_i U_i); τ = Σ w_i (U_i − (U_i·m) m); r = |τ| + eps
//   R = (m cos r + τ sin(r)/r) · Σ w_i |F_i|   (+ B)
// Three passes: norms |F_i|; |Σ w_i U_i| and U_i·(Σ w_j U_j); |τ|. Two models whose weighted sum
// vanishes fall back to LERP, as MergeKit does; more models are an error. One model (besides the base)
// is returned as it is, whatever its weight (MergeKit: "no interpolation needed").
#include <math.h>
#include <string.h>
#include "engine.h"
#include "../core/impl.h"

static const struct graft_mparam params[] = {
    {"weight", true, true, 0}, {"normalize_weights", false, false, 1}, {"eps", false, false, 1e-8}};

struct st { double w[GRAFT_MAX_INPUTS], n[GRAFT_MAX_INPUTS], c[GRAFT_MAX_INPUTS], mn, r, scale; bool lerp; };

static int n_models(const struct graft_mt *mt) { return mt->n_in - (mt->base >= 0); }
static int n_passes(const struct graft_mt *mt) { return n_models(mt) == 1 ? 0 : 3; }
static size_t partial_len(const struct graft_mt *mt, int pass) { (void)pass; return (size_t)mt->n_in + 1; }

static int init(struct graft_mt *mt, struct graft_err *err) {
    struct st *s = mt->state = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    double sw = 0;
    for (int i = 0; i < mt->n_in; i++) if (i != mt->base) sw += s->w[i] = PM(mt, i, "weight");
    if (GP(mt, "normalize_weights") != 0 && sw != 0)
        for (int i = 0; i < mt->n_in; i++) s->w[i] /= sw;
    return GRAFT_OK;
}

static inline float F(const struct graft_mt *mt, const struct graft_chunk *c, int i, uint64_t e) {
    return mt->base >= 0 ? c->in[i][e] - c->in[mt->base][e] : c->in[i][e];
}

static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *part, void *acc) {
    (void)acc;
    const struct st *s = mt->state;
    double eps = GP(mt, "eps");
    for (uint64_t e = 0; e < c->n; e++) {
        if (pass == 0) {
            for (int i = 0; i < mt->n_in; i++) if (i != mt->base) { double f = F(mt, c, i, e); part[i] += f * f; }
            continue;
        }
        double m = 0, u[GRAFT_MAX_INPUTS];
        for (int i = 0; i < mt->n_in; i++) if (i != mt->base) u[i] = F(mt, c, i, e) / (s->n[i] + eps), m += s->w[i] * u[i];
        if (pass == 1) {
            part[mt->n_in] += m * m;
            for (int i = 0; i < mt->n_in; i++) if (i != mt->base) part[i] += u[i] * m;
        } else {
            double mu = m / s->mn, tau = 0;
            for (int i = 0; i < mt->n_in; i++) if (i != mt->base) tau += s->w[i] * (u[i] - s->c[i] * mu);
            part[0] += tau * tau;
        }
    }
}

static int combine(struct graft_mt *mt, int pass, const double *part, void *const *accs, int n_accs, struct graft_err *err) {
    (void)accs, (void)n_accs;
    struct st *s = mt->state;
    size_t L = (size_t)mt->n_in + 1;
    double sum[GRAFT_MAX_INPUTS + 1] = {0};
    for (size_t k = 0; k < mt->n_chunks; k++)
        for (size_t q = 0; q < L; q++) sum[q] += part[k * L + q];
    double eps = GP(mt, "eps");
    if (pass == 0) {
        for (int i = 0; i < mt->n_in; i++) if (i != mt->base) s->n[i] = sqrt(sum[i]), s->scale += s->w[i] * s->n[i];
    } else if (pass == 1) {
        s->mn = sqrt(sum[mt->n_in]);
        if (s->mn < eps) {
            if (mt->n_in - (mt->base >= 0) != 2)
                return graft_err_set(err, GRAFT_E_CONFIG, NULL, mt->name, strlen(mt->name), "multislerp: the weighted sum of the directions is zero");
            s->lerp = true, s->mn = 1;
        }
        for (int i = 0; i < mt->n_in; i++) if (i != mt->base) s->c[i] = sum[i] / s->mn;
    } else {
        s->r = sqrt(sum[0]) + eps;
    }
    return GRAFT_OK;
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct st *s = mt->state;
    double eps = GP(mt, "eps"), cr = cos(s->r), sr = sin(s->r) / s->r;
    if (n_models(mt) == 1) {
        memcpy(out, c->in[mt->base == 0 ? 1 : 0], c->n * sizeof *out);
        return;
    }
    for (uint64_t e = 0; e < c->n; e++) {
        double m = 0, u[GRAFT_MAX_INPUTS], res;
        if (s->lerp) {
            res = 0;
            for (int i = 0; i < mt->n_in; i++) if (i != mt->base) res += s->w[i] * F(mt, c, i, e);
        } else {
            for (int i = 0; i < mt->n_in; i++) if (i != mt->base) u[i] = F(mt, c, i, e) / (s->n[i] + eps), m += s->w[i] * u[i];
            double mu = m / s->mn, tau = 0;
            for (int i = 0; i < mt->n_in; i++) if (i != mt->base) tau += s->w[i] * (u[i] - s->c[i] * mu);
            res = (mu * cr + tau * sr) * s->scale;
        }
        out[e] = (float)(res + (mt->base >= 0 ? c->in[mt->base][e] : 0));
    }
}

const struct graft_method graft_method_multislerp = {
    .name = "multislerp", .pretty = "Multi-SLERP", .base = GRAFT_BASE_OPTIONAL, .min_models = 1, .max_models = -1,
    .params = params, .n_params = 3, .init = init, .n_passes = n_passes, .partial_len = partial_len, .stat = stat,
    .combine = combine, .apply = apply,
};
