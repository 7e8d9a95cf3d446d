// graft — synthetic models for demos, tests and benchmarks: a random Hugging Face folder (Llama, Qwen2, Gemma, Phi-3, GPT-2, GPT-NeoX, Mixtral layouts)
// (config.json, generation_config.json, HF tensor names), or a fine-tune-like derivative of a base model
// (base + heavy-tailed random delta). Values come from the counter-based generator, so the same
// parameters and seed give the same bytes for any thread count.
#ifndef GRAFT_SYNTH_H
#define GRAFT_SYNTH_H

#include "model.h"
#include "writer.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_synth_params {
    const char      *arch;          // "llama" (also used for Mistral/Qwen2-style layouts)
    int              n_layers;
    int              hidden;
    int              intermediate;
    int              n_heads;
    int              n_kv_heads;
    int              vocab;
    bool             tie_embeddings; // omit lm_head.weight, set tie_word_embeddings
    enum graft_dtype dtype;
    uint64_t         seed;
    double           init_std;       // std of weight matrices (default 0.02)
    // Real layout: when `like_config` (the text of a Hugging Face config.json) is set, the tensors are
    // those transformers saves for it (names, shapes, registration order, biases, norms, tied head),
    // its config.json is written with the overrides applied, and arch / tie_embeddings are ignored.
    // n_layers, hidden, intermediate, n_heads, n_kv_heads, head_dim, vocab and experts override the
    // config's values when > 0 (scaled-down tests); dtype GRAFT_DTYPE_COUNT keeps its torch_dtype.
    const char      *like_config;
    const char      *like_config_label; // its path, for messages
    int              head_dim;
    int              experts;       // Mixtral num_local_experts
    // Derivative mode: when `like` is set, every tensor is like[t] + delta · Laplace noise; the
    // architecture fields above are ignored and the base's config is copied.
    const struct graft_model *like;
    float            delta;
    int              n_threads;
    uint64_t         max_shard_bytes;
    unsigned         writer_flags;
    struct graft_progress *progress;
};

struct graft_synth_params graft_synth_default_params(void);
int graft_synth(const char *target, const struct graft_synth_params *p, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
