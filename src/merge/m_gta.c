// Generalized task arithmetic (MergeKit's GTA family): task_arithmetic, ties, dare_linear, dare_ties,
// breadcrumbs, breadcrumbs_ties, della, della_linear. One kernel, eight table entries.
//
//   δ_i = X_i − B;  δ_i ← sparsify(δ_i, density_i)  (per model, unweighted, whole tensor — DELLA per row)
//   L1 rescale when `rescale`: δ_i ← δ_i · Σ|δ_i| / Σ|kept δ_i|  (the realised ratio, as MergeKit)
//   wd_i = w_i δ_i
//   sign consensus ("sum"): maj = sign(Σ wd_i) (0 → +); keep wd_i whose sign equals maj;
//                           divisor = Σ w_i over those (0 → 1)
//   otherwise: divisor = Σ w_i (|·| < 1e-8 → 1)
//   R = B + λ · (Σ kept wd_i) / (normalize ? divisor : 1)
//
// Sparsifiers: magnitude (TIES) keeps the k = ⌊density·numel⌋ largest |δ| exactly (radix selection,
// ties at the threshold kept in element order); random (DARE) keeps each element when
// uniform(seed, model, tensor, element) < density; magnitude_outliers (breadcrumbs) drops the
// ⌊γ·numel⌋ largest and keeps the next ⌊density·numel⌋ (when ⌊γ·numel⌋ = 0 graft keeps the top
// ⌊density·numel⌋ — MergeKit's empty-slice quirk would zero the task vector); della keeps element j
// of a row with probability (density − ε) + 2ε·(rank_j − 1)/(n − 1), rank by |δ| ascending.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "engine.h"
#include "graft/util.h"
#include "../core/impl.h"
#include "kern-x86.h"

enum sparsify { SP_NONE, SP_MAGNITUDE, SP_RANDOM, SP_OUTLIERS, SP_DELLA };

struct variant { enum sparsify sp; bool consensus; };

struct st {
    struct graft_select sel[2 * GRAFT_MAX_INPUTS]; // magnitude: stream i; outliers: i (top γ) and N + i (top γ + density)
    double ratio[GRAFT_MAX_INPUTS];                // L1 rescale factor per input (1 when not rescaling)
    bool   l1;                                     // an L1 pass follows the selection passes
    uint8_t *bits[GRAFT_MAX_INPUTS];               // DARE with rescale: the keep mask the L1 pass drew, one
                                                   // bit per element, reused by apply (NULL: apply redraws)
};

// At most this many bytes of DARE keep bits per tensor (beyond, apply draws the mask again).
#define DARE_BITS_MAX (64ull << 20)

static const struct variant *var(const struct graft_mt *mt);

// Index of param or -1 (variants carry different tables).
static int pidx(const struct graft_mt *mt, const char *name) {
    for (int i = 0; i < mt->m->n_params; i++)
        if (!strcmp(mt->m->params[i].name, name)) return i;
    return -1;
}
static double pmv(const struct graft_mt *mt, int i, const char *name, double def) { int k = pidx(mt, name); return k < 0 ? def : mt->pm[i][k]; }
static double gpv(const struct graft_mt *mt, const char *name, double def) { int k = pidx(mt, name); return k < 0 ? def : mt->gp[k]; }

static bool rescaling(const struct graft_mt *mt) { return gpv(mt, "rescale", 0) != 0 && var(mt)->sp != SP_NONE; }

static int n_sel(const struct graft_mt *mt) { return graft_select_passes(((const struct st *)mt->state)->sel, 2 * GRAFT_MAX_INPUTS); }
static bool is_l1(const struct graft_mt *mt, int pass) { return ((const struct st *)mt->state)->l1 && pass == n_sel(mt); }
// Selection passes (as many as the streams need: 2, or 5 when a sample misjudged) then the L1 pass.
static int n_passes(const struct graft_mt *mt) { return n_sel(mt) + (((const struct st *)mt->state)->l1 ? 1 : 0); }

