// nuslerp: SLERP between two models with t = w_b/(w_a + w_b) (0.5 when the sum vanishes), on task
// vectors when a base is given. nuslerp_flatten (default) treats the tensor as one vector (one
// statistics pass); with nuslerp_row_wise the vectors are the dim-0 slices v[:, j] (one pass of
// per-column sums, stored per chunk so they combine in chunk order); otherwise each row (last
// dimension) is its own vector, computed inside its chunk. Colinear vectors fall back to LERP.
#include <math.h>
#include <string.h>
#include "engine.h"
#include "../core/impl.h"

static const struct graft_mparam params[] = {
    {"weight", true, true, 0}, {"nuslerp_flatten", false, false, 1}, {"nuslerp_row_wise", false, false, 0}};

struct st { double c0, c1; double *col; /* row_wise: c0, c1 per column */ };

static bool flat(const struct graft_mt *mt) { return GP(mt, "nuslerp_flatten") != 0; }
static bool cols(const struct graft_mt *mt) { return !flat(mt) && GP(mt, "nuslerp_row_wise") != 0; }
static uint64_t n_cols(const struct graft_mt *mt) { return mt->numel / mt->dim0; }

static void pick(const struct graft_mt *mt, int *a, int *b) {
    *a = *b = -1;
    for (int i = 0; i < mt->n_in; i++)
        if (i != mt->base) { if (*a < 0) *a = i; else *b = i; }
}

static double tval(const struct graft_mt *mt) {
    int a, b;
    pick(mt, &a, &b);
    double wa = PM(mt, a, "weight"), wb = PM(mt, b, "weight");
    return fabs(wa + wb) < 1e-6 ? 0.5 : wb / (wa + wb);
}

static inline double V(const struct graft_mt *mt, const struct graft_chunk *c, int i, uint64_t e) {
    return mt->base >= 0 ? (double)c->in[i][e] - c->in[mt->base][e] : c->in[i][e];
}

static void coeffs(double aa, double bb, double ab, double t, double *c0, double *c1) {
    double cs = fmin(fmax(ab / (fmax(sqrt(aa), 1e-7) * fmax(sqrt(bb), 1e-7)), -1.0), 1.0), th = acos(cs), s = sin(th);
    if (fabs(s) < 1e-8) *c0 = 1 - t, *c1 = t;
    else *c0 = sin((1 - t) * th) / s, *c1 = sin(t * th) / s;
}

static void sums(const struct graft_mt *mt, const struct graft_chunk *c, uint64_t e0, uint64_t n, double *out3) {
    int a, b;
    pick(mt, &a, &b);
    for (uint64_t e = e0; e < e0 + n; e++) {
        double x = V(mt, c, a, e), y = V(mt, c, b, e);
        out3[0] += x * x, out3[1] += y * y, out3[2] += x * y;
    }
}

static int n_passes(const struct graft_mt *mt) { return flat(mt) || cols(mt) ? 1 : 0; }
static size_t partial_len(const struct graft_mt *mt, int pass) { (void)pass; return cols(mt) ? 3 * (size_t)n_cols(mt) : 3; }
static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *part, void *acc) {
    (void)pass, (void)acc;
    if (!cols(mt)) { sums(mt, c, 0, c->n, part); return; }
    int a, b;
    pick(mt, &a, &b);
    uint64_t S = n_cols(mt), j = c->e0 % S;
    for (uint64_t e = 0; e < c->n; e++, j = j + 1 == S ? 0 : j + 1) {
        double x = V(mt, c, a, e), y = V(mt, c, b, e);
        part[3 * j] += x * x, part[3 * j + 1] += y * y, part[3 * j + 2] += x * y;
    }
}

static int combine(struct graft_mt *mt, int pass, const double *part, void *const *accs, int n_accs, struct graft_err *err) {
    (void)pass, (void)accs, (void)n_accs;
    size_t L = partial_len(mt, 0);
    struct st *s = mt->state = graft__calloc(1, sizeof *s);
    double *tot = graft__calloc(L, sizeof *tot);
    if (!s || !tot) { graft__free(tot); return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }
    for (size_t k = 0; k < mt->n_chunks; k++)
        for (size_t q = 0; q < L; q++) tot[q] += part[k * L + q];
    double t = tval(mt);
    if (!cols(mt)) {
        coeffs(tot[0], tot[1], tot[2], t, &s->c0, &s->c1);
        graft__free(tot);
        return GRAFT_OK;
    }
    for (size_t j = 0; j < L / 3; j++) coeffs(tot[3 * j], tot[3 * j + 1], tot[3 * j + 2], t, &tot[2 * j], &tot[2 * j + 1]); // in place: 2j+1 < 3j+3
    s->col = tot;
    return GRAFT_OK;
}

static void free_state(struct graft_mt *mt) {
    struct st *s = mt->state;
    if (s) graft__free(s->col);
}

static void mix(const struct graft_mt *mt, const struct graft_chunk *c, uint64_t e0, uint64_t n, double c0, double c1, float *out) {
    int a, b;
    pick(mt, &a, &b);
    for (uint64_t e = e0; e < e0 + n; e++)
        out[e] = (float)(c0 * V(mt, c, a, e) + c1 * V(mt, c, b, e) + (mt->base >= 0 ? c->in[mt->base][e] : 0));
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct st *s = mt->state;
    if (flat(mt)) {
        mix(mt, c, 0, c->n, s->c0, s->c1, out);
        return;
    }
    if (cols(mt)) {
        uint64_t S = n_cols(mt), j = c->e0 % S;
        for (uint64_t e = 0; e < c->n; e++, j = j + 1 == S ? 0 : j + 1) mix(mt, c, e, 1, s->col[2 * j], s->col[2 * j + 1], out);
        return;
    }
    for (uint64_t r = 0; r < c->n; r += mt->row_len) {
        double s3[3] = {0}, c0, c1;
        sums(mt, c, r, mt->row_len, s3);
        coeffs(s3[0], s3[1], s3[2], tval(mt), &c0, &c1);
        mix(mt, c, r, mt->row_len, c0, c1, out);
    }
}

const struct graft_method graft_method_nuslerp = {
    .name = "nuslerp", .pretty = "NuSLERP", .base = GRAFT_BASE_OPTIONAL, .min_models = 2, .max_models = 2,
    .params = params, .n_params = 3, .rows = true, .n_passes = n_passes, .partial_len = partial_len, .stat = stat,
    .combine = combine, .apply = apply, .free_state = free_state,
};
