// Vectorised conversion kernels (x86 F16C + AVX2), chosen at run time by dtype.c. Each equals the
// scalar reference in dtype.c bit for bit; tests/test-dtype.c checks that exhaustively.
#ifndef GRAFT_DTYPE_IMPL_H
#define GRAFT_DTYPE_IMPL_H
#include <stddef.h>
#include <stdint.h>
#if defined(__x86_64__)
void graft__f16_to_f32_avx2(const void *src, float *dst, size_t n);
void graft__bf16_to_f32_avx2(const void *src, float *dst, size_t n);
void graft__f32_to_f16_avx2(const float *src, void *dst, size_t n);
void graft__f32_to_bf16_avx2(const float *src, void *dst, size_t n);
#endif
#endif
