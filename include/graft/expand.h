// graft — growing Llama-family models: function-preserving width (hidden, intermediate) and depth
// (identity blocks) expansions, and depth up-scaling by layer duplication (not function preserving).
#ifndef GRAFT_EXPAND_H
#define GRAFT_EXPAND_H

#include <stdbool.h>
#include "model.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GRAFT_EXPAND_MAX_ADDS 64
struct graft_expand_params {
    int      hidden;        // new hidden_size (0: unchanged)
    int      intermediate;  // new intermediate_size (0: unchanged)
    int      heads;         // new num_attention_heads (0: unchanged), same head_dim
    int      add_n[GRAFT_EXPAND_MAX_ADDS], add_at[GRAFT_EXPAND_MAX_ADDS]; // add_n[i] identity blocks before layer add_at[i]
    int      n_adds;        //   (0 … num_hidden_layers), for i < n_adds
    int      dup_a, dup_b;  // duplicate layers [dup_a, dup_b) after dup_b − 1 (dup_b = 0: none)
    double   init_std;      // σ of the new "arbitrary" weights (0 → initializer_range, else 0.02)
    uint64_t seed;
    int      n_threads;
    uint64_t max_shard_bytes;
    unsigned writer_flags;
    bool     dry_run;
    struct graft_progress *progress;
};
struct graft_expand_params graft_expand_default_params(void);

int graft_expand(const struct graft_model *m, const char *target, const struct graft_expand_params *p, int *n_layers, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
