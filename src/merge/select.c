// Exact top-k by magnitude in O(numel) without sorting the tensor (see engine.h for the passes).
// Non-negative floats order like their f32 bit patterns, so everything works on uint32 patterns.
// Ties at the threshold are kept in element-index order whatever the thread count: each chunk learns
// how many equal elements come before it.
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include "engine.h"
#include "../core/impl.h"
#include "kern-x86.h"

#define NB 65536
#define SAMPLE_CHUNKS 16             // pass 0 looks at about this many chunks (1 Mi elements)
#define POOL_MAX (8ull << 20)        // pool entries at most (64 MiB); beyond, the exact passes run instead

struct graft_select_pool {
    _Atomic uint64_t n;   // entries reserved (may exceed cap: then the pool overflowed)
    uint64_t         cap;
    uint32_t        *val; // bit patterns
    uint32_t        *chunk;
};

static inline uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

void graft_select_init(struct graft_select *sel, uint64_t k, uint64_t n) {
    memset(sel, 0, sizeof *sel);
    sel->k = k, sel->n = n;
    sel->passes = k > 0 && k < n ? 2 : 0;
}

int graft_select_passes(const struct graft_select *sel, int n_streams) {
    int p = 0;
    for (int s = 0; s < n_streams; s++) p = sel[s].passes > p ? sel[s].passes : p;
    return p;
}

static size_t stride(size_t n_chunks) { return n_chunks <= SAMPLE_CHUNKS ? 1 : n_chunks / SAMPLE_CHUNKS; }

bool graft_select_wants_chunk(int pass, size_t chunk, size_t n_chunks) { return pass != 0 || chunk % stride(n_chunks) == 0; }

// Passes 0, 2, 3: histograms; pass 1: the high-bits histogram of the pool's entries.
size_t graft_select_acc_bytes(int pass, int n_streams) { return pass <= 3 ? (size_t)n_streams * NB * sizeof(uint64_t) : 0; }
size_t graft_select_partial_len(int pass, int n_streams) { return pass == 1 || pass == 2 || pass == 4 ? (size_t)n_streams : 0; }

static bool active(const struct graft_select *x, int pass) { return pass < x->passes; }
// What pass `pass` does for this stream: a collecting pass 2 repeats pass 1 on one bucket.
static int kind(const struct graft_select *x, int pass) { return pass == 2 && x->collect ? 1 : pass; }

GRAFT_KERNEL static uint64_t count_above(const float *restrict mag, uint64_t n, uint32_t above) {
    uint64_t c = 0;
    for (uint64_t i = 0; i < n; i++) c += bits(mag[i]) > above;
    return c;
}

GRAFT_KERNEL static uint64_t count_eq(const float *restrict mag, uint64_t n, uint32_t v) {
    uint64_t c = 0;
    for (uint64_t i = 0; i < n; i++) c += bits(mag[i]) == v;
    return c;
}

// Pool entries are appended a block at a time: the in-bracket patterns of a block are compacted into a
// local buffer, then one atomic reservation and a copy put them in the pool.
#define BLOCK 2048

// The patterns of mag[0..n) (n ≤ BLOCK) with lo ≤ b ≤ hi, in element order, into out; returns how
// many. Branch-free: every element is written to the next free slot, which only advances for a match.
static uint64_t compact(const float *restrict mag, uint64_t n, uint32_t lo, uint32_t hi, uint32_t *restrict out) {
    uint64_t at = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t b = bits(mag[i]);
        out[at] = b;
        at += (b - lo) <= (hi - lo);
    }
    return at;
}

#if defined(__x86_64__) && !defined(__clang__)
#include <immintrin.h>
// compact() for AVX2 + BMI2: 8 elements at a time, the matching lanes moved to the front by a
// permutation derived from the match mask (pdep/pext), stored whole; `out` has 8 slots of slack.
__attribute__((target("avx2,bmi2"))) static uint64_t compact_avx2(const float *restrict mag, uint64_t n, uint32_t lo, uint32_t hi,
                                                                   uint32_t *restrict out) {
    const __m256i vlo = _mm256_set1_epi32((int)lo), bias = _mm256_set1_epi32((int)0x80000000u);
    const __m256i span = _mm256_set1_epi32((int)((hi - lo) ^ 0x80000000u));
    uint64_t at = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(mag + i));
        __m256i d = _mm256_xor_si256(_mm256_sub_epi32(b, vlo), bias); // unsigned b − lo ≤ hi − lo, as signed
        unsigned msk = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(d, span))) & 0xFFu;
        uint64_t sel = _pext_u64(0x0706050403020100ull, _pdep_u64(msk, 0x0101010101010101ull) * 0xFF);
        __m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sel));
        _mm256_storeu_si256((__m256i *)(void *)(out + at), _mm256_permutevar8x32_epi32(b, perm));
        at += (uint64_t)__builtin_popcount(msk);
    }
    return at + compact(mag + i, n - i, lo, hi, out + at);
}
#endif

