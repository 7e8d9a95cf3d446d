// graft — shrinking a model by dropping whole decoder layers (depth pruning), chosen from the hidden
// states the evaluator computes on calibration text:
//   angular          the block of N consecutive layers whose input and output are closest: the mean over
//                    windows of arccos(cos(h_l, h_{l+N})) / π at the window's last token (Gromov et al.,
//                    "The Unreasonable Ineffectiveness of the Deeper Layers", 2024)
//   block-influence  each layer's BI = 1 − mean over every token of cos(h_i, h_{i+1}); the N layers of
//                    lowest BI (Men et al., ShortGPT, 2024)
//   ppl              greedy: N rounds, each dropping the layer whose removal (with those already gone)
//                    leaves the lowest mean NLL on the calibration windows (at most `budget` evaluations)
// or named layers. The output keeps every other tensor, renumbers the layers and updates config.json
// (num_hidden_layers, and per-layer lists such as layer_types).
#ifndef GRAFT_SHRINK_H
#define GRAFT_SHRINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "model.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum graft_depth_metric { GRAFT_DEPTH_ANGULAR, GRAFT_DEPTH_BLOCK_INFLUENCE, GRAFT_DEPTH_PPL };

struct graft_shrink_params {
    int      drop;              // layers to drop (with a metric)
    enum graft_depth_metric metric;
    const int *layers;          // or these layers (then no calibration is needed)
    size_t   n_layers;
    int      ctx;               // calibration window, tokens (default 256; BOS first when bos ≥ 0)
    int      windows;           // at most this many windows (default 32)
    int      budget;            // ppl: at most this many model evaluations (0: no limit)
    int      n_threads;
    uint64_t max_shard_bytes;
    unsigned writer_flags;
    bool     dry_run;
};
struct graft_shrink_params graft_shrink_default_params(void);

struct graft_shrink_report {
    int     n_layers;           // the model's
    int    *dropped;            // ascending
    int     n_dropped;
    double *values;             // angular: per start layer (n_layers − drop + 1 values); block influence: per layer;
                                // ppl: the mean NLL with each single layer removed (the first round), per layer
    int     n_values;
    int     windows;            // calibration windows used
};
void graft_shrink_report_free(struct graft_shrink_report *r);

// Drop layers of `m` (a Llama-family model the evaluator runs) into `target`. ids: the calibration
// text's token ids (NULL with explicit layers); bos: the id each window starts with, or −1.
int graft_shrink_depth(const struct graft_model *m, const int32_t *ids, size_t n_ids, int32_t bos, const char *target,
                       const struct graft_shrink_params *p, struct graft_shrink_report *rep, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