static int init(struct graft_mt *mt, struct graft_err *err) {
    struct st *s = mt->state = graft__calloc(1, sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (int i = 0; i < mt->n_in; i++) s->ratio[i] = 1.0;
    // selection sizes per input (the base's streams stay empty)
    for (int i = 0; i < mt->n_in; i++) {
        if (i == mt->base) continue;
        double d = pmv(mt, i, "density", 1.0);
        uint64_t target = d >= 1 ? mt->numel : (uint64_t)(d * (double)mt->numel);
        if (var(mt)->sp == SP_MAGNITUDE) {
            graft_select_init(&s->sel[i], target, mt->numel);
        } else if (var(mt)->sp == SP_OUTLIERS) {
            uint64_t n_top = (uint64_t)(pmv(mt, i, "gamma", 0.01) * (double)mt->numel);
            if (target + n_top > mt->numel) n_top = mt->numel - target; // n_bot < 0: fewer outliers dropped
            graft_select_init(&s->sel[i], n_top, mt->numel);
            graft_select_init(&s->sel[GRAFT_MAX_INPUTS + i], n_top + target, mt->numel);
        }
    }
    s->l1 = rescaling(mt);
    if (s->l1 && var(mt)->sp == SP_RANDOM && (mt->chunk % 8 == 0 || mt->n_chunks == 1)) { // chunks start on whole bytes
        uint64_t bytes = (mt->numel + 7) / 8, total = 0;
        for (int i = 0; i < mt->n_in; i++)
            if (i != mt->base && pmv(mt, i, "density", 1.0) < 1) total += bytes;
        for (int i = 0; i < mt->n_in && total <= DARE_BITS_MAX; i++)
            if (i != mt->base && pmv(mt, i, "density", 1.0) < 1) s->bits[i] = graft__malloc((size_t)bytes); // NULL: apply redraws
    }
    return GRAFT_OK;
}

static bool wants_chunk(const struct graft_mt *mt, int pass, size_t chunk) {
    return pass >= n_sel(mt) || graft_select_wants_chunk(pass, chunk, mt->n_chunks);
}

static int n_used(const struct graft_mt *mt) { return var(mt)->sp == SP_OUTLIERS ? 2 * mt->n_in : mt->n_in; }

// Only the streams in use get histograms and partials: map stream index → compact slot.
static size_t partial_len(const struct graft_mt *mt, int pass) {
    if (is_l1(mt, pass)) return 2 * (size_t)mt->n_in; // L1 pass: Σ|δ_i|, Σ|kept δ_i|
    return graft_select_partial_len(pass, n_used(mt));
}
static size_t acc_bytes(const struct graft_mt *mt, int pass) {
    if (is_l1(mt, pass)) return 0;
    return graft_select_acc_bytes(pass, n_used(mt));
}
// Compact histogram slot of stream s (inputs first, then the outlier streams).
static int slot(const struct graft_mt *mt, int s) { return s < GRAFT_MAX_INPUTS ? s : mt->n_in + (s - GRAFT_MAX_INPUTS); }

struct pair { float mag; uint32_t idx; };
static int cmp_pair(const void *a, const void *b) {
    const struct pair *x = a, *y = b;
    if (x->mag != y->mag) return x->mag < y->mag ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

// DARE's keep mask: keep[e] = 1 when uniform(key, e0 + e) < density, else 0.
static void dare_draw(uint64_t key, uint64_t e0, uint64_t n, float dens, float *keep) { graft__rng_keep_block(key, e0, (size_t)n, dens, keep); }

// keep[e] ∈ {0,1} for input i over this chunk (needs the state of earlier passes). Returns true,
// without writing keep[], when every element is kept.
static bool mask(const struct graft_mt *mt, const struct st *s, int i, const struct graft_chunk *c, float *mag, float *keep) {
    const float *x = c->in[i], *b = c->in[mt->base];
    uint64_t n = c->n;
    switch (var(mt)->sp) {
    case SP_NONE:
        return true;
    case SP_MAGNITUDE:
        if (s->sel[i].k >= mt->numel) return true; // density 1: no pruning
        for (uint64_t e = 0; e < n; e++) mag[e] = fabsf(x[e] - b[e]);
        graft_select_mask(&s->sel[i], c->idx, mag, n, keep);
        return false;
    case SP_OUTLIERS: {
        for (uint64_t e = 0; e < n; e++) mag[e] = fabsf(x[e] - b[e]);
        graft_select_mask(&s->sel[GRAFT_MAX_INPUTS + i], c->idx, mag, n, keep);
        float *top = mag + n; // second half of the scratch
        graft_select_mask(&s->sel[i], c->idx, mag, n, top);
        for (uint64_t e = 0; e < n; e++) keep[e] = keep[e] * (1 - top[e]);
        return false;
    }
    case SP_RANDOM: {
        double d = pmv(mt, i, "density", 1.0);
        if (d >= 1) return true;
        dare_draw(mt->key[i], c->e0, n, (float)d, keep);
        return false;
    }
    case SP_DELLA: {
        double d = pmv(mt, i, "density", 1.0), eps = pmv(mt, i, "epsilon", 0.15);
        if (d >= 1) return true;
        if (d <= 0) { for (uint64_t e = 0; e < n; e++) keep[e] = 0; return false; }
        uint64_t L = mt->row_len;
        struct pair *pr = (struct pair *)mag; // L pairs fit: the scratch holds 2 floats per element
        for (uint64_t r0 = 0; r0 < n; r0 += L) {
            for (uint64_t j = 0; j < L; j++) pr[j].mag = fabsf(x[r0 + j] - b[r0 + j]), pr[j].idx = (uint32_t)j;
            qsort(pr, (size_t)L, sizeof *pr, cmp_pair); // rank by |δ| ascending, ties by position
            for (uint64_t rk = 0; rk < L; rk++) {
                double rn = L > 1 ? (double)rk / (double)(L - 1) : 0.0;
                float pkeep = (float)((d - eps) + rn * 2 * eps);
                uint64_t j = pr[rk].idx;
                keep[r0 + j] = graft__rng_uniform(mt->key[i], c->e0 + r0 + j) < pkeep ? 1.0f : 0.0f;
            }
        }
        return false;
    }
    }
    return true;
}

// Σ|x − b| and Σ|x − b|·keep, each |x − b| computed in float (the f32 task vector, as the reference
// computes it) and summed in double in 8 fixed lanes (vectorizable, and the same sums whatever the
// thread count): groups of 8 elements, then a tail into lanes 0, 1, …. Several calls continue the
// same lanes when every call but the last has a multiple of 8 elements.
typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));
typedef long long v8l __attribute__((vector_size(64)));

