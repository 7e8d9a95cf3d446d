// graft — output writer: plans the whole layout first, then takes data at known offsets, then makes the
// output appear atomically.
//
// Life cycle:
//   graft_writer_open(target)         temp folder (or temp file) beside the target, O_EXCL
//   graft_writer_add_tensor(...) × n  declare every output tensor (name, dtype, shape), in order
//   graft_writer_layout()             assign shards (greedy in declaration order, a new shard when the
//                                     next tensor would pass max_shard_bytes), order each shard's data
//                                     as the reference writer does (dtype descending, then name), write
//                                     every header; from here every tensor has a fixed file offset
//   graft_writer_write(...)           any thread, any order: pwrite at the tensor's offset
//   graft_writer_add_file(...)        extra files (config.json, tokenizer files, README.md…)
//   graft_writer_commit()             check every tensor byte was written, fsync files, write the
//                                     index, fsync, rename into place, fsync the parent folder
//   graft_writer_free()               aborts (removes the temp output) unless committed
//
// Output naming follows Hugging Face: `model.safetensors` when one shard, else
// `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json`. A target ending in
// `.safetensors` (with GRAFT_WRITER_SINGLE_FILE) is written as one file instead of a folder.
// Every shard's `__metadata__` holds {"format":"pt"} plus what the caller adds.
#ifndef GRAFT_WRITER_H
#define GRAFT_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "status.h"
#include "dist.h"
#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GRAFT_DEFAULT_SHARD_BYTES 5000000000ull // as MergeKit's default `--out-shard-size 5B`

enum graft_writer_flags {
    GRAFT_WRITER_FORCE       = 1 << 0, // replace a non-empty target folder or an existing file
    GRAFT_WRITER_SINGLE_FILE = 1 << 1, // write one .safetensors file, not a folder
    GRAFT_WRITER_MEMORY      = 1 << 2, // keep everything in memory (graft_writer_mem_*); the target only names it
    // Not the writer's own: operations that compute values (expand, upcycle, moe, quantize, dequantize, reparam,
    // GGUF conversion) write NaN / ±Inf they made, with a warning, instead of failing (--allow-nonfinite).
    GRAFT_WRITER_ALLOW_NONFINITE = 1 << 3,
};

struct graft_writer_params {
    uint64_t    max_shard_bytes; // tensor data bytes per shard (0 → GRAFT_DEFAULT_SHARD_BYTES)
    unsigned    flags;           // enum graft_writer_flags
    // Paths the output must not overwrite or contain (the inputs). Borrowed until graft_writer_open
    // returns.
    const char *const *protect;
    size_t      n_protect;
    const char *stem;            // shard file name stem (NULL → "model"; "adapter_model" for adapters)
    // Several processes write this one output (graft/dist.h), or NULL. Rank 0 makes the temporary
    // folder (its name is broadcast), writes the index and added files and renames; shards go to ranks
    // by bytes (graft_writer_tensor_local); writes of other ranks' tensors are dropped; commit only
    // through graft_writer_finish, which every rank calls.
    const struct graft_dist *dist;
};

struct graft_writer_params graft_writer_default_params(void);

struct graft_writer;

// Start an output at `target`. Checks up front: the target is not an input (same inode), does not
// hold an input, and is absent, an empty folder, or `flags` has GRAFT_WRITER_FORCE. Removes stale temp
// folders of this target left by killed runs. Errors: GRAFT_E_EXISTS, GRAFT_E_USAGE, GRAFT_E_IO.
int  graft_writer_open(const char *target, const struct graft_writer_params *params,
                       struct graft_writer **out, struct graft_err *err);
// Abort (if not committed) and free. NULL-safe.
void graft_writer_free(struct graft_writer *w);

// Add a `__metadata__` pair written into every shard (copied).
int  graft_writer_set_meta(struct graft_writer *w, const char *key, const char *value,
                           struct graft_err *err);
// Drop every `__metadata__` pair, including the default {"format":"pt"} (the header then has no
// `__metadata__` key, as the reference writer without metadata). Before layout only.
void graft_writer_clear_meta(struct graft_writer *w);
// Declare the next output tensor; returns its index (≥ 0) or a negative status. Names must be valid
// UTF-8 and unique.
long graft_writer_add_tensor(struct graft_writer *w, const char *name, size_t name_len,
                             enum graft_dtype dtype, int n_dims, const uint64_t *ne,
                             struct graft_err *err);
// Fix the layout and write every shard header. No tensors may be added afterwards.
int  graft_writer_layout(struct graft_writer *w, struct graft_err *err);

size_t   graft_writer_n_tensors(const struct graft_writer *w);
int      graft_writer_n_shards(const struct graft_writer *w);
uint64_t graft_writer_tensor_bytes(const struct graft_writer *w, long tensor);
int      graft_writer_tensor_shard(const struct graft_writer *w, long tensor);
// Final file name of shard i (e.g. "model-00001-of-00002.safetensors"). Borrowed.
const char *graft_writer_shard_name(const struct graft_writer *w, int shard);
uint64_t graft_writer_total_bytes(const struct graft_writer *w); // tensor data bytes

// Write `n` bytes of tensor `tensor` at byte `off` within that tensor. Thread-safe. The ranges
// written for a tensor must not overlap and must cover it exactly before commit.
int  graft_writer_write(struct graft_writer *w, long tensor, uint64_t off, const void *buf,
                        size_t n, struct graft_err *err);

// Add a whole file to the output folder (not allowed in single-file mode). `name` is a plain file
// name. Data is copied into the temp folder now.
int  graft_writer_add_file(struct graft_writer *w, const char *name, const void *data, size_t len,
                           struct graft_err *err);

// Make the output appear. After success the writer only needs freeing.
int  graft_writer_commit(struct graft_writer *w, struct graft_err *err);
// With params.dist: every rank calls this once, with its status so far (GRAFT_OK to commit). Returns
// the lowest failing rank's status and message ("rank R: …") on every rank, then nothing is committed;
// else rank 0 commits and its result is every rank's. Without dist: rc ? rc : graft_writer_commit().
int  graft_writer_finish(struct graft_writer *w, int rc, struct graft_err *err);
// Whether this process writes tensor `tensor` (always, without dist).
bool graft_writer_tensor_local(const struct graft_writer *w, long tensor);
// GRAFT_WRITER_MEMORY outputs, after commit: a tensor's bytes by name (false if absent), and an added
// file's contents (NUL-terminated; NULL if absent). Valid until graft_writer_free().
bool graft_writer_mem_tensor(const struct graft_writer *w, const char *name, const void **data, enum graft_dtype *dtype, int *n_dims,
                             const uint64_t **ne);
const char *graft_writer_mem_file(const struct graft_writer *w, const char *name, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
