// graft analyze: task-vector statistics per tensor, layer and model (include/graft/analyze.h).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "graft/analyze.h"
#include "graft/util.h"
#include "../core/impl.h"

struct job {
    const struct graft_model *base;
    const struct graft_model *const *models;
    int n;
    double density;
    struct graft_analyze *a;
    const struct graft_model_tensor **src; // n_tensors × (n + 1): base, then each model
    struct graft_progress *progress;
};

// Mark the k largest |τ| (ties: lower index first) in `mask` (bytes); mag is scratch of d floats.
static void topk_mask(const float *t, uint64_t d, uint64_t k, float *mag, uint8_t *mask) {
    memset(mask, 0, (size_t)d);
    if (!k) return;
    for (uint64_t e = 0; e < d; e++) mag[e] = fabsf(t[e]);
    float thr = k >= d ? 0 : graft__kth_smallest(mag, (size_t)d, (size_t)(d - k)); // the k-th largest
    if (k >= d) { memset(mask, 1, (size_t)d); return; }
    uint64_t greater = 0;
    for (uint64_t e = 0; e < d; e++) greater += fabsf(t[e]) > thr;
    uint64_t ties = k - greater;
    for (uint64_t e = 0; e < d; e++) {
        float a = fabsf(t[e]);
        if (a > thr) mask[e] = 1;
        else if (a == thr && ties) mask[e] = 1, ties--;
    }
}

// exp(entropy of S/ΣS) of an m×n matrix (0 for a zero matrix).
static int erank(const float *M, uint64_t m, uint64_t n, double *out, struct graft_err *err) {
    struct graft__svd s;
    int rc = graft__svd_gram(M, (size_t)m, (size_t)n, 0, &s, err);
    if (rc) return rc;
    double tot = 0, h = 0;
    for (size_t j = 0; j < s.n_vals; j++) tot += graft__svd_sv(&s, j);
    for (size_t j = 0; tot > 0 && j < s.n_vals; j++) {
        double p = graft__svd_sv(&s, j) / tot;
        if (p > 0) h -= p * log(p);
    }
    *out = tot > 0 ? exp(h) : 0;
    graft__svd_free(&s);
    return GRAFT_OK;
}

static int one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct job *j = ctx;
    struct graft_analyze_tensor *at = &j->a->tensors[item];
    const struct graft_model_tensor **src = j->src + item * (size_t)(j->n + 1);
    uint64_t d = src[0]->info->n_elem;
    int n = j->n, rc = GRAFT_OK;
    float *b = graft__malloc((size_t)d * sizeof *b), *tv = graft__malloc((size_t)(d * (uint64_t)n) * sizeof *tv), *mag = graft__malloc((size_t)d * sizeof *mag);
    uint8_t *mask = graft__malloc((size_t)(d * (uint64_t)n) + 1);
    if (!b || !tv || !mag || !mask) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, at->name, strlen(at->name), "out of memory for %d × %llu values", n + 1, (unsigned long long)d);
    for (int i = 0; !rc && i <= n; i++) { // a NaN would turn every figure of the model into NaN
        size_t first = 0;
        uint64_t bad = graft_count_nonfinite(src[i]->info->dtype, graft_model_data(i ? j->models[i - 1] : j->base, src[i]), (size_t)d, &first);
        if (bad)
            rc = graft_err_set(err, GRAFT_E_NONFINITE, graft_model_path(i ? j->models[i - 1] : j->base), at->name, strlen(at->name),
                               "holds %llu NaN or infinite values (first at element %zu): its task vector has no statistics",
                               (unsigned long long)bad, first);
    }
    if (!rc) graft_row_to_f32(src[0]->info->dtype, graft_model_data(j->base, src[0]), b, (size_t)d);
    for (int i = 0; !rc && i < n; i++) {
        float *t = tv + (size_t)i * d;
        graft_row_to_f32(src[i + 1]->info->dtype, graft_model_data(j->models[i], src[i + 1]), t, (size_t)d);
        for (uint64_t e = 0; e < d; e++) t[e] -= b[e];
    }
    struct graft_analyze_sums *s = &at->s;
    s->n_elem = d, s->n_tensors = 1;
    uint64_t k = (uint64_t)((double)d * j->density), ki[GRAFT_ANALYZE_MAX_MODELS];
    s->topk = k;
    for (int i = 0; !rc && i < n; i++) {
        const float *x = tv + (size_t)i * d;
        double sq = 0, sm = 0;
        uint64_t nz = 0;
        for (uint64_t e = 0; e < d; e++) sq += (double)x[e] * x[e], sm += x[e], nz += x[e] != 0;
        s->sq[i] = sq, s->sum[i] = sm;
        ki[i] = k < nz ? k : nz; // the top-k among the entries τ_i changed
        topk_mask(x, d, ki[i], mag, mask + (size_t)i * d);
    }
    for (int i = 0; !rc && i < n; i++)
        for (int q = i + 1; q < n; q++) {
            const float *x = tv + (size_t)i * d, *y = tv + (size_t)q * d;
            const uint8_t *mx = mask + (size_t)i * d, *my = mask + (size_t)q * d;
            double dot = 0, d2 = 0;
            uint64_t both = 0, conf = 0, ov = 0;
            for (uint64_t e = 0; e < d; e++) {
                double u = x[e], v = y[e];
                dot += u * v, d2 += (u - v) * (u - v);
                if (u != 0 && v != 0) both++, conf += (u > 0) != (v > 0);
                ov += mx[e] & my[e];
            }
            s->dot[i * n + q] = dot, s->dist2[i * n + q] = d2, s->both[i * n + q] = both, s->conflict[i * n + q] = conf, s->overlap[i * n + q] = ov;
            s->overlap_k[i * n + q] = ki[i] > ki[q] ? ki[i] : ki[q];
        }
    if (!rc && at->n_dims == 2 && at->ne[0] > 1 && at->ne[1] > 1) {
        s->n_matrices = 1;
        for (int i = 0; !rc && i < n; i++)
            if ((s->n_changed[i] = s->sq[i] > 0)) rc = erank(tv + (size_t)i * d, at->ne[0], at->ne[1], &s->erank[i], err);
    }
    graft__free(b), graft__free(tv), graft__free(mag), graft__free(mask);
    if (j->progress) graft_progress_add(j->progress, d * 4 * (uint64_t)(n + 1));
    if (rc && !strstr(err->msg, at->name)) graft__err_prefix(err, NULL, at->name, strlen(at->name));
    return rc;
}