// Count the high-bits buckets of m bracket entries of chunk `chunk` in this thread's histogram h, and
// append those inside the store window to the pool (one atomic reservation). buf is overwritten.
static void pool_add(struct graft_select *x, size_t chunk, uint32_t *buf, uint64_t m, uint64_t *restrict h) {
    if (!m) return;
    for (uint64_t j = 0; j < m; j++) h[buf[j] >> 16]++;
    if (x->st_lo != x->lo_b || x->st_hi != x->hi_b) { // keep the store window's entries (branch-free)
        const uint32_t lo = x->st_lo << 16, span = ((x->st_hi << 16) | 0xFFFF) - lo;
        uint64_t k = 0;
        for (uint64_t j = 0; j < m; j++) {
            uint32_t v = buf[j];
            buf[k] = v;
            k += v - lo <= span;
        }
        if (!(m = k)) return;
    }
    struct graft_select_pool *p = x->pool;
    uint64_t at = atomic_fetch_add_explicit(&p->n, m, memory_order_relaxed);
    if (at + m > p->cap) return; // overflow: combine sees n > cap and falls back
    memcpy(p->val + at, buf, m * sizeof *buf);
    for (uint64_t j = 0; j < m; j++) p->chunk[at + j] = (uint32_t)chunk;
}

GRAFT_KERNEL static void hist_hi(const float *restrict mag, uint64_t n, uint64_t *restrict h) {
    for (uint64_t i = 0; i < n; i++) h[bits(mag[i]) >> 16]++;
}

GRAFT_KERNEL void graft_select_stat(struct graft_select *sel, int pass, int s, size_t chunk, const float *mag, uint64_t n,
                                    double *partial, void *acc, int n_streams) {
    (void)n_streams;
    struct graft_select *x = &sel[s];
    if (!active(x, pass)) return;
    uint64_t *h = acc ? (uint64_t *)acc + (size_t)s * NB : NULL;
    switch (kind(x, pass)) {
    case 0:
    case 2: hist_hi(mag, n, h); return;
    case 1: {
        // above the bracket: counted; inside it: appended to the pool, a block at a time
        const uint32_t lo = x->lo_b << 16, hi = (x->hi_b << 16) | 0xFFFF;
        partial[s] += (double)count_above(mag, n, hi);
        uint32_t buf[BLOCK + 16];
#if defined(__x86_64__) && !defined(__clang__)
        const bool avx2 = !graft__cpu_generic() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2");
#endif
        for (uint64_t o = 0; o < n; o += BLOCK) {
            uint64_t len = n - o < BLOCK ? n - o : BLOCK, m;
#if defined(__x86_64__) && !defined(__clang__)
            if (avx2) m = compact_avx2(mag + o, len, lo, hi, buf);
            else
#endif
                m = compact(mag + o, len, lo, hi, buf);
            pool_add(x, chunk, buf, m, h);
        }
        return;
    }
    case 3: {
        const uint32_t hb = x->hi_b;
        for (uint64_t i = 0; i < n; i++) {
            uint32_t b = bits(mag[i]);
            if ((b >> 16) == hb) h[b & 0xFFFF]++; // one bucket of many: well predicted
        }
        return;
    }
    case 4: partial[s] += (double)count_eq(mag, n, x->thr); return;
    }
}

GRAFT_KERNEL static void abs_diff_bf16(const uint16_t *restrict x, const uint16_t *restrict b, uint64_t n, float *restrict mag) {
    for (uint64_t e = 0; e < n; e++) mag[e] = fabsf(graft__bf16_to_f32(x[e]) - graft__bf16_to_f32(b[e]));
}

