// graft — GGUF (llama.cpp's format, v2 and v3, little-endian) read as hostile input.
//
// Validation runs in one fixed order before anything is trusted (shared/formats.md §4.3, made
// stricter): magic; version 2 or 3 (a byte-swapped version is named as a big-endian file, which is
// not supported); tensor and key/value counts capped and bounded by the bytes left; every key and
// string: length ≤ bytes left (and ≤ 1 GiB), keys non-empty, valid UTF-8 and unique; value types
// 0…12, arrays of a non-array type with count ≤ 2^30 and count × element size ≤ bytes left (strings
// walked one by one); general.alignment a UINT32 power of two ≤ 1 MiB; per tensor: name 1…63 bytes of
// UTF-8, unique; ≤ 4 dims; every dim ≤ INT64_MAX and their product overflow-checked; a known type
// whose block divides ne[0]; byte size overflow-checked; offsets exactly the canonical sequence
// (each tensor right after the previous one's padded end, as ggml requires); the data section, padded
// after the last tensor too, inside the file. Access is zero-copy through a read-only mapping.
#ifndef GRAFT_GGUF_H
#define GRAFT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum graft_gguf_vtype {
    GRAFT_GGUF_U8, GRAFT_GGUF_I8, GRAFT_GGUF_U16, GRAFT_GGUF_I16, GRAFT_GGUF_U32, GRAFT_GGUF_I32, GRAFT_GGUF_F32,
    GRAFT_GGUF_BOOL, GRAFT_GGUF_STRING, GRAFT_GGUF_ARRAY, GRAFT_GGUF_U64, GRAFT_GGUF_I64, GRAFT_GGUF_F64,
};

// ggml tensor types graft knows by id (the others are named in messages by their id).
enum graft_ggml_type {
    GRAFT_GGML_F32 = 0, GRAFT_GGML_F16 = 1, GRAFT_GGML_Q4_0 = 2, GRAFT_GGML_Q4_1 = 3, GRAFT_GGML_Q8_0 = 8,
    GRAFT_GGML_Q4_K = 12, GRAFT_GGML_Q6_K = 14, GRAFT_GGML_I8 = 24, GRAFT_GGML_I16 = 25, GRAFT_GGML_I32 = 26,
    GRAFT_GGML_I64 = 27, GRAFT_GGML_F64 = 28, GRAFT_GGML_BF16 = 30, GRAFT_GGML_TYPE_COUNT = 43,
};

#define GRAFT_GGUF_MAX_TENSORS  (1u << 20)
#define GRAFT_GGUF_MAX_KV       (1u << 20)
#define GRAFT_GGUF_MAX_NAME     63
#define GRAFT_GGUF_DEFAULT_ALIGNMENT 32

struct graft_gguf_kv {
    const char    *key;      // NUL-terminated copy
    size_t         key_len;
    uint32_t       type;     // enum graft_gguf_vtype
    uint32_t       arr_type; // element type when type is ARRAY
    uint64_t       n;        // array elements (1 otherwise)
    const uint8_t *value;    // the value's bytes in the mapping (for ARRAY: the first element)
};

struct graft_gguf_tensor {
    const char *name;        // NUL-terminated copy
    size_t      name_len;
    uint32_t    n_dims;
    uint64_t    ne[4];       // ggml order: ne[0] is the innermost (fastest) dimension; unused dims are 1
    uint32_t    type;        // enum graft_ggml_type
    uint64_t    offset;      // from the data section start
    uint64_t    n_elem, n_bytes;
};

struct graft_gguf;
int  graft_gguf_open(const char *path, struct graft_gguf **out, struct graft_err *err);
// Over a caller's buffer (fuzzing, tests); the buffer must outlive the handle.
int  graft_gguf_open_mem(const void *buf, size_t len, const char *label, struct graft_gguf **out, struct graft_err *err);
void graft_gguf_close(struct graft_gguf *g); // NULL-safe
// True when the file starts with the GGUF magic (cheap; for dispatch).
bool graft_gguf_sniff(const char *path);

uint32_t graft_gguf_version(const struct graft_gguf *g);
uint32_t graft_gguf_alignment(const struct graft_gguf *g);
uint64_t graft_gguf_data_offset(const struct graft_gguf *g);
size_t   graft_gguf_n_kv(const struct graft_gguf *g);
const struct graft_gguf_kv *graft_gguf_kv(const struct graft_gguf *g, size_t i);
const struct graft_gguf_kv *graft_gguf_find_kv(const struct graft_gguf *g, const char *key);
size_t   graft_gguf_n_tensors(const struct graft_gguf *g);
const struct graft_gguf_tensor *graft_gguf_tensor(const struct graft_gguf *g, size_t i);
const struct graft_gguf_tensor *graft_gguf_find(const struct graft_gguf *g, const char *name);
const uint8_t *graft_gguf_data(const struct graft_gguf *g, const struct graft_gguf_tensor *t);

