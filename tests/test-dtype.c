// Conversions: exhaustive over every f16 / bf16 / f8 bit pattern and a large set of f32 values,
// checked against an independent reference (nearest representable value by search, ties to even),
// and the vectorised rows checked bit for bit against the scalar references.
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include "harness.h"
#include "graft/graft.h"

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// Independent decoders: value from fields, by arithmetic.
static double dec_ieee(uint32_t bits, int ebits, int mbits, int bias) {
    uint32_t m = bits & ((1u << mbits) - 1), e = (bits >> mbits) & ((1u << ebits) - 1);
    double v = e ? ldexp(1.0 + ldexp(m, -mbits), (int)e - bias) : ldexp(m, 1 - bias - mbits);
    return (bits >> (ebits + mbits)) & 1 ? -v : v;
}

// Independent encoder: nearest of the codes 0..max_code (monotonic magnitudes), ties to the even code;
// `next` is the value the code after max_code would have (inf or NaN threshold). Returns the code,
// or max_code + 1 when rounding goes past the largest finite value.
static uint32_t enc_search(double x, uint32_t max_code, double next, double (*dec)(uint32_t)) {
    uint32_t lo = 0, hi = max_code;
    if (x >= dec(max_code)) {
        double mid = (dec(max_code) + next) / 2;
        if (x < mid || (x == mid && !(max_code & 1))) return max_code;
        return max_code + 1;
    }
    while (hi - lo > 1) { // largest code with value ≤ x
        uint32_t m = (lo + hi) / 2;
        if (dec(m) <= x) lo = m; else hi = m;
    }
    double a = dec(lo), b = dec(lo + 1), mid = (a + b) / 2;
    if (x < mid) return lo;
    if (x > mid) return lo + 1;
    return (lo & 1) ? lo + 1 : lo;
}

static double d_f16(uint32_t c) { return dec_ieee(c, 5, 10, 15); }
static double d_bf16(uint32_t c) { return dec_ieee(c, 8, 7, 127); }
static double d_e4m3(uint32_t c) { return dec_ieee(c, 4, 3, 7); }
static double d_e5m2(uint32_t c) { return dec_ieee(c, 5, 2, 15); }

// A large, structured set of f32 test values: every f16/bf16 value, their midpoints and ±1 ulp around
// them, powers of two, subnormals, limits, and pseudo-random bit patterns.
static float *test_values(size_t *n) {
    size_t cap = 3000000, k = 0;
    float *v = malloc(cap * sizeof *v);
    for (uint32_t h = 0; h < 0x7C00; h++) {
        float a = (float)d_f16(h), b = (float)d_f16(h + 1 < 0x7C00 ? h + 1 : h);
        float mid = (float)(((double)a + (double)b) / 2);
        v[k++] = a, v[k++] = mid, v[k++] = nextafterf(mid, 0), v[k++] = nextafterf(mid, INFINITY);
    }
    for (uint32_t h = 0; h < 0x7F80; h += 3) {
        uint32_t m = (h << 16) | 0x8000;
        v[k++] = u2f(h << 16), v[k++] = u2f(m), v[k++] = u2f(m - 1), v[k++] = u2f(m + 1);
    }
    for (int e = -160; e < 130; e++) v[k++] = ldexpf(1.0f, e), v[k++] = ldexpf(1.5f, e);
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MAX, -FLT_MAX, FLT_MIN, 1e-40f, 65504.0f,
                             65519.99f, 65520.0f, 65536.0f, 448.0f, 464.0f, 470.0f, 479.9f, 480.0f, 57344.0f, 61440.0f,
                             u2f(0x7F800001), u2f(0xFFC00001), u2f(0x7FBFFFFF), u2f(0x3F808000), u2f(0x3F818000)};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) v[k++] = special[i], v[k++] = -special[i];
    uint32_t s = 12345;
    while (k < cap) v[k++] = u2f(s = s * 1664525u + 1013904223u);
    *n = k;
    return v;
}

TEST(f16_decode_exhaustive) {
    for (uint32_t h = 0; h < 65536; h++) {
        float r = graft_f16_to_f32_ref((uint16_t)h);
        if (((h >> 10) & 31) == 31 && (h & 1023)) { // NaN: quiet, payload kept, sign kept
            CHECK(isnan(r));
            CHECK_EQ_U64(f2u(r), ((h & 0x8000u) << 16) | 0x7FC00000u | ((h & 1023u) << 13));
        } else if (((h >> 10) & 31) == 31) {
            CHECK(isinf(r) && (signbit(r) != 0) == ((h & 0x8000) != 0));
        } else if ((double)r != d_f16(h) || (signbit(r) != 0) != ((h & 0x8000) != 0)) {
            harness_fail(__FILE__, __LINE__, "f16 0x%04x → %a, want %a", h, (double)r, d_f16(h));
            return;
        }
    }
}

