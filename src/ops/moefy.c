// MoEfication (graft moefy; include/graft/moefy.h has the method). Plan: the calibration pass (if
// any) keeps the first max_tokens MLP inputs and activations of every layer; then the layers are
// clustered in parallel, one layer per thread with single-threaded BLAS (so the groups do not depend
// on the thread count); then every tensor is written: the dense model's other tensors copied, each
// layer's experts sliced from gate_proj / up_proj rows and down_proj columns (× K), its router
// computed. Nothing is written before every layer is clustered.
#include <cblas.h>
#include <jansson.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graft/convert.h"
#include "graft/eval.h"
#include "graft/moefy.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

#undef I // (complex.h, through lapacke.h): I is the intermediate size here

#define CHUNK (16u << 20)
#define MEM_BUDGET 4e9 // bytes of clustering buffers at once (the layers in flight)

struct graft_moefy_params graft_moefy_default_params(void) {
    return (struct graft_moefy_params){.experts = 8, .top_k = 2, .ctx = 256, .windows = 32, .max_tokens = 1024, .iters = 50, .router_range = 1e-5,
                                       .n_threads = 1};
}

void graft_moefy_report_free(struct graft_moefy_report *r) {
    if (!r) return;
    graft__free(r->expert), graft__free(r->objective), graft__free(r->iters), graft__free(r->converged), graft__free(r->scale), graft__free(r->range);
    memset(r, 0, sizeof *r);
}

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

struct mlayer {
    const struct graft_model_tensor *gate, *up, *down, *norm;
    uint32_t *order;  // I neurons, expert by expert, ascending within each
    float    *router; // E × H
};

struct job {
    const struct graft_model *m;
    const struct graft_moefy_params *p;
    struct graft_moefy_report *r;
    struct mlayer *ly;
    const struct graft_llama_stats *st; // calibration rows, or NULL
    int H, I;
};

struct pair { float d; uint32_t i, e; };
static int pair_cmp(const void *a, const void *b) {
    const struct pair *x = a, *y = b;
    if (isnan(x->d) != isnan(y->d)) return isnan(x->d) ? 1 : -1; // NaN last: a total order for qsort
    if (x->d != y->d && !isnan(x->d)) return x->d < y->d ? -1 : 1;
    if (x->i != y->i) return x->i < y->i ? -1 : 1;
    return x->e < y->e ? -1 : x->e > y->e;
}

// Balanced assignment: the (neuron, group) pairs by distance, each taken while the neuron is free and
// the group has room (greedy; ties by index).
static void assign(const float *S, const float *xx, const float *cc, size_t I, size_t E, size_t cap, struct pair *pr, uint32_t *a, uint32_t *fill) {
    for (size_t i = 0; i < I; i++)
        for (size_t e = 0; e < E; e++) pr[i * E + e] = (struct pair){xx[i] + cc[e] - 2 * S[i * E + e], (uint32_t)i, (uint32_t)e};
    qsort(pr, I * E, sizeof *pr, pair_cmp);
    for (size_t i = 0; i < I; i++) a[i] = UINT32_MAX;
    memset(fill, 0, E * sizeof *fill);
    for (size_t k = 0; k < I * E; k++)
        if (a[pr[k].i] == UINT32_MAX && fill[pr[k].e] < cap) a[pr[k].i] = pr[k].e, fill[pr[k].e]++;
}

static void centroids(const float *X, const uint32_t *a, size_t I, size_t D, size_t E, double *acc, float *C, float *cc) {
    memset(acc, 0, E * D * sizeof *acc);
    size_t *n = (size_t *)(acc + E * D); // (room for E counts after the sums)
    memset(n, 0, E * sizeof *n);
    for (size_t i = 0; i < I; i++) {
        n[a[i]]++;
        for (size_t d = 0; d < D; d++) acc[a[i] * D + d] += X[i * D + d];
    }
    for (size_t e = 0; e < E; e++) {
        double s = 0;
        for (size_t d = 0; d < D; d++) C[e * D + d] = n[e] ? (float)(acc[e * D + d] / (double)n[e]) : 0, s += (double)C[e * D + d] * C[e * D + d];
        cc[e] = (float)s;
    }
}

