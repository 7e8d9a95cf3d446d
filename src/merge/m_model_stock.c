// model_stock: o_i = W_i − W_0; cos = mean over pairs of clamp(o_i·o_j / max(|o_i||o_j|, 1e-6), −1, 1);
// t = N·cos / (1 + (N − 1)·cos); R = t·mean(W_i) + (1 − t)·W_0. The dot products come from one pass
// (a Gram matrix per chunk, summed in chunk order); with filter_wise they are per row, computed inside
// each chunk (chunks hold whole rows).
#include <math.h>
#include "engine.h"
#include "../core/impl.h"

static const struct graft_mparam params[] = {{"filter_wise", false, false, 0}};

struct st { double t; };

static int n_passes(const struct graft_mt *mt) { return GP(mt, "filter_wise") != 0 ? 0 : 1; }
static size_t partial_len(const struct graft_mt *mt, int pass) { (void)pass; return (size_t)mt->n_in * (size_t)mt->n_in; }

static void gram(const struct graft_mt *mt, const struct graft_chunk *c, uint64_t e0, uint64_t n, double *g) {
    int M = mt->n_in;
    const float *B = c->in[mt->base];
    for (int i = 0; i < M; i++)
        for (int j = i; j < M; j++) {
            if (i == mt->base || j == mt->base) continue;
            double s = 0;
            for (uint64_t e = e0; e < e0 + n; e++) s += ((double)c->in[i][e] - B[e]) * ((double)c->in[j][e] - B[e]);
            g[i * M + j] += s;
        }
}

static double t_from_gram(const struct graft_mt *mt, const double *g) {
    int M = mt->n_in, N = 0, pairs = 0;
    double cs = 0;
    for (int i = 0; i < M; i++) {
        if (i == mt->base) continue;
        N++;
        for (int j = i + 1; j < M; j++) {
            if (j == mt->base) continue;
            double den = fmax(sqrt(g[i * M + i]) * sqrt(g[j * M + j]), 1e-6);
            cs += fmin(fmax(g[i * M + j] / den, -1.0), 1.0), pairs++;
        }
    }
    double cos = pairs ? cs / pairs : 0;
    return N * cos / (1 + (N - 1) * cos);
}

static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *part, void *acc) {
    (void)pass, (void)acc;
    gram(mt, c, 0, c->n, part);
}

static int combine(struct graft_mt *mt, int pass, const double *part, void *const *accs, int n_accs, struct graft_err *err) {
    (void)pass, (void)accs, (void)n_accs;
    size_t L = (size_t)mt->n_in * (size_t)mt->n_in;
    double g[GRAFT_MAX_INPUTS * GRAFT_MAX_INPUTS] = {0};
    for (size_t k = 0; k < mt->n_chunks; k++)
        for (size_t q = 0; q < L; q++) g[q] += part[k * L + q];
    struct st *s = mt->state = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    s->t = t_from_gram(mt, g);
    return GRAFT_OK;
}

static void mix(const struct graft_mt *mt, const struct graft_chunk *c, uint64_t e0, uint64_t n, double t, float *out) {
    int N = mt->n_in - 1;
    const float *B = c->in[mt->base];
    for (uint64_t e = e0; e < e0 + n; e++) {
        float mean = 0;
        for (int i = 0; i < mt->n_in; i++)
            if (i != mt->base) mean += c->in[i][e];
        out[e] = (float)t * (mean / (float)N) + (float)(1 - t) * B[e];
    }
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    if (GP(mt, "filter_wise") == 0) { mix(mt, c, 0, c->n, ((const struct st *)mt->state)->t, out); return; }
    for (uint64_t r = 0; r < c->n; r += mt->row_len) {
        double g[GRAFT_MAX_INPUTS * GRAFT_MAX_INPUTS] = {0};
        gram(mt, c, r, mt->row_len, g);
        mix(mt, c, r, mt->row_len, t_from_gram(mt, g), out);
    }
}

const struct graft_method graft_method_model_stock = {
    .name = "model_stock", .pretty = "Model Stock", .base = GRAFT_BASE_REQUIRED, .min_models = 2, .max_models = -1,
    .params = params, .n_params = 1, .rows = true, .n_passes = n_passes, .partial_len = partial_len, .stat = stat,
    .combine = combine, .apply = apply,
};