// Written with vector types: the auto-vectorizer leaves the keep product scalar.
GRAFT_KERNEL static void l1_lanes(const float *restrict x, const float *restrict b, const float *restrict keep, uint64_t n,
                                  double *restrict lanes0, double *restrict lanes1) {
    v8d s0, s1;
    memcpy(&s0, lanes0, sizeof s0), memcpy(&s1, lanes1, sizeof s1);
    const v8l abs_mask = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX};
    uint64_t e = 0;
    for (; e + 8 <= n; e += 8) {
        v8f xv, bv;
        memcpy(&xv, x + e, sizeof xv), memcpy(&bv, b + e, sizeof bv);
        v8d d = (v8d)((v8l)__builtin_convertvector(xv - bv, v8d) & abs_mask);
        s0 += d;
        if (keep) {
            v8f kv;
            memcpy(&kv, keep + e, sizeof kv);
            s1 += d * __builtin_convertvector(kv, v8d);
        } else {
            s1 += d;
        }
    }
    memcpy(lanes0, &s0, sizeof s0), memcpy(lanes1, &s1, sizeof s1);
    for (int l = 0; e < n; e++, l++) {
        double d = (double)fabsf(x[e] - b[e]);
        lanes0[l] += d, lanes1[l] += keep ? d * (double)keep[e] : d;
    }
}

// l1_lanes() on bf16 inputs with the keep mask as bits (NULL: all kept): the same lanes and sums
// (bf16 → f32 is exact; adding d·0 = +0 leaves a lane unchanged).
typedef uint16_t v8h __attribute__((vector_size(16)));
typedef uint32_t v8u __attribute__((vector_size(32)));
GRAFT_KERNEL static void l1_lanes_bf16(const uint16_t *restrict x, const uint16_t *restrict b, const uint8_t *restrict bits, uint64_t n,
                                       double *restrict lanes0, double *restrict lanes1) {
    uint64_t e = 0;
#if GRAFT_HAVE_KERN_X86
    if (graft__cpu_avx512()) e = graft__l1_bf16_avx512(x, b, bits, n, lanes0, lanes1);
#endif
    v8d s0, s1;
    memcpy(&s0, lanes0, sizeof s0), memcpy(&s1, lanes1, sizeof s1);
    const v8l abs_mask = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX};
    const v8l bit = {1, 2, 4, 8, 16, 32, 64, 128};
    for (; e + 8 <= n; e += 8) {
        v8h xh, bh;
        memcpy(&xh, x + e, sizeof xh), memcpy(&bh, b + e, sizeof bh);
        v8f xv = (v8f)(__builtin_convertvector(xh, v8u) << 16), bv = (v8f)(__builtin_convertvector(bh, v8u) << 16);
        v8d d = (v8d)((v8l)__builtin_convertvector(xv - bv, v8d) & abs_mask);
        s0 += d;
        if (bits) {
            v8l byte = (v8l){0} + (long long)bits[e / 8];
            s1 += (v8d)((v8l)d & ((byte & bit) != 0)); // a vector comparison is −1 (all ones) per true lane
        } else {
            s1 += d;
        }
    }
    memcpy(lanes0, &s0, sizeof s0), memcpy(lanes1, &s1, sizeof s1);
    for (int l = 0; e < n; e++, l++) {
        double d = (double)fabsf(graft__bf16_to_f32(x[e]) - graft__bf16_to_f32(b[e]));
        lanes0[l] += d, lanes1[l] += !bits || (bits[e / 8] >> (e % 8)) & 1 ? d : 0.0;
    }
}

// keep[e] = bit e of bits as 1.0 or 0.0.
static void unpack_bits(const uint8_t *bits, uint64_t n, float *keep) {
    uint64_t e = 0;
#if GRAFT_HAVE_KERN_X86
    if (graft__cpu_avx512()) e = graft__unpack_bits_avx512(bits, n, keep);
#endif
    for (; e < n; e++) keep[e] = (bits[e / 8] >> (e % 8)) & 1 ? 1.0f : 0.0f;
}

// keep floats (0 or 1) as bits.
static void pack_bits(const float *keep, uint64_t n, uint8_t *bits) {
    memset(bits, 0, (size_t)(n + 7) / 8);
    for (uint64_t e = 0; e < n; e++) bits[e / 8] |= (uint8_t)((keep[e] != 0.0f) << (e % 8));
}

