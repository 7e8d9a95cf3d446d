// graft — structural reparameterization by tensor names: BatchNorm folded into the preceding
// convolution / linear layer, RepVGG blocks fused into one 3×3 convolution, weight normalisation folded
// into plain weights, μP scalars folded into a plain Llama. Formulas and naming rules: src/ops/reparam.c,
// src/ops/mup.c and docs/quantize-prune.md.
#ifndef GRAFT_REPARAM_H
#define GRAFT_REPARAM_H

#include <stdbool.h>
#include "model.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

// GRAFT_FOLD_MUP: a MiniCPM-style μP checkpoint (scale_emb, scale_depth, dim_model_base in config.json)
// becomes a plain Llama one with the same logits (src/ops/mup.c).
enum graft_fold { GRAFT_FOLD_BN, GRAFT_FOLD_REPVGG, GRAFT_FOLD_WEIGHT_NORM, GRAFT_FOLD_MOBILEONE, GRAFT_FOLD_MUP };

struct graft_reparam_params {
    enum graft_fold fold;
    double   eps;                // BatchNorm ε (not stored in checkpoints; PyTorch's default 1e-5)
    const char *const *pair;     // extra BN→conv naming rules "BN_SUFFIX=CONV_SUFFIX"
    size_t   n_pair;
    int      n_threads;
    unsigned writer_flags;
    bool     dry_run;
};
struct graft_reparam_params graft_reparam_default_params(void);

// Folds made go to *n_folds (may be NULL). Nothing to fold is an error (GRAFT_E_FORMAT).
int graft_reparam(const struct graft_model *m, const char *target, const struct graft_reparam_params *p, size_t *n_folds,
                  struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
