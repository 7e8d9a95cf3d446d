// sce (Select, Calculate, Erase): τ_i = X_i − B.
//   Select: when select_topk < 1, keep only the k = ⌊count_nonzero(var)·select_topk⌋ elements of
//           largest variance across models (population variance of the τ_i; exact radix top-k).
//   Calculate: W_i = mean(τ_i²) over the tensor (after selection) / Σ_j mean(τ_j²) (1/N if Σ < 1e-6).
//   Erase: TIES sign election on the unweighted τ (maj = sign(Σ τ_i), 0 → +).
//   R = B + Σ_i τ_i W_i E_i / max(Σ_i W_i E_i, 1e-6)
// Passes: nonzero count; the selection passes (2, or 5 when the sample misjudged); Σ τ_i².
#include <math.h>
#include <string.h>
#include "engine.h"
#include "../core/impl.h"

static const struct graft_mparam params[] = {{"select_topk", false, false, 1}, {"int8_mask", false, false, 0}};

struct st { struct graft_select sel; bool select, none; double W[GRAFT_MAX_INPUTS]; };

// The Σ τ² pass comes after the count pass and the selection passes.
static int pass_sq(const struct graft_mt *mt) { return 1 + graft_select_passes(&((const struct st *)mt->state)->sel, 1); }

static bool selecting(const struct graft_mt *mt) { return GP(mt, "select_topk") < 1; }

static int init(struct graft_mt *mt, struct graft_err *err) {
    struct st *s = mt->state = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    s->select = selecting(mt);
    s->none = GP(mt, "select_topk") <= 0;
    return GRAFT_OK;
}

static int n_passes(const struct graft_mt *mt) { return pass_sq(mt) + 1; }
static bool wants_chunk(const struct graft_mt *mt, int pass, size_t chunk) {
    return pass < 1 || pass >= pass_sq(mt) || graft_select_wants_chunk(pass - 1, chunk, mt->n_chunks);
}

static float variance(const struct graft_mt *mt, const struct graft_chunk *c, uint64_t e) {
    double m = 0, q = 0;
    int N = 0;
    for (int i = 0; i < mt->n_in; i++)
        if (i != mt->base) { double t = (double)c->in[i][e] - c->in[mt->base][e]; m += t, q += t * t, N++; }
    m /= N;
    return (float)fmax(q / N - m * m, 0.0);
}

static size_t partial_len(const struct graft_mt *mt, int pass) {
    if (pass == pass_sq(mt)) return (size_t)mt->n_in;
    if (pass == 0) return 1;
    return graft_select_partial_len(pass - 1, 1);
}
static size_t acc_bytes(const struct graft_mt *mt, int pass) {
    return pass >= 1 && pass < pass_sq(mt) ? graft_select_acc_bytes(pass - 1, 1) : 0;
}

// keep[e] for this chunk (1 when not selecting).
static void keep_mask(const struct graft_mt *mt, const struct graft_chunk *c, float *var, float *keep) {
    const struct st *s = mt->state;
    if (!s->select) { for (uint64_t e = 0; e < c->n; e++) keep[e] = 1; return; }
    if (s->none) { memset(keep, 0, c->n * sizeof *keep); return; }
    for (uint64_t e = 0; e < c->n; e++) var[e] = variance(mt, c, e);
    graft_select_mask(&s->sel, c->idx, var, c->n, keep);
}

static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *part, void *acc) {
    struct st *s = mt->state;
    float *var = c->tmp, *keep = c->tmp + c->n;
    if (pass == pass_sq(mt)) {
        keep_mask(mt, c, var, keep);
        for (int i = 0; i < mt->n_in; i++) {
            if (i == mt->base) continue;
            double q = 0;
            for (uint64_t e = 0; e < c->n; e++) { double t = ((double)c->in[i][e] - c->in[mt->base][e]) * keep[e]; q += t * t; }
            part[i] = q;
        }
        return;
    }
    for (uint64_t e = 0; e < c->n; e++) var[e] = variance(mt, c, e);
    if (pass == 0) {
        double nz = 0;
        for (uint64_t e = 0; e < c->n; e++) nz += var[e] != 0;
        part[0] = nz;
        return;
    }
    graft_select_stat(&s->sel, pass - 1, 0, c->idx, var, c->n, part, acc, 1);
}

static int combine(struct graft_mt *mt, int pass, const double *part, void *const *accs, int n_accs, struct graft_err *err) {
    struct st *s = mt->state;
    if (pass == pass_sq(mt)) {
        double sum = 0, q[GRAFT_MAX_INPUTS] = {0};
        int N = 0;
        for (int i = 0; i < mt->n_in; i++) {
            if (i == mt->base) continue;
            for (size_t k = 0; k < mt->n_chunks; k++) q[i] += part[k * (size_t)mt->n_in + (size_t)i];
            q[i] /= (double)mt->numel, sum += q[i], N++;
        }
        for (int i = 0; i < mt->n_in; i++)
            if (i != mt->base) s->W[i] = sum < 1e-6 ? 1.0 / N : q[i] / sum;
        return GRAFT_OK;
    }
    if (pass == 0) {
        double nz = 0;
        for (size_t k = 0; k < mt->n_chunks; k++) nz += part[k];
        // k = int(nonzero * select_topk) as MergeKit computes it: a count tensor times a Python float is
        // a float32 product (100 × 0.29 gives 29 there, 28 in double)
        float kf = (float)nz * (float)GP(mt, "select_topk");
        graft_select_init(&s->sel, (uint64_t)kf, mt->numel);
        if (s->sel.k == 0) s->none = true;
        if (!s->select) s->sel.passes = 0;
        return GRAFT_OK;
    }
    return graft_select_combine(&s->sel, 1, pass - 1, part, mt->n_chunks, partial_len(mt, pass), accs, n_accs, err);
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct st *s = mt->state;
    float *var = c->tmp, *keep = c->tmp + c->n;
    keep_mask(mt, c, var, keep);
    const float *B = c->in[mt->base];
    for (uint64_t e = 0; e < c->n; e++) {
        float t[GRAFT_MAX_INPUTS], sum = 0;
        for (int i = 0; i < mt->n_in; i++)
            if (i != mt->base) sum += t[i] = (c->in[i][e] - B[e]) * keep[e];
        float maj = sum >= 0 ? 1.0f : -1.0f, num = 0, den = 0;
        for (int i = 0; i < mt->n_in; i++) {
            if (i == mt->base || !((t[i] > 0 && maj > 0) || (t[i] < 0 && maj < 0))) continue;
            num += t[i] * (float)s->W[i], den += (float)s->W[i];
        }
        out[e] = B[e] + num / fmaxf(den, 1e-6f);
    }
}

static void free_state(struct graft_mt *mt) { if (mt->state) graft_select_free(&((struct st *)mt->state)->sel, 1); }

const struct graft_method graft_method_sce = {
    .name = "sce", .pretty = "SCE", .base = GRAFT_BASE_REQUIRED, .min_models = 1, .max_models = -1, .params = params,
    .n_params = 2, .init = init, .n_passes = n_passes, .wants_chunk = wants_chunk, .partial_len = partial_len, .acc_bytes = acc_bytes, .stat = stat,
    .combine = combine, .apply = apply, .free_state = free_state,
};