// Typed reads of scalar values: any integer type that fits (u64), numbers (f64), strings (borrowed,
// not NUL-terminated). False when the key is absent or of another kind.
bool graft_gguf_get_u64(const struct graft_gguf *g, const char *key, uint64_t *v);
bool graft_gguf_get_f64(const struct graft_gguf *g, const char *key, double *v);
bool graft_gguf_get_str(const struct graft_gguf *g, const char *key, const char **s, size_t *len);
// Element i of a string array (bounds already validated at open); false if out of range.
bool graft_gguf_arr_str(const struct graft_gguf_kv *kv, uint64_t i, const char **s, size_t *len);

// Type facts: name ("Q8_0"), values per block and bytes per block (0 for unknown or removed ids).
const char *graft_ggml_type_name(uint32_t type);
uint32_t    graft_ggml_block_size(uint32_t type);
uint32_t    graft_ggml_type_size(uint32_t type);
// Decode n elements (a multiple of the block size) of a tensor's bytes to f32: F32, F16, BF16, F64,
// I8/I16/I32, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K. False for other types.
bool graft_ggml_to_f32(uint32_t type, const void *src, float *dst, uint64_t n);
const char *graft_gguf_vtype_name(uint32_t t);
// Encode n values (a multiple of the block) as F32, F16, BF16 (round to nearest even), Q8_0 or Q4_0
// (ggml's reference quantizers, bit for bit). False for other types.
bool graft_ggml_from_f32(uint32_t type, const float *src, void *dst, uint64_t n);
// NaN / ±Inf among n values stored as ggml `type`: F32/F16/BF16 values, or the values of Q8_0 / Q4_0
// blocks whose f16 scale is not finite (0 for other types). graft_ggml_from_f32 gives a block holding a
// NaN or ±Inf a NaN scale: no integer quant holds them.
uint64_t graft_ggml_count_nonfinite(uint32_t type, const void *data, uint64_t n);

// ---- writing ----------------------------------------------------------------------------------------
// Declare key/values and tensors, then layout (the header is written, every offset fixed), then
// tensor bytes from any thread, then commit (fsync, rename into place). Freed uncommitted, nothing is
// left behind. flags: GRAFT_WRITER_FORCE replaces an existing file.
struct graft_gguf_writer;
int  graft_gguf_writer_open(const char *target, unsigned flags, struct graft_gguf_writer **out, struct graft_err *err);
void graft_gguf_writer_free(struct graft_gguf_writer *w);
int  graft_gguf_w_u32(struct graft_gguf_writer *w, const char *key, uint32_t v, struct graft_err *err);
int  graft_gguf_w_i32(struct graft_gguf_writer *w, const char *key, int32_t v, struct graft_err *err);
int  graft_gguf_w_f32(struct graft_gguf_writer *w, const char *key, float v, struct graft_err *err);
int  graft_gguf_w_bool(struct graft_gguf_writer *w, const char *key, bool v, struct graft_err *err);
int  graft_gguf_w_str(struct graft_gguf_writer *w, const char *key, const char *s, size_t n, struct graft_err *err);
// An array: values points at n packed elements, or for strings at n `const char *` (lens NULL: NUL-terminated).
int  graft_gguf_w_arr(struct graft_gguf_writer *w, const char *key, uint32_t elem_type, const void *values, const size_t *lens, uint64_t n,
                      struct graft_err *err);
// ne in ggml order (innermost first). Returns the tensor's id (≥ 0) or a negative status.
long graft_gguf_w_tensor(struct graft_gguf_writer *w, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, struct graft_err *err);
uint64_t graft_gguf_w_tensor_bytes(const struct graft_gguf_writer *w, long id);
int  graft_gguf_w_layout(struct graft_gguf_writer *w, struct graft_err *err);
int  graft_gguf_w_write(struct graft_gguf_writer *w, long id, uint64_t off, const void *buf, size_t n, struct graft_err *err);
int  graft_gguf_w_commit(struct graft_gguf_writer *w, struct graft_err *err);

// A Llama / Mistral / Mixtral / Qwen2 / Qwen3 / Phi-3 / Gemma / Gemma 2 / Gemma 3 Hugging Face folder as one GGUF
// file (src/ops/gguf_convert.c), laid out as llama.cpp's convert_hf_to_gguf.py lays it out: matrices as
// `type` (F32, F16, BF16, Q8_0, Q4_0), 1-D tensors and Mixtral's router F32, Mixtral's experts stacked
// into 3-D ffn_{gate,down,up}_exps, Gemma's norms stored as 1 + w, Phi-3's LongRoPE factors as
// rope_factors_{long,short}. general.name is `name`, or the folder's name when NULL. flags: GRAFT_WRITER_FORCE.
struct graft_model;
int graft_to_gguf(const struct graft_model *m, const char *target, uint32_t type, const char *name, int n_threads, unsigned flags,
                  struct graft_err *err);