TEST(bf16_decode_exhaustive) {
    for (uint32_t h = 0; h < 65536; h++) CHECK_EQ_U64(f2u(graft_bf16_to_f32_ref((uint16_t)h)), h << 16);
}

TEST(f16_encode_against_search) {
    size_t n;
    float *v = test_values(&n);
    for (size_t i = 0; i < n; i++) {
        float x = v[i];
        uint16_t got = graft_f32_to_f16_ref(x);
        uint16_t want;
        if (isnan(x)) want = (uint16_t)(0x7E00 | (signbit(x) ? 0x8000 : 0));
        else {
            uint32_t c = enc_search(fabs((double)x), 0x7BFF, 65536.0, d_f16);
            want = (uint16_t)((c > 0x7BFF ? 0x7C00 : c) | (signbit(x) ? 0x8000 : 0));
        }
        if (got != want) { harness_fail(__FILE__, __LINE__, "f32 %a (0x%08x) → f16 0x%04x, want 0x%04x", (double)x, f2u(x), got, want); break; }
    }
    free(v);
    // Values pinned in formats.md §5.2
    CHECK_EQ(graft_f32_to_f16_ref(65520.0f), 0x7C00);
    CHECK_EQ(graft_f32_to_f16_ref(65519.99f), 0x7BFF);
    CHECK_EQ(graft_f32_to_f16_ref(ldexpf(1, -24)), 0x0001);
    CHECK_EQ(graft_f32_to_f16_ref(ldexpf(1, -25)), 0x0000);
    CHECK_EQ(graft_f32_to_f16_ref(ldexpf(1.0001f, -25)), 0x0001);
    CHECK_EQ(graft_f32_to_f16_ref(1e-8f), 0);
    CHECK_EQ(graft_f32_to_f16_ref(-NAN), 0xFE00);
    CHECK_EQ(graft_f32_to_f16_ref(1.0f + ldexpf(1, -8)), 0x3C04);
}

TEST(bf16_encode_against_search) {
    size_t n;
    float *v = test_values(&n);
    for (size_t i = 0; i < n; i++) {
        float x = v[i];
        uint16_t got = graft_f32_to_bf16_ref(x), want;
        if (isnan(x)) want = 0x7FC0;
        else if (isinf(x)) want = signbit(x) ? 0xFF80 : 0x7F80;
        else {
            uint32_t c = enc_search(fabs((double)x), 0x7F7F, ldexp(1, 128), d_bf16);
            want = (uint16_t)((c > 0x7F7F ? 0x7F80 : c) | (signbit(x) ? 0x8000 : 0));
        }
        if (got != want) { harness_fail(__FILE__, __LINE__, "f32 %a → bf16 0x%04x, want 0x%04x", (double)x, got, want); break; }
    }
    free(v);
    CHECK_EQ(graft_f32_to_bf16_ref(u2f(0x3F808000)), 0x3F80);
    CHECK_EQ(graft_f32_to_bf16_ref(u2f(0x3F818000)), 0x3F82);
    CHECK_EQ(graft_f32_to_bf16_ref(1e-40f), 0x0001);
    CHECK_EQ(graft_f32_to_bf16_ref(FLT_MAX), 0x7F80);
    CHECK_EQ(graft_f32_to_bf16_ref(-0.0f), 0x8000);
    CHECK_EQ(graft_f32_to_bf16_ref(1.0f + ldexpf(1, -8)), 0x3F80);
    // every bf16 value survives bf16 → f32 → bf16
    for (uint32_t h = 0; h < 65536; h++)
        if (!isnan(graft_bf16_to_f32_ref((uint16_t)h))) CHECK_EQ(graft_f32_to_bf16_ref(graft_bf16_to_f32_ref((uint16_t)h)), h);
    for (uint32_t h = 0; h < 65536; h++)
        if (!isnan(graft_f16_to_f32_ref((uint16_t)h))) CHECK_EQ(graft_f32_to_f16_ref(graft_f16_to_f32_ref((uint16_t)h)), h);
}

