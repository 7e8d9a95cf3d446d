// Gathering task matrices for the SVD-based merges, and their apply step (lowrank.h).
#include <cblas.h>
#include <string.h>
#include "lowrank.h"

int graft__lr_init(struct graft_mt *mt, bool sum_only, struct graft_err *err) {
    struct graft_lr *lr = mt->state = graft__calloc(1, sizeof *lr);
    if (!lr) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (int i = 0; i < mt->n_in; i++)
        if (i != mt->base) lr->tin[lr->T++] = i;
    lr->mat = mt->n_dims == 2 && mt->dim0 > 0 && mt->row_len > 0 && !strstr(mt->name, "text_projection") && lr->T > 0;
    lr->sum_only = sum_only, lr->m = mt->dim0, lr->n = mt->row_len;
    if (!lr->mat) return GRAFT_OK;
    size_t n = (size_t)(sum_only ? 1 : lr->T) * (size_t)mt->numel;
    if (!(lr->tv = sum_only ? graft__calloc(n, sizeof(float)) : graft__malloc(n * sizeof(float))))
        return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for %d task matrices of %llu×%llu", sum_only ? 1 : lr->T,
                             (unsigned long long)lr->m, (unsigned long long)lr->n);
    return GRAFT_OK;
}

int graft__lr_passes(const struct graft_mt *mt) { return ((const struct graft_lr *)mt->state)->mat ? 1 : 0; }
size_t graft__lr_partial_len(const struct graft_mt *mt, int pass) { (void)mt, (void)pass; return 1; }

void graft__lr_stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *partial, void *acc) {
    (void)pass, (void)partial, (void)acc;
    const struct graft_lr *lr = mt->state;
    const float *B = c->in[mt->base];
    if (lr->sum_only) { // Σ_t τ_t in task order, as sum(tvs) computes it
        float *d = lr->tv + c->e0;
        for (uint64_t e = 0; e < c->n; e++) {
            float s = 0;
            for (int t = 0; t < lr->T; t++) s += c->in[lr->tin[t]][e] - B[e];
            d[e] = s;
        }
        return;
    }
    for (int t = 0; t < lr->T; t++) {
        float *d = lr->tv + (size_t)t * mt->numel + c->e0;
        const float *x = c->in[lr->tin[t]];
        for (uint64_t e = 0; e < c->n; e++) d[e] = x[e] - B[e];
    }
}

void graft__lr_apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct graft_lr *lr = mt->state;
    const float *B = c->in[mt->base];
    float a = (float)GP(mt, "scaling_factor");
    if (lr->mat) {
        const float *d = lr->delta + c->e0;
        for (uint64_t e = 0; e < c->n; e++) out[e] = B[e] + a * d[e];
        return;
    }
    for (uint64_t e = 0; e < c->n; e++) { // running mean, as the reference accumulates it
        float mean = 0;
        for (int t = 0; t < lr->T; t++) {
            float x = c->in[lr->tin[t]][e] - B[e];
            mean = t == 0 ? x : mean + (x - mean) / (float)(t + 1);
        }
        out[e] = B[e] + a * mean;
    }
}

int graft__lr_product(struct graft_lr *lr, const float *A, const float *Bm, size_t k, float scale, struct graft_err *err) {
    if (!(lr->delta = graft__calloc((size_t)(lr->m * lr->n), sizeof(float))))
        return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    if (k) graft__sgemm_acc(false, false, (size_t)lr->m, (size_t)lr->n, k, scale, A, k, Bm, (size_t)lr->n, lr->delta, (size_t)lr->n);
    return GRAFT_OK;
}

void graft__lr_free(struct graft_mt *mt) {
    struct graft_lr *lr = mt->state;
    if (lr) graft__free(lr->tv), graft__free(lr->delta);
}

int graft__gather_init(struct graft_mt *mt, struct graft_err *err) {
    struct graft_gather *s = mt->state = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (int i = 0; i < mt->n_in; i++)
        if (i != mt->base) s->tin[s->T++] = i;
    s->mat = s->T && mt->stat[s->tin[0]] != NULL;
    if (s->mat && !(s->w = graft__malloc((size_t)mt->n_in * (size_t)mt->numel * sizeof(float))))
        return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for %d weights of %llu values", mt->n_in, (unsigned long long)mt->numel);
    return GRAFT_OK;
}

