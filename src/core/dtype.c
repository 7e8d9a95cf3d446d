// Element types: the traits table, PyTorch-exact scalar conversions (the `_ref` definitions of
// correctness) and row conversions that dispatch to the vectorised x86 path when available.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include "graft/dtype.h"
#include "dtype-impl.h"
#include "impl.h"

static const struct graft_dtype_traits traits[GRAFT_DTYPE_COUNT] = {
    [GRAFT_DTYPE_BOOL]        = {"BOOL", "bool", 8, false, true},
    [GRAFT_DTYPE_F4]          = {"F4", "f4", 4, false, true},
    [GRAFT_DTYPE_F6_E2M3]     = {"F6_E2M3", "f6_e2m3", 6, false, false},
    [GRAFT_DTYPE_F6_E3M2]     = {"F6_E3M2", "f6_e3m2", 6, false, false},
    [GRAFT_DTYPE_U8]          = {"U8", "u8", 8, false, true},
    [GRAFT_DTYPE_I8]          = {"I8", "i8", 8, false, true},
    [GRAFT_DTYPE_F8_E5M2]     = {"F8_E5M2", "f8_e5m2", 8, true, true},
    [GRAFT_DTYPE_F8_E4M3]     = {"F8_E4M3", "f8_e4m3", 8, true, true},
    [GRAFT_DTYPE_F8_E8M0]     = {"F8_E8M0", "f8_e8m0", 8, false, true},
    [GRAFT_DTYPE_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", "f8_e4m3fnuz", 8, true, true},
    [GRAFT_DTYPE_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", "f8_e5m2fnuz", 8, true, true},
    [GRAFT_DTYPE_I16]         = {"I16", "i16", 16, false, true},
    [GRAFT_DTYPE_U16]         = {"U16", "u16", 16, false, true},
    [GRAFT_DTYPE_F16]         = {"F16", "f16", 16, true, true},
    [GRAFT_DTYPE_BF16]        = {"BF16", "bf16", 16, true, true},
    [GRAFT_DTYPE_I32]         = {"I32", "i32", 32, false, true},
    [GRAFT_DTYPE_U32]         = {"U32", "u32", 32, false, true},
    [GRAFT_DTYPE_F32]         = {"F32", "f32", 32, true, true},
    [GRAFT_DTYPE_C64]         = {"C64", "c64", 64, false, false},
    [GRAFT_DTYPE_F64]         = {"F64", "f64", 64, true, true},
    [GRAFT_DTYPE_I64]         = {"I64", "i64", 64, false, true},
    [GRAFT_DTYPE_U64]         = {"U64", "u64", 64, false, true},
};
_Static_assert(GRAFT_DTYPE_COUNT == 22, "safetensors declares 22 dtypes; append new ones at the end");

const struct graft_dtype_traits *graft_dtype_traits(enum graft_dtype t) {
    return (unsigned)t < GRAFT_DTYPE_COUNT ? &traits[t] : NULL;
}

int graft_dtype_from_name(const char *name, size_t len) {
    for (int i = 0; i < GRAFT_DTYPE_COUNT; i++)
        if (strlen(traits[i].name) == len && !memcmp(traits[i].name, name, len)) return i;
    return -1;
}

int graft_dtype_from_cli_name(const char *name) {
    static const struct { const char *alias; int t; } aliases[] = {
        {"float32", GRAFT_DTYPE_F32}, {"float16", GRAFT_DTYPE_F16}, {"bfloat16", GRAFT_DTYPE_BF16},
        {"float64", GRAFT_DTYPE_F64}, {"half", GRAFT_DTYPE_F16}, {"float", GRAFT_DTYPE_F32},
        {"fp32", GRAFT_DTYPE_F32}, {"fp16", GRAFT_DTYPE_F16}, {"float8_e4m3fn", GRAFT_DTYPE_F8_E4M3},
        {"f8_e4m3fn", GRAFT_DTYPE_F8_E4M3}, {"float8_e5m2", GRAFT_DTYPE_F8_E5M2},
    };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcasecmp(name, aliases[i].alias)) return aliases[i].t;
    for (int i = 0; i < GRAFT_DTYPE_COUNT; i++)
        if (!strcasecmp(name, traits[i].cli_name)) return i;
    return -1;
}

bool graft_dtype_nbytes(enum graft_dtype t, uint64_t n, uint64_t *out) {
    const struct graft_dtype_traits *tr = graft_dtype_traits(t);
    uint64_t bits;
    if (!tr || __builtin_mul_overflow(n, (uint64_t)tr->bits, &bits) || bits % 8) return false;
    *out = bits / 8;
    return true;
}

bool graft_dtype_is_float_target(enum graft_dtype t) {
    return t == GRAFT_DTYPE_F64 || t == GRAFT_DTYPE_F32 || t == GRAFT_DTYPE_F16 ||
           t == GRAFT_DTYPE_BF16 || t == GRAFT_DTYPE_F8_E4M3 || t == GRAFT_DTYPE_F8_E5M2;
}

// ---- scalar references ---------------------------------------------------------------------------

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// Integer round-to-nearest-even; equals PyTorch's fp16_ieee_from_fp32_value on every non-NaN input.
uint16_t graft_f32_to_f16_ref(float f) {
    uint32_t x = f2u(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7FFFFFFF;
    if (x > 0x7F800000) return sign | 0x7E00;  // NaN: canonical quiet NaN, sign kept
    if (x >= 0x477FF000) return sign | 0x7C00; // ≥ 65520 (the tie above 65504) → inf
    if (x < 0x38800000) {                      // below 2^-14: f16 subnormal or zero
        if (x < 0x33000000) return sign;       // below 2^-25: rounds to zero
        uint32_t e = x >> 23, m = (x & 0x7FFFFF) | 0x800000; // value = m·2^(e-150)
        uint32_t shift = 126 - e;                            // in units of 2^-24: m >> shift
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r); // r == 0x400 is the smallest normal: still the right encoding
    }
    uint32_t r = (x - 0x38000000) >> 13; // rebias 127 → 15 and drop 13 mantissa bits
    uint32_t rem = x & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

// Exact. NaNs keep their payload and become quiet, as the FPU path of PyTorch and F16C do.
float graft_f16_to_f32_ref(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF;
    if (e == 0x1F) return u2f(sign | 0x7F800000 | (m << 13) | (m ? 0x400000 : 0));
    if (e == 0) {
        if (m == 0) return u2f(sign);
        int s = __builtin_clz(m) - 21; // normalise: shift the leading 1 up to bit 10
        m = (m << s) & 0x3FF;
        e = 1 - (uint32_t)s;
        return u2f(sign | ((e + 112) << 23) | (m << 13));
    }
    return u2f(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t graft_f32_to_bf16_ref(float f) {
    if (isnan(f)) return 0x7FC0;
    uint32_t u = f2u(f);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

float graft_bf16_to_f32_ref(uint16_t h) { return graft__bf16_to_f32(h); }

// PyTorch c10 fp8e4m3fn_from_fp32_value: no inf, |x| ≥ 480 (and inf, NaN) → NaN 0x7F.
uint8_t graft_f32_to_f8e4m3_ref(float f) {
    uint32_t x = f2u(f), sign = x & 0x80000000u, r;
    x ^= sign;
    if (x >= 0x43F00000u) {
        r = 0x7F;
    } else if (x < (121u << 23)) { // below 2^-6: subnormal; the FPU add rounds to a multiple of 2^-9
        r = f2u(u2f(x) + u2f(141u << 23)) - (141u << 23);
    } else {
        uint32_t odd = (x >> 20) & 1;
        x += ((uint32_t)(7 - 127) << 23) + 0x7FFFF;
        x += odd;
        r = x >> 20;
    }
    return (uint8_t)(r | (sign >> 24));
}

float graft_f8e4m3_to_f32_ref(uint8_t v) {
    uint32_t sign = (uint32_t)(v & 0x80) << 24, e = (v >> 3) & 0xF, m = v & 7;
    if ((v & 0x7F) == 0x7F) return u2f(sign | 0x7FF00000u); // the one NaN (PyTorch's decode bits)
    if (e == 0) return u2f(sign | f2u(ldexpf((float)m, -9)));
    return u2f(sign | ((e + 120) << 23) | (m << 20));
}

// PyTorch c10 fp8e5m2_from_fp32_value: IEEE-like with inf.
uint8_t graft_f32_to_f8e5m2_ref(float f) {
    uint32_t x = f2u(f), sign = x & 0x80000000u, r;
    x ^= sign;
    if (x >= (143u << 23)) {
        r = x > 0x7F800000u ? 0x7F : 0x7C;
    } else if (x < (113u << 23)) { // below 2^-14: subnormal, multiples of 2^-16
        r = f2u(u2f(x) + u2f(134u << 23)) - (134u << 23);
    } else {
        uint32_t odd = (x >> 21) & 1;
        x += ((uint32_t)(15 - 127) << 23) + 0xFFFFF;
        x += odd;
        r = x >> 21;
    }
    return (uint8_t)(r | (sign >> 24));
}

// E5M2 is the top byte of an f16.
float graft_f8e5m2_to_f32_ref(uint8_t v) { return graft_f16_to_f32_ref((uint16_t)(v << 8)); }

static float fnuz_to_f32(uint8_t v, int mbits, int bias) {
    if (v == 0x80) return NAN;
    int e = (v & 0x7F) >> mbits, m = v & ((1 << mbits) - 1);
    float mag = e ? ldexpf(1.0f + (float)m / (float)(1 << mbits), e - bias)
                  : ldexpf((float)m / (float)(1 << mbits), 1 - bias);
    return (v & 0x80) ? -mag : mag;
}

static float e2m1_to_f32(unsigned nib) {
    static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    return (nib & 8) ? -mag[nib & 7] : mag[nib & 7];
}

// ---- rows ------------------------------------------------------------------------------------------

#define LOAD(T, p, i) ({ T v_; memcpy(&v_, (const char *)(p) + (size_t)(i) * sizeof(T), sizeof(T)); v_; })
#define STORE(T, p, i, v) do { T v_ = (v); memcpy((char *)(p) + (size_t)(i) * sizeof(T), &v_, sizeof(T)); } while (0)

bool graft_row_to_f32_ref(enum graft_dtype t, const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    switch (t) {
    case GRAFT_DTYPE_F32: memcpy(dst, src, n * 4); return true;
    case GRAFT_DTYPE_F64: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(double, src, i); return true;
    case GRAFT_DTYPE_F16: for (size_t i = 0; i < n; i++) dst[i] = graft_f16_to_f32_ref(LOAD(uint16_t, src, i)); return true;
    case GRAFT_DTYPE_BF16: for (size_t i = 0; i < n; i++) dst[i] = graft_bf16_to_f32_ref(LOAD(uint16_t, src, i)); return true;
    case GRAFT_DTYPE_F8_E4M3: for (size_t i = 0; i < n; i++) dst[i] = graft_f8e4m3_to_f32_ref(b[i]); return true;
    case GRAFT_DTYPE_F8_E5M2: for (size_t i = 0; i < n; i++) dst[i] = graft_f8e5m2_to_f32_ref(b[i]); return true;
    case GRAFT_DTYPE_F8_E4M3FNUZ: for (size_t i = 0; i < n; i++) dst[i] = fnuz_to_f32(b[i], 3, 8); return true;
    case GRAFT_DTYPE_F8_E5M2FNUZ: for (size_t i = 0; i < n; i++) dst[i] = fnuz_to_f32(b[i], 2, 16); return true;
    case GRAFT_DTYPE_F8_E8M0: for (size_t i = 0; i < n; i++) dst[i] = b[i] == 0xFF ? NAN : ldexpf(1.0f, (int)b[i] - 127); return true;
    case GRAFT_DTYPE_F4: for (size_t i = 0; i < n; i++) dst[i] = e2m1_to_f32((b[i / 2] >> (4 * (i & 1))) & 15); return true;
    case GRAFT_DTYPE_BOOL: for (size_t i = 0; i < n; i++) dst[i] = b[i] ? 1.0f : 0.0f; return true;
    case GRAFT_DTYPE_U8: for (size_t i = 0; i < n; i++) dst[i] = (float)b[i]; return true;
    case GRAFT_DTYPE_I8: for (size_t i = 0; i < n; i++) dst[i] = (float)(int8_t)b[i]; return true;
    case GRAFT_DTYPE_I16: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(int16_t, src, i); return true;
    case GRAFT_DTYPE_U16: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(uint16_t, src, i); return true;
    case GRAFT_DTYPE_I32: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(int32_t, src, i); return true;
    case GRAFT_DTYPE_U32: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(uint32_t, src, i); return true;
    case GRAFT_DTYPE_I64: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(int64_t, src, i); return true;
    case GRAFT_DTYPE_U64: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(uint64_t, src, i); return true;
    default: return false;
    }
}

bool graft_row_from_f32_ref(enum graft_dtype t, const float *src, void *dst, size_t n) {
    uint8_t *b = dst;
    switch (t) {
    case GRAFT_DTYPE_F32: memcpy(dst, src, n * 4); return true;
    case GRAFT_DTYPE_F64: for (size_t i = 0; i < n; i++) STORE(double, dst, i, (double)src[i]); return true;
    case GRAFT_DTYPE_F16: for (size_t i = 0; i < n; i++) STORE(uint16_t, dst, i, graft_f32_to_f16_ref(src[i])); return true;
    case GRAFT_DTYPE_BF16: for (size_t i = 0; i < n; i++) STORE(uint16_t, dst, i, graft_f32_to_bf16_ref(src[i])); return true;
    case GRAFT_DTYPE_F8_E4M3: for (size_t i = 0; i < n; i++) b[i] = graft_f32_to_f8e4m3_ref(src[i]); return true;
    case GRAFT_DTYPE_F8_E5M2: for (size_t i = 0; i < n; i++) b[i] = graft_f32_to_f8e5m2_ref(src[i]); return true;
    default: return false;
    }
}

bool graft__cpu_generic(void) {
    // GRAFT_CPU=generic turns every hand-written vector path off (F16C/AVX2 conversions, AVX2 and
    // AVX-512 kernels), so that tests can compare them with the portable code on the same machine.
    static _Atomic int cached = -1;
    int v = cached;
    if (v < 0) {
        const char *env = getenv("GRAFT_CPU");
        v = env && !strcmp(env, "generic");
        cached = v;
    }
    return v;
}

bool graft_cpu_has_f16c(void) {
#if defined(__x86_64__) || defined(__i386__)
    // CPUID is slow (it traps in virtual machines), so the answer — a fact of the machine, the same for
    // every thread — is computed once and cached. F16C is CPUID.1:ECX bit 29.
    static _Atomic int cached = -1;
    int v = cached;
    if (v < 0) {
        unsigned a, b, c, d;
        v = !graft__cpu_generic() && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) && __builtin_cpu_supports("avx2");
        cached = v;
    }
    return v;
#else
    return false;
#endif
}

bool graft__cpu_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    // The hand-written AVX-512 kernels (F, BW, DQ, VL), unless GRAFT_CPU=generic. Cached like
    // graft_cpu_has_f16c.
    static _Atomic int cached = -1;
    int v = cached;
    if (v < 0) {
        v = !graft__cpu_generic() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
        cached = v;
    }
    return v;
#else
    return false;
#endif
}

bool graft_row_to_f32(enum graft_dtype t, const void *src, float *dst, size_t n) {
#if defined(__x86_64__)
    if ((t == GRAFT_DTYPE_F16 || t == GRAFT_DTYPE_BF16) && graft_cpu_has_f16c()) {
        if (t == GRAFT_DTYPE_F16) graft__f16_to_f32_avx2(src, dst, n);
        else graft__bf16_to_f32_avx2(src, dst, n);
        return true;
    }
#endif
    return graft_row_to_f32_ref(t, src, dst, n);
}

bool graft_row_from_f32(enum graft_dtype t, const float *src, void *dst, size_t n) {
#if defined(__x86_64__)
    if ((t == GRAFT_DTYPE_F16 || t == GRAFT_DTYPE_BF16) && graft_cpu_has_f16c()) {
        if (t == GRAFT_DTYPE_F16) graft__f32_to_f16_avx2(src, dst, n);
        else graft__f32_to_bf16_avx2(src, dst, n);
        return true;
    }
#endif
    return graft_row_from_f32_ref(t, src, dst, n);
}

bool graft_row_convert(enum graft_dtype from, const void *src, enum graft_dtype to, void *dst, size_t n) {
    if (from == to) {
        uint64_t nb;
        if (!graft_dtype_nbytes(from, n, &nb)) return false;
        memcpy(dst, src, nb);
        return true;
    }
    const struct graft_dtype_traits *tf = graft_dtype_traits(from);
    if (!tf || !tf->to_f32 || !graft_dtype_is_float_target(to)) return false;
    if (from == GRAFT_DTYPE_F4 && n % 2) return false;
    enum { BLOCK = 1024 }; // f32 staging block: 4 KiB on the stack, stays in L1
    float tmp[BLOCK];
    size_t in_bits = (size_t)tf->bits, out_bytes = (size_t)graft_dtype_traits(to)->bits / 8;
    for (size_t i = 0; i < n; i += BLOCK) {
        size_t k = n - i < BLOCK ? n - i : BLOCK;
        graft_row_to_f32(from, (const uint8_t *)src + i * in_bits / 8, tmp, k);
        graft_row_from_f32(to, tmp, (uint8_t *)dst + i * out_bytes, k);
    }
    return true;
}

// Counting kernels of graft_count_nonfinite (the merge engine runs it on every chunk it reads and writes;
// loads through memcpy: stored tensors need not be aligned, compilers still vectorize).
// NaN / ±Inf have every exponent bit set: |bits| ≥ the exponent mask. Each block of 4096 values is
// first reduced to its largest |bits| (one max per value, in lanes as wide as the values: cheaper than
// counting in 64-bit lanes); only a block that reaches the mask is counted.
GRAFT_KERNEL static uint64_t nonfinite16(const uint8_t *restrict p, size_t n, uint16_t mask) {
    uint64_t c = 0;
    for (size_t b0 = 0; b0 < n; b0 += 4096) {
        size_t b1 = n - b0 < 4096 ? n : b0 + 4096;
        uint16_t m = 0;
        for (size_t i = b0; i < b1; i++) {
            uint16_t u;
            memcpy(&u, p + 2 * i, 2);
            u &= 0x7FFFu;
            m = u > m ? u : m;
        }
        if (m < mask) continue;
        for (size_t i = b0; i < b1; i++) {
            uint16_t u;
            memcpy(&u, p + 2 * i, 2);
            c += (u & mask) == mask;
        }
    }
    return c;
}

GRAFT_KERNEL static uint64_t nonfinite32(const uint8_t *restrict p, size_t n) {
    uint64_t c = 0;
    for (size_t b0 = 0; b0 < n; b0 += 4096) {
        size_t b1 = n - b0 < 4096 ? n : b0 + 4096;
        uint32_t m = 0;
        for (size_t i = b0; i < b1; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            u &= 0x7FFFFFFFu;
            m = u > m ? u : m;
        }
        if (m < 0x7F800000u) continue;
        for (size_t i = b0; i < b1; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            c += (u & 0x7F800000u) == 0x7F800000u;
        }
    }
    return c;
}

GRAFT_KERNEL static uint64_t nonfinite8(const uint8_t *restrict p, size_t n, uint8_t mask) {
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++) c += (p[i] & mask) == mask;
    return c;
}

static bool is_nonfinite_at(enum graft_dtype t, const void *p, size_t i) {
    switch (t) {
    case GRAFT_DTYPE_F32: { uint32_t u; memcpy(&u, (const uint8_t *)p + 4 * i, 4); return (u & 0x7F800000u) == 0x7F800000u; }
    case GRAFT_DTYPE_F16: { uint16_t u; memcpy(&u, (const uint8_t *)p + 2 * i, 2); return (u & 0x7C00u) == 0x7C00u; }
    case GRAFT_DTYPE_BF16: { uint16_t u; memcpy(&u, (const uint8_t *)p + 2 * i, 2); return (u & 0x7F80u) == 0x7F80u; }
    case GRAFT_DTYPE_F8_E5M2: return (((const uint8_t *)p)[i] & 0x7C) == 0x7C;
    case GRAFT_DTYPE_F8_E4M3: return (((const uint8_t *)p)[i] & 0x7F) == 0x7F;
    case GRAFT_DTYPE_F8_E4M3FNUZ:
    case GRAFT_DTYPE_F8_E5M2FNUZ: return ((const uint8_t *)p)[i] == 0x80; // the one NaN; no infinities
    case GRAFT_DTYPE_F64: { uint64_t u; memcpy(&u, (const uint8_t *)p + 8 * i, 8); return (u & 0x7FF0000000000000ull) == 0x7FF0000000000000ull; }
    default: return false;
    }
}

uint64_t graft_count_nonfinite(enum graft_dtype t, const void *p, size_t n, size_t *first) {
    uint64_t c;
    switch (t) {
    case GRAFT_DTYPE_F32: c = nonfinite32(p, n); break;
    case GRAFT_DTYPE_F16: c = nonfinite16(p, n, 0x7C00u); break;
    case GRAFT_DTYPE_BF16: c = nonfinite16(p, n, 0x7F80u); break;
    case GRAFT_DTYPE_F8_E5M2: c = nonfinite8(p, n, 0x7C); break;
    case GRAFT_DTYPE_F8_E4M3: c = nonfinite8(p, n, 0x7F); break;
    case GRAFT_DTYPE_F8_E4M3FNUZ:
    case GRAFT_DTYPE_F8_E5M2FNUZ:
    case GRAFT_DTYPE_F64: c = 0; for (size_t i = 0; i < n; i++) c += is_nonfinite_at(t, p, i); break;
    default: c = 0;
    }
    if (first) {
        size_t i = 0;
        while (c && i < n && !is_nonfinite_at(t, p, i)) i++;
        *first = c ? i : n;
    }
    return c;
}

// Stored subnormals (by bit pattern: a float16 subnormal is a normal float32).
static bool is_subnormal_at(enum graft_dtype t, const void *p, size_t i) {
    switch (t) {
    case GRAFT_DTYPE_F32: { uint32_t u; memcpy(&u, (const uint8_t *)p + 4 * i, 4); return !(u & 0x7F800000u) && (u & 0x7FFFFFu); }
    case GRAFT_DTYPE_F16: { uint16_t u; memcpy(&u, (const uint8_t *)p + 2 * i, 2); return !(u & 0x7C00u) && (u & 0x3FFu); }
    case GRAFT_DTYPE_BF16: { uint16_t u; memcpy(&u, (const uint8_t *)p + 2 * i, 2); return !(u & 0x7F80u) && (u & 0x7Fu); }
    case GRAFT_DTYPE_F8_E5M2: { uint8_t b = ((const uint8_t *)p)[i]; return !(b & 0x7C) && (b & 0x3); }
    case GRAFT_DTYPE_F8_E4M3:
    case GRAFT_DTYPE_F8_E4M3FNUZ: { uint8_t b = ((const uint8_t *)p)[i]; return !(b & 0x78) && (b & 0x7); }
    case GRAFT_DTYPE_F8_E5M2FNUZ: { uint8_t b = ((const uint8_t *)p)[i]; return !(b & 0x7C) && (b & 0x3); }
    case GRAFT_DTYPE_F64: { uint64_t u; memcpy(&u, (const uint8_t *)p + 8 * i, 8); return !(u & 0x7FF0000000000000ull) && (u & 0xFFFFFFFFFFFFFull); }
    default: return false;
    }
}

bool graft_value_stats_add(struct graft_value_stats *s, enum graft_dtype t, const void *p, size_t n) {
    if (t != GRAFT_DTYPE_F32 && t != GRAFT_DTYPE_F16 && t != GRAFT_DTYPE_BF16 && t != GRAFT_DTYPE_F8_E5M2 && t != GRAFT_DTYPE_F8_E4M3 &&
        t != GRAFT_DTYPE_F8_E4M3FNUZ && t != GRAFT_DTYPE_F8_E5M2FNUZ && t != GRAFT_DTYPE_F64)
        return false;
    float buf[4096];
    size_t es = t == GRAFT_DTYPE_F64 ? 8 : t == GRAFT_DTYPE_F32 ? 4 : t == GRAFT_DTYPE_F16 || t == GRAFT_DTYPE_BF16 ? 2 : 1;
    for (size_t i0 = 0; i0 < n; i0 += 4096) {
        size_t m = n - i0 < 4096 ? n - i0 : 4096;
        const uint8_t *q = (const uint8_t *)p + i0 * es;
        if (t != GRAFT_DTYPE_F64) graft_row_to_f32(t, q, buf, m);
        for (size_t i = 0; i < m; i++) {
            double v;
            if (t == GRAFT_DTYPE_F64) memcpy(&v, q + 8 * i, 8);
            else v = buf[i];
            if (isnan(v)) s->nan++;
            else if (isinf(v)) s->inf++;
            else {
                if (!s->finite || v < s->min) s->min = v;
                if (!s->finite || v > s->max) s->max = v;
                s->finite++;
            }
            s->subnormal += is_subnormal_at(t, q, i);
        }
        s->n += m;
    }
    return true;
}

// The NaN / ±Inf rule of the operations that compute values (see impl.h).
int graft__nonfinite_rule(const char *op, const char *tensor, size_t tlen, int dt, uint64_t bad, uint64_t bad32, uint64_t first,
                         uint64_t held, bool allow, struct graft_err *err) {
    if (!bad) return GRAFT_OK;
    if (held && bad == bad32 && bad <= held) {
        fprintf(stderr, "graft: warning: tensor '%.*s': %llu NaN or infinite values in the output, from NaN / infinite values in its source\n",
                (int)tlen, tensor, (unsigned long long)bad);
        return GRAFT_OK;
    }
    const char *dn = graft_dtype_traits((enum graft_dtype)dt)->name;
    char cause[200] = "";
    if (bad > bad32)
        snprintf(cause, sizeof cause, "; %llu of them are %s overflow (finite float32 values beyond %s's range): write %s instead",
                 (unsigned long long)(bad - bad32), dn, dn, dt == GRAFT_DTYPE_BF16 ? "float32" : "bfloat16 or float32");
    if (allow) {
        fprintf(stderr, "graft: warning: tensor '%.*s': %llu NaN or infinite values written (first at element %llu)%s\n", (int)tlen, tensor,
                (unsigned long long)bad, (unsigned long long)first, cause);
        return GRAFT_OK;
    }
    char held_txt[64] = " where its source holds none";
    if (held) snprintf(held_txt, sizeof held_txt, " where its source holds %llu", (unsigned long long)held);
    return graft_err_set(err, GRAFT_E_NONFINITE, NULL, tensor, tlen,
                         "%s gives %llu NaN or infinite values (first at element %llu)%s%s; nothing was written (--allow-nonfinite writes them anyway)",
                         op, (unsigned long long)bad, (unsigned long long)first, held_txt, cause);
}
