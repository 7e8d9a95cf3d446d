// Counter-based random numbers: value = mix(key, counter), no state, so any element can be drawn by
// any thread and results never depend on scheduling or thread count.
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "graft/util.h"
#include "impl.h"

// SplitMix64's finaliser (graft__mix64): a bijection on 64 bits with full avalanche. A 64-bit stream
// is SplitMix64 started at its key; keys are themselves mixed, so streams do not overlap in practice.
// Uniform floats use two rounds of the 32-bit lowbias32 hash instead (see impl.h): one draw per
// weight for DARE/DELLA must cost about a nanosecond, and 32-bit multiplies vectorize.
#define mix64 graft__mix64

uint64_t graft_rng_key(uint64_t seed, uint64_t model, const char *name, size_t name_len) {
    uint64_t h = graft__fnv64(GRAFT_FNV64_INIT, name, name_len); // FNV-1a, then mixed with seed and model
    return mix64(mix64(seed ^ 0x6A09E667F3BCC909ull) ^ mix64(model + 0x9E3779B97F4A7C15ull) ^ h);
}

uint64_t graft_rng_u64(uint64_t key, uint64_t counter) { return graft__rng_u64(key, counter); }

float graft_rng_uniform(uint64_t key, uint64_t counter) { return graft__rng_uniform(key, counter); }

float graft_rng_normalish(uint64_t key, uint64_t counter) {
    uint64_t x = graft_rng_u64(key, counter);
    float s = 0.0f;
    for (int k = 0; k < 4; k++) s += ((float)((x >> (16 * k)) & 0xFFFF) + 0.5f) * 0x1.0p-16f;
    return (s - 2.0f) * 1.7320508f; // Irwin–Hall(4): variance 1/3 → rescale to 1
}

// scale · N(0, 1) by Box–Muller on the two counter-based 64-bit draws 2i and 2i + 1 of key (in double;
// the scale applied before the cosine, so that callers' bytes do not depend on where they scale).
double graft__rng_normal(uint64_t key, uint64_t i, double scale) {
    double u1 = ((double)(graft__rng_u64(key, 2 * i) >> 11) + 0.5) * 0x1.0p-53, u2 = (double)(graft__rng_u64(key, 2 * i + 1) >> 11) * 0x1.0p-53;
    return scale * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// The integer form of `uniform < p`: u = k·2⁻²⁴ < p ⇔ k < ⌈p·2²⁴⌉ (p·2²⁴ is exact in double).
uint32_t graft__rng_keep_threshold(float p) {
    double s = (double)p * 16777216.0;
    if (!(s > 0)) return 0;
    return s >= 16777216.0 ? 16777216u : (uint32_t)ceil(s);
}

GRAFT_KERNEL
void graft__rng_keep_block(uint64_t key, uint64_t c0, size_t n, float p, float *keep) {
    const uint32_t k0 = (uint32_t)key, t = graft__rng_keep_threshold(p);
    for (size_t j = 0; j < n;) {
        uint64_t c = c0 + j, hi = c >> 32;
        size_t run = (size_t)((((hi + 1) << 32) - c) < n - j ? (((hi + 1) << 32) - c) : n - j); // same high word
        const uint32_t k1 = graft__rng_k1(key, hi), lo = (uint32_t)c;
        float *o = keep + j;
        for (size_t e = 0; e < run; e++) o[e] = (graft__hash32(graft__hash32((lo + (uint32_t)e) ^ k0) ^ k1) >> 8) < t ? 1.0f : 0.0f;
        j += run;
    }
}

// The same test as graft__rng_keep_block, one bit per element: element j → bits[j / 8], bit j % 8
// (c0 need not be a multiple of 8; bits[0] bit 0 is element c0). A last partial byte is written whole.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include "rng-x86.h"
// Groups of 16 counters lo, lo + 1, … (no carry into the high word within run): returns how many done.
GRAFT_T512 static size_t keep_bits_avx512(uint32_t k0, uint32_t k1, uint32_t lo, size_t run, uint32_t t, uint8_t *bits) {
    __m512i c = graft__counters16(lo);
    size_t e = 0;
    for (; e + 16 <= run; e += 16) {
        __mmask16 k = graft__keep16(c, k0, k1, t);
        memcpy(bits + e / 8, &k, 2); // little-endian: element e → bit 0 of the first byte
        c = _mm512_add_epi32(c, _mm512_set1_epi32(16));
    }
    return e;
}
#endif

void graft__rng_keep_bits(uint64_t key, uint64_t c0, size_t n, float p, uint8_t *bits) {
    const uint32_t k0 = (uint32_t)key, t = graft__rng_keep_threshold(p);
    memset(bits, 0, (n + 7) / 8);
    for (size_t j = 0; j < n;) {
        uint64_t c = c0 + j, hi = c >> 32;
        size_t run = (size_t)((((hi + 1) << 32) - c) < n - j ? (((hi + 1) << 32) - c) : n - j); // same high word
        const uint32_t k1 = graft__rng_k1(key, hi), lo = (uint32_t)c;
        size_t e = 0;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
        if (j % 8 == 0 && graft__cpu_avx512()) e = keep_bits_avx512(k0, k1, lo, run, t, bits + j / 8);
#endif
        for (; e < run; e++)
            if ((graft__hash32(graft__hash32((lo + (uint32_t)e) ^ k0) ^ k1) >> 8) < t) bits[(j + e) / 8] |= (uint8_t)(1u << ((j + e) % 8));
        j += run;
    }
}

// A name table's hash key: unpredictable to whoever wrote the file (graft__name_hash). getrandom
// without GRND_RANDOM does not block once the kernel's pool is ready; if it fails, the clock and an
// address (ASLR) still keep the key from being known in advance.
uint64_t graft__hash_key(void) {
    uint64_t k = 0;
    if (getrandom(&k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        k = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&k;
    }
    return k;
}
