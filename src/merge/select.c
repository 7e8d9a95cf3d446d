// Exact top-k by magnitude in O(numel): radix selection over the f32 bit patterns (non-negative floats
// order like their bit patterns), in two 16-bit histogram passes, then a tie-count pass so that ties
// at the threshold are kept in element-index order whatever the thread count.
#include <string.h>
#include "engine.h"
#include "../core/impl.h"

#define NB 65536

static inline uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

size_t graft_select_acc_bytes(int pass, int n_streams) { return pass < 2 ? (size_t)n_streams * NB * sizeof(uint64_t) : 0; }
size_t graft_select_partial_len(int pass, int n_streams) { return pass == 2 ? (size_t)n_streams : 0; }

GRAFT_KERNEL void graft_select_stat(struct graft_select *sel, int pass, int s, const float *mag, uint64_t n, double *partial,
                       void *acc, int n_streams) {
    (void)n_streams;
    struct graft_select *x = &sel[s];
    if (x->k == 0) return;
    uint64_t *h = (uint64_t *)acc + (size_t)s * NB;
    if (pass == 0) {
        for (uint64_t i = 0; i < n; i++) h[bits(mag[i]) >> 16]++;
    } else if (pass == 1) {
        const uint32_t hb = x->hi_bucket;
        for (uint64_t i = 0; i < n; i++) {
            uint32_t b = bits(mag[i]);
            if ((b >> 16) == hb) h[b & 0xFFFF]++; // rare: one bucket of many, so well predicted
        }
    } else {
        uint64_t eq = 0;
        for (uint64_t i = 0; i < n; i++) eq += bits(mag[i]) == x->thr;
        partial[s] = (double)eq;
    }
}

int graft_select_combine(struct graft_select *sel, int n_streams, int pass, const double *partials, size_t n_chunks,
                         size_t partial_len, void *const *accs, int n_accs, struct graft_err *err) {
    for (int s = 0; s < n_streams; s++) {
        struct graft_select *x = &sel[s];
        if (x->k == 0) continue;
        if (pass < 2) {
            uint64_t run = pass == 0 ? 0 : x->above_hi;
            for (int b = NB - 1; b >= 0; b--) {
                uint64_t cnt = 0;
                for (int t = 0; t < n_accs; t++) cnt += ((const uint64_t *)accs[t])[(size_t)s * NB + (size_t)b];
                if (run + cnt >= x->k) {
                    if (pass == 0) x->hi_bucket = (uint32_t)b, x->above_hi = run;
                    else x->thr = (x->hi_bucket << 16) | (uint32_t)b, x->above = run, x->ties_kept = x->k - run;
                    break;
                }
                run += cnt;
            }
        } else {
            graft__free(x->tie_prefix);
            x->tie_prefix = graft__calloc(n_chunks + 1, sizeof *x->tie_prefix);
            if (!x->tie_prefix) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
            for (size_t c = 0; c < n_chunks; c++) x->tie_prefix[c + 1] = x->tie_prefix[c] + (uint64_t)partials[c * partial_len + (size_t)s];
        }
    }
    return GRAFT_OK;
}

GRAFT_KERNEL void graft_select_mask(const struct graft_select *x, size_t chunk_idx, const float *restrict mag, uint64_t n, float *restrict keep) {
    if (x->k == 0) { memset(keep, 0, n * sizeof *keep); return; }
    const uint32_t thr = x->thr;
    for (uint64_t i = 0; i < n; i++) keep[i] = bits(mag[i]) > thr ? 1.0f : 0.0f; // branch-free, vectorizable
    // ties at the threshold: the first ties_kept of them in element order; this chunk's share is known
    uint64_t tie = x->tie_prefix ? x->tie_prefix[chunk_idx] : 0;
    uint64_t here = x->tie_prefix ? x->tie_prefix[chunk_idx + 1] - tie : n;
    if (tie >= x->ties_kept || here == 0) return;
    for (uint64_t i = 0; i < n && tie < x->ties_kept; i++)
        if (bits(mag[i]) == thr) keep[i] = 1.0f, tie++;
}

void graft_select_free(struct graft_select *sel, int n_streams) {
    for (int s = 0; s < n_streams; s++) graft__free(sel[s].tie_prefix), sel[s].tie_prefix = NULL;
}