// Balanced k-means of layer l's neurons; the groups into ly->order.
static int cluster(struct job *j, int l, float *X, size_t D, struct graft_err *err) {
    size_t I = (size_t)j->I, E = (size_t)j->p->experts, cap = I / E;
    float *S = graft__malloc(I * E * sizeof *S), *C = graft__malloc(E * D * sizeof *C), *xx = graft__malloc(I * sizeof *xx), *cc = graft__malloc(E * sizeof *cc);
    double *acc = graft__malloc(E * D * sizeof *acc + E * sizeof(size_t) + 8), *mind = graft__malloc(I * sizeof *mind);
    struct pair *pr = graft__malloc(I * E * sizeof *pr);
    uint32_t *a = graft__malloc(I * sizeof *a), *b = graft__malloc(I * sizeof *b), *fill = graft__malloc(E * sizeof *fill);
    if (!S || !C || !xx || !cc || !acc || !mind || !pr || !a || !b || !fill) {
        graft__free(S), graft__free(C), graft__free(xx), graft__free(cc), graft__free(acc), graft__free(mind), graft__free(pr), graft__free(a), graft__free(b), graft__free(fill);
        return nomem(err);
    }
    for (size_t i = 0; i < I; i++) { // unit rows: groups by direction
        double s = 0;
        for (size_t d = 0; d < D; d++) s += (double)X[i * D + d] * X[i * D + d];
        float inv = s > 0 ? (float)(1 / sqrt(s)) : 0;
        for (size_t d = 0; d < D; d++) X[i * D + d] *= inv;
        xx[i] = s > 0 ? 1 : 0;
    }
    // k-means++ seeding from the counter-based generator keyed by (seed, layer)
    uint64_t key = graft_rng_key(j->p->seed, (uint64_t)l, "moefy", 5);
    size_t first = (size_t)(graft__rng_uniform(key, 0) * (float)I) % I;
    memcpy(C, X + first * D, D * sizeof *C);
    for (size_t i = 0; i < I; i++) mind[i] = INFINITY;
    for (size_t e = 1; e < E; e++) {
        double tot = 0;
        for (size_t i = 0; i < I; i++) {
            double d2 = 0;
            for (size_t d = 0; d < D; d++) { double t = (double)X[i * D + d] - C[(e - 1) * D + d]; d2 += t * t; }
            if (d2 < mind[i]) mind[i] = d2;
            tot += mind[i];
        }
        double u = (double)graft__rng_uniform(key, e) * tot, run = 0;
        size_t pick = I - 1;
        for (size_t i = 0; i < I; i++)
            if ((run += mind[i]) > u && mind[i] > 0) { pick = i; break; }
        memcpy(C + e * D, X + pick * D, D * sizeof *C);
    }
    for (size_t e = 0; e < E; e++) {
        double s = 0;
        for (size_t d = 0; d < D; d++) s += (double)C[e * D + d] * C[e * D + d];
        cc[e] = (float)s;
    }
    int it = 0;
    bool conv = false;
    for (; it < j->p->iters && !conv; it++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)I, (int)E, (int)D, 1.0f, X, (int)D, C, (int)D, 0.0f, S, (int)E);
        assign(S, xx, cc, I, E, cap, pr, b, fill);
        conv = it > 0 && !memcmp(a, b, I * sizeof *a);
        memcpy(a, b, I * sizeof *a);
        centroids(X, a, I, D, E, acc, C, cc);
    }
    double obj = 0;
    for (size_t i = 0; i < I; i++) {
        double d2 = 0;
        for (size_t d = 0; d < D; d++) { double t = (double)X[i * D + d] - C[a[i] * D + d]; d2 += t * t; }
        obj += d2;
    }
    j->r->objective[l] = obj / (double)I, j->r->iters[l] = it, j->r->converged[l] = conv;
    memcpy(j->r->expert + (size_t)l * I, a, I * sizeof *a);
    memset(fill, 0, E * sizeof *fill);
    for (size_t i = 0; i < I; i++) j->ly[l].order[a[i] * cap + fill[a[i]]++] = (uint32_t)i;
    graft__free(S), graft__free(C), graft__free(xx), graft__free(cc), graft__free(acc), graft__free(mind), graft__free(pr), graft__free(a), graft__free(b), graft__free(fill);
    return GRAFT_OK;
}