// The lanes combined in lane order.
static void l1_total(const double *s0, const double *s1, double out[2]) {
    double a = 0, k = 0;
    for (int l = 0; l < 8; l++) a += s0[l], k += s1[l];
    out[0] = a, out[1] = k;
}

static void l1_sums(const float *x, const float *b, const float *keep, uint64_t n, double out[2]) {
    double s0[8] = {0}, s1[8] = {0};
    l1_lanes(x, b, keep, n, s0, s1);
    l1_total(s0, s1, out);
}

// Selection pass of input i's stream(s) (outliers: two) over the magnitudes mag[0..n) of chunk `idx`.
static void select_stat_input(const struct graft_mt *mt, int pass, int i, size_t idx, const float *mag, uint64_t n, double *part, void *acc) {
    struct st *s = mt->state;
    int streams[2] = {i, GRAFT_MAX_INPUTS + i};
    for (int k = 0; k < (var(mt)->sp == SP_OUTLIERS ? 2 : 1); k++) {
        // histograms and partials are compact (one per used stream): view this stream's as stream 0
        int sl = slot(mt, streams[k]);
        graft_select_stat(&s->sel[streams[k]], pass, 0, idx, mag, n, part ? part + sl : NULL, acc ? (uint64_t *)acc + (size_t)sl * 65536 : NULL, 1);
    }
}

static void stat(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *part, void *acc) {
    struct st *s = mt->state;
    float *mag = c->tmp, *keep = c->tmp + 2 * c->n;
    if (is_l1(mt, pass)) {
        for (int i = 0; i < mt->n_in; i++) {
            if (i == mt->base) continue;
            bool all = mask(mt, s, i, c, mag, keep);
            l1_sums(c->in[i], c->in[mt->base], all ? NULL : keep, c->n, part + 2 * i);
            if (s->bits[i] && !all) pack_bits(keep, c->n, s->bits[i] + c->e0 / 8);
        }
        return;
    }
    // selection passes over |δ_i|
    for (int i = 0; i < mt->n_in; i++) {
        if (i == mt->base) continue;
        for (uint64_t e = 0; e < c->n; e++) mag[e] = fabsf(c->in[i][e] - c->in[mt->base][e]);
        select_stat_input(mt, pass, i, c->idx, mag, c->n, part, acc);
    }
}

// stat() straight from bf16 inputs: the magnitudes |x − b| without staging every input as f32, and
// DARE's L1 pass in blocks (same lanes, same sums). Other sparsifiers' L1 passes go through stat().
GRAFT_KERNEL static void abs_diff_bf16(const uint16_t *restrict x, const uint16_t *restrict b, uint64_t n, float *restrict mag) {
    for (uint64_t e = 0; e < n; e++) mag[e] = fabsf(graft__bf16_to_f32(x[e]) - graft__bf16_to_f32(b[e]));
}

static bool stat_raw(const struct graft_mt *mt, int pass, const struct graft_chunk *c, const void *const *raw, const enum graft_dtype *dt,
                     double *part, void *acc) {
    for (int i = 0; i < mt->n_in; i++)
        if (dt[i] != GRAFT_DTYPE_BF16) return false;
    const uint16_t *b = raw[mt->base];
    if (is_l1(mt, pass)) {
        if (var(mt)->sp != SP_RANDOM) return false;
        // blocks of 2,048 (a multiple of 8) or the whole chunk; the mask's bits go to the tensor's
        // store, or to the scratch (which holds ≥ blk floats)
        const struct st *s = mt->state;
        const uint64_t blk = mt->chunk <= 2048 ? mt->chunk : 2048;
        for (int i = 0; i < mt->n_in; i++) {
            if (i == mt->base) continue;
            double d = pmv(mt, i, "density", 1.0), s0[8] = {0}, s1[8] = {0};
            const uint16_t *x = raw[i];
            for (uint64_t o = 0; o < c->n; o += blk) {
                uint64_t m = c->n - o < blk ? c->n - o : blk;
                uint8_t *bits = s->bits[i] ? s->bits[i] + (c->e0 + o) / 8 : (uint8_t *)c->tmp;
                uint64_t done = 0, c0 = c->e0 + o;
#if GRAFT_HAVE_KERN_X86
                if (d < 1 && graft__cpu_avx512() && c0 >> 32 == (c0 + m - 1) >> 32) // draws and sums in one loop
                    done = graft__dare_l1_bf16_avx512(x + o, b + o, (uint32_t)mt->key[i], graft__rng_k1(mt->key[i], c0 >> 32), (uint32_t)c0,
                                                      graft__rng_keep_threshold((float)d), m, bits, s0, s1);
#endif
                if (d < 1 && done < m) graft__rng_keep_bits(mt->key[i], c0 + done, (size_t)(m - done), (float)d, bits + done / 8); // as mask() draws
                l1_lanes_bf16(x + o + done, b + o + done, d < 1 ? bits + done / 8 : NULL, m - done, s0, s1);
            }
            l1_total(s0, s1, part + 2 * i);
        }
        return true;
    }
    struct st *s = mt->state;
    for (int i = 0; i < mt->n_in; i++) {
        if (i == mt->base) continue;
        if (var(mt)->sp == SP_OUTLIERS) { // two streams over the same magnitudes
            abs_diff_bf16(raw[i], b, c->n, c->tmp);
            select_stat_input(mt, pass, i, c->idx, c->tmp, c->n, part, acc);
            continue;
        }
        // histograms and partials are compact (one per used stream): view this stream's as stream 0
        int sl = slot(mt, i);
        graft_select_stat_bf16(&s->sel[i], pass, 0, c->idx, raw[i], b, c->n, part ? part + sl : NULL,
                               acc ? (uint64_t *)acc + (size_t)sl * 65536 : NULL, c->tmp);
    }
    return true;
}