static void add(struct graft_analyze_sums *to, const struct graft_analyze_sums *s, int n) {
    to->n_elem += s->n_elem, to->n_tensors += s->n_tensors, to->n_matrices += s->n_matrices, to->topk += s->topk;
    for (int i = 0; i < n; i++) to->sq[i] += s->sq[i], to->sum[i] += s->sum[i], to->erank[i] += s->erank[i], to->n_changed[i] += s->n_changed[i];
    for (int q = 0; q < n * n; q++)
        to->dot[q] += s->dot[q], to->dist2[q] += s->dist2[q], to->both[q] += s->both[q], to->conflict[q] += s->conflict[q],
        to->overlap[q] += s->overlap[q], to->overlap_k[q] += s->overlap_k[q];
}

// Layer index from "…layers.N." style names — the leftmost such part (T5's block.3.layer.1. is block
// 3) — else −1. An index of max_layer or more is no layer numbering (layers are dense, and each has
// a tensor).
static int layer_of(const char *name, size_t max_layer) {
    static const char *const keys[] = {"layers.", "layer.", ".h.", "blocks.", "block."};
    const char *best = NULL;
    long val = -1;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        for (const char *p = strstr(name, keys[k]); p; p = strstr(p + 1, keys[k])) {
            const char *q = p + strlen(keys[k]);
            char *end;
            long v = strtol(q, &end, 10);
            if (*q < '0' || *q > '9' || *end != '.') continue;
            if (!best || p < best) best = p, val = v;
            break;
        }
    return best && val >= 0 && (size_t)val < max_layer ? (int)val : -1;
}

