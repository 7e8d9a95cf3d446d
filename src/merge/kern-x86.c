// AVX-512 bodies of merge kernels whose portable versions GCC compiles poorly (float → double widening
// is split into 128-bit pieces). Compiled for every x86-64 GCC build with per-function target
// attributes; callers check the CPU first. Each processes a prefix of its input and returns its length;
// the caller's portable loop continues from there with the same lanes, so results are identical.
#include "kern-x86.h"
#include "../core/impl.h"
#if GRAFT_HAVE_KERN_X86
#include <immintrin.h>
#include <string.h>
#include "../core/rng-x86.h"

#define T512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

// bf16 → f32 of 16 elements: the bits shifted into the high half.
T512 static inline __m512 load_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)p)), 16));
}

// Lanes l of lanes0/lanes1 (8 each) gather |x − b| (and |x − b| where the keep bit is set) of
// elements ≡ l mod 8, in order: the 16 elements of a step are two groups of 8, added low group first,
// exactly as the portable loop (adding d·0 = +0 leaves a sum unchanged, so a masked add is the same).
T512 uint64_t graft__l1_bf16_avx512(const uint16_t *x, const uint16_t *b, const uint8_t *bits, uint64_t n, double *lanes0, double *lanes1) {
    __m512d s0 = _mm512_loadu_pd(lanes0), s1 = _mm512_loadu_pd(lanes1);
    uint64_t e = 0;
    for (; e + 16 <= n; e += 16) {
        __m512 d = _mm512_abs_ps(_mm512_sub_ps(load_bf16(x + e), load_bf16(b + e)));
        __m512d dl = _mm512_cvtps_pd(_mm512_castps512_ps256(d)), dh = _mm512_cvtps_pd(_mm512_extractf32x8_ps(d, 1));
        s0 = _mm512_add_pd(s0, dl);
        if (bits) {
            s1 = _mm512_mask_add_pd(s1, bits[e / 8], s1, dl);
            s0 = _mm512_add_pd(s0, dh);
            s1 = _mm512_mask_add_pd(s1, bits[e / 8 + 1], s1, dh);
        } else {
            s1 = _mm512_add_pd(s1, dl);
            s0 = _mm512_add_pd(s0, dh);
            s1 = _mm512_add_pd(s1, dh);
        }
    }
    _mm512_storeu_pd(lanes0, s0), _mm512_storeu_pd(lanes1, s1);
    return e;
}

// Pass 1 of the top-k selection on bf16 inputs (select.c): of the patterns u of |x − b|, those above
// hi are counted into *above, those in [lo, hi] appended to out (in element order; 16 slots of slack)
// and counted in *m. |x − b| stays in registers.
T512 uint64_t graft__bracket_bf16_avx512(const uint16_t *x, const uint16_t *b, uint64_t n, uint32_t lo, uint32_t hi, uint32_t *out, uint64_t *m,
                                         uint64_t *above) {
    const __m512i absm = _mm512_set1_epi32(0x7FFFFFFF), vlo = _mm512_set1_epi32((int)lo), vhi = _mm512_set1_epi32((int)hi);
    const __m512i span = _mm512_set1_epi32((int)(hi - lo));
    uint64_t at = *m, up = 0, e = 0;
    for (; e + 16 <= n; e += 16) {
        __m512i u = _mm512_and_si512(_mm512_castps_si512(_mm512_sub_ps(load_bf16(x + e), load_bf16(b + e))), absm);
        up += (uint64_t)__builtin_popcount(_mm512_cmpgt_epu32_mask(u, vhi));
        __mmask16 in = _mm512_cmple_epu32_mask(_mm512_sub_epi32(u, vlo), span);
        // unconditionally: a branch on `in` (true for a third of the steps) mispredicts too often
        _mm512_storeu_si512((void *)(out + at), _mm512_maskz_compress_epi32(in, u));
        at += (uint64_t)__builtin_popcount(in);
    }
    *m = at, *above += up;
    return e;
}

// The pool entries (val, chunk) whose high 16 bits are hb, in order, appended at *at to sv and sc
// (room for cnt + 16); stops before a step could pass cnt. Returns how many entries were examined.
T512 uint64_t graft__bucket_entries_avx512(const uint32_t *val, const uint32_t *chunk, uint64_t m, uint32_t hb, uint64_t cnt, uint32_t *sv,
                                           uint32_t *sc, uint64_t *at) {
    const __m512i vhb = _mm512_set1_epi32((int)hb);
    uint64_t i = 0, a = *at;
    for (; i + 16 <= m && a <= cnt; i += 16) {
        __m512i v = _mm512_loadu_si512((const void *)(val + i));
        __mmask16 k = _mm512_cmpeq_epi32_mask(_mm512_srli_epi32(v, 16), vhb); // no branch on k (see above)
        _mm512_storeu_si512((void *)(sv + a), _mm512_maskz_compress_epi32(k, v));
        _mm512_storeu_si512((void *)(sc + a), _mm512_maskz_compress_epi32(k, _mm512_loadu_si512((const void *)(chunk + i))));
        a += (uint64_t)__builtin_popcount(k);
    }
    *at = a;
    return i;
}

// DARE's L1 pass over one run of counters (no carry into the high word): the keep bits drawn as
// graft__rng_keep_bits draws them (into bits, 2 bytes per 16 elements) and the lanes summed as
// graft__l1_bf16_avx512 sums them, in one loop so that the hashing overlaps the loads.
T512 uint64_t graft__dare_l1_bf16_avx512(const uint16_t *x, const uint16_t *b, uint32_t k0, uint32_t k1, uint32_t lo, uint32_t t, uint64_t n,
                                         uint8_t *bits, double *lanes0, double *lanes1) {
    __m512d s0 = _mm512_loadu_pd(lanes0), s1 = _mm512_loadu_pd(lanes1);
    __m512i c = graft__counters16(lo);
    uint64_t e = 0;
    for (; e + 16 <= n; e += 16) {
        __mmask16 k = graft__keep16(c, k0, k1, t);
        c = _mm512_add_epi32(c, _mm512_set1_epi32(16));
        memcpy(bits + e / 8, &k, 2);
        __m512 d = _mm512_abs_ps(_mm512_sub_ps(load_bf16(x + e), load_bf16(b + e)));
        __m512d dl = _mm512_cvtps_pd(_mm512_castps512_ps256(d)), dh = _mm512_cvtps_pd(_mm512_extractf32x8_ps(d, 1));
        s0 = _mm512_add_pd(s0, dl);
        s1 = _mm512_mask_add_pd(s1, (__mmask8)k, s1, dl);
        s0 = _mm512_add_pd(s0, dh);
        s1 = _mm512_mask_add_pd(s1, (__mmask8)(k >> 8), s1, dh);
    }
    _mm512_storeu_pd(lanes0, s0), _mm512_storeu_pd(lanes1, s1);
    return e;
}

// keep[e] = bit e of bits (1.0 or 0.0), 16 at a time.
T512 uint64_t graft__unpack_bits_avx512(const uint8_t *bits, uint64_t n, float *keep) {
    const __m512 one = _mm512_set1_ps(1.0f);
    uint64_t e = 0;
    for (; e + 16 <= n; e += 16) {
        uint16_t k;
        memcpy(&k, bits + e / 8, 2);
        _mm512_storeu_ps(keep + e, _mm512_maskz_mov_ps(k, one));
    }
    return e;
}
#endif