static int combine(struct graft_mt *mt, int pass, const double *part, void *const *accs, int n_accs, struct graft_err *err) {
    struct st *s = mt->state;
    if (is_l1(mt, pass)) {
        for (int i = 0; i < mt->n_in; i++) {
            if (i == mt->base) continue;
            double before = 0, after = 0;
            for (size_t k = 0; k < mt->n_chunks; k++) before += part[k * 2 * (size_t)mt->n_in + 2 * (size_t)i], after += part[k * 2 * (size_t)mt->n_in + 2 * (size_t)i + 1];
            s->ratio[i] = before < 1e-7 || after < 1e-7 ? 1.0 : before / after;
        }
        return GRAFT_OK;
    }
    size_t plen = partial_len(mt, pass);
    for (int i = 0; i < mt->n_in; i++) {
        if (i == mt->base) continue;
        int streams[2] = {i, GRAFT_MAX_INPUTS + i};
        for (int k = 0; k < (var(mt)->sp == SP_OUTLIERS ? 2 : 1); k++) {
            int sl = slot(mt, streams[k]);
            // view the compact per-thread histograms of this stream as stream 0; partials by column
            void *stack[256], **views = n_accs <= 256 ? stack : graft__malloc((size_t)n_accs * sizeof *views);
            if (!views) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
            for (int t = 0; t < n_accs; t++) views[t] = (uint64_t *)accs[t] + (size_t)sl * 65536;
            int rc = graft_select_combine(&s->sel[streams[k]], 1, pass, part ? part + sl : NULL, mt->n_chunks, plen, views, n_accs, err);
            if (views != stack) graft__free(views);
            if (rc) return rc;
        }
    }
    return GRAFT_OK;
}

// sum = 0 + wd for the first input, sum += wd for the others (inlined into the kernels below).
static inline void accumulate(float *restrict sum, const float *restrict wd, bool first, uint64_t n) {
    if (first) for (uint64_t e = 0; e < n; e++) sum[e] = 0.0f + wd[e];
    else for (uint64_t e = 0; e < n; e++) sum[e] += wd[e];
}

// The non-base inputs' weights as floats in w[]; returns their sum, the divisor of a normalized
// non-consensus merge (1 when it vanishes).
static float weights(const struct graft_mt *mt, float *w) {
    float d = 0;
    for (int i = 0; i < mt->n_in; i++)
        if (i != mt->base) w[i] = (float)pmv(mt, i, "weight", 1.0), d += w[i];
    return fabsf(d) < 1e-8f ? 1.0f : d;
}

// wd = wi·((x − b)·keep·ri) in place of the mask in wd (keep = 1 when `all`), added into sum.
GRAFT_KERNEL static void weigh(const float *restrict x, const float *restrict b, float *restrict wd, float *restrict sum, float wi,
                               float ri, bool all, bool first, uint64_t n) {
    if (all && ri == 1.0f) for (uint64_t e = 0; e < n; e++) wd[e] = wi * (x[e] - b[e]);
    else if (all) for (uint64_t e = 0; e < n; e++) wd[e] = wi * ((x[e] - b[e]) * ri);
    else for (uint64_t e = 0; e < n; e++) wd[e] = wi * (((x[e] - b[e]) * wd[e]) * ri);
    accumulate(sum, wd, first, n);
}

// weigh() with the top-k mask fused in: keep = |x − b| > thr (≥ thr when `ge`), same arithmetic.
GRAFT_KERNEL static void weigh_topk(const float *restrict x, const float *restrict b, float *restrict wd, float *restrict sum, float wi,
                                    float ri, uint32_t thr, bool ge, bool first, uint64_t n) {
    for (uint64_t e = 0; e < n; e++) {
        float d = x[e] - b[e], a = fabsf(d);
        uint32_t u;
        memcpy(&u, &a, 4);
        float k = (ge ? u >= thr : u > thr) ? 1.0f : 0.0f;
        wd[e] = wi * ((d * k) * ri);
    }
    accumulate(sum, wd, first, n);
}

