// graft — round-to-nearest symmetric group-wise weight quantization to int8 / int4, stored in
// safetensors, and the way back.
//
// Layout (docs/quantize.md): a quantized 2-D tensor NAME [rows, cols] becomes
//   NAME        I8 [rows, cols]                (int8)   or   U8 [rows, cols/2] (int4: two values per
//                                              byte, element 2j in the low nibble, two's complement)
//   NAME_scale  F32 [rows, ⌈cols / group⌉]     one scale per group of `group` consecutive elements of a
//                                              row (the last group of a row may be shorter)
// with q = clamp(round_half_even(w / s), −qmax, qmax), s = max|w| / qmax over the group (qmax 127 or
// 7; an all-zero group has s = 0 and q = 0), ŵ = q·s. config.json gets "quantization_config":
// {"quant_method": "graft_rtn", "bits", "group_size", "symmetric": true, "dequantized_dtype"}.
// A group holding NaN / ±Inf (no integer holds them) gets a NaN scale, so it dequantizes to NaN, and is
// left out of the reported error; a warning names the tensor. graft_dequantize refuses NaN / ±Inf it
// makes (overflow of `dtype`) unless writer_flags hold GRAFT_WRITER_ALLOW_NONFINITE.
#ifndef GRAFT_QUANTIZE_H
#define GRAFT_QUANTIZE_H

#include <stdbool.h>
#include "model.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

// Binary-coded quantization (ShiftAddLLM's BCQ, scheme "bcq"): each group of G elements of a row is
// w ≈ Σ_{k<b} α_k·b_k with b_k ∈ {±1}^G and α_0 ≥ α_1 ≥ … ≥ 0: greedy init (b_k = sign(residual), α_k =
// mean |residual|), then `rounds` alternations of α ← least squares for the codes (sorted by
// magnitude, made ≥ 0) and codes ← the nearest of the 2^b levels Σ ±α_k for each element (with
// `shift`, α_k ← 2^round(log2 α_k) before the codes: multiplication-free). Stored as
//   NAME        U8 [rows, b, cols/8]   bit (c mod 8) of byte c/8 of plane k: b_k[c] = +1 (cols % 8 == 0)
//   NAME_alpha  F32 [rows, ⌈cols/G⌉, b]
// with quantization_config {"quant_method": "graft_bcq", "bits", "group_size", "shift", ...}.
struct graft_quantize_params {
    int          bits;            // 8 or 4 (rtn); 2, 3 or 4 (bcq)
    bool         bcq;             // binary-coded quantization instead of round-to-nearest
    bool         shift;           // bcq: power-of-two α
    int          rounds;          // bcq: alternating rounds (default 15, ShiftAddLLM's)
    int          group;           // elements per group (default 128)
    bool         embeddings;      // also the input embedding and lm_head (default: left as they are)
    const char *const *exclude;   // POSIX extended regexes on tensor names left unquantized
    size_t       n_exclude;
    int          n_threads;
    uint64_t     max_shard_bytes;
    unsigned     writer_flags;
    bool         dry_run;
    struct graft_progress *progress;
};
struct graft_quantize_params graft_quantize_default_params(void);

struct graft_quant_report {
    size_t  n;          // tensors quantized
    char  **names;
    double *rel_error;  // ‖w − ŵ‖ / ‖w‖ per quantized tensor (0 for an all-zero tensor)
    double *rtn_error;  // bcq: the same for asymmetric min-max round-to-nearest at the same bits and group
                        // (2^b levels, zero point), the baseline BCQ is compared with; NULL for rtn
    size_t  n_kept;     // tensors copied unchanged
};
void graft_quant_report_free(struct graft_quant_report *r);

int graft_quantize(const struct graft_model *m, const char *target, const struct graft_quantize_params *p,
                   struct graft_quant_report *rep, struct graft_err *err);

// Back to floating point: every NAME with a NAME_scale partner becomes ŵ = q·s (bcq: NAME_alpha, Σ α_k·b_k) in `dtype` (F32, F16 or
// BF16; GRAFT_DTYPE_COUNT → the dequantized_dtype recorded in config.json, else BF16).
int graft_dequantize(const struct graft_model *m, const char *target, enum graft_dtype dtype, int n_threads,
                     unsigned writer_flags, struct graft_progress *progress, size_t *n_done, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
