// arcee_fusion: keep the other model's values only where they matter.
//   diff = |b − a|; per row: p = softmax(b) + 1e-8, q = softmax(a) + 1e-8, kl = Σ p·log(p/q)
//   imp = diff · kl_row; thr = Q50 + 1.5·(Q75 − Q25) over all of imp; R = a + (b − a)·[imp ≥ thr]
// Chunks hold whole rows, so kl is computed inside each chunk. The quantiles (element at index
// ⌊q·(n−1)⌋ of the sorted imp) are exact order statistics from the radix selection — MergeKit
// samples 10^6 random elements for larger tensors, graft uses them all, so it needs no seed.
// A kl below 0 (only possible by rounding) counts as 0.
#include <math.h>
#include <string.h>
#include "engine.h"
#include "../core/impl.h"

struct st { struct graft_select sel[3]; float thr; };

static const double qs[3] = {0.25, 0.5, 0.75};

static int init(struct graft_mt *mt, struct graft_err *err) {
    struct st *s = mt->state = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (int k = 0; k < 3; k++) { // the k-th largest = ascending index ⌊q(n−1)⌋; k = n (one element) still selects
        graft_select_init(&s->sel[k], mt->numel - (uint64_t)(qs[k] * (double)(mt->numel - 1)), mt->numel);
        s->sel[k].passes = 2;
    }
    return GRAFT_OK;
}

static int n_passes(const struct graft_mt *mt) { return graft_select_passes(((const struct st *)mt->state)->sel, 3); }
static bool wants_chunk(const struct graft_mt *mt, int pass, size_t chunk) { return graft_select_wants_chunk(pass, chunk, mt->n_chunks); }
static size_t acc_bytes(const struct graft_mt *mt, int pass) { (void)mt; return graft_select_acc_bytes(pass, 3); }
static size_t partial_len(const struct graft_mt *mt, int pass) { (void)mt; return graft_select_partial_len(pass, 3); }

static void importance(const struct graft_mt *mt, const struct graft_chunk *c, float *imp) {
    const float *a = c->in[mt->base], *b = c->in[mt->base == 0 ? 1 : 0];
    uint64_t L = mt->row_len;
    for (uint64_t r = 0; r < c->n; r += L) {
        double ma = -INFINITY, mb = -INFINITY, sa = 0, sb = 0, kl = 0;
        for (uint64_t j = r; j < r + L; j++) ma = fmax(ma, a[j]), mb = fmax(mb, b[j]);
        for (uint64_t j = r; j < r + L; j++) sa += exp((double)a[j] - ma), sb += exp((double)b[j] - mb);
        for (uint64_t j = r; j < r + L; j++) {
            double p = exp((double)b[j] - mb) / sb + 1e-8, q = exp((double)a[j] - ma) / sa + 1e-8;
            kl += p * log(p / q);
        }
        float k = kl > 0 ? (float)kl : 0.0f;
        for (uint64_t j = r; j < r + L; j++) imp[j] = fabsf(b[j] - a[j]) * k;
    }
}

static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *part, void *acc) {
    struct st *s = mt->state;
    importance(mt, c, c->tmp);
    for (int k = 0; k < 3; k++) graft_select_stat(s->sel, pass, k, c->idx, c->tmp, c->n, part, acc, 3);
}

static int combine(struct graft_mt *mt, int pass, const double *part, void *const *accs, int n_accs, struct graft_err *err) {
    struct st *s = mt->state;
    int rc = graft_select_combine(s->sel, 3, pass, part, mt->n_chunks, 3, accs, n_accs, err);
    if (rc || pass + 1 < graft_select_passes(s->sel, 3)) return rc; // thresholds are final after the last pass
    float q[3];
    for (int k = 0; k < 3; k++) memcpy(&q[k], &s->sel[k].thr, 4);
    s->thr = q[1] + 1.5f * (q[2] - q[0]);
    return GRAFT_OK;
}

static void free_state(struct graft_mt *mt) { if (mt->state) graft_select_free(((struct st *)mt->state)->sel, 3); }

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct st *s = mt->state;
    const float *a = c->in[mt->base], *b = c->in[mt->base == 0 ? 1 : 0];
    importance(mt, c, c->tmp);
    for (uint64_t e = 0; e < c->n; e++) out[e] = c->tmp[e] >= s->thr ? b[e] : a[e];
}

const struct graft_method graft_method_arcee_fusion = {
    .name = "arcee_fusion", .pretty = "Arcee Fusion", .base = GRAFT_BASE_REQUIRED, .min_models = 1, .max_models = 1,
    .params = NULL, .n_params = 0, .rows = true, .init = init, .n_passes = n_passes, .wants_chunk = wants_chunk, .acc_bytes = acc_bytes,
    .partial_len = partial_len, .stat = stat,
    .combine = combine, .apply = apply, .free_state = free_state,
};
