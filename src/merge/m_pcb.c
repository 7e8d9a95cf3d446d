// pcb — Parameter Competition Balancing (Du et al., NeurIPS 2024; methods-research.md A1), the
// official PCB_merge applied per tensor (τ_i: task vector i of this tensor, d elements, n tasks):
//   A_i    = clamp(|τ_i|, lo_i, hi_i),  lo_i = sort(|τ_i|)[⌊d·c⌋], hi_i = sort(|τ_i|)[⌊d(1−c) − 1⌋]  (c = clip_ratio 1e-4)
//   τc_i   = sign(τ_i)·A_i
//   β_i    = exp(n·minmax(A_i)²) · tanh(τ_i ⊙ Σ_k τ_k)                   (intra- × inter-balancing)
//   s_i    = minmax(clamp(β_i, sort(β_i)[⌊d(1−r)⌋], max β_i))           (r = pcb_ratio: keep the top r)
//   θ      = θ0 + Σ_i λ_i·τc_i ⊙ s_i / max(Σ_i s_i, 1e-12)               (λ_i = weight, default 1)
// By default d is the whole flattened model, as the official code ranks (`whole` below: exact order
// statistics by a two-level radix select over 16-bit histograms, five streaming passes, memory bounded
// by threads × chunk); `per_tensor: true` ranks within each tensor (two statistic passes gather |τ_i|
// and then β_i whole, n × d floats, for quickselect). A constant row (max = min) normalises to 0
// instead of the reference's NaN. Apply recomputes β elementwise with the same float operations.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "plan.h"

static const struct graft_mparam params[] = {{"weight", true, false, 1.0}, {"pcb_ratio", false, false, 0.1}, {"clip_ratio", false, false, 1e-4},
                                             {"per_tensor", false, false, 0}};

struct st {
    int    T, tin[GRAFT_MAX_INPUTS];
    float *buf;                                   // T × numel gathered values of the current pass
    float  lo[GRAFT_MAX_INPUTS], hi[GRAFT_MAX_INPUTS]; // clip bounds of |τ_i|
    float  bl[GRAFT_MAX_INPUTS], bh[GRAFT_MAX_INPUTS]; // β bounds (drop below bl)
};

static int validate(const struct graft_mt *mt, struct graft_err *err) {
    double r = GP(mt, "pcb_ratio"), c = GP(mt, "clip_ratio");
    if (!(r > 0 && r <= 1)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "pcb_ratio must be in (0, 1], got %g", r);
    if (!(c >= 0 && c < 0.5)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "clip_ratio must be in [0, 0.5), got %g", c);
    return GRAFT_OK;
}

static int init(struct graft_mt *mt, struct graft_err *err) {
    struct st *s = mt->state = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (int i = 0; i < mt->n_in; i++)
        if (i != mt->base) s->tin[s->T++] = i;
    if (s->T && !(s->buf = graft__malloc((size_t)s->T * (size_t)mt->numel * sizeof(float))))
        return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for %d × %llu task values", s->T, (unsigned long long)mt->numel);
    return GRAFT_OK;
}

static int n_passes(const struct graft_mt *mt) { return ((const struct st *)mt->state)->T ? 2 : 0; }
static size_t partial_len(const struct graft_mt *mt, int pass) { (void)mt, (void)pass; return 1; }

// Python's int() of a non-negative rank expression (negative values truncate to 0).
static uint64_t trunc_idx(double x) { return x <= 0 ? 0 : (uint64_t)x; }

static float minmax(float x, float lo, float hi) { return hi > lo ? (x - lo) / (hi - lo) : 0.0f; }

// Σ_k τ_k of element e of the chunk (in task order, once per element).
static float colsum(const struct graft_mt *mt, const struct st *s, const struct graft_chunk *c, uint64_t e) {
    const float *B = c->in[mt->base];
    float col = 0;
    for (int k = 0; k < s->T; k++) col += c->in[s->tin[k]][e] - B[e];
    return col;
}

// β of task t for its task-vector value x and the column sum col (s->lo/hi known).
static float beta(const struct st *s, int t, float x, float col) {
    float a = fminf(fmaxf(fabsf(x), s->lo[t]), s->hi[t]), nm = minmax(a, s->lo[t], s->hi[t]);
    return expf((float)s->T * (nm * nm)) * tanhf(x * col);
}

