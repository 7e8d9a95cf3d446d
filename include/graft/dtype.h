// graft — element types and numeric conversion.
//
// The enum follows the safetensors declared order (BOOL = 0 … U64 = 21). The safetensors writer sorts
// tensors by this order (descending), so the values are part of the on-disk layout: never renumber.
//
// Conversions follow PyTorch exactly: round to nearest even, subnormals kept, overflow to inf
// (F8_E4M3 has no inf: overflow and inf become NaN), NaN stays NaN. NaN encodings written:
//   f32→bf16: 0x7FC0 (c10 scalar), f32→f16: 0x7E00|sign, f32→f8_e4m3: 0x7F|sign, f32→f8_e5m2: 0x7F|sign.
// Each conversion has a scalar reference (`*_ref`) that defines correctness. The row functions choose
// a vectorised path (F16C/AVX2) at run time where the CPU has it; it equals the reference bit for bit.
#ifndef GRAFT_DTYPE_H
#define GRAFT_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

enum graft_dtype {
    GRAFT_DTYPE_BOOL        = 0,
    GRAFT_DTYPE_F4          = 1,  // OCP E2M1, two per byte, element 2i in the low nibble
    GRAFT_DTYPE_F6_E2M3     = 2,  // packing unspecified by safetensors: carried, never converted
    GRAFT_DTYPE_F6_E3M2     = 3,
    GRAFT_DTYPE_U8          = 4,
    GRAFT_DTYPE_I8          = 5,
    GRAFT_DTYPE_F8_E5M2     = 6,
    GRAFT_DTYPE_F8_E4M3     = 7,  // float8_e4m3fn: no inf, NaN = S.1111.111
    GRAFT_DTYPE_F8_E8M0     = 8,  // float8_e8m0fnu: 2^(e-127), 0xFF = NaN
    GRAFT_DTYPE_F8_E4M3FNUZ = 9,
    GRAFT_DTYPE_F8_E5M2FNUZ = 10,
    GRAFT_DTYPE_I16         = 11,
    GRAFT_DTYPE_U16         = 12,
    GRAFT_DTYPE_F16         = 13,
    GRAFT_DTYPE_BF16        = 14,
    GRAFT_DTYPE_I32         = 15,
    GRAFT_DTYPE_U32         = 16,
    GRAFT_DTYPE_F32         = 17,
    GRAFT_DTYPE_C64         = 18, // (f32 real, f32 imag): carried, never converted
    GRAFT_DTYPE_F64         = 19,
    GRAFT_DTYPE_I64         = 20,
    GRAFT_DTYPE_U64         = 21,
    GRAFT_DTYPE_COUNT
};

struct graft_dtype_traits {
    const char *name;     // safetensors string, e.g. "BF16"
    const char *cli_name; // lower-case name used by --dtype and config files, e.g. "bf16"
    int         bits;     // bits per element (4, 6, 8, 16, 32, 64)
    bool        is_float; // a real floating type that converts to and from f32
    bool        to_f32;   // has a decoder to f32 (floats, integers, bool)
};

// Traits of a dtype; NULL when `t` is out of range.
const struct graft_dtype_traits *graft_dtype_traits(enum graft_dtype t);
// Safetensors dtype string → dtype. Exact and case-sensitive ("F32", not "f32"). Returns -1 if unknown.
int graft_dtype_from_name(const char *name, size_t len);
// CLI/config name ("f16", "bf16", "float16", "bfloat16", "f8_e4m3", …) → dtype, or -1.
int graft_dtype_from_cli_name(const char *name);
// Bytes for `n` elements, false on overflow or when n*bits is not a whole number of bytes.
bool graft_dtype_nbytes(enum graft_dtype t, uint64_t n, uint64_t *out);
// True if the dtype can be an output of a float conversion (F64, F32, F16, BF16, F8_E4M3, F8_E5M2).
bool graft_dtype_is_float_target(enum graft_dtype t);

// Scalar references. Bit patterns in and out.
uint16_t graft_f32_to_f16_ref(float f);
float    graft_f16_to_f32_ref(uint16_t h);
uint16_t graft_f32_to_bf16_ref(float f);
float    graft_bf16_to_f32_ref(uint16_t h);
uint8_t  graft_f32_to_f8e4m3_ref(float f);
float    graft_f8e4m3_to_f32_ref(uint8_t v);
uint8_t  graft_f32_to_f8e5m2_ref(float f);
float    graft_f8e5m2_to_f32_ref(uint8_t v);

// Row conversions. `src`/`dst` need no alignment (they may point into a mapped file).
// graft_row_to_f32 works for every dtype with traits->to_f32; graft_row_from_f32 for float targets
// (F64, F32, F16, BF16, F8_E4M3, F8_E5M2). Returns false for an unsupported dtype.
bool graft_row_to_f32(enum graft_dtype t, const void *src, float *dst, size_t n);
bool graft_row_from_f32(enum graft_dtype t, const float *src, void *dst, size_t n);
// Same, forced onto the scalar reference path (for tests and benchmarks).
bool graft_row_to_f32_ref(enum graft_dtype t, const void *src, float *dst, size_t n);
bool graft_row_from_f32_ref(enum graft_dtype t, const float *src, void *dst, size_t n);
// Non-finite values (NaN, ±Inf) among n stored elements of type t (float types; others have none);
// *first, if not NULL, gets the index of the first one (n when there is none).
uint64_t graft_count_nonfinite(enum graft_dtype t, const void *p, size_t n, size_t *first);
// Value statistics of stored floats: counts of NaN, ±Inf and subnormal (as stored: a float16 subnormal
// counts though float32 holds it as a normal number) values, and the range of the finite ones.
struct graft_value_stats {
    uint64_t n, nan, inf, subnormal, finite;
    double   min, max; // of the finite values (0 when there is none)
};
// Adds n stored elements of type t to s (zero it first); false, adding nothing, for a non-float type.
bool graft_value_stats_add(struct graft_value_stats *s, enum graft_dtype t, const void *p, size_t n);
// Whether the running CPU gets the vectorised path (F16C + AVX2; not with GRAFT_CPU=generic).
bool graft_cpu_has_f16c(void);

// Convert `n` elements from one dtype to another through f32 (exact for the decode step, one rounding
// on the encode step, as PyTorch's `tensor.to()`). F64 → F64 and same-type pairs copy bytes.
bool graft_row_convert(enum graft_dtype from, const void *src, enum graft_dtype to, void *dst, size_t n);

#ifdef __cplusplus
}
#endif
#endif