int graft__gather_passes(const struct graft_mt *mt) { return ((const struct graft_gather *)mt->state)->mat ? 1 : 0; }

void graft__gather_stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *partial, void *acc) {
    (void)pass, (void)partial, (void)acc;
    const struct graft_gather *s = mt->state;
    for (int i = 0; i < mt->n_in; i++) memcpy(s->w + (size_t)i * mt->numel + c->e0, c->in[i], (size_t)c->n * sizeof(float));
}

void graft__gather_free(struct graft_mt *mt) {
    struct graft_gather *s = mt->state;
    if (s) graft__free(s->w), graft__free(s->res);
}

int graft__gram_system(const struct graft_mt *mt, const int *ins, const double *scale, int n, double lam, double *A, double *B,
                       struct graft_err *err) {
    const struct graft_gather *s = mt->state;
    size_t out = (size_t)mt->dim0, in = (size_t)mt->row_len;
    double *G = graft__malloc(in * in * sizeof *G), *W = graft__malloc(in * out * sizeof *W);
    float *row = graft__malloc(in * sizeof *row);
    int rc = G && W && row ? GRAFT_OK : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for %zu×%zu Gram matrices", in, in);
    if (!rc) memset(A, 0, in * in * sizeof *A), memset(B, 0, in * out * sizeof *B);
    for (int k = 0; !rc && k < n; k++) {
        int i = ins[k];
        size_t es = (size_t)graft_dtype_traits(mt->stat_dt[i])->bits / 8;
        for (size_t a = 0; a < in; a++) {
            graft_row_to_f32(mt->stat_dt[i], mt->stat[i] + a * in * es, row, in);
            for (size_t c = 0; c < in; c++) G[a * in + c] = scale[k] * (a == c ? (double)row[c] : lam * (double)row[c]);
        }
        for (size_t q = 0; q < in * in; q++) A[q] += G[q];
        const float *Wi = s->w + (size_t)i * mt->numel; // [out × in]; Wᵢᵀ is [in × out]
        for (size_t o = 0; o < out; o++)
            for (size_t c = 0; c < in; c++) W[c * out + o] = Wi[o * in + c];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)in, (int)out, (int)in, 1.0, G, (int)in, W, (int)out, 1.0, B, (int)out);
    }
    graft__free(G), graft__free(W), graft__free(row);
    return rc;
}

int graft__lr_top(const float *x, size_t m, size_t n, size_t s, bool randomized, uint64_t key, float *U, size_t ldu, float *S, float *Vt,
                  struct graft_err *err) {
    size_t r = m < n ? m : n;
    if (!s) return GRAFT_OK;
    double *Ud = graft__malloc(m * s * sizeof *Ud), *Sd = graft__malloc(s * sizeof *Sd), *Vd = graft__malloc(s * n * sizeof *Vd), e, tail;
    int rc = Ud && Sd && Vd ? GRAFT_OK : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    if (!rc && randomized && 4 * (s + GRAFT_LR_OVERSAMPLE) <= r) { // beyond a quarter of the rank it costs more than the exact route
        rc = graft__svd_randomized(x, m, n, s, GRAFT_LR_OVERSAMPLE, GRAFT_LR_POWER, key, Ud, Sd, Vd, &e, &tail, err);
    } else if (!rc) {
        // exact top s by the Gram route (core/linalg.c: the short side's Gram matrix in double, its top s
        // eigenpairs, the other side's vectors from them): no bidiagonalisation of the whole matrix, and in
        // double the squared spectrum loses nothing an f32 result shows
        struct graft__svd sv;
        rc = graft__svd_gram(x, m, n, s, &sv, err);
        if (!rc) {
            rc = graft__svd_factors(&sv, x, s, Ud, Sd, Vd, err);
            graft__svd_free(&sv);
        }
    }
    for (size_t i = 0; !rc && i < m; i++)
        for (size_t j = 0; j < s; j++) U[i * ldu + j] = (float)Ud[i * s + j];
    for (size_t j = 0; !rc && j < s; j++) S[j] = (float)Sd[j];
    for (size_t i = 0; !rc && i < s * n; i++) Vt[i] = (float)Vd[i];
    graft__free(Ud), graft__free(Sd), graft__free(Vd);
    return rc;
}