static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *partial, void *acc) {
    (void)partial, (void)acc;
    const struct st *s = mt->state;
    const float *B = c->in[mt->base];
    float *col = c->tmp;
    for (uint64_t e = 0; pass == 1 && e < c->n; e++) col[e] = colsum(mt, s, c, e);
    for (int t = 0; t < s->T; t++) {
        float *d = s->buf + (size_t)t * mt->numel + c->e0;
        const float *x = c->in[s->tin[t]];
        if (pass == 0)
            for (uint64_t e = 0; e < c->n; e++) d[e] = fabsf(x[e] - B[e]);
        else
            for (uint64_t e = 0; e < c->n; e++) d[e] = beta(s, t, x[e] - B[e], col[e]);
    }
}

static int combine(struct graft_mt *mt, int pass, const double *partials, void *const *accs, int n_accs, struct graft_err *err) {
    (void)partials, (void)accs, (void)n_accs, (void)err;
    struct st *s = mt->state;
    size_t d = (size_t)mt->numel;
    double c = GP(mt, "clip_ratio"), r = GP(mt, "pcb_ratio");
    for (int t = 0; t < s->T; t++) {
        float *v = s->buf + (size_t)t * d;
        if (pass == 0) {
            size_t i_lo = (size_t)trunc_idx((double)d * c), i_hi = (size_t)trunc_idx((double)d * (1 - c) - 1); // the reference's int() truncation
            if (i_hi >= d) i_hi = d - 1;
            if (i_lo >= d) i_lo = d - 1;
            s->lo[t] = graft__kth_smallest(v, d, i_lo);
            s->hi[t] = graft__kth_smallest(v, d, i_hi);
        } else {
            size_t i_lo = (size_t)trunc_idx((double)d * (1 - r));
            if (i_lo >= d) i_lo = d - 1;
            float mx = v[0];
            for (size_t e = 1; e < d; e++) mx = v[e] > mx ? v[e] : mx;
            s->bl[t] = graft__kth_smallest(v, d, i_lo), s->bh[t] = mx;
        }
    }
    if (pass == 1) graft__free(s->buf), s->buf = NULL;
    return GRAFT_OK;
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct st *s = mt->state;
    const float *B = c->in[mt->base];
    for (uint64_t e = 0; e < c->n; e++) {
        float num = 0, den = 0, col = colsum(mt, s, c, e);
        for (int t = 0; t < s->T; t++) {
            float x = c->in[s->tin[t]][e] - B[e], a = fminf(fmaxf(fabsf(x), s->lo[t]), s->hi[t]);
            float tc = x > 0 ? a : x < 0 ? -a : 0.0f;
            float b = beta(s, t, x, col), sc = minmax(fminf(fmaxf(b, s->bl[t]), s->bh[t]), s->bl[t], s->bh[t]);
            num += (float)PM(mt, s->tin[t], "weight") * tc * sc;
            den += sc;
        }
        out[e] = B[e] + num / fmaxf(den, 1e-12f);
    }
}

static void free_state(struct graft_mt *mt) {
    struct st *s = mt->state;
    if (s) graft__free(s->buf);
}

// ---- whole-model ranking ----------------------------------------------------------------------------

enum { CHUNK = 1 << 20, HB = 65536 };