// llama.cpp's name of a Hugging Face tensor for GGUF architecture `arch` ("llama", "qwen2", "qwen3",
// "phi3", "gemma", "gemma2", "gemma3"; NULL: llama): "model.layers.3.mlp.up_proj.weight" → "blk.3.ffn_up.weight";
// false when there is none. A Mixtral expert's matrix ("…block_sparse_moe.experts.5.w1.weight") gives
// the stacked tensor ("blk.3.ffn_gate_exps.weight") and its index in *expert (−1 otherwise; expert
// NULL: experts have no name).
bool graft_gguf_hf_name(const char *arch, const char *hf, char *out, size_t cap, int *expert);
// The q/k permutation of llama.cpp's converter: GGUF row r holds HF row graft_gguf_permuted_row(r, d)
// (d = head_dim): per head, the two rotary halves interleaved.
uint64_t graft_gguf_permuted_row(uint64_t r, uint64_t head_dim);
// The inverse of graft_gguf_hf_name ("blk.3.ffn_up.weight" → "model.layers.3.mlp.up_proj.weight"); a
// stacked ffn_*_exps tensor names expert `expert` (≥ 0; a negative expert: no name).
bool graft_gguf_name_to_hf(const char *arch, const char *gguf, int expert, char *out, size_t cap);
// Whether a GGUF tensor name is one of llama.cpp's stacked expert tensors (ffn_*_exps).
bool graft_gguf_is_experts(const char *gguf);

// ---- GGUF → Hugging Face (src/io/gguf_hf.c; llama (Mixtral), qwen2, qwen3, phi3, gemma, gemma2, gemma3 files)----------------
// config.json rebuilt from the metadata (compact JSON, free() it): architecture, sizes, rms eps,
// rope_theta, linear rope scaling, llama3 rope_scaling recovered from rope_freqs (refused when the
// factors are not llama3's), Phi-3's longrope factors from rope_factors_{long,short}, Mixtral's experts,
// Gemma 2's soft-caps, sliding window and query scale (the one llama.cpp applies), tie_word_embeddings
// when there is no output.weight (always for Gemma), bos/eos ids. When heads is not NULL it receives
// the attention layout behind it.
struct graft_gguf_heads {
    uint64_t n_head, n_kv, head_dim;
    bool     permuted;      // q/k rows carry llama.cpp's converter permutation (architecture llama)
    bool     norm_plus_one; // norm weights are stored as 1 + w (Gemma)
    char     arch[32];      // general.architecture
};
int graft_gguf_hf_config(const struct graft_gguf *g, char **out, struct graft_gguf_heads *heads, struct graft_err *err);
// The BOS id a window should start with per the file's metadata: tokenizer.ggml.bos_token_id unless
// tokenizer.ggml.add_bos_token says false (llama.cpp's reading); −1 when there is none.
int32_t graft_gguf_bos(const struct graft_gguf *g);
// tokenizer.json and tokenizer_config.json (free() both) from tokenizer.ggml.*: gpt2-type
// vocabularies with their merges and the pre-tokenizer named by tokenizer.ggml.pre (default/gpt-2,
// llama-bpe, qwen2); llama-type (SentencePiece) vocabularies with merges derived from the scores (every
// split of a piece into two pieces, ranked by the piece's score, as transformers' SentencePieceExtractor),
// byte fallback and the ▁ prefix. GRAFT_E_NOTFOUND when the file has no tokenizer.
int graft_gguf_hf_tokenizer(const struct graft_gguf *g, char **tokenizer_json, char **tokenizer_config_json, struct graft_err *err);
// Write `g` as a Hugging Face folder at `target`: tensors renamed, q/k un-permuted (llama), stacked
// experts split per expert, Gemma norms back to w (1 + w − 1 in float32), F32/F16/BF16
// matrices kept as they are (bit for bit), quantized ones decoded to F32, 1-D F32 tensors (which the
// converter widens) in the matrices' dtype (config.json's torch_dtype) — or every tensor as `dtype`
// when ≥ 0 (an enum graft_dtype float type); config.json, tokenizer files and generation_config.json.
// `label` names the GGUF file in messages and is protected from being overwritten. flags: writer flags.
struct graft_progress;
int graft_gguf_to_hf(const struct graft_gguf *g, const char *label, const char *target, int dtype, int n_threads, unsigned flags,
                     struct graft_progress *progress, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
