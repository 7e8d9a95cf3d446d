// pcb — Parameter Competition Balancing (Du et al., NeurIPS 2024; methods-research.md A1), the
// official PCB_merge applied per tensor (τ_i: task vector i of this tensor, d elements, n tasks):
//   A_i    = clamp(|τ_i|, lo_i, hi_i),  lo_i = sort(|τ_i|)[⌊d·c⌋], hi_i = sort(|τ_i|)[⌊d(1−c) − 1⌋]  (c = clip_ratio 1e-4)
//   τc_i   = sign(τ_i)·A_i
//   β_i    = exp(n·minmax(A_i)²) · tanh(τ_i ⊙ Σ_k τ_k)                   (intra- × inter-balancing)
//   s_i    = minmax(clamp(β_i, sort(β_i)[⌊d(1−r)⌋], max β_i))           (r = pcb_ratio: keep the top r)
//   θ      = θ0 + Σ_i λ_i·τc_i ⊙ s_i / max(Σ_i s_i, 1e-12)               (λ_i = weight, default 1)
// The official code ranks over the whole flattened model; this is the per-tensor mode (documented in
// docs/merge.md). A constant row (max = min) normalises to 0 instead of the reference's NaN.
// Two statistic passes gather |τ_i| and then β_i whole (n × d floats) for exact order statistics
// (quickselect); apply recomputes β elementwise with the same float operations.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "engine.h"

static const struct graft_mparam params[] = {{"weight", true, false, 1.0}, {"pcb_ratio", false, false, 0.1}, {"clip_ratio", false, false, 1e-4}};

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

static float minmax(float x, float lo, float hi) { return hi > lo ? (x - lo) / (hi - lo) : 0.0f; }

// β_i at element e of the chunk (s->lo/hi known).
static float beta(const struct graft_mt *mt, const struct st *s, const struct graft_chunk *c, int t, uint64_t e) {
    const float *B = c->in[mt->base];
    float col = 0;
    for (int k = 0; k < s->T; k++) col += c->in[s->tin[k]][e] - B[e];
    float x = c->in[s->tin[t]][e] - B[e], a = fminf(fmaxf(fabsf(x), s->lo[t]), s->hi[t]), nm = minmax(a, s->lo[t], s->hi[t]);
    return expf((float)s->T * (nm * nm)) * tanhf(x * col);
}

static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *partial, void *acc) {
    (void)partial, (void)acc;
    const struct st *s = mt->state;
    const float *B = c->in[mt->base];
    for (int t = 0; t < s->T; t++) {
        float *d = s->buf + (size_t)t * mt->numel + c->e0;
        const float *x = c->in[s->tin[t]];
        if (pass == 0)
            for (uint64_t e = 0; e < c->n; e++) d[e] = fabsf(x[e] - B[e]);
        else
            for (uint64_t e = 0; e < c->n; e++) d[e] = beta(mt, s, c, t, e);
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
            size_t i_lo = (size_t)((double)d * c), i_hi = (size_t)((double)d * (1 - c) - 1); // the reference's int() truncation
            if (i_hi >= d) i_hi = d - 1;
            if (i_lo >= d) i_lo = d - 1;
            s->lo[t] = graft__kth_smallest(v, d, i_lo);
            s->hi[t] = graft__kth_smallest(v, d, i_hi);
        } else {
            size_t i_lo = (size_t)((double)d * (1 - r));
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
        float num = 0, den = 0;
        for (int t = 0; t < s->T; t++) {
            float x = c->in[s->tin[t]][e] - B[e], a = fminf(fmaxf(fabsf(x), s->lo[t]), s->hi[t]);
            float tc = x > 0 ? a : x < 0 ? -a : 0.0f;
            float b = beta(mt, s, c, t, e), sc = minmax(fminf(fmaxf(b, s->bl[t]), s->bh[t]), s->bl[t], s->bh[t]);
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

const struct graft_method graft_method_pcb = {
    .name = "pcb", .pretty = "PCB (parameter competition balancing)", .base = GRAFT_BASE_REQUIRED, .min_models = 1, .max_models = -1,
    .params = params, .n_params = 3, .init = init, .n_passes = n_passes, .partial_len = partial_len, .stat = stat, .combine = combine,
    .apply = apply, .validate = validate, .free_state = free_state,
};