// Layer l's router: group centroids of the gate rows, or the ridge fit to the groups' activation norms.
static int router(struct job *j, int l, const float *gate, struct graft_err *err) {
    size_t I = (size_t)j->I, H = (size_t)j->H, E = (size_t)j->p->experts, cap = I / E;
    const struct mlayer *ly = &j->ly[l];
    float *R = ly->router;
    double big = 0;
    if (!j->st) {
        float *g = graft__ops_load_f32(j->m, ly->norm);
        if (!g) return nomem(err);
        for (size_t e = 0; e < E; e++) {
            double s2 = 0;
            for (size_t h = 0; h < H; h++) {
                double s = 0;
                for (size_t k = 0; k < cap; k++) s += gate[(size_t)ly->order[e * cap + k] * H + h];
                R[e * H + h] = (float)(s / (double)cap);
                s2 += ((double)R[e * H + h] * g[h]) * ((double)R[e * H + h] * g[h]);
            }
            if (4 * sqrt(s2) > big) big = 4 * sqrt(s2); // 4σ of c·(g ⊙ n), n of unit variance
        }
        graft__free(g);
    } else {
        size_t T, T2, dh, di;
        const float *Hm = graft_llama_stats_rows(j->st, l, 2, &T, &dh), *A = graft_llama_stats_rows(j->st, l, 3, &T2, &di);
        if (!Hm || !A || dh != H || di != I || T != T2 || !T) return graft_err_set(err, GRAFT_E_INTERNAL, NULL, NULL, 0, "calibration rows missing");
        double *G = graft__malloc(H * H * sizeof *G), *B = graft__malloc(H * E * sizeof *B), *N = graft__malloc(T * E * sizeof *N);
        double *X = graft__malloc(T * H * sizeof *X);
        if (!G || !B || !N || !X) { graft__free(G), graft__free(B), graft__free(N), graft__free(X); return nomem(err); }
        for (size_t t = 0; t < T; t++) {
            for (size_t h = 0; h < H; h++) X[t * H + h] = Hm[t * H + h];
            for (size_t e = 0; e < E; e++) {
                double s = 0;
                for (size_t k = 0; k < cap; k++) { double v = A[t * I + ly->order[e * cap + k]]; s += v * v; }
                N[t * E + e] = sqrt(s);
            }
        }
        // (XᵀX + λI) Rᵀ = XᵀN, λ = 1e-3 · mean diagonal: defined whatever the token count
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)H, (int)T, 1.0, X, (int)H, 0.0, G, (int)H);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)H, (int)E, (int)T, 1.0, X, (int)H, N, (int)E, 0.0, B, (int)E);
        double tr = 0;
        for (size_t h = 0; h < H; h++) tr += G[h * H + h];
        double lam = 1e-3 * tr / (double)H + 1e-30;
        for (size_t h = 0; h < H; h++) G[h * H + h] += lam;
        int info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', (lapack_int)H, (lapack_int)E, G, (lapack_int)H, B, (lapack_int)E);
        if (!info) {
            for (size_t e = 0; e < E; e++)
                for (size_t h = 0; h < H; h++) R[e * H + h] = (float)B[h * E + e];
            for (size_t t = 0; t < T; t++) // the largest logit on the calibration tokens
                for (size_t e = 0; e < E; e++) {
                    double s = 0;
                    for (size_t h = 0; h < H; h++) s += X[t * H + h] * (double)R[e * H + h];
                    if (fabs(s) > big) big = fabs(s);
                }
        }
        graft__free(G), graft__free(B), graft__free(N), graft__free(X);
        if (info) return graft_err_set(err, GRAFT_E_NONFINITE, graft_model_path(j->m), ly->gate->info->name, ly->gate->info->name_len,
                                       "the router's least-squares fit failed (LAPACK dposv info %d)", (int)info);
    }
    double s = big > 0 && isfinite(big) ? j->p->router_range / big : 1.0, rmax = 0;
    for (size_t i = 0; i < E * H; i++) rmax = fabs(R[i]) > rmax ? fabs(R[i]) : rmax;
    // F16 has 5 exponent bits: entries below 2^-14 lose precision, so keep the largest ≥ 2^-4 (entries
    // down to 1/1024 of it stay normal) and accept a wider logit range (reported)
    if (ly->gate->info->dtype == GRAFT_DTYPE_F16 && rmax > 0 && s * rmax < 0.0625) s = 0.0625 / rmax;
    for (size_t i = 0; i < E * H; i++) R[i] = (float)(R[i] * s);
    j->r->scale[l] = s, j->r->range[l] = s * big;
    return GRAFT_OK;
}

