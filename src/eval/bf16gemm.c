// bf16 products for `graft eval --matmul bf16`: the activations rounded to bf16 (to nearest even), each
// product with BF16 weights accumulated in f32 — what llama.cpp computes for a BF16 GGUF. With
// AVX512-BF16 (VDPBF16PS: two bf16 products per f32 lane per instruction, twice sgemm's arithmetic per
// instruction) a 6 × 64 register tile over packed weight panels; elsewhere the same rounded
// activations go through sgemm on the weights widened to f32 (the caller's route; also under
// GRAFT_CPU=generic).
#include <string.h>
#include "graft/dtype.h"
#include "eval-impl.h"
#include "../core/impl.h"

// A tile: MR activation rows × NR weight rows. 6 × 4 accumulators, 4 weight vectors and a broadcast use
// 29 of the 32 vector registers; 10–15 % faster than 12 × 32 on Zen 4. KC: bf16 pairs per K-chunk, so a
// slice of X (6 KB) and the block's panels (≤ 256 KB) stay in cache.
#define MR 6
#define NV 4 // vectors of 16 f32 lanes
#define NR (16 * NV)
#define KC 256

size_t graft__bf16_rows_padded(size_t M) { return (M + MR - 1) / MR * MR; }

void graft__bf16_round_rows(const float *X, size_t M, size_t K, uint16_t *Xb) {
    graft_row_from_f32(GRAFT_DTYPE_BF16, X, Xb, M * K); // round to nearest even, as ggml's fp32→bf16
    memset(Xb + M * K, 0, (graft__bf16_rows_padded(M) - M) * K * sizeof *Xb);
}

#if defined(__x86_64__)
#include <immintrin.h>
#define TARGET __attribute__((target("avx512f,avx512bf16")))

// GRAFT_CPU=generic: the sgemm route, so tests compare the two on one machine
bool graft__bf16_gemm_cpu(void) { return !graft__cpu_generic() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16"); }

// C[mv × nv] (+)= A[MR rows × kp pairs] · B-panel[kp pairs × NR]; A rows lda pairs apart (bf16 values,
// read a pair at a time through memcpy: they were stored as uint16_t).
TARGET static void tile(size_t kp, const uint16_t *A, size_t lda, const uint32_t *B, float *C, size_t ldc, size_t mv, size_t nv, bool acc) {
    __m512 c[MR][NV];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) c[i][v] = _mm512_setzero_ps();
    for (size_t p = 0; p < kp; p++) {
        __m512bh b[NV];
        for (int v = 0; v < NV; v++) b[v] = (__m512bh)_mm512_loadu_si512(B + p * NR + 16 * v);
        for (int i = 0; i < MR; i++) {
            int32_t x;
            memcpy(&x, A + 2 * (i * lda + p), 4);
            __m512bh a = (__m512bh)_mm512_set1_epi32(x);
            for (int v = 0; v < NV; v++) c[i][v] = _mm512_dpbf16_ps(c[i][v], a, b[v]);
        }
    }
    __mmask16 mk[NV];
    for (int v = 0; v < NV; v++) mk[v] = nv >= 16 * (size_t)v + 16 ? 0xFFFF : nv > 16 * (size_t)v ? (__mmask16)((1u << (nv - 16 * v)) - 1) : 0;
    for (size_t i = 0; i < mv; i++)
        for (int v = 0; v < NV; v++) {
            float *y = C + i * ldc + 16 * v;
            if (acc) c[i][v] = _mm512_add_ps(c[i][v], _mm512_maskz_loadu_ps(mk[v], y));
            _mm512_mask_storeu_ps(y, mk[v], c[i][v]);
        }
}

TARGET void graft__bf16_gemm(size_t M, size_t N, size_t K, const uint16_t *Xb, const void *W, float *Y, size_t ldy, bool accumulate,
                             uint32_t *pack) {
    size_t kp = K / 2, np = (N + NR - 1) / NR;
    const uint8_t *w = W;
    // panels: pack[q][p][r] = the pair (W[NR·q + r][2p], W[NR·q + r][2p + 1]), rows past N zero
    for (size_t q = 0; q < np; q++)
        for (size_t r = 0; r < NR; r++) {
            size_t row = q * NR + r;
            uint32_t *d = pack + q * kp * NR + r;
            if (row >= N)
                for (size_t p = 0; p < kp; p++) d[p * NR] = 0;
            else
                for (size_t p = 0; p < kp; p++) memcpy(d + p * NR, w + (row * K + 2 * p) * 2, 4);
        }
    for (size_t p0 = 0; p0 < kp; p0 += KC) {
        size_t kc = kp - p0 < KC ? kp - p0 : KC;
        bool acc = accumulate || p0 > 0;
        for (size_t m0 = 0; m0 < M; m0 += MR)
            for (size_t q = 0; q < np; q++)
                tile(kc, Xb + 2 * (m0 * kp + p0), kp, pack + q * kp * NR + p0 * NR, Y + m0 * ldy + q * NR, ldy, M - m0 < MR ? M - m0 : MR,
                     N - q * NR < NR ? N - q * NR : NR, acc);
    }
}
#else
bool graft__bf16_gemm_cpu(void) { return false; }
void graft__bf16_gemm(size_t M, size_t N, size_t K, const uint16_t *Xb, const void *W, float *Y, size_t ldy, bool accumulate, uint32_t *pack) {
    (void)M, (void)N, (void)K, (void)Xb, (void)W, (void)Y, (void)ldy, (void)accumulate, (void)pack;
}
#endif
