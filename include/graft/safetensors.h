// graft — safetensors reader.
//
// File layout (all little-endian):
//
//     offset 0      u64 N                 byte length of the header, padding included
//     offset 8      N bytes UTF-8 JSON    {"__metadata__":{str:str}, "NAME":{"dtype":"F16",
//                                           "shape":[d0,…], "data_offsets":[BEGIN,END]}, …}
//     offset 8+N    data section          tensors at [BEGIN,END) relative to 8+N, dense, row-major
//
// graft_st_open / graft_st_open_mem also read PyTorch checkpoints (`torch.save` of a state dict in
// the zip format of PyTorch ≥ 1.6, e.g. pytorch_model.bin) without executing their pickle: see
// src/io/torchbin.c for what is accepted. Their tensors are checked like safetensors ones (bounds,
// sizes, names) and the zip members' CRC-32s are verified at open; tensors of one storage (tied
// weights) share bytes, so `begin` ranges may coincide.
//
// Validation, in this fixed order, before anything is allocated from a file-supplied size:
//   1. file ≥ 8 bytes; 2. N ≤ 100,000,000; 3. 8+N ≤ file size; 4. header is valid UTF-8;
//   5. lexical pre-scan: nesting depth ≤ 32, ≤ GRAFT_ST_MAX_TENSORS keys, no "-0";
//   6. JSON object (duplicate keys rejected at every level, also when spelled with escapes);
//      `__metadata__` is null or string→string; each tensor has `dtype` (known), `shape` (array of
//      non-negative integers, ≤ GRAFT_MAX_DIMS), `data_offsets` (exactly two non-negative integers);
//      unknown fields inside a tensor entry are ignored, as the reference reader does;
//   7. tensors sorted by (begin, end), each begins where the previous one ended;
//      element count and byte size computed with overflow checks, left to right;
//      END − BEGIN == bytes(shape, dtype);
//   8. 8 + N + last END == file size exactly (no holes, no trailing bytes).
// Stricter than the reference reader, on purpose: duplicate keys anywhere, integers ≥ 2^63, names
// containing NUL, and nesting deeper than 32 are rejected.
//
// The data is memory-mapped read-only. Tensor pointers are byte pointers with no alignment
// guarantee: read them with graft_row_to_f32() or memcpy, never by casting.
#ifndef GRAFT_SAFETENSORS_H
#define GRAFT_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "status.h"
#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GRAFT_MAX_DIMS          8
#define GRAFT_ST_MAX_HEADER     100000000ull // bytes, as the reference reader
#define GRAFT_ST_MAX_TENSORS    1000000      // per file
#define GRAFT_ST_MAX_NAME       65536        // bytes per tensor name
#define GRAFT_ST_MAX_DEPTH      32           // JSON nesting

struct graft_tensor_info {
    const char      *name;     // borrowed; valid until the owning file is closed; NUL-terminated
    size_t           name_len; // bytes
    enum graft_dtype dtype;
    int              n_dims;
    uint64_t         ne[GRAFT_MAX_DIMS]; // shape, outermost first (HF order)
    uint64_t         n_elem;   // product of ne (1 for a scalar)
    uint64_t         begin;    // byte offset in the data section
    uint64_t         n_bytes;  // END − BEGIN
};

struct graft_st; // an open, validated safetensors file

// Open and fully validate `path`. On success *out owns the mapping; close with graft_st_close().
// Errors: GRAFT_E_IO (cannot open/map), GRAFT_E_FORMAT / GRAFT_E_LIMIT (invalid file).
int graft_st_open(const char *path, struct graft_st **out, struct graft_err *err);
// Validate an in-memory image (for fuzzing and tests). `buf` is borrowed and must outlive *out.
// `label` names the input in messages.
int graft_st_open_mem(const void *buf, size_t len, const char *label, struct graft_st **out,
                      struct graft_err *err);
void graft_st_close(struct graft_st *st); // NULL-safe

const char *graft_st_path(const struct graft_st *st);
size_t      graft_st_n_tensors(const struct graft_st *st);
// Tensors in data order (sorted by offset). Borrowed.
const struct graft_tensor_info *graft_st_tensor(const struct graft_st *st, size_t i);
// Index of the tensor named `name` (len bytes), or -1.
long        graft_st_find(const struct graft_st *st, const char *name, size_t len);
// Pointer to a tensor's bytes inside the mapping; read-only, unaligned. NULL for zero-byte tensors.
const uint8_t *graft_st_data(const struct graft_st *st, const struct graft_tensor_info *t);
uint64_t    graft_st_header_len(const struct graft_st *st); // N (0 for a PyTorch checkpoint)
// File offset of the data section: a tensor's bytes start at graft_st_data_start() + begin
// (8 + N; 0 for a PyTorch checkpoint, whose `begin` are file offsets).
uint64_t    graft_st_data_start(const struct graft_st *st);
// Whether the file is a PyTorch zip checkpoint (torch.save) rather than safetensors.
bool        graft_st_is_torch(const struct graft_st *st);
uint64_t    graft_st_file_size(const struct graft_st *st);
// `__metadata__` pairs (NUL-terminated strings, borrowed).
size_t      graft_st_n_meta(const struct graft_st *st);
void        graft_st_meta(const struct graft_st *st, size_t i, const char **key, const char **value);
const char *graft_st_meta_get(const struct graft_st *st, const char *key);

// Drop the pages of [begin, begin+len) of the data section from this process (they stay in the page
// cache). Used after a range has been consumed so resident memory stays bounded. Advisory.
void graft_st_release(const struct graft_st *st, uint64_t begin, uint64_t len);
// Tell the kernel a range will be read soon, sequentially. Advisory.
void graft_st_will_need(const struct graft_st *st, uint64_t begin, uint64_t len);
// Map the pages of [begin, begin + len) of the data section now, in one call (MADV_POPULATE_READ):
// a whole tensor about to be read costs one system call instead of a page fault per 4 KiB, which
// dominates reading cached data in a virtual machine. No effect where the kernel lacks it.
void graft_st_populate(const struct graft_st *st, uint64_t begin, uint64_t len);

#ifdef __cplusplus
}
#endif
#endif