void graft_select_stat_bf16(struct graft_select *sel, int pass, int s, size_t chunk, const uint16_t *x, const uint16_t *b, uint64_t n,
                            double *partial, void *acc, float *scratch) {
    struct graft_select *xs = &sel[s];
    if (!active(xs, pass)) return;
#if GRAFT_HAVE_KERN_X86
    if (kind(xs, pass) == 1 && graft__cpu_avx512()) { // |x − b| never leaves the registers but for the pool's entries
        uint64_t *h = (uint64_t *)acc + (size_t)s * NB, above = 0;
        const uint32_t lo = xs->lo_b << 16, hi = (xs->hi_b << 16) | 0xFFFF;
        uint32_t buf[BLOCK + 16];
        for (uint64_t o = 0; o < n; o += BLOCK) {
            uint64_t len = n - o < BLOCK ? n - o : BLOCK, m = 0;
            uint64_t done = graft__bracket_bf16_avx512(x + o, b + o, len, lo, hi, buf, &m, &above);
            if (done < len) { // the tail, as the portable path
                float tail[16];
                abs_diff_bf16(x + o + done, b + o + done, len - done, tail);
                above += count_above(tail, len - done, hi);
                m += compact(tail, len - done, lo, hi, buf + m);
            }
            pool_add(xs, chunk, buf, m, h);
        }
        partial[s] += (double)above;
        return;
    }
#endif
    abs_diff_bf16(x, b, n, scratch);
    graft_select_stat(sel, pass, s, chunk, scratch, n, partial, acc, 1);
}

// Histogram of one stream summed over the threads, buckets lo…hi, into the first thread's own
// accumulator (no fresh 512 KiB buffer to fault in per stream and pass). Pass 1 counts only the
// bracket, so the rest of every accumulator is zero and is not read.
static uint64_t *sum_hist(int s, void *const *accs, int n_accs, uint64_t *zero, uint32_t lo, uint32_t hi) {
    if (!n_accs) return zero;
    uint64_t *out = (uint64_t *)accs[0] + (size_t)s * NB;
    for (int t = 1; t < n_accs; t++) {
        const uint64_t *h = (const uint64_t *)accs[t] + (size_t)s * NB;
        for (size_t b = lo; b <= hi; b++) out[b] += h[b];
    }
    return out;
}

static void pool_free(struct graft_select *x) {
    if (!x->pool) return;
    graft__free(x->pool->val), graft__free(x->pool->chunk), graft__free(x->pool);
    x->pool = NULL;
}

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for top-k selection"); }

// Buckets lo…hi that hold the values of rank k ± margin by the sample's estimate (h[b]·scale elements
// in bucket b); *inside: the estimated count within.
static void bracket(const uint64_t *h, double scale, double k, double margin, uint32_t *lo, uint32_t *hi, double *inside) {
    double run = 0;
    int hi_b = -1, lo_b = 0;
    *inside = 0;
    for (int b = NB - 1; b >= 0; b--) {
        double next = run + (double)h[b] * scale;
        if (hi_b < 0 && next >= k - margin) hi_b = b; // buckets above hi_b hold < k − margin
        if (hi_b >= 0) *inside += (double)h[b] * scale;
        if (next >= k + margin || b == 0) { lo_b = b; break; }
        run = next;
    }
    if (hi_b < 0) hi_b = 0;
    *hi = (uint32_t)hi_b, *lo = (uint32_t)(lo_b <= hi_b ? lo_b : hi_b);
}

static int pool_new(struct graft_select *x, uint64_t cap, struct graft_err *err);

// Pass 0: bracket the k-th largest from the sample. With a full sample the bracket is the exact bucket.
static int combine_sample(struct graft_select *x, const uint64_t *h, struct graft_err *err) {
    uint64_t S = 0;
    for (size_t b = 0; b < NB; b++) S += h[b];
    double scale = S ? (double)x->n / (double)S : 1.0, k = (double)x->k;
    // Sampling error of a rank estimate, inflated for chunk (cluster) sampling; 0 for a full sample.
    // The bracket is wide (a k-th value outside it costs three exact passes); the store window, whose
    // entries go to the pool, is narrower (a k-th value outside it costs one pass collecting its bucket).
    bool full = S >= x->n;
    double inside;
    bracket(h, scale, k, full ? 0.0 : 8.0 * sqrt(k * scale) + 0.002 * (double)x->n + 4.0 * scale, &x->lo_b, &x->hi_b, &inside);
    bracket(h, scale, k, full ? 0.0 : 3.0 * sqrt(k * scale) + 4.0 * scale, &x->st_lo, &x->st_hi, &inside);
    if (x->st_lo < x->lo_b) x->st_lo = x->lo_b;
    if (x->st_hi > x->hi_b) x->st_hi = x->hi_b;
    return pool_new(x, (uint64_t)(2.0 * inside) + 65536, err);
}

