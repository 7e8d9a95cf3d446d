// Counter-based random numbers: value = mix(key, counter), no state, so any element can be drawn by
// any thread and results never depend on scheduling or thread count.
#include "graft/util.h"
#include "impl.h"

// SplitMix64's finaliser (graft__mix64): a bijection on 64 bits with full avalanche. A 64-bit stream
// is SplitMix64 started at its key; keys are themselves mixed, so streams do not overlap in practice.
// Uniform floats use two rounds of the 32-bit lowbias32 hash instead (see impl.h): one draw per
// weight for DARE/DELLA must cost about a nanosecond, and 32-bit multiplies vectorize.
#define mix64 graft__mix64

uint64_t graft_rng_key(uint64_t seed, uint64_t model, const char *name, size_t name_len) {
    uint64_t h = graft__name_hash(name, name_len); // then mixed with seed and model
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

GRAFT_KERNEL
void graft__rng_uniform_block(uint64_t key, uint64_t c0, size_t n, float *out) {
    const uint32_t k0 = (uint32_t)key;
    for (size_t j = 0; j < n;) {
        uint64_t c = c0 + j, hi = c >> 32;
        size_t run = (size_t)((((hi + 1) << 32) - c) < n - j ? (((hi + 1) << 32) - c) : n - j); // same high word
        const uint32_t k1 = graft__rng_k1(key, hi), lo = (uint32_t)c;
        float *o = out + j;
        for (size_t e = 0; e < run; e++) o[e] = (float)(graft__hash32(graft__hash32((lo + (uint32_t)e) ^ k0) ^ k1) >> 8) * 0x1.0p-24f;
        j += run;
    }
}
