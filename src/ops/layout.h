// Tensor layouts of real checkpoints from their config.json (graft synth --like-config): the tensor
// names, shapes and order (module registration order, which decides shard membership) that
// transformers saves for Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3 (text and
// vision–language), Phi-3 and Mixtral configs.
#ifndef GRAFT_OPS_LAYOUT_H
#define GRAFT_OPS_LAYOUT_H
#include <stdint.h>
#include "graft/synth.h"

// How a tensor is drawn: N(0, σ²) (approximately), a norm gain 1 + N(0, 0.1²), or a norm stored as
// an offset from 1 (Gemma: w − 1) N(0, 0.1²).
enum graft__init { GRAFT_INIT_NORMAL, GRAFT_INIT_NORM_WEIGHT, GRAFT_INIT_NORM_OFFSET };

struct graft__spec {
    char              name[160];
    int               n_dims;
    uint64_t          ne[4];
    enum graft__init  kind;
};

// The layout for config.json text `cfg`, with p's shape fields that are > 0 (n_layers, hidden,
// intermediate, n_heads, n_kv_heads, head_dim, vocab, experts) and p->dtype (unless
// GRAFT_DTYPE_COUNT) overriding the config's. On success *specs (graft__free) holds *n tensors,
// *config the config.json to write (the input with the overrides applied; graft__free) and *dtype the
// tensors' dtype. Unknown model types and inconsistent shapes are GRAFT_E_USAGE naming `label`.
int graft__layout_from_config(const char *cfg, const char *label, const struct graft_synth_params *p, struct graft__spec **specs, size_t *n,
                              char **config, enum graft_dtype *dtype, struct graft_err *err);
#endif
