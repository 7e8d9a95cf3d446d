// The counter-based uniform draw of impl.h (graft__rng_uniform) for 16 counters at once in AVX-512,
// for kernels that compare it with a threshold (DARE's keep test). Included only by x86-64 GCC builds.
#ifndef GRAFT_CORE_RNG_X86_H
#define GRAFT_CORE_RNG_X86_H
#include <immintrin.h>
#include <stdint.h>

#define GRAFT_T512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

// graft__hash32 on 16 lanes.
GRAFT_T512 static inline __m512i graft__hash32x16(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7FEB352D));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846CA68Bu));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

// Counters lo, lo + 1, …, lo + 15 (low words; the high word's key part is k1).
GRAFT_T512 static inline __m512i graft__counters16(uint32_t lo) {
    return _mm512_add_epi32(_mm512_set1_epi32((int)lo), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

// Bit j set when the uniform of counter lane j is below p, t = graft__rng_keep_threshold(p).
GRAFT_T512 static inline __mmask16 graft__keep16(__m512i c, uint32_t k0, uint32_t k1, uint32_t t) {
    __m512i h = graft__hash32x16(_mm512_xor_si512(graft__hash32x16(_mm512_xor_si512(c, _mm512_set1_epi32((int)k0))), _mm512_set1_epi32((int)k1)));
    return _mm512_cmplt_epu32_mask(_mm512_srli_epi32(h, 8), _mm512_set1_epi32((int)t));
}
#endif