TEST(f8_exhaustive_and_search) {
    for (uint32_t c = 0; c < 256; c++) {
        float e4 = graft_f8e4m3_to_f32_ref((uint8_t)c), e5 = graft_f8e5m2_to_f32_ref((uint8_t)c);
        if ((c & 0x7F) == 0x7F) CHECK(isnan(e4));
        else {
            CHECK((double)e4 == d_e4m3(c));
            CHECK_EQ(graft_f32_to_f8e4m3_ref(e4), c); // round trip
        }
        if ((c & 0x7F) > 0x7C) CHECK(isnan(e5));
        else if ((c & 0x7F) == 0x7C) CHECK(isinf(e5));
        else {
            CHECK((double)e5 == d_e5m2(c));
            CHECK_EQ(graft_f32_to_f8e5m2_ref(e5), c);
        }
    }
    size_t n;
    float *v = test_values(&n);
    for (size_t i = 0; i < n; i++) {
        float x = v[i];
        uint8_t sign = signbit(x) ? 0x80 : 0;
        // e4m3fn: no inf; the code after 448 (0x7F) is NaN, reached from 464 up (PyTorch's rounding)
        uint8_t want4 = isnan(x) || isinf(x) ? (uint8_t)(0x7F | sign)
                                             : (uint8_t)(enc_search(fabs((double)x), 0x7E, 480.0, d_e4m3) | sign);
        uint8_t want5;
        if (isnan(x)) want5 = (uint8_t)(0x7F | sign);
        else if (isinf(x)) want5 = (uint8_t)(0x7C | sign);
        else want5 = (uint8_t)(enc_search(fabs((double)x), 0x7B, 65536.0, d_e5m2) | sign);
        uint8_t g4 = graft_f32_to_f8e4m3_ref(x), g5 = graft_f32_to_f8e5m2_ref(x);
        if (g4 != want4 || g5 != want5) {
            harness_fail(__FILE__, __LINE__, "f32 %a → e4m3 0x%02x (want 0x%02x), e5m2 0x%02x (want 0x%02x)", (double)x, g4, want4, g5, want5);
            break;
        }
    }
    free(v);
    CHECK_EQ(graft_f32_to_f8e4m3_ref(448.0f), 0x7E);
    CHECK_EQ(graft_f32_to_f8e4m3_ref(460.0f), 0x7E);
    CHECK_EQ(graft_f32_to_f8e4m3_ref(480.0f), 0x7F);
    CHECK_EQ(graft_f32_to_f8e4m3_ref(INFINITY), 0x7F);
    CHECK_EQ(graft_f32_to_f8e5m2_ref(INFINITY), 0x7C);
    CHECK_EQ(graft_f32_to_f8e5m2_ref(-NAN), 0xFF);
}