static int layer_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct job *j = ctx;
    int l = (int)item;
    size_t I = (size_t)j->I, H = (size_t)j->H;
    struct mlayer *ly = &j->ly[l];
    float *gate = graft__ops_load_f32(j->m, ly->gate), *X = NULL;
    size_t D = 0;
    int rc = gate ? GRAFT_OK : nomem(err);
    if (!rc && !j->st) { // features: [gate row, up row]
        float *up = graft__ops_load_f32(j->m, ly->up);
        D = 2 * H;
        if (!up || !(X = graft__malloc(I * D * sizeof *X))) rc = nomem(err);
        for (size_t i = 0; !rc && i < I; i++) memcpy(X + i * D, gate + i * H, H * sizeof *X), memcpy(X + i * D + H, up + i * H, H * sizeof *X);
        graft__free(up);
    } else if (!rc) { // features: |activation| on the calibration tokens
        size_t T, di;
        const float *A = graft_llama_stats_rows(j->st, l, 3, &T, &di);
        D = T;
        if (!A || di != I) rc = graft_err_set(err, GRAFT_E_INTERNAL, NULL, NULL, 0, "calibration rows missing");
        else if (!(X = graft__malloc(I * D * sizeof *X))) rc = nomem(err);
        for (size_t i = 0; !rc && i < I; i++)
            for (size_t t = 0; t < T; t++) X[i * D + t] = fabsf(A[t * I + i]);
    }
    if (!rc) rc = cluster(j, l, X, D, err);
    graft__free(X);
    if (!rc) rc = router(j, l, gate, err);
    graft__free(gate);
    return rc;
}

struct out { const struct graft_model_tensor *src; struct graft__slice s; const float *data; char *name; long id; };
struct wjob { const struct graft_model *m; struct graft_writer *w; struct out *o; unsigned flags; };

static int write_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct wjob *j = ctx;
    struct out *o = &j->o[item];
    if (o->data) { // a router
        const struct graft_tensor_info *t = o->src->info;
        size_t n = o->s.n_rows * (size_t)t->ne[1];
        uint64_t nb;
        void *enc = graft__malloc(n * 8 + 8);
        if (!enc) return nomem(err);
        graft_dtype_nbytes(t->dtype, n, &nb);
        int rc = graft__ops_encode("moefy's router", o->name, strlen(o->name), t->dtype, o->data, enc, n, j->m, o->src, j->flags, err);
        if (!rc) rc = graft_writer_write(j->w, o->id, 0, enc, (size_t)nb, err);
        graft__free(enc);
        return rc;
    }
    if (!o->s.rows && !o->s.cols && o->s.scale == 1.0) return graft__ops_copy_tensor(j->w, o->id, j->m, o->src, NULL, err);
    return graft__ops_write_slice(j->w, o->id, j->m, &o->s, CHUNK, j->flags, err);
}

