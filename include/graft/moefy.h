// graft — MoEfication (Zhang et al., "MoEfication: Transformer Feed-forward Layers are Mixtures of
// Experts", 2022): each dense FFN's neurons split into E equal groups that become the experts of a
// Mixtral-layout model, with a router that picks K of them per token.
//
// Groups: balanced k-means (every group I/E neurons) over the neurons' unit-normalised features —
// their gate_proj and up_proj rows side by side, or, with calibration text, their |activation| on
// the calibration tokens (co-activation clustering). Router row e: the mean of group e's gate_proj
// rows, or with calibration the least-squares (ridge) fit of the MLP input to the groups' activation
// norms ‖a_group‖₂ — in both cases multiplied by a small scale s, so that the router's logits stay
// within ±`router_range` (measured on the calibration tokens, else estimated as 4σ of c·(g ⊙ n) for a
// unit-variance n): the softmax then only ranks the experts and gives the K chosen ones weights within
// e^{±2·router_range} of 1/K, and each expert's down_proj is multiplied by K, so the MoE computes
// MoEfication's sum of the selected experts' outputs. With K = E it computes the dense FFN. (F16
// models: the scale is raised until the router's largest entry is 2^-4, so that its entries stay
// normal numbers; the range reached is reported. F8 weights are refused.)
#ifndef GRAFT_MOEFY_H
#define GRAFT_MOEFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "model.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_moefy_params {
    int      experts;        // E ≥ 2, dividing intermediate_size
    int      top_k;          // 1 ≤ K ≤ E
    int      ctx, windows;   // calibration windows (defaults 256 tokens, 32 windows)
    int      max_tokens;     // calibration tokens kept per layer for the clustering and the fit (default 1024)
    int      iters;          // k-means iterations at most (default 50)
    double   router_range;   // largest router logit (default 1e-5)
    uint64_t seed;           // k-means++ seeding
    int      n_threads;
    uint64_t max_shard_bytes;
    unsigned writer_flags;
    bool     dry_run;
};
struct graft_moefy_params graft_moefy_default_params(void);

struct graft_moefy_report {
    int       n_layers, ffn, experts, top_k;
    bool      calibrated;
    uint64_t  tokens;        // calibration tokens used per layer
    uint32_t *expert;        // n_layers × ffn: each neuron's expert
    double   *objective;     // per layer: mean squared distance of the features to their group's mean
    int      *iters;         // per layer: k-means iterations run
    bool     *converged;     // per layer: the last iteration changed nothing
    double   *scale;         // per layer: the router's scale s
    double   *range;         // per layer: the router's logit range after scaling (F16: raised so its entries stay normal)
};
void graft_moefy_report_free(struct graft_moefy_report *r);

// MoEfy `m` (a dense Llama or Mistral model) into `target`. ids: calibration token ids (NULL: cluster
// the weights); bos: the id each window starts with, or −1.
int graft_moefy(const struct graft_model *m, const int32_t *ids, size_t n_ids, int32_t bos, const char *target, const struct graft_moefy_params *p,
                struct graft_moefy_report *rep, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
