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
//
// Width pruning (graft_shrink_width) keeps the most important units by Minitron's activation-based
// importance (Muralidharan et al., "Compact Language Models via Pruning and Knowledge Distillation",
// 2024), measured by the evaluator on calibration text:
//   FFN neuron         |down_proj's input| (the gated activation), per layer
//   attention head     the 2-norm of the head's output (o_proj's input), per layer; with
//                      grouped-query attention a key/value group and its query heads go or stay
//                      together (group importance = the sum of its heads')
//   embedding channel  |RMSNorm output|, summed over every norm in the layers
// each averaged over a window's tokens, then aggregated over windows by their root mean square (the
// paper's best: mean over the sequence, 2-norm over the batch).
// Each layer keeps the same number of neurons and groups (config.json holds one size); channels are
// kept model-wide. Every affected tensor is sliced consistently (q/k/v rows and o_proj columns per
// head, gate/up rows and down_proj columns per neuron, channels of the embeddings, norms, lm_head and
// every projection), fused Phi-3 projections included. With fewer channels each RMSNorm's gain is
// multiplied by √(hidden / kept) and rms_norm_eps by hidden / kept, so the pruned model computes what
// the original computes with the removed units' weights zeroed — exactly in f32 weights (bf16/f16
// round the rescaled gains once; Qwen3's per-head q/k norms, which share rms_norm_eps, see the
// larger ε).
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
    int      intermediate;      // width: FFN neurons to keep per layer (0: all)
    int      heads;             // width: attention (query) heads to keep per layer, a multiple of heads / kv heads (0: all)
    int      hidden;            // width: embedding channels to keep (0: all)
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
    // width pruning
    int      ffn, heads, kv_heads, hidden;            // the model's sizes
    int      ffn_kept, heads_kept, kv_kept, hidden_kept;
    double  *ffn_imp;           // n_layers × ffn neuron importances (NULL when not measured; see above)
    double  *head_imp;          // n_layers × heads
    double  *hidden_imp;        // hidden
    uint32_t *ffn_keep;         // n_layers × ffn_kept neurons kept, ascending (NULL: all kept)
    uint32_t *group_keep;       // n_layers × kv_kept key/value groups kept, ascending (NULL: all)
    uint32_t *hidden_keep;      // hidden_kept channels kept, ascending (NULL: all)
    uint64_t params, params_kept; // elements of the input's and of the output's tensors
    uint64_t tokens;            // calibration tokens the importances average over
};
void graft_shrink_report_free(struct graft_shrink_report *r);

// Drop layers of `m` (a Llama-family model the evaluator runs) into `target`. ids: the calibration
// text's token ids (NULL with explicit layers); bos: the id each window starts with, or −1.
int graft_shrink_depth(const struct graft_model *m, const int32_t *ids, size_t n_ids, int32_t bos, const char *target,
                       const struct graft_shrink_params *p, struct graft_shrink_report *rep, struct graft_err *err);

// Width pruning of `m` (a dense Llama-family model the evaluator runs) into `target` to
// p->intermediate / p->heads / p->hidden (any of them), ranked on the calibration ids.
int graft_shrink_width(const struct graft_model *m, const int32_t *ids, size_t n_ids, int32_t bos, const char *target,
                       const struct graft_shrink_params *p, struct graft_shrink_report *rep, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