// A new empty pool of at most cap entries (and no more than POOL_MAX or the tensor).
static int pool_new(struct graft_select *x, uint64_t cap, struct graft_err *err) {
    if (cap > x->n) cap = x->n;
    if (cap > POOL_MAX) cap = POOL_MAX;
    struct graft_select_pool *p = graft__calloc(1, sizeof *p);
    if (!p) return nomem(err);
    x->pool = p;
    p->cap = cap;
    p->val = graft__malloc((size_t)cap * sizeof *p->val);
    p->chunk = graft__malloc((size_t)cap * sizeof *p->chunk);
    if (!p->val || !p->chunk) return nomem(err);
    atomic_init(&p->n, 0);
    return GRAFT_OK;
}

// Walking a histogram down from the top bucket with *run elements already above it: the bucket
// where the count reaches r (*run becomes the count above that bucket).
static uint32_t bucket_of_rank(const uint64_t *h, uint64_t r, uint64_t *run) {
    for (int b = NB - 1; b > 0; b--) {
        if (*run + h[b] >= r) return (uint32_t)b;
        *run += h[b];
    }
    return 0;
}

// The pool entries whose high bits are hb, in pool order, into sv (values) and sc (chunks), which have
// room for cnt (their number) + 16; returns how many were found.
static uint64_t bucket_entries(const uint32_t *val, const uint32_t *chunk, uint64_t m, uint32_t hb, uint64_t cnt, uint32_t *sv, uint32_t *sc) {
    uint64_t i = 0, at = 0;
#if GRAFT_HAVE_KERN_X86
    if (graft__cpu_avx512()) i = graft__bucket_entries_avx512(val, chunk, m, hb, cnt, sv, sc, &at);
#endif
    for (; i < m && at <= cnt; i++) { // branch-free: every entry is written, the count advances on a match
        sv[at] = val[i], sc[at] = chunk[i];
        at += (val[i] >> 16) == hb;
    }
    return at < cnt ? at : cnt;
}

// Pass 1: the exact threshold inside the pool, or a fallback to the exact passes. h is the pool's
// high-bits histogram: it names the k-th value's bucket, so only that bucket's entries are examined.
static int combine_pool(struct graft_select *x, const uint64_t *h, const double *partials, size_t n_chunks, size_t partial_len, int s,
                        struct graft_err *err) {
    uint64_t A = 0, in = 0;
    for (size_t c = 0; c < n_chunks; c++) A += (uint64_t)partials[c * partial_len + (size_t)s];
    for (uint32_t b = x->lo_b; b <= x->hi_b; b++) in += h[b];
    struct graft_select_pool *p = x->pool;
    uint64_t m = atomic_load(&p->n);
    if (x->k <= A || x->k > A + in) { // the k-th value is outside the bracket: run the exact passes
        if (x->collect) return graft_err_set(err, GRAFT_E_INTERNAL, NULL, NULL, 0, "top-k selection: collected bucket miscounted");
        pool_free(x);
        x->passes = 5;
        return GRAFT_OK;
    }
    uint64_t run = A;
    const uint32_t hb = bucket_of_rank(h, x->k, &run); // run: elements above bucket hb
    if (m > p->cap || hb < x->st_lo || hb > x->st_hi) { // not in the pool: collect bucket hb in one more pass
        if (x->collect || h[hb] > POOL_MAX) { // (a huge bucket: the exact passes need no pool)
            pool_free(x);
            x->collect = false, x->passes = 5;
            return GRAFT_OK;
        }
        pool_free(x);
        x->lo_b = x->hi_b = x->st_lo = x->st_hi = hb;
        x->collect = true, x->passes = 3;
        return pool_new(x, h[hb], err);
    }
    // the entries of bucket hb (value, chunk), in pool order
    uint64_t cnt = h[hb];
    uint32_t *sv = graft__malloc((size_t)(cnt + 16) * sizeof *sv), *sc = graft__malloc((size_t)(cnt + 16) * sizeof *sc);
    uint64_t *h2 = graft__calloc(NB, sizeof *h2);
    x->tie_prefix = graft__calloc(n_chunks + 1, sizeof *x->tie_prefix);
    if (!sv || !sc || !h2 || !x->tie_prefix) { graft__free(sv), graft__free(sc), graft__free(h2); return nomem(err); }
    uint64_t at = bucket_entries(p->val, p->chunk, m, hb, cnt, sv, sc);
    for (uint64_t j = 0; j < at; j++) h2[sv[j] & 0xFFFF]++;
    x->thr = (hb << 16) | bucket_of_rank(h2, x->k, &run);
    for (uint64_t j = 0; j < at; j++)
        if (sv[j] == x->thr) x->tie_prefix[sc[j] + 1]++;
    for (size_t c = 0; c < n_chunks; c++) x->tie_prefix[c + 1] += x->tie_prefix[c];
    x->above = run, x->ties_kept = x->k - run;
    graft__free(sv), graft__free(sc), graft__free(h2);
    pool_free(x);
    return GRAFT_OK;
}