int graft_analyze_run(const struct graft_model *base, const struct graft_model *const *models, int n_models,
                      const struct graft_analyze_params *p, struct graft_analyze **out, struct graft_err *err) {
    *out = NULL;
    if (n_models < 1 || n_models > GRAFT_ANALYZE_MAX_MODELS)
        return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "analyze takes 1 to %d models besides the base", GRAFT_ANALYZE_MAX_MODELS);
    struct graft_analyze *a = graft__calloc(1, sizeof *a);
    size_t nt = graft_model_n_tensors(base);
    struct job j = {.base = base, .models = models, .n = n_models, .density = p && p->density > 0 ? p->density : 0.2, .a = a,
                    .progress = p ? p->progress : NULL};
    j.src = a ? graft__calloc(nt ? nt * (size_t)(n_models + 1) : 1, sizeof *j.src) : NULL;
    if (!a || !j.src || !(a->tensors = graft__calloc(nt ? nt : 1, sizeof *a->tensors))) {
        graft__free(j.src), graft_analyze_free(a);
        return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    }
    a->n_models = n_models;
    int rc = GRAFT_OK;
    for (size_t i = 0; i < nt && !rc; i++) {
        const struct graft_model_tensor *bt = graft_model_tensor(base, i);
        const struct graft_tensor_info *bi = bt->info;
        bool ok = graft_dtype_traits(bi->dtype)->is_float && graft_dtype_traits(bi->dtype)->to_f32;
        const struct graft_model_tensor **row = j.src + a->n_tensors * (size_t)(n_models + 1);
        row[0] = bt;
        for (int m = 0; ok && m < n_models; m++) {
            const struct graft_model_tensor *t = graft_model_find(models[m], bi->name, bi->name_len);
            ok = t && t->info->n_dims == bi->n_dims && graft_dtype_traits(t->info->dtype)->is_float && graft_dtype_traits(t->info->dtype)->to_f32;
            for (int d = 0; ok && d < bi->n_dims; d++) ok = t->info->ne[d] == bi->ne[d];
            row[m + 1] = t;
        }
        if (!ok || !bi->n_elem) { a->n_skipped++; continue; }
        struct graft_analyze_tensor *at = &a->tensors[a->n_tensors++];
        if (!(at->name = graft__strndup(bi->name, bi->name_len))) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
        at->layer = at->name ? layer_of(at->name, nt) : -1, at->n_dims = bi->n_dims;
        for (int d = 0; d < bi->n_dims && d < 8; d++) at->ne[d] = bi->ne[d];
        if (at->layer + 1 > a->n_layers) a->n_layers = at->layer + 1;
    }
    if (!rc && a->n_layers && !(a->layers = graft__calloc((size_t)a->n_layers, sizeof *a->layers))) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    if (!rc) rc = graft_pool_run(p && p->n_threads > 0 ? p->n_threads : 1, a->n_tensors, one, &j, p && p->progress ? graft_progress_draw : NULL,
                                 p ? p->progress : NULL, err);
    for (size_t i = 0; !rc && i < a->n_tensors; i++) {
        add(&a->total, &a->tensors[i].s, n_models);
        if (a->tensors[i].layer >= 0) add(&a->layers[a->tensors[i].layer], &a->tensors[i].s, n_models);
    }
    graft__free(j.src);
    if (rc) { graft_analyze_free(a); return rc; }
    *out = a;
    return GRAFT_OK;
}

void graft_analyze_free(struct graft_analyze *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n_tensors; i++) graft__free(a->tensors[i].name);
    graft__free(a->tensors), graft__free(a->layers), graft__free(a);
}

double graft_analyze_norm(const struct graft_analyze_sums *s, int i) { return sqrt(s->sq[i]); }
double graft_analyze_cos(const struct graft_analyze_sums *s, int n, int i, int j) {
    double den = sqrt(s->sq[i]) * sqrt(s->sq[j]);
    return den > 0 ? s->dot[i * n + j] / den : NAN;
}
double graft_analyze_pearson(const struct graft_analyze_sums *s, int n, int i, int j) {
    double N = (double)s->n_elem, mi = s->sum[i] / N, mj = s->sum[j] / N;
    double cov = s->dot[i * n + j] - N * mi * mj, vi = s->sq[i] - N * mi * mi, vj = s->sq[j] - N * mj * mj;
    return vi > 0 && vj > 0 ? cov / sqrt(vi * vj) : NAN;
}
double graft_analyze_euclid(const struct graft_analyze_sums *s, int n, int i, int j) { return sqrt(s->dist2[i * n + j]); }
double graft_analyze_conflict(const struct graft_analyze_sums *s, int n, int i, int j) {
    return s->both[i * n + j] ? (double)s->conflict[i * n + j] / (double)s->both[i * n + j] : NAN;
}
double graft_analyze_overlap(const struct graft_analyze_sums *s, int n, int i, int j) {
    return s->overlap_k[i * n + j] ? (double)s->overlap[i * n + j] / (double)s->overlap_k[i * n + j] : NAN;
}
double graft_analyze_erank(const struct graft_analyze_sums *s, int i) { return s->n_changed[i] ? s->erank[i] / (double)s->n_changed[i] : NAN; }
