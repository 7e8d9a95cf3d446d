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

struct graft_quantize_params {
    int          bits;            // 8 or 4
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
    size_t  n_kept;     // tensors copied unchanged
};
void graft_quant_report_free(struct graft_quant_report *r);

int graft_quantize(const struct graft_model *m, const char *target, const struct graft_quantize_params *p,
                   struct graft_quant_report *rep, struct graft_err *err);

// Back to floating point: every NAME with a NAME_scale partner becomes ŵ = q·s in `dtype` (F32, F16 or
// BF16; GRAFT_DTYPE_COUNT → the dequantized_dtype recorded in config.json, else BF16).
int graft_dequantize(const struct graft_model *m, const char *target, enum graft_dtype dtype, int n_threads,
                     unsigned writer_flags, struct graft_progress *progress, size_t *n_done, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