int graft_select_combine(struct graft_select *sel, int n_streams, int pass, const double *partials, size_t n_chunks,
                         size_t partial_len, void *const *accs, int n_accs, struct graft_err *err) {
    // no thread ran a chunk: every histogram is empty
    uint64_t *zero = pass <= 3 && !n_accs ? graft__calloc(NB, sizeof *zero) : NULL;
    if (pass <= 3 && !n_accs && !zero) return nomem(err);
    int rc = GRAFT_OK;
    for (int s = 0; s < n_streams && !rc; s++) {
        struct graft_select *x = &sel[s];
        if (!active(x, pass)) continue;
        int kd = kind(x, pass);
        uint64_t *h = pass <= 3 ? sum_hist(s, accs, n_accs, zero, kd == 1 ? x->lo_b : 0, kd == 1 ? x->hi_b : NB - 1) : NULL;
        if (pass == 0) rc = combine_sample(x, h, err);
        else if (kd == 1) rc = combine_pool(x, h, partials, n_chunks, partial_len, s, err);
        else if (pass == 2 || pass == 3) {
            uint64_t run = pass == 2 ? 0 : x->above_hi;
            uint32_t b = bucket_of_rank(h, x->k, &run);
            if (pass == 2) x->hi_b = b, x->above_hi = run;
            else x->thr = (x->hi_b << 16) | b, x->above = run, x->ties_kept = x->k - run;
        } else {
            graft__free(x->tie_prefix);
            x->tie_prefix = graft__calloc(n_chunks + 1, sizeof *x->tie_prefix);
            if (!x->tie_prefix) { rc = nomem(err); break; }
            for (size_t c = 0; c < n_chunks; c++) x->tie_prefix[c + 1] = x->tie_prefix[c] + (uint64_t)partials[c * partial_len + (size_t)s];
        }
    }
    graft__free(zero);
    return rc;
}

int graft_select_rule(const struct graft_select *x, size_t chunk_idx, uint32_t *thr) {
    *thr = x->thr;
    if (!x->tie_prefix) return -1;
    uint64_t tie = x->tie_prefix[chunk_idx], here = x->tie_prefix[chunk_idx + 1] - tie;
    if (tie + here <= x->ties_kept) return 1; // every tie of this chunk is kept
    if (tie >= x->ties_kept || here == 0) return 0;
    return -1;                                // the one chunk where the kept ties end
}

GRAFT_KERNEL void graft_select_mask(const struct graft_select *x, size_t chunk_idx, const float *restrict mag, uint64_t n,
                                    float *restrict keep) {
    if (x->k == 0) { memset(keep, 0, n * sizeof *keep); return; }
    if (x->k >= x->n) { for (uint64_t i = 0; i < n; i++) keep[i] = 1.0f; return; }
    uint32_t thr;
    int rule = graft_select_rule(x, chunk_idx, &thr);
    if (rule == 1) { for (uint64_t i = 0; i < n; i++) keep[i] = bits(mag[i]) >= thr ? 1.0f : 0.0f; return; }
    for (uint64_t i = 0; i < n; i++) keep[i] = bits(mag[i]) > thr ? 1.0f : 0.0f; // branch-free, vectorizable
    if (rule == 0) return;
    // ties at the threshold: the first ties_kept of them in element order
    uint64_t tie = x->tie_prefix ? x->tie_prefix[chunk_idx] : 0;
    for (uint64_t i = 0; i < n && tie < x->ties_kept; i++)
        if (bits(mag[i]) == thr) keep[i] = 1.0f, tie++;
}

void graft_select_free(struct graft_select *sel, int n_streams) {
    for (int s = 0; s < n_streams; s++) graft__free(sel[s].tie_prefix), sel[s].tie_prefix = NULL, pool_free(&sel[s]);
}