int graft_moefy(const struct graft_model *m, const int32_t *ids, size_t n_ids, int32_t bos, const char *target, const struct graft_moefy_params *p,
                struct graft_moefy_report *rep, struct graft_err *err) {
    struct graft_moefy_report r = {0};
    const char *path = graft_model_path(m), *cj = graft_model_config_json(m);
    json_t *c = cj ? json_loads(cj, 0, NULL) : NULL;
    int rc = json_is_object(c) ? GRAFT_OK : graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "moefy needs the model folder's config.json");
    const char *mt = rc ? NULL : json_string_value(json_object_get(c, "model_type"));
    if (!rc && (!mt || (strcmp(mt, "llama") && strcmp(mt, "mistral"))))
        rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "model_type '%s': moefy writes Mixtral's layout, which holds Llama and Mistral models", mt ? mt : "?");
    if (!rc && (json_is_true(json_object_get(c, "attention_bias")) || json_is_true(json_object_get(c, "mlp_bias"))))
        rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "attention or MLP biases: Mixtral's layout has none");
    int L = rc ? 0 : (int)graft__json_int(c, "num_hidden_layers", -1), H = rc ? 0 : (int)graft__json_int(c, "hidden_size", -1);
    int I = rc ? 0 : (int)graft__json_int(c, "intermediate_size", -1), E = p->experts, K = p->top_k;
    if (!rc && (L < 1 || L > 4096 || H < 1 || H > (1 << 20) || I < 1 || I > (1 << 24)))
        rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "config.json: num_hidden_layers, hidden_size or intermediate_size missing or out of range");
    if (!rc && (E < 2 || E > 1024 || I % E))
        rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--experts must be from 2 to 1024 and divide intermediate_size (%d)", I);
    if (!rc && (K < 1 || K > E)) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--top-k must be from 1 to --experts");
    if (!rc && (p->iters < 1 || !(p->router_range > 0) || p->max_tokens < 1 || (ids && (p->ctx < 2 || p->windows < 1))))
        rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--iters, --router-range, --max-tokens, --ctx (≥ 2) and --windows must be positive");
    struct mlayer *ly = rc ? NULL : graft__calloc((size_t)L, sizeof *ly);
    if (!rc && !ly) rc = nomem(err);
    for (int l = 0; !rc && l < L; l++) {
        static const char *const part[4] = {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", "post_attention_layernorm.weight"};
        const struct graft_model_tensor *t[4];
        for (int k = 0; k < 4 && !rc; k++) {
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, part[k]);
            t[k] = graft_model_find(m, nm, strlen(nm));
            uint64_t want[2] = {k == 2 || k == 3 ? (uint64_t)H : (uint64_t)I, k == 2 ? (uint64_t)I : (uint64_t)H};
            if (!t[k]) rc = graft_err_set(err, GRAFT_E_FORMAT, path, nm, strlen(nm), "missing: moefy needs each layer's gate_proj, up_proj, down_proj and norm");
            else if (t[k]->info->n_dims != (k == 3 ? 1 : 2) || t[k]->info->ne[0] != want[0] || (k < 3 && t[k]->info->ne[1] != want[1]) ||
                     !graft_dtype_traits(t[k]->info->dtype)->is_float)
                rc = graft_err_set(err, GRAFT_E_FORMAT, path, nm, strlen(nm), "not a floating tensor of the shape config.json implies");
            else if (graft_dtype_traits(t[k]->info->dtype)->bits < 16)
                rc = graft_err_set(err, GRAFT_E_CONFIG, path, nm, strlen(nm), "%s weights: moefy needs 16- or 32-bit floating weights (the router's "
                                                                           "small entries)", graft_dtype_traits(t[k]->info->dtype)->name);
            else if (graft_count_nonfinite(t[k]->info->dtype, graft_model_data(m, t[k]), (size_t)t[k]->info->n_elem, NULL))
                rc = graft_err_set(err, GRAFT_E_NONFINITE, path, nm, strlen(nm), "holds NaN or infinite values: not clustered");
        }
        if (!rc) ly[l] = (struct mlayer){t[0], t[1], t[2], t[3], graft__malloc((size_t)I * 4), graft__malloc((size_t)E * H * sizeof(float))};
        if (!rc && (!ly[l].order || !ly[l].router)) rc = nomem(err);
    }
    r.n_layers = L, r.ffn = I, r.experts = E, r.top_k = K, r.calibrated = ids != NULL;
    if (!rc && (!(r.expert = graft__malloc((size_t)L * I * 4)) || !(r.objective = graft__calloc((size_t)L, sizeof(double))) ||
                !(r.iters = graft__calloc((size_t)L, sizeof(int))) || !(r.converged = graft__calloc((size_t)L, sizeof(bool))) ||
                !(r.scale = graft__calloc((size_t)L, sizeof(double))) || !(r.range = graft__calloc((size_t)L, sizeof(double)))))
        rc = nomem(err);
    // calibration: the first max_tokens tokens' MLP inputs and activations
    struct graft_llama *lm = NULL;
    struct graft_llama_stats *st = NULL;
    if (!rc && ids) {
        rc = graft_llama_open(m, p->n_threads > 0 ? p->n_threads : 1, &lm, err);
        if (!rc && (graft_llama_n_layers(lm) != L || graft_llama_hidden(lm) != H))
            rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "config.json's sizes are not the evaluator's");
        if (!rc) rc = graft_llama_stats_new_rows(lm, (size_t)p->max_tokens, &st, err);
        int32_t *win = rc ? NULL : graft__malloc((size_t)p->ctx * sizeof *win);
        if (!rc && !win) rc = nomem(err);
        int used = 0;
        for (size_t at = 0, T; !rc && used < p->windows && r.tokens < (uint64_t)p->max_tokens && (T = graft__ops_next_window(ids, n_ids, bos, (size_t)p->ctx, &at, win));
             used++) {
            double nll = 0;
            uint64_t scored = 0;
            rc = graft_llama_forward(lm, win, 1, (int)T, NULL, &nll, &scored, NULL, st, err);
            r.tokens += T;
        }
        graft__free(win);
        if (r.tokens > (uint64_t)p->max_tokens) r.tokens = (uint64_t)p->max_tokens;
        if (!rc && r.tokens < 2) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "the calibration text has fewer than 2 tokens");
    }
    struct job j = {m, p, &r, ly, st, H, I};
    if (!rc) { // layers at once: as many as threads, within MEM_BUDGET of per-layer buffers
        double per = (double)I * (3.0 * H + (ids ? (double)r.tokens : 0) + 2.0 * E) * 4 + (ids ? ((double)H * H + (double)r.tokens * (H + E)) * 8 : 0);
        int nt = p->n_threads > 0 ? p->n_threads : 1, fit = (int)(MEM_BUDGET / per);
        graft__blas_single_thread();
        rc = graft_pool_run(fit < 1 ? 1 : fit < nt ? fit : nt, (size_t)L, layer_item, &j, NULL, NULL, err);
    }
    graft_llama_stats_free(st), st = NULL;
    graft_llama_free(lm), lm = NULL;
    // the output: every tensor but the MLPs copied; per layer a router and E experts
    size_t nt = graft_model_n_tensors(m), no = 0, cap = I / (E ? E : 1);
    struct out *o = rc ? NULL : graft__calloc(nt + (size_t)L * (1 + 3 * (size_t)E), sizeof *o);
    if (!rc && !o) rc = nomem(err);
    for (size_t i = 0; !rc && i < nt; i++) {
        const struct graft_model_tensor *t = graft_model_tensor(m, i);
        int l, off = 0;
        if (t->info->name_len < 200 && sscanf(t->info->name, "model.layers.%d.mlp.%n", &l, &off) == 1 && off > 0) {
            if (l < 0 || l >= L || (t != ly[l].gate && t != ly[l].up && t != ly[l].down))
                rc = graft_err_set(err, GRAFT_E_CONFIG, path, t->info->name, t->info->name_len, "moefy only splits gate_proj, up_proj and down_proj");
            if (rc || t != ly[l].gate) continue;
            o[no++] = (struct out){.src = t, .data = ly[l].router, .s = {.n_rows = (size_t)E}, .name = graft__asprintf("model.layers.%d.block_sparse_moe.gate.weight", l)};
            for (int e = 0; e < E; e++) {
                const uint32_t *rows = ly[l].order + (size_t)e * cap;
                static const char *const wn[3] = {"w1", "w3", "w2"};
                for (int k = 0; k < 3; k++) {
                    struct graft__slice s = {.src = k == 0 ? ly[l].gate : k == 1 ? ly[l].up : ly[l].down, .scale = k == 2 ? (double)K : 1.0};
                    if (k < 2) s.rows = rows, s.n_rows = cap;
                    else s.cols = rows, s.n_cols = cap;
                    o[no++] = (struct out){.src = s.src, .s = s, .name = graft__asprintf("model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l, e, wn[k])};
                }
            }
        } else {
            o[no++] = (struct out){.src = t, .s = {.src = t, .scale = 1.0}, .name = graft__strndup(t->info->name, t->info->name_len)};
        }
    }
    for (size_t i = 0; !rc && i < no; i++)
        if (!o[i].name) rc = nomem(err);
    struct graft_writer *w = NULL;
    if (!rc && !p->dry_run) {
        rc = graft__ops_writer_open(m, target, p->max_shard_bytes, p->writer_flags, &w, err);
        for (size_t i = 0; !rc && i < no; i++) {
            const struct graft_tensor_info *t = o[i].src->info;
            uint64_t ne[2] = {(uint64_t)E, (uint64_t)H};
            if (!o[i].data && !graft__ops_slice_shape(&o[i].s, ne)) memcpy(ne, t->ne, sizeof ne);
            o[i].id = graft_writer_add_tensor(w, o[i].name, strlen(o[i].name), t->dtype, o[i].data || o[i].s.rows || o[i].s.cols ? 2 : t->n_dims,
                                              o[i].data || o[i].s.rows || o[i].s.cols ? ne : t->ne, err);
            if (o[i].id < 0) rc = (int)o[i].id;
        }
        if (!rc) rc = graft_writer_layout(w, err);
        struct wjob wj = {m, w, o, p->writer_flags};
        if (!rc) rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, no, write_item, &wj, NULL, NULL, err);
        if (!rc && !graft__ops_single_file(target)) {
            json_object_set_new(c, "intermediate_size", json_integer((json_int_t)cap));
            json_object_set_new(c, "output_router_logits", json_false());
            json_object_set_new(c, "router_aux_loss_coef", json_real(0.02));
            rc = graft__ops_add_mixtral_config(w, c, E, K, err);
            if (!rc) rc = graft_writer_copy_tokenizer(w, m, err);
        }
        if (!rc) rc = graft_writer_commit(w, err);
    }
    graft_writer_free(w);
    for (size_t i = 0; o && i < no; i++) graft__free(o[i].name);
    graft__free(o);
    for (int l = 0; ly && l < L; l++) graft__free(ly[l].order), graft__free(ly[l].router);
    graft__free(ly);
    json_decref(c);
    if (!rc && rep) *rep = r;
    else graft_moefy_report_free(&r);
    return rc;
}