// Add the wd values whose sign agrees with the sum's (0 counts as +) to mixed, their weight to div.
// Branch-free so that it vectorizes.
GRAFT_KERNEL __attribute__((noinline)) static void consensus_add(const float *restrict sum, const float *restrict wd, float wi, float *restrict mixed,
                          float *restrict div, uint64_t n) {
    for (uint64_t e = 0; e < n; e++) {
        float sp = sum[e] >= 0 ? 1.0f : 0.0f, pos = wd[e] > 0 ? 1.0f : 0.0f, neg = wd[e] < 0 ? 1.0f : 0.0f;
        float agree = sp * pos + (1.0f - sp) * neg;
        mixed[e] += agree * wd[e];
        div[e] += agree * wi;
    }
}

// How apply() weighs input i on chunk `idx`: keep everything (K_ALL) or nothing (K_ZERO), a top-k
// threshold (K_GT, K_GE with *thr), a DARE draw (K_RAND), or mask() (K_MASK: breadcrumbs, DELLA and
// the chunk where the kept ties end). apply() and the bf16 path both follow it.
enum kmode { K_ALL, K_ZERO, K_GT, K_GE, K_RAND, K_MASK };

static enum kmode input_mode(const struct graft_mt *mt, int i, size_t idx, uint32_t *thr) {
    const struct st *s = mt->state;
    enum sparsify sp = var(mt)->sp;
    if (sp == SP_MAGNITUDE && s->sel[i].k > 0 && s->sel[i].k < mt->numel) {
        int rule = graft_select_rule(&s->sel[i], idx, thr);
        return rule < 0 ? K_MASK : rule ? K_GE : K_GT;
    }
    if (sp == SP_RANDOM && pmv(mt, i, "density", 1.0) < 1) return K_RAND;
    if (sp == SP_MAGNITUDE && s->sel[i].k == 0) return K_ZERO;
    return sp == SP_NONE || sp == SP_MAGNITUDE || sp == SP_RANDOM ? K_ALL : K_MASK; // mask() would keep everything
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    struct st *s = mt->state;
    const float *B = c->in[mt->base];
    const uint64_t n = c->n;
    float *mixed = c->tmp, *div = c->tmp + n;      // scratch: 2n floats, then one n-float buffer per input
    float *wds = c->tmp + 2 * n;
    bool consensus = var(mt)->consensus, normalize = gpv(mt, "normalize", 0) != 0;
    float lambda = (float)gpv(mt, "lambda", 1.0);
    float w[GRAFT_MAX_INPUTS], d = weights(mt, w);
    int nz = 0;
    // wd_i = w_i · (δ_i · keep_i · r_i), input by input (vectorizable loops); sum in input order → out
    for (int i = 0; i < mt->n_in; i++) {
        if (i == mt->base) continue;
        float *wd = wds + (size_t)i * n;
        const float *x = c->in[i];
        float wi = w[i], ri = (float)s->ratio[i];
        uint32_t thr;
        enum kmode mode = input_mode(mt, i, c->idx, &thr);
        if (mode == K_GT || mode == K_GE) { // TIES: test |δ| against the threshold inside the weighting loop
            weigh_topk(x, B, wd, out, wi, ri, thr, mode == K_GE, nz++ == 0, n);
            continue;
        }
        if (mode == K_RAND) { // DARE: the keep mask (stored by the L1 pass, or drawn) into wd
            if (s->bits[i]) unpack_bits(s->bits[i] + c->e0 / 8, n, wd);
            else dare_draw(mt->key[i], c->e0, n, (float)pmv(mt, i, "density", 1.0), wd);
            weigh(x, B, wd, out, wi, ri, false, nz++ == 0, n);
            continue;
        }
        bool all = mask(mt, s, i, c, mixed, wd); // the mask lands in wd, then becomes wd
        weigh(x, B, wd, out, wi, ri, all, nz++ == 0, n);
    }
    if (consensus) { // majority sign of the sum (0 → +); keep the agreeing wd_i; divisor Σ their w_i
        memset(mixed, 0, n * sizeof *mixed);
        memset(div, 0, n * sizeof *div);
        for (int i = 0; i < mt->n_in; i++)
            if (i != mt->base) consensus_add(out, wds + (size_t)i * n, w[i], mixed, div, n);
        if (normalize) for (uint64_t e = 0; e < n; e++) out[e] = B[e] + mixed[e] / (div[e] + (div[e] == 0.0f ? 1.0f : 0.0f)) * lambda;
        else for (uint64_t e = 0; e < n; e++) out[e] = B[e] + mixed[e] * lambda;
    } else {
        if (!nz) memset(out, 0, n * sizeof *out);
        for (uint64_t e = 0; e < n; e++) out[e] = B[e] + (normalize ? out[e] / d : out[e]) * lambda;
    }
}

// ---- fused path on bf16 inputs ---------------------------------------------------------------------
// apply() again, straight from the stored bf16 inputs and in blocks of at most BLK elements so that
// every intermediate stays in L1 (apply() streams chunk-sized arrays through L2 several times). Each
// element goes through the same float operations in the same order as apply()'s kernels, so the
// output bytes are identical (tests/merge-e2e.sh compares the two paths).
#define BLK 512


struct rin {
    const uint16_t *x;
    const uint8_t  *bits; // K_RAND: the stored keep mask of the tensor, or NULL
    float           w, r, dens;
    enum kmode      mode;
    uint32_t        thr;
    uint64_t        key;
};