TEST(vector_rows_equal_reference) {
    if (!graft_cpu_has_f16c()) { printf("# no F16C/AVX2: vector path not available, reference used\n"); }
    // all 65,536 f16 / bf16 patterns through the row decoders
    uint16_t all[65536];
    for (uint32_t i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    float *a = malloc(65536 * 4), *b = malloc(65536 * 4);
    for (int t = 0; t < 2; t++) {
        enum graft_dtype dt = t ? GRAFT_DTYPE_BF16 : GRAFT_DTYPE_F16;
        CHECK(graft_row_to_f32(dt, all, a, 65536));
        CHECK(graft_row_to_f32_ref(dt, all, b, 65536));
        CHECK(!memcmp(a, b, 65536 * 4));
    }
    free(a), free(b);
    // f32 values through the row encoders, at odd offsets (unaligned) and odd lengths (tails)
    size_t n;
    float *v = test_values(&n);
    uint8_t *o1 = malloc(2 * n + 8), *o2 = malloc(2 * n + 8);
    for (int t = 0; t < 2; t++) {
        enum graft_dtype dt = t ? GRAFT_DTYPE_BF16 : GRAFT_DTYPE_F16;
        CHECK(graft_row_from_f32(dt, v, o1 + 1, n - 3));
        CHECK(graft_row_from_f32_ref(dt, v, o2 + 1, n - 3));
        CHECK(!memcmp(o1 + 1, o2 + 1, 2 * (n - 3)));
    }
    free(o1), free(o2), free(v);
}

TEST(row_convert_pairs) {
    // bf16 → f16 through f32 equals the composition of references; integers decode exactly; F4 decodes
    // its nibbles low first.
    uint16_t src[1000], got[1000];
    for (int i = 0; i < 1000; i++) src[i] = (uint16_t)(i * 65 + 3);
    CHECK(graft_row_convert(GRAFT_DTYPE_BF16, src, GRAFT_DTYPE_F16, got, 1000));
    for (int i = 0; i < 1000; i++) CHECK_EQ(got[i], graft_f32_to_f16_ref(graft_bf16_to_f32_ref(src[i])));
    int64_t ints[3] = {-5, 1 << 20, 7};
    float f[3];
    CHECK(graft_row_to_f32(GRAFT_DTYPE_I64, ints, f, 3));
    CHECK(f[0] == -5.0f && f[1] == 1048576.0f && f[2] == 7.0f);
    uint8_t f4[2] = {0x71, 0xF9}; // elements: 0x1 (0.5), 0x7 (6), 0x9 (-0.5), 0xF (-6)
    float g[4];
    CHECK(graft_row_to_f32(GRAFT_DTYPE_F4, f4, g, 4));
    CHECK(g[0] == 0.5f && g[1] == 6.0f && g[2] == -0.5f && g[3] == -6.0f);
    uint8_t bools[3] = {0, 1, 2}; // S57: any non-zero byte reads as true
    CHECK(graft_row_to_f32(GRAFT_DTYPE_BOOL, bools, g, 3));
    CHECK(g[0] == 0.0f && g[1] == 1.0f && g[2] == 1.0f);
    CHECK(!graft_row_convert(GRAFT_DTYPE_F32, f, GRAFT_DTYPE_I32, got, 1)); // not a float target
}

TEST(dtype_names) {
    CHECK_EQ(graft_dtype_from_name("F32", 3), GRAFT_DTYPE_F32);
    CHECK_EQ(graft_dtype_from_name("f32", 3), -1);
    CHECK_EQ(graft_dtype_from_name("F8_E4M3FN", 9), -1);
    CHECK_EQ(graft_dtype_from_name("F8_E4M3", 7), GRAFT_DTYPE_F8_E4M3);
    CHECK_EQ(graft_dtype_from_cli_name("bfloat16"), GRAFT_DTYPE_BF16);
    CHECK_EQ(graft_dtype_from_cli_name("F16"), GRAFT_DTYPE_F16);
    CHECK_EQ(graft_dtype_from_cli_name("f8_e5m2"), GRAFT_DTYPE_F8_E5M2);
    CHECK_EQ(graft_dtype_from_cli_name("int4"), -1);
    uint64_t nb;
    CHECK(graft_dtype_nbytes(GRAFT_DTYPE_F4, 4, &nb) && nb == 2);
    CHECK(!graft_dtype_nbytes(GRAFT_DTYPE_F4, 3, &nb));
    CHECK(!graft_dtype_nbytes(GRAFT_DTYPE_F64, 1ull << 62, &nb));
}

// graft_count_nonfinite reduces blocks of 4096 values to their largest |bits| before counting: every
// 16-bit pattern, values at block edges, the largest finite values and -0 / -Inf (sign bit set).
TEST(count_nonfinite) {
    static uint16_t all[65536];
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    CHECK_EQ_U64(graft_count_nonfinite(GRAFT_DTYPE_BF16, all, 65536, NULL), 2 * 128); // exponent 0xFF: ±Inf and NaNs
    CHECK_EQ_U64(graft_count_nonfinite(GRAFT_DTYPE_F16, all, 65536, NULL), 2 * 1024);  // exponent 0x1F
    size_t first;
    CHECK_EQ_U64(graft_count_nonfinite(GRAFT_DTYPE_BF16, all + 0x7F00, 0x100, &first), 128);
    CHECK_EQ(first, 0x80);
    static float f[10000];
    for (int i = 0; i < 10000; i++) f[i] = i % 2 ? 3.4028235e38f : -3.4028235e38f; // ±FLT_MAX: finite
    CHECK_EQ_U64(graft_count_nonfinite(GRAFT_DTYPE_F32, f, 10000, &first), 0);
    CHECK_EQ(first, 10000);
    f[4095] = NAN, f[4096] = -INFINITY, f[9999] = INFINITY;
    CHECK_EQ_U64(graft_count_nonfinite(GRAFT_DTYPE_F32, f, 10000, &first), 3);
    CHECK_EQ(first, 4095);
    CHECK_EQ_U64(graft_count_nonfinite(GRAFT_DTYPE_F32, f + 4097, 5903, &first), 1);
    CHECK_EQ(first, 5902);
    uint16_t h[5000] = {0};
    h[4999] = 0xFC00; // f16 -Inf, in the second block
    CHECK_EQ_U64(graft_count_nonfinite(GRAFT_DTYPE_F16, h, 5000, &first), 1);
    CHECK_EQ(first, 4999);
}
