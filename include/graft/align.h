// graft — permutation alignment (Git Re-Basin's weight matching, Ainsworth et al. 2023): permute model
// B's MLP neurons and attention heads so that its weights best match model A's, without changing what
// B computes. Then a linear merge of A and B averages corresponding units instead of unrelated ones.
//
// Per decoder layer (Llama, Mistral, Qwen2/3, Gemma 2/3 layouts):
//   MLP: S[i][j] = ⟨gate_A[i], gate_B[j]⟩ + ⟨up_A[i], up_B[j]⟩ + ⟨down_A[:, i], down_B[:, j]⟩ over the
//        intermediate neurons; the permutation maximising Σ S[i][π(i)] (Hungarian method) puts B's
//        neuron π(i) at position i of gate/up rows and down columns.
//   attention: key/value head groups are matched as whole units (a group = one k/v head and the
//        num_heads/num_kv_heads query heads that read it); a pair of groups scores its k and v rows plus
//        the best assignment of their query heads (q rows and o_proj columns), and the groups are then
//        assigned by the same method; q/k/v rows (and biases) and o_proj columns move per head.
// With `residual` (default), the residual stream's channels are permuted too — embedding columns,
// every RMSNorm gain, the input columns of q/k/v/gate/up, the output rows of o_proj/down (and their
// biases), lm_head's columns — which RMSNorm and every linear map carry through unchanged. Its score
// sums ⟨A's channel i, B's channel j⟩ over all those tensors (with the layers' permutations applied),
// so the layer and residual assignments are solved in turn (coordinate descent) until the residual
// permutation stops changing; every step maximises its part, so the total never decreases.
// Everything else is copied; the output's tensors are B's, reordered bit for bit.
#ifndef GRAFT_ALIGN_H
#define GRAFT_ALIGN_H

#include <stdbool.h>
#include "model.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_align_params {
    bool     mlp;             // permute MLP neurons (default true)
    bool     heads;           // permute attention heads / groups (default true)
    bool     residual;        // permute the residual stream too, by coordinate descent (default true)
    int      max_iters;       // coordinate-descent rounds at most (default 20)
    int      n_threads;       // layers aligned side by side
    uint64_t max_shard_bytes;
    unsigned writer_flags;
    bool     dry_run;         // compute and report, write nothing
};
struct graft_align_params graft_align_default_params(void);

// Per layer: the cosine similarity between A's and B's weights of each permuted part, before and after.
struct graft_align_layer {
    double mlp_before, mlp_after;     // over gate, up and down together
    double attn_before, attn_after;   // over q, k, v and o together
    uint64_t mlp_moved, heads_moved;  // units not left in place
};
struct graft_align_report {
    struct graft_align_layer *layers;
    int n_layers;
    int iterations;           // coordinate-descent rounds run (1 without the residual permutation)
    uint64_t residual_moved;  // residual channels not left in place
};
void graft_align_report_free(struct graft_align_report *r);

// Write B permuted to match A into `target`. Models must share the architecture and every shape.
int graft_align(const struct graft_model *a, const struct graft_model *b, const char *target, const struct graft_align_params *p,
                struct graft_align_report *rep, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
