// Hand-vectorized x86 kernel bodies (kern-x86.c); see there.
#ifndef GRAFT_MERGE_KERN_X86_H
#define GRAFT_MERGE_KERN_X86_H
#include <stdbool.h>
#include <stdint.h>
#include "../core/impl.h" // graft__cpu_avx512

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GRAFT_HAVE_KERN_X86 1
uint64_t graft__l1_bf16_avx512(const uint16_t *x, const uint16_t *b, const uint8_t *bits, uint64_t n, double *lanes0, double *lanes1);
uint64_t graft__bracket_bf16_avx512(const uint16_t *x, const uint16_t *b, uint64_t n, uint32_t lo, uint32_t hi, uint32_t *out, uint64_t *m,
                                    uint64_t *above);
uint64_t graft__bucket_entries_avx512(const uint32_t *val, const uint32_t *chunk, uint64_t m, uint32_t hb, uint64_t cnt, uint32_t *sv,
                                      uint32_t *sc, uint64_t *at);
uint64_t graft__dare_l1_bf16_avx512(const uint16_t *x, const uint16_t *b, uint32_t k0, uint32_t k1, uint32_t lo, uint32_t t, uint64_t n,
                                    uint8_t *bits, double *lanes0, double *lanes1);
uint64_t graft__unpack_bits_avx512(const uint8_t *bits, uint64_t n, float *keep);
#else
#define GRAFT_HAVE_KERN_X86 0
#endif
#endif
