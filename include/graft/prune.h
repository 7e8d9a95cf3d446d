// graft — pruning: magnitude (per tensor or one global threshold, exact counts), N:M semi-structured
// sparsity, and Wanda scores from supplied activation statistics. See docs/prune.md.
#ifndef GRAFT_PRUNE_H
#define GRAFT_PRUNE_H

#include <stdbool.h>
#include "model.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_prune_params {
    double       sparsity;        // fraction of each prunable tensor (or of all, with global) zeroed, in [0, 1)
    bool         global;          // one threshold over every prunable tensor (magnitude only)
    int          nm_n, nm_m;      // N:M: keep N of every M consecutive elements of a row (0 = off)
    const struct graft_model *wanda; // statistics: for each weight NAME [out, in], NAME [in] = Σ x_j² (or NULL)
    bool         embeddings;      // also prune the input embedding and lm_head
    const char *const *exclude;   // POSIX extended regexes on tensor names never pruned
    size_t       n_exclude;
    int          n_threads;
    uint64_t     max_shard_bytes;
    unsigned     writer_flags;
    bool         dry_run;
    struct graft_progress *progress;
};
struct graft_prune_params graft_prune_default_params(void);

struct graft_prune_report {
    size_t    n;        // prunable tensors
    char    **names;
    uint64_t *zeros;    // zero elements after pruning
    uint64_t *numel;
    size_t    n_kept;   // tensors copied unchanged
};
void graft_prune_report_free(struct graft_prune_report *r);

int graft_prune(const struct graft_model *m, const char *target, const struct graft_prune_params *p,
                struct graft_prune_report *rep, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