// A float as a 32-bit key that orders as the float does (non-NaN).
static uint32_t fkey(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}
static float unkey(uint32_t k) {
    uint32_t u = k & 0x80000000u ? k & 0x7FFFFFFFu : ~k;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

struct wj {
    struct plan *p;
    int T, tin0;                 // tasks; (inputs: the base and T models, same order in every tensor)
    size_t *tens, n_items;       // item → tensor index; first element
    uint64_t *e0;
    int pass;                    // 0: hi |τ|; 1: lo |τ| (2 ranks); 2: hi β + max; 3: lo β; 4: write
    uint64_t **acc;              // per thread: T × ranks × HB counters
    double **mx;                 // per thread: T maxima of β
    struct st s;                 // thresholds as the per-tensor mode uses them
    uint32_t bucket[GRAFT_MAX_INPUTS][2];
    struct graft_writer *w;
};

static int wpass(void *ctx, size_t item, int ith, struct graft_err *err) {
    struct wj *j = ctx;
    struct otensor *o = &j->p->t[j->tens[item]];
    struct graft_mt *mt = &o->mt;
    uint64_t e0 = j->e0[item], n = mt->numel - e0 < CHUNK ? mt->numel - e0 : CHUNK;
    int n_in = o->n_in;
    float *buf = graft__malloc((size_t)(n_in + 1) * (size_t)n * sizeof(float));
    if (!buf) return graft_err_set(err, GRAFT_E_NOMEM, NULL, o->name, strlen(o->name), "out of memory");
    const float *in[GRAFT_MAX_INPUTS];
    for (int i = 0; i < n_in; i++) {
        float *d = buf + (size_t)i * n;
        graft_row_to_f32(o->in[i].t->info->dtype, graft__plan_input_at(j->p, o, i, e0), d, (size_t)n);
        in[i] = d;
    }
    struct graft_chunk c = {.idx = 0, .e0 = e0, .n = n, .in = in, .tmp = NULL};
    struct st *s = &j->s;
    int rc = GRAFT_OK;
    uint64_t *acc = j->acc ? j->acc[ith] : NULL;
    if (j->pass == 4) {
        float *out = buf + (size_t)n_in * n;
        apply(mt, &c, out);
        uint64_t off, len;
        graft_dtype_nbytes(o->dtype, e0, &off), graft_dtype_nbytes(o->dtype, n, &len);
        uint8_t *enc = graft__malloc((size_t)len + 1);
        if (!enc) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
        else graft__engine_encode(o, e0, out, enc, (size_t)n), rc = graft_writer_write(j->w, o->wid, off, enc, (size_t)len, err);
        if (!rc) graft_progress_add(j->p->opt->progress, len);
        graft__free(enc);
    } else {
        float *col = buf + (size_t)n_in * n; // β passes: Σ_k τ_k once per element
        for (uint64_t e = 0; j->pass >= 2 && e < n; e++) col[e] = colsum(mt, s, &c, e);
        for (int t = 0; t < j->T; t++) {
            const float *x = in[s->tin[t]], *B = in[mt->base];
            uint64_t *h = acc + (size_t)t * 2 * HB;
            for (uint64_t e = 0; e < n; e++) {
                float v = j->pass < 2 ? fabsf(x[e] - B[e]) : beta(s, t, x[e] - B[e], col[e]);
                uint32_t k = fkey(v);
                if (j->pass == 0 || j->pass == 2) {
                    h[k >> 16]++;
                    if (j->pass == 2 && v > j->mx[ith][t]) j->mx[ith][t] = v;
                } else {
                    for (int r = 0; r < (j->pass == 1 ? 2 : 1); r++)
                        if ((k >> 16) == j->bucket[t][r]) h[(size_t)r * HB + (k & 0xFFFF)]++;
                }
            }
        }
    }
    graft__free(buf);
    return rc;
}

// Bucket holding the rank-th smallest (0-based) of a histogram; *rest: rank within it.
static uint32_t find_bucket(const uint64_t *h, uint64_t rank, uint64_t *rest) {
    uint64_t cum = 0;
    for (uint32_t b = 0; b < HB; b++) {
        if (cum + h[b] > rank) { *rest = rank - cum; return b; }
        cum += h[b];
    }
    *rest = 0;
    return HB - 1;
}

static int whole(void *plan, struct graft_writer *w, const char *out_dir, struct graft_err *err) {
    (void)out_dir;
    struct plan *p = plan;
    struct wj j = {.p = p, .T = -1, .w = w};
    int nth = p->opt->n_threads > 0 ? p->opt->n_threads : 1, rc = GRAFT_OK;
    const struct graft_mt *first = NULL;
    uint64_t D = 0, ni = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct otensor *o = &p->t[i];
        if (o->identity || o->copy) continue;
        if (!first) first = &o->mt;
        if (GP(&o->mt, "per_tensor") != 0) return 1; // per-tensor mode: the engine runs the tensors one by one
        if (o->n_in - 1 != first->n_in - 1)
            return graft__plan_fail(p, "pcb ranks over the whole model, so every model needs every tensor; %s is in %d of the %d models (or set per_tensor: true)",
                                    o->name, o->n_in - 1, first->n_in - 1);
        D += o->mt.numel, ni += (o->mt.numel + CHUNK - 1) / CHUNK;
    }
    if (first) {
        j.T = 0;
        for (int i = 0; i < first->n_in; i++)
            if (i != first->base) j.s.tin[j.s.T++] = i;
        j.T = j.s.T;
    }
    j.tens = graft__calloc(ni + 1, sizeof *j.tens), j.e0 = graft__calloc(ni + 1, sizeof *j.e0);
    j.acc = graft__calloc((size_t)nth, sizeof *j.acc), j.mx = graft__calloc((size_t)nth, sizeof *j.mx);
    if (!j.tens || !j.e0 || !j.acc || !j.mx) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (size_t i = 0, k = 0; !rc && i < p->n; i++) {
        struct otensor *o = &p->t[i];
        if (o->identity || o->copy) continue;
        for (uint64_t e = 0; e < o->mt.numel; e += CHUNK) j.tens[k] = i, j.e0[k] = e, k++;
    }
    j.n_items = ni;
    size_t hl = (size_t)(j.T > 0 ? j.T : 1) * 2 * HB;
    for (int t = 0; !rc && t < nth; t++)
        if (!(j.acc[t] = graft__malloc(hl * sizeof(uint64_t))) || !(j.mx[t] = graft__malloc(GRAFT_MAX_INPUTS * sizeof(double))))
            rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for %d × %d histograms", nth, j.T);
    double c = first ? GP(first, "clip_ratio") : 0, r = first ? GP(first, "pcb_ratio") : 1;
    uint64_t rk[2] = {trunc_idx((double)D * c), trunc_idx((double)D * (1 - c) - 1)}, rb = trunc_idx((double)D * (1 - r)), rest[GRAFT_MAX_INPUTS][2];
    if (D && rk[1] >= D) rk[1] = D - 1;
    if (D && rk[0] >= D) rk[0] = D - 1;
    if (D && rb >= D) rb = D - 1;
    for (int pass = 0; !rc && first && pass < 5; pass++) {
        j.pass = pass;
        for (int t = 0; t < nth; t++) {
            memset(j.acc[t], 0, hl * sizeof(uint64_t));
            for (int q = 0; q < GRAFT_MAX_INPUTS; q++) j.mx[t][q] = -INFINITY;
        }
        for (size_t i = 0; pass == 4 && i < p->n; i++) // apply() reads the thresholds from each tensor's state
            if (!p->t[i].identity && !p->t[i].copy) p->t[i].mt.state = &j.s;
        rc = graft_pool_run(nth, ni, wpass, &j, NULL, NULL, err);
        for (size_t i = 0; pass == 4 && i < p->n; i++)
            if (p->t[i].mt.state == &j.s) p->t[i].mt.state = NULL;
        if (rc || pass == 4) break;
        for (int t = 1; t < nth; t++) // integer sums: independent of the thread count
            for (size_t q = 0; q < hl; q++) j.acc[0][q] += j.acc[t][q];
        for (int k = 0; k < j.T; k++) {
            const uint64_t *h = j.acc[0] + (size_t)k * 2 * HB;
            if (pass == 0) j.bucket[k][0] = find_bucket(h, rk[0], &rest[k][0]), j.bucket[k][1] = find_bucket(h, rk[1], &rest[k][1]);
            else if (pass == 1) {
                uint64_t dummy;
                j.s.lo[k] = unkey(j.bucket[k][0] << 16 | find_bucket(h, rest[k][0], &dummy));
                j.s.hi[k] = unkey(j.bucket[k][1] << 16 | find_bucket(h + HB, rest[k][1], &dummy));
            } else if (pass == 2) {
                double mx = -INFINITY;
                for (int t = 0; t < nth; t++) mx = j.mx[t][k] > mx ? j.mx[t][k] : mx;
                j.s.bh[k] = (float)mx;
                j.bucket[k][0] = find_bucket(h, rb, &rest[k][0]);
            } else {
                uint64_t dummy;
                j.s.bl[k] = unkey(j.bucket[k][0] << 16 | find_bucket(h, rest[k][0], &dummy));
            }
        }
    }
    for (size_t i = 0; i < p->n && !rc; i++)
        if (p->t[i].identity || p->t[i].copy) rc = graft__engine_copy_base(p, w, &p->t[i]);
    for (int t = 0; j.acc && t < nth; t++) graft__free(j.acc[t]);
    for (int t = 0; j.mx && t < nth; t++) graft__free(j.mx[t]);
    graft__free(j.acc), graft__free(j.mx), graft__free(j.tens), graft__free(j.e0);
    return rc;
}

const struct graft_method graft_method_pcb = {
    .name = "pcb", .pretty = "PCB (parameter competition balancing)", .base = GRAFT_BASE_REQUIRED, .min_models = 1, .max_models = -1,
    .params = params, .n_params = 4, .init = init, .n_passes = n_passes, .partial_len = partial_len, .stat = stat, .combine = combine,
    .apply = apply, .validate = validate, .free_state = free_state, .whole = whole,
};