// One block of m elements: wd_i into wd + i·blk, Σ into out, then the consensus or plain combination.
GRAFT_KERNEL static void gta_bf16_block(const struct rin *in, int n_in, const uint16_t *restrict b, uint64_t e0, uint64_t m,
                                        uint64_t blk, bool consensus, bool normalize, float d, float lambda, float *restrict mixed,
                                        float *restrict div, float *restrict wds, float *restrict out) {
    for (int i = 0; i < n_in; i++) {
        const uint16_t *restrict x = in[i].x;
        float *restrict wd = wds + (size_t)i * blk;
        const float wi = in[i].w, ri = in[i].r;
        switch (in[i].mode) {
        case K_ALL:
            if (ri == 1.0f) for (uint64_t e = 0; e < m; e++) wd[e] = wi * (graft__bf16_to_f32(x[e]) - graft__bf16_to_f32(b[e]));
            else for (uint64_t e = 0; e < m; e++) wd[e] = wi * ((graft__bf16_to_f32(x[e]) - graft__bf16_to_f32(b[e])) * ri);
            break;
        case K_ZERO:
            for (uint64_t e = 0; e < m; e++) wd[e] = wi * (((graft__bf16_to_f32(x[e]) - graft__bf16_to_f32(b[e])) * 0.0f) * ri);
            break;
        case K_GT:
        case K_GE: {
            const uint32_t thr = in[i].thr;
            const bool ge = in[i].mode == K_GE;
            for (uint64_t e = 0; e < m; e++) {
                float dd = graft__bf16_to_f32(x[e]) - graft__bf16_to_f32(b[e]), a = fabsf(dd);
                uint32_t u;
                memcpy(&u, &a, 4);
                float k = (ge ? u >= thr : u > thr) ? 1.0f : 0.0f;
                wd[e] = wi * ((dd * k) * ri);
            }
            break;
        }
        case K_MASK: // not here: apply_raw leaves such chunks to apply()
            break;
        case K_RAND:
            if (in[i].bits) unpack_bits(in[i].bits + e0 / 8, m, wd);
            else dare_draw(in[i].key, e0, m, in[i].dens, wd);
            for (uint64_t e = 0; e < m; e++) wd[e] = wi * (((graft__bf16_to_f32(x[e]) - graft__bf16_to_f32(b[e])) * wd[e]) * ri);
            break;
        }
        accumulate(out, wd, i == 0, m);
    }
    if (consensus) {
        memset(mixed, 0, m * sizeof *mixed);
        memset(div, 0, m * sizeof *div);
        for (int i = 0; i < n_in; i++) consensus_add(out, wds + (size_t)i * blk, in[i].w, mixed, div, m);
        if (normalize) for (uint64_t e = 0; e < m; e++) out[e] = graft__bf16_to_f32(b[e]) + mixed[e] / (div[e] + (div[e] == 0.0f ? 1.0f : 0.0f)) * lambda;
        else for (uint64_t e = 0; e < m; e++) out[e] = graft__bf16_to_f32(b[e]) + mixed[e] * lambda;
    } else {
        if (!n_in) memset(out, 0, m * sizeof *out);
        for (uint64_t e = 0; e < m; e++) out[e] = graft__bf16_to_f32(b[e]) + (normalize ? out[e] / d : out[e]) * lambda;
    }
}

static bool apply_raw(const struct graft_mt *mt, const struct graft_chunk *c, const void *const *raw, const enum graft_dtype *dt, float *out) {
    const struct st *s = mt->state;
    for (int i = 0; i < mt->n_in; i++)
        if (dt[i] != GRAFT_DTYPE_BF16) return false;
    struct rin in[GRAFT_MAX_INPUTS];
    float w[GRAFT_MAX_INPUTS], d = weights(mt, w);
    int n = 0;
    for (int i = 0; i < mt->n_in; i++) { // the mask apply() would use for input i on this chunk
        if (i == mt->base) continue;
        struct rin *r = &in[n++];
        *r = (struct rin){.x = (const uint16_t *)raw[i], .w = w[i], .r = (float)s->ratio[i], .dens = (float)pmv(mt, i, "density", 1.0),
                          .key = mt->key[i], .bits = s->bits[i]};
        if ((r->mode = input_mode(mt, i, c->idx, &r->thr)) == K_MASK) return false; // apply() handles it
    }
    const uint64_t blk = mt->chunk < BLK ? mt->chunk : BLK; // scratch: (n_in + 2) × chunk floats ≥ (n + 2) × blk
    float *mixed = c->tmp, *div = c->tmp + blk, *wds = c->tmp + 2 * blk;
    bool consensus = var(mt)->consensus, normalize = gpv(mt, "normalize", 0) != 0;
    float lambda = (float)gpv(mt, "lambda", 1.0);
    const uint16_t *b = raw[mt->base];
    for (uint64_t o = 0; o < c->n; o += blk) {
        uint64_t m = c->n - o < blk ? c->n - o : blk;
        gta_bf16_block(in, n, b + o, c->e0 + o, m, blk, consensus, normalize, d, lambda, mixed, div, wds, out + o);
        for (int i = 0; i < n; i++) in[i].x += m;
    }
    return true;
}

