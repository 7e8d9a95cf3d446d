// graft — a model: one safetensors file, or a Hugging Face folder.
//
// A folder holds either `model.safetensors`, or shards listed in `model.safetensors.index.json`
// ({"metadata":{…}, "weight_map":{tensor: shard file}}), or a single other `*.safetensors` file;
// plus `config.json` and tokenizer / generation files. Index rules (stricter than upstream, which
// enforces none): the index is ≤ 64 MiB JSON without duplicate keys; every shard name is a plain file
// name ending in `.safetensors` (no `/`, `\`, `..`, leading `.`, NUL or drive letter); every shard
// exists and validates; every listed tensor is in its shard; every tensor of a shard is listed, and
// for that shard. `metadata.total_size` is advisory and never used.
#ifndef GRAFT_MODEL_H
#define GRAFT_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GRAFT_INDEX_MAX_BYTES (64u << 20)
#define GRAFT_CONFIG_MAX_BYTES (16u << 20)

struct graft_model;

// One tensor of a model: which shard, and its description inside that shard.
struct graft_model_tensor {
    const struct graft_tensor_info *info; // borrowed from the shard
    int                              shard; // index into graft_model_shard()
};

// Open and fully validate a file or folder. Close with graft_model_close().
// Errors: GRAFT_E_IO, GRAFT_E_FORMAT, GRAFT_E_LIMIT, GRAFT_E_NOTFOUND.
int  graft_model_open(const char *path, struct graft_model **out, struct graft_err *err);
void graft_model_close(struct graft_model *m); // NULL-safe

const char *graft_model_path(const struct graft_model *m);
// The folder holding the model (the file's folder for a single file). Borrowed.
const char *graft_model_dir(const struct graft_model *m);
// True when opened as a folder (so config.json and tokenizer files may be present).
int         graft_model_is_dir(const struct graft_model *m);
// Index file path when the model is sharded with an index, else NULL.
const char *graft_model_index_path(const struct graft_model *m);

int                    graft_model_n_shards(const struct graft_model *m);
const struct graft_st *graft_model_shard(const struct graft_model *m, int i);

// Tensors: shards in file-name order, each shard's tensors in data order.
size_t graft_model_n_tensors(const struct graft_model *m);
const struct graft_model_tensor *graft_model_tensor(const struct graft_model *m, size_t i);
// Tensor by name, or NULL.
const struct graft_model_tensor *graft_model_find(const struct graft_model *m, const char *name,
                                                  size_t len);
const uint8_t *graft_model_data(const struct graft_model *m, const struct graft_model_tensor *t);

uint64_t graft_model_n_params(const struct graft_model *m); // sum of element counts
uint64_t graft_model_n_bytes(const struct graft_model *m);  // sum of tensor data bytes

// config.json as compact JSON text (NUL-terminated, borrowed), or NULL if the model has none.
const char *graft_model_config_json(const struct graft_model *m);

// Models opened once and shared by later users (graft_merge_options.cache: graft evolve merges every
// candidate from the same inputs, each opened and validated once). Not for concurrent use.
struct graft_model_cache;
int  graft_model_cache_new(struct graft_model_cache **out, struct graft_err *err);
void graft_model_cache_free(struct graft_model_cache *c); // NULL-safe; closes every model
// The model at `path` (compared as given: resolve it first), opened on its first request and owned by
// the cache.
int  graft_model_cache_open(struct graft_model_cache *c, const char *path, struct graft_model **out, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
