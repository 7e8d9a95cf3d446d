// graft — LoRA adapters: extract one from a fine-tune (truncated SVD of each weight delta, as
// mergekit-extract-lora does) and apply one to a base model (W + s·B·A, as PEFT's merge_and_unload).
//
// Adapter folder (PEFT layout): adapter_config.json + adapter_model.safetensors with tensors
//   base_model.model.<module>.lora_A.weight  [r, in]     base_model.model.<module>.lora_B.weight  [out, r]
//   base_model.model.<module>.lora_embedding_A [r, vocab] base_model.model.<module>.lora_embedding_B [dim, r]
//   base_model.model.<module>.lora_B.bias  [out]          (bias delta, scaled like the weight's)
//   base_model.model.<module>.weight / .bias              (modules_to_save: replaces the base tensor)
// where <module> is the base tensor name without ".weight". Scale s = alpha / r (use_rslora:
// alpha / √r), alpha and r per module from alpha_pattern / rank_pattern or lora_alpha / r.
#ifndef GRAFT_LORA_H
#define GRAFT_LORA_H

#include <stdbool.h>
#include "model.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_lora_extract_params {
    int          max_rank;            // rank cap (default 128, MergeKit's --max-rank)
    double       energy;              // > 0: the fewest components holding this fraction of ‖Δ‖_F² (capped by max_rank)
    double       sv_epsilon;          // > 0: drop singular values ≤ this (MergeKit's --sv-epsilon)
    bool         distribute_scale;    // A = √S·Vᵀ, B = U·√S (default) instead of A = S·Vᵀ, B = U
    bool         embed_lora;          // LoRA for the input embedding and lm_head (default: saved whole)
    bool         skip_undecomposable; // do not save 1-D / ≥3-D tensors (norms…) whole
    const char *const *include;       // POSIX extended regexes on module names: when given, only matches
    size_t       n_include;
    const char *const *exclude;       // … never these (wins over include)
    size_t       n_exclude;
    const char *const *save_module;   // modules saved whole (module name, or its last components)
    size_t       n_save_module;
    bool         randomized;          // randomized range finder (--svd randomized) instead of the exact Gram route;
                                      // needs a fixed rank (no energy / sv_epsilon)
    int          oversample;          // its extra test vectors (default 10)
    int          power_iters;         // its subspace iterations (default 2)
    uint64_t     seed;                // its Gaussian test matrix, per module (default 0)
    const char  *base_ref;            // base_model_name_or_path in adapter_config.json
    int          n_threads;
    unsigned     writer_flags;        // enum graft_writer_flags
    bool         dry_run;             // plan and report, write nothing
    struct graft_progress *progress;  // optional
    const volatile int *cancel;       // set nonzero by another thread: stop, write nothing, GRAFT_E_CANCELLED
};
struct graft_lora_extract_params graft_lora_extract_default_params(void);

enum graft_lora_kind { GRAFT_LORA_LOW_RANK, GRAFT_LORA_EMBEDDING, GRAFT_LORA_WHOLE };

struct graft_lora_module {
    char                *name;       // module (tensor name without ".weight")
    enum graft_lora_kind kind;
    uint64_t             rows, cols; // the weight's shape (2-D view; embeddings: vocab × dim)
    int                  rank;       // kept components (0 for WHOLE; before the data is read: the cap)
    double               rel_error;  // ‖Δ − B·A‖_F / ‖Δ‖_F (0 when Δ = 0; −1 until computed)
};
struct graft_lora_report {
    struct graft_lora_module *mods;
    size_t                    n;
    size_t                    n_skipped; // modules left out (excluded, or undecomposable with skip)
};
void graft_lora_report_free(struct graft_lora_report *r);

// Extract the adapter that turns `base` into `ft` into folder `target`. Fills `rep` (may be NULL).
int graft_lora_extract(const struct graft_model *base, const struct graft_model *ft, const char *target,
                       const struct graft_lora_extract_params *p, struct graft_lora_report *rep, struct graft_err *err);

struct graft_lora_apply_params {
    double   scale;           // extra factor on every module's alpha/r (default 1)
    int      n_threads;
    uint64_t max_shard_bytes; // 0 → default
    unsigned writer_flags;
    bool     copy_side_files; // config.json and tokenizer files of the base (default true)
    bool     dry_run;         // validate and report, write nothing
    struct graft_progress *progress;
    // NaN / ±Inf in an output tensor that neither its base tensor nor the adapter's factors hold (an
    // overflow of W + s·B·A, or of the output dtype) fail the run (GRAFT_E_NONFINITE, nothing written)
    // unless this is set: then they are written, with a warning on stderr.
    bool     allow_nonfinite;
};
struct graft_lora_apply_params graft_lora_apply_default_params(void);

// Apply the PEFT adapter folder (or adapter_model.safetensors beside adapter_config.json) to `base`,
// writing a full model into `target`. Counts of modules changed go to *n_lora and *n_whole (may be NULL).
int graft_lora_apply(const struct graft_model *base, const char *adapter, const char *target,
                     const struct graft_lora_apply_params *p, size_t *n_lora, size_t *n_whole, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
