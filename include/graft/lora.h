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

// ---- merging adapters in adapter space (graft merge-lora; PEFT's add_weighted_adapter) -------------
// Each module's merged update is written as new factors; no out × in matrix is formed except by the
// *_svd types that prune elements of ΔWᵢ (ties_svd, dare_linear_svd, dare_ties_svd,
// magnitude_prune_svd), which need them one module at a time per thread. docs/lora.md gives each formula.
enum graft_lora_combination {
    GRAFT_LORA_COMB_SVD,                 // Σ wᵢ·sᵢ·Bᵢ·Aᵢ, truncated to rank (QR of the stacked factors + SVD of the core)
    GRAFT_LORA_COMB_LINEAR,              // A = Σ ±√|wᵢsᵢ|·Aᵢ, B = Σ √|wᵢsᵢ|·Bᵢ (PEFT's; equal ranks)
    GRAFT_LORA_COMB_CAT,                 // A = [wᵢsᵢ·Aᵢ], B = [Bᵢ]: exactly Σ wᵢ·sᵢ·Bᵢ·Aᵢ, rank Σ rᵢ
    GRAFT_LORA_COMB_TIES,                // TIES on the A and on the B factors (PEFT's; equal ranks)
    GRAFT_LORA_COMB_DARE_LINEAR,
    GRAFT_LORA_COMB_DARE_TIES,
    GRAFT_LORA_COMB_MAGNITUDE_PRUNE,
    GRAFT_LORA_COMB_TIES_SVD,            // TIES on the ΔWᵢ = sᵢ·Bᵢ·Aᵢ, then truncated SVD
    GRAFT_LORA_COMB_DARE_LINEAR_SVD,
    GRAFT_LORA_COMB_DARE_TIES_SVD,
    GRAFT_LORA_COMB_MAGNITUDE_PRUNE_SVD,
    GRAFT_LORA_COMB_COUNT
};
const char *graft_lora_combination_name(enum graft_lora_combination c); // "svd", "dare_ties", …
bool        graft_lora_combination_parse(const char *name, enum graft_lora_combination *out);

struct graft_lora_merge_input {
    const char *adapter; // PEFT adapter folder (or its adapter_model.safetensors / .bin)
    double      weight;  // wᵢ (PEFT's weights; may be negative)
    double      density; // fraction kept by the pruning types, in (0, 1]; < 0: the spec's density
};
struct graft_lora_merge_spec {
    const char *base;        // base model (optional): every module is checked against it; needed only to
                             // combine whole tensors (modules_to_save) that adapters replace differently
    const char *base_ref;    // base_model_name_or_path when the first adapter's config has none (may be NULL)
    const struct graft_lora_merge_input *inputs;
    size_t      n_inputs;
    enum graft_lora_combination combination; // default svd (PEFT's)
    int         rank;        // *_svd: output rank; 0 → the largest input rank (PEFT's default)
    double      density;     // pruning types: default density (< 0: none given — required then)
    bool        sign_frequency;   // majority_sign_method: frequency (default total)
    double      svd_clamp;   // *_svd: clamp the factors to ±(this quantile of their entries); 0 = off
    bool        peft_svd_scaling; // *_svd: weight each ΔWᵢ by wᵢ·sᵢ on top of its own sᵢ, as PEFT does
};
struct graft_lora_merge_spec graft_lora_merge_default_spec(void);

struct graft_lora_merge_params {
    uint64_t     seed;        // DARE's masks (graft's counter-based generator: independent of --threads)
    int          n_threads;
    unsigned     writer_flags;
    bool         dry_run;
    struct graft_progress *progress;
};
struct graft_lora_merge_params graft_lora_merge_default_params(void);

// Merge the spec's adapters into the PEFT adapter folder `target`. Fills `rep` (may be NULL): one entry
// per output module; rel_error = ‖ΔW − B·A‖_F / ‖ΔW‖_F of the truncation (0 for the exact types).
int graft_lora_merge(const struct graft_lora_merge_spec *s, const char *target, const struct graft_lora_merge_params *p,
                     struct graft_lora_report *rep, struct graft_err *err);
// The same from a merge-lora YAML config (docs/lora.md): base_model, adapters: [{adapter, weight,
// density}], combination, rank, density, majority_sign_method, svd_clamp, peft_svd_scaling. Paths are
// relative to the config's folder. Config errors are GRAFT_E_CONFIG naming the line.
int graft_lora_merge_file(const char *config_path, const char *target, const struct graft_lora_merge_params *p,
                          struct graft_lora_report *rep, struct graft_err *err);
// `graft merge CONFIG --lora-space`: a MergeKit linear or task_arithmetic config whose models are
// BASE+ADAPTER references of one base (and the base itself) becomes one adapter: the exact weighted sum
// of the updates (combination cat), with linear's normalisation and task_arithmetic's λ applied.
int graft_lora_merge_merge_config(const char *config_path, const char *target, const struct graft_lora_merge_params *p,
                                  struct graft_lora_report *rep, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