static int validate(const struct graft_mt *mt, struct graft_err *err) {
    for (int i = 0; i < mt->n_in; i++) {
        if (i == mt->base) continue;
        double d = pmv(mt, i, "density", 1.0);
        if (!(d >= 0 && d <= 1))
            return graft_err_set(err, GRAFT_E_CONFIG, NULL, mt->name, strlen(mt->name), "density %g is out of range [0, 1]", d);
        if (var(mt)->sp == SP_DELLA && d < 1 && d > 0) {
            double eps = pmv(mt, i, "epsilon", 0.15);
            if (!(d - eps > 0 && d + eps < 1))
                return graft_err_set(err, GRAFT_E_CONFIG, NULL, mt->name, strlen(mt->name),
                                     "della needs 0 < density − epsilon and density + epsilon < 1 (density %g, epsilon %g)", d, eps);
        }
        double g = pmv(mt, i, "gamma", 0.01);
        if (var(mt)->sp == SP_OUTLIERS && !(g >= 0 && g <= 1))
            return graft_err_set(err, GRAFT_E_CONFIG, NULL, mt->name, strlen(mt->name), "gamma %g is out of range [0, 1]", g);
    }
    return GRAFT_OK;
}

static void free_state(struct graft_mt *mt) {
    struct st *s = mt->state;
    if (!s) return;
    graft_select_free(s->sel, 2 * GRAFT_MAX_INPUTS);
    for (int i = 0; i < GRAFT_MAX_INPUTS; i++) graft__free(s->bits[i]), s->bits[i] = NULL;
}

#define COMMON_GLOBALS(norm, resc) {"normalize", false, false, norm}, {"rescale", false, false, resc}, {"lambda", false, false, 1}, {"int8_mask", false, false, 0}

static const struct graft_mparam p_ta[] = {{"weight", true, true, 0}, {"density", true, false, 1}, COMMON_GLOBALS(0, 0)};
static const struct graft_mparam p_ties[] = {{"weight", true, true, 0}, {"density", true, false, 1}, COMMON_GLOBALS(1, 0)};
static const struct graft_mparam p_dare[] = {{"weight", true, true, 0}, {"density", true, false, 1}, COMMON_GLOBALS(0, 1)};
static const struct graft_mparam p_bc[] = {{"weight", true, true, 0}, {"density", true, false, 1}, {"gamma", true, false, 0.01}, COMMON_GLOBALS(0, 0)};
static const struct graft_mparam p_della[] = {{"weight", true, true, 0}, {"density", true, false, 1}, {"epsilon", true, false, 0.15}, COMMON_GLOBALS(1, 1)};
static const struct graft_mparam p_della_l[] = {{"weight", true, true, 0}, {"density", true, false, 1}, {"epsilon", true, false, 0.15}, COMMON_GLOBALS(0, 1)};

#define GTA(nm, pr, pp, sp_, cons, rows_, rnd)                                                                        \
    {.name = nm, .pretty = pr, .base = GRAFT_BASE_REQUIRED, .min_models = 1, .max_models = -1, .params = pp,       \
     .n_params = (int)(sizeof pp / sizeof pp[0]), .rows = rows_, .random = rnd, .n_passes = n_passes,               \
     .partial_len = partial_len, .acc_bytes = acc_bytes, .stat = stat, .combine = combine, .apply = apply,          \
     .apply_raw = apply_raw, .stat_raw = stat_raw,                                                                   \
     .wants_chunk = wants_chunk,                                                                                     \
     .validate = validate, .init = init, .free_state = free_state}

const struct graft_method graft_methods_gta[8] = {
    GTA("task_arithmetic", "Task Arithmetic", p_ta, SP_NONE, false, false, false),
    GTA("ties", "TIES", p_ties, SP_MAGNITUDE, true, false, false),
    GTA("dare_linear", "Linear DARE", p_dare, SP_RANDOM, false, false, true),
    GTA("dare_ties", "DARE TIES", p_dare, SP_RANDOM, true, false, true),
    GTA("breadcrumbs", "Model Breadcrumbs", p_bc, SP_OUTLIERS, false, false, false),
    GTA("breadcrumbs_ties", "Model Breadcrumbs with TIES", p_bc, SP_OUTLIERS, true, false, false),
    GTA("della", "DELLA", p_della, SP_DELLA, true, true, true),
    GTA("della_linear", "Linear DELLA", p_della_l, SP_DELLA, false, true, true),
};

static const struct variant variants[8] = {
    {SP_NONE, false}, {SP_MAGNITUDE, true}, {SP_RANDOM, false}, {SP_RANDOM, true},
    {SP_OUTLIERS, false}, {SP_OUTLIERS, true}, {SP_DELLA, true}, {SP_DELLA, false},
};

static const struct variant *var(const struct graft_mt *mt) { return &variants[mt->m - graft_methods_gta]; }
