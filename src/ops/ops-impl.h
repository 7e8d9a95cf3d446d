// Pieces shared by the checkpoint operations (src/ops): opening an output for one input model, the
// names of embeddings and heads, a whole tensor copied from its mapping, Mixtral's config.json.
#ifndef GRAFT_OPS_IMPL_H
#define GRAFT_OPS_IMPL_H
#include <jansson.h>
#include <stdbool.h>
#include "graft/model.h"
#include "graft/util.h"
#include "graft/writer.h"
#include "../core/impl.h"

// A writer for `target` (a folder, or one file when it ends in ".safetensors"), protecting every
// shard and the folder of `m`.
int  graft__ops_writer_open(const struct graft_model *m, const char *target, uint64_t max_shard, unsigned flags, struct graft_writer **w,
                            struct graft_err *err);
// The same protecting a second input too (its shards and folder; NULL: none).
int  graft__ops_writer_open2(const struct graft_model *m, const struct graft_model *m2, const char *target, uint64_t max_shard, unsigned flags,
                             struct graft_writer **w, struct graft_err *err);
// Tensor t of m as f32 (paged in, then converted), malloc'd; NULL for lack of memory.
float *graft__ops_load_f32(const struct graft_model *m, const struct graft_model_tensor *t);
bool graft__ops_single_file(const char *target);
// Input embeddings and output heads, by the names transformers uses (left alone by default).
bool graft__ops_is_embedding_or_head(const char *name);
// Tensor t of m written whole as output tensor id, straight from the mapping.
int  graft__ops_copy_tensor(struct graft_writer *w, long id, const struct graft_model *m, const struct graft_model_tensor *t,
                            struct graft_progress *progress, struct graft_err *err);
// Part of a 1-D or 2-D tensor: the rows (or, 1-D, the elements) listed in `rows` and the columns in
// `cols` (NULL: all), in the listed order, each value times `scale` (exactly copied when 1, otherwise
// through f32 and rounded once).
struct graft__slice {
    const struct graft_model_tensor *src;
    const uint32_t *rows, *cols;
    size_t   n_rows, n_cols;
    double   scale;
};
// Whether s's dtype can be sliced (whole-byte elements, 1 or 2 dimensions); the output's shape in ne.
bool graft__ops_slice_shape(const struct graft__slice *s, uint64_t ne[2]);
// Write s as output tensor id, in pieces of at most `chunk` bytes (bounded memory).
int  graft__ops_write_slice(struct graft_writer *w, long id, const struct graft_model *m, const struct graft__slice *s, size_t chunk,
                            unsigned flags, struct graft_err *err);
// Calibration windows: ids cut into windows of ctx tokens, BOS first when bos ≥ 0. Fills win (ctx
// ids) with the window starting at *at, advances *at and returns its length; 0 when no window of at
// least 2 tokens is left.
size_t graft__ops_next_window(const int32_t *ids, size_t n_ids, int32_t bos, size_t ctx, size_t *at, int32_t *win);
// `root` written as file `name` of the output, pretty-printed as transformers writes JSON (≤ 64 MiB).
int  graft__ops_add_json(struct graft_writer *w, const char *name, const json_t *root, struct graft_err *err);
// Layer-position rules of config.json that removing or inserting layers would silently change: Gemma 2/3
// without layer_types, max_window_layers without it, keys that describe layers by position
// (sliding_window_pattern among them, whatever the architecture), any other list with one entry per
// layer, a layer_types of the wrong length. GRAFT_E_CONFIG naming the key ("not <what>").
int  graft__ops_layer_keys_check(const json_t *c, int L, const char *path, const char *what, struct graft_err *err);
// config.json from `root` turned into Mixtral's (E experts, K per token; a Mistral model's
// sliding_window kept) and added to the writer.
int  graft__ops_add_mixtral_config(struct graft_writer *w, json_t *root, int experts, int per_token, struct graft_err *err);
// Write out the source class's defaults for keys a Llama / Mistral / Qwen2 config.json leaves out,
// before its model_type changes (they would take the new class's defaults).
void graft__ops_fill_config_defaults(json_t *root);
// f (n values) encoded into dt at enc (n × 8 bytes suffice) and checked by graft__nonfinite_rule (core/impl.h); the source
// tensor src of m (may be NULL) is counted only when the output holds NaN / ±Inf.
int  graft__ops_encode(const char *op, const char *tensor, size_t tlen, enum graft_dtype dt, const float *f, void *enc, size_t n,
                       const struct graft_model *m, const struct graft_model_tensor *src, unsigned flags, struct graft_err *err);

// reparam --fold mup (mup.c).
struct graft_reparam_params;
int  graft__fold_mup(const struct graft_model *m, const char *target, const struct graft_reparam_params *p, size_t *n_folds, struct graft_err *err);

// PEFT LoRA adapters (lora.c, lora_merge.c).
struct graft__lora_pat { const char **key; double *val; void **rx; size_t n; }; // rank/alpha patterns, compiled (pcre2_code *)
struct graft__lora_cfg {
    double r, alpha;
    bool   rslora, fan_in_fan_out;
    json_t *rank_pattern, *alpha_pattern, *root;
    struct graft__lora_pat rank_rx, alpha_rx;
};
void graft__lora_cfg_free(struct graft__lora_cfg *c);
// The adapter's folder and tensor file (`adapter`: the folder, or its adapter_model.safetensors / .bin).
int  graft__lora_locate(const char *adapter, char **dir, char **file, struct graft_err *err);
// adapter_config.json of folder `dir` (c->root owns the JSON: json_decref it).
int  graft__lora_read_config(const char *dir, struct graft__lora_cfg *c, struct graft_err *err);
// Module `module`'s scale (alpha / r or alpha / √r, patterns applied); its factors' rank must be the config's.
int  graft__lora_scale(const struct graft__lora_cfg *c, const char *module, uint64_t rank, double *s, const char *path, const char *tensor,
                       size_t tlen, struct graft_err *err);
// `name` in m, or for a missing lm_head.weight of a tied model its input embedding.
const struct graft_model_tensor *graft__lora_find_or_tied(const struct graft_model *m, const char *name);
bool graft__lora_is_embedding(const char *module);
#endif
