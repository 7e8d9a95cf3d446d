// Counter-based random numbers: value = mix(key, counter), no state, so any element can be drawn by
// any thread and results never depend on scheduling or thread count.
#include "graft/util.h"
#include "impl.h"

// SplitMix64's finaliser: a bijection on 64 bits with full avalanche.
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t graft_rng_key(uint64_t seed, uint64_t model, const char *name, size_t name_len) {
    uint64_t h = graft__name_hash(name, name_len); // then mixed with seed and model
    return mix64(mix64(seed ^ 0x6A09E667F3BCC909ull) ^ mix64(model + 0x9E3779B97F4A7C15ull) ^ h);
}

uint64_t graft_rng_u64(uint64_t key, uint64_t counter) {
    return mix64(key ^ mix64(counter * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull));
}

float graft_rng_uniform(uint64_t key, uint64_t counter) {
    return (float)(graft_rng_u64(key, counter) >> 40) * 0x1.0p-24f;
}

float graft_rng_normalish(uint64_t key, uint64_t counter) {
    uint64_t x = graft_rng_u64(key, counter);
    float s = 0.0f;
    for (int k = 0; k < 4; k++) s += ((float)((x >> (16 * k)) & 0xFFFF) + 0.5f) * 0x1.0p-16f;
    return (s - 2.0f) * 1.7320508f; // Irwin–Hall(4): variance 1/3 → rescale to 1
}
