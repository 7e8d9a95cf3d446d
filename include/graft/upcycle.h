// graft — sparse upcycling: a dense Llama/Mistral model into a Mixtral-layout mixture of experts whose
// every expert is a copy of the layer's MLP, with a new router (Komatsuzaki et al., "Sparse Upcycling").
#ifndef GRAFT_UPCYCLE_H
#define GRAFT_UPCYCLE_H

#include <stdbool.h>
#include "model.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_upcycle_params {
    int      experts;       // E ≥ 2
    int      top_k;         // 1 ≤ K ≤ E (num_experts_per_tok)
    bool     router_zero;   // zero router (the upcycled model computes what the dense one does) instead of N(0, σ²)
    double   router_std;    // σ of the random router (0 → config.json's initializer_range, else 0.02)
    uint64_t seed;
    int      n_threads;
    uint64_t max_shard_bytes;
    unsigned writer_flags;
    bool     dry_run;
    struct graft_progress *progress;
};
struct graft_upcycle_params graft_upcycle_default_params(void);

// Layers upcycled and tensors written go to *n_layers / *n_tensors (may be NULL).
int graft_upcycle(const struct graft_model *m, const char *target, const struct graft_upcycle_params *p, int *n_layers, size_t *n_tensors,
                  struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
