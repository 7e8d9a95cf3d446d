// graft — dtype conversion of a whole model, streaming: tensors are converted in fixed-size chunks by
// a worker pool and written at their planned offsets; memory is bounded by threads × chunk.
#ifndef GRAFT_CONVERT_H
#define GRAFT_CONVERT_H

#include <stdio.h>
#include "model.h"
#include "writer.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_convert_params {
    enum graft_dtype dtype;           // target for floating tensors (F64, F32, F16, BF16, F8_E4M3, F8_E5M2), or
                                      // GRAFT_DTYPE_COUNT: keep every tensor's type (e.g. a .bin checkpoint → safetensors)
    int              n_threads;       // ≥ 1
    uint64_t         max_shard_bytes; // 0 → GRAFT_DEFAULT_SHARD_BYTES
    uint64_t         chunk_elems;     // elements per work item (0 → 1Mi)
    unsigned         writer_flags;    // enum graft_writer_flags (GRAFT_WRITER_SINGLE_FILE is set from the target)
    struct graft_progress *progress;  // optional
    bool             copy_side_files; // copy config.json (torch_dtype updated) and tokenizer/generation files
    // Values finite in the input that become NaN/±Inf in the target type (float16 beyond ±65504, …) are
    // an error (GRAFT_E_NONFINITE, nothing written) unless this is set: then they are written as PyTorch's
    // tensor.to() writes them, with a warning and the count on `log` (stderr if NULL).
    bool             allow_nonfinite;
    FILE            *log;
    const volatile int *cancel;       // set nonzero by another thread: stop, write nothing, GRAFT_E_CANCELLED
};

struct graft_convert_params graft_convert_default_params(void);

// Which dtype a tensor of dtype `in` becomes: `to` for floating types, unchanged otherwise (integers,
// BOOL, F4/F6/E8M0 block-scale formats and C64 are carried as they are).
enum graft_dtype graft_convert_out_dtype(enum graft_dtype in, enum graft_dtype to); // to = GRAFT_DTYPE_COUNT: in

// Convert `m` into `target` (a folder, or a single file when it ends in ".safetensors").
int graft_convert(const struct graft_model *m, const char *target, const struct graft_convert_params *p,
                  struct graft_err *err);

// Copy `config.json` (with "torch_dtype" — and "dtype" when present — set to `torch_dtype` unless NULL)
// and the tokenizer, generation and chat-template files of `m` into the writer's folder.
int graft_writer_copy_side_files(struct graft_writer *w, const struct graft_model *m, const char *torch_dtype,
                                 struct graft_err *err);
// Copy only the tokenizer, generation and chat-template files of `m` (not config.json).
int graft_writer_copy_tokenizer(struct graft_writer *w, const struct graft_model *m, struct graft_err *err);
// The transformers name of a dtype ("float16", "bfloat16", "float32", "float64"), or NULL.
const char *graft_dtype_torch_name(enum graft_dtype t);

#ifdef __cplusplus
}
#endif
#endif
