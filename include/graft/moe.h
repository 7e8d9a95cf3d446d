// graft — mergekit-moe: a Mixtral-layout mixture of experts assembled from several dense models
// (attention, norms and embeddings from base_model; each expert's MLP from its source model).
#ifndef GRAFT_MOE_H
#define GRAFT_MOE_H

#include <stdbool.h>
#include <stdio.h>
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_moe_options {
    int      n_threads;
    uint64_t seed;                 // random / uniform_random gates and noise_scale
    uint64_t max_shard_bytes;
    unsigned writer_flags;
    bool     allow_same_model;     // --i-understand-this-is-not-useful-without-training
    bool     copy_tokenizer;       // default true
    bool     dry_run;
    struct graft_progress *progress;
    FILE    *log;                  // warnings (NULL: stderr)
};
struct graft_moe_options graft_moe_default_options(void);

// Build the MoE described by the mergekit-moe YAML at config_path into out_dir. *n_experts and
// *n_layers (may be NULL) report the result.
int graft_moe(const char *config_path, const char *out_dir, const struct graft_moe_options *o, int *n_experts, int *n_layers,
              struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
