// F16C/AVX2 conversion rows. Compiled for every x86-64 build with per-function target attributes and
// called only when the CPU reports both features. Tails go through the scalar references.
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>
#include "graft/dtype.h"
#include "dtype-impl.h"

#define TARGET __attribute__((target("avx2,f16c")))

TARGET void graft__f16_to_f32_avx2(const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = graft_f16_to_f32_ref(h);
    }
}

TARGET void graft__bf16_to_f32_avx2(const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + 2 * i)));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(w, 16));
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = graft_bf16_to_f32_ref(h);
    }
}

// Pack the low 16 bits of eight 32-bit lanes (each already < 65536) into eight u16 in order.
TARGET static inline __m128i pack_u32_to_u16(__m256i v) {
    __m256i p = _mm256_packus_epi32(v, v); // per 128-bit lane: [a0..a3 a0..a3 | b0..b3 b0..b3]
    p = _mm256_permute4x64_epi64(p, 0x08);  // [a0..a3 b0..b3 …]
    return _mm256_castsi256_si128(p);
}

TARGET void graft__f32_to_f16_avx2(const float *src, void *dst, size_t n) {
    uint8_t *d = dst;
    size_t i = 0;
    const __m256i sign_mask = _mm256_set1_epi32(0x8000), qnan = _mm256_set1_epi32(0x7E00);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        __m256i h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        // F16C keeps NaN payload bits; the reference writes the canonical 0x7E00 | sign.
        __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        __m256i canon = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 16), sign_mask), qnan);
        h = _mm256_blendv_epi8(h, canon, nan);
        _mm_storeu_si128((__m128i *)(d + 2 * i), pack_u32_to_u16(h));
    }
    for (; i < n; i++) {
        uint16_t h = graft_f32_to_f16_ref(src[i]);
        memcpy(d + 2 * i, &h, 2);
    }
}

TARGET void graft__f32_to_bf16_avx2(const float *src, void *dst, size_t n) {
    uint8_t *d = dst;
    size_t i = 0;
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF), qnan = _mm256_set1_epi32(0x7FC0);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        __m256i u = _mm256_castps_si256(x);
        __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, bias), odd), 16);
        __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        r = _mm256_blendv_epi8(r, qnan, nan);
        _mm_storeu_si128((__m128i *)(d + 2 * i), pack_u32_to_u16(r));
    }
    for (; i < n; i++) {
        uint16_t h = graft_f32_to_bf16_ref(src[i]);
        memcpy(d + 2 * i, &h, 2);
    }
}
#endif
