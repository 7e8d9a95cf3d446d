// MergeKit YAML configuration → validated in-memory form (internal to graft).
//
// Schema (MergeKit 0.1.4, shared/methods-mergekit.md §1): merge_method, base_model, models | slices |
// modules, parameters, dtype, out_dtype, tokenizer_source | tokenizer, chat_template. Unknown keys and wrong
// types are errors naming the key, its line and what is allowed (GRAFT_E_CONFIG).
#ifndef GRAFT_CONFIG_H
#define GRAFT_CONFIG_H
#include <stdbool.h>
#include <stddef.h>
#include "graft/status.h"

// A parameter value: a scalar, a gradient (list of numbers interpolated over layers), or a list of
// conditionals {filter, value} where the first matching filter (substring of the tensor name, or
// none / "*") wins.
enum graft_pv_kind { GRAFT_PV_NUMBER, GRAFT_PV_BOOL, GRAFT_PV_STRING, GRAFT_PV_GRADIENT, GRAFT_PV_CONDS };

struct graft_pv {
    enum graft_pv_kind kind;
    double             num;      // NUMBER, BOOL (0/1)
    char              *str;      // STRING
    double            *grad;     // GRADIENT values
    size_t             n_grad;
    struct graft_cond *conds;    // CONDS
    size_t             n_conds;
    int                line;
};

struct graft_cond {
    char           *filter; // NULL or "*" = match everything
    struct graft_pv value;
};

struct graft_param {
    char           *name;
    struct graft_pv value;
};

struct graft_params {
    struct graft_param *p;
    size_t              n;
};

struct graft_source {
    char               *model;   // path as written in the YAML
    bool                has_range;
    int                 range[2];
    struct graft_params params;
    int                 line;
};

struct graft_slice {
    struct graft_source *src;
    size_t               n_src;
    struct graft_params  params;
    int                  line;
};

// A `tokenizer.tokens` entry: where token `token`'s embedding row comes from.
enum graft_tok_src { GRAFT_TOKSRC_AUTO, GRAFT_TOKSRC_MODEL, GRAFT_TOKSRC_MODEL_TOKEN, GRAFT_TOKSRC_ZERO };

struct graft_token_cfg {
    char              *token;
    enum graft_tok_src kind;
    char              *model;     // MODEL, MODEL_TOKEN
    char              *src_token; // MODEL_TOKEN by name, or NULL
    long               src_id;    // MODEL_TOKEN by id (when src_token is NULL)
    bool               force;     // use the source row even in models that have the token
    int                line;
};

// A group of slices: the whole model (top-level `models:` / `slices:`, name NULL) or one entry of
// `modules:` (e.g. text_decoder, vision_tower), which merges just that module's tensors.
struct graft_module {
    char               *name;          // NULL: the whole model
    bool                from_models;   // `models:` (whole module) rather than `slices:`
    struct graft_slice *slices;        // `models:` becomes one slice whose layer ranges are filled later
    size_t              n_slices;
    struct graft_params params;        // modules[*].parameters (between slice and top level)
    int                 line;
};

struct graft_merge_config {
    char               *path;          // config file
    char               *text;          // the YAML as read (copied to mergekit_config.yml)
    char               *merge_method;
    int                 method_line;
    char               *base_model;    // NULL if none
    struct graft_module *modules;      // one unnamed module, or the entries of `modules:` in file order
    size_t              n_modules;
    struct graft_params params;        // top-level `parameters`
    int                 dtype;         // compute dtype (enum graft_dtype) or -1
    int                 out_dtype;     // or -1
    char               *tokenizer_source; // "base", "union", a model, or NULL
    char               *chat_template;
    struct graft_token_cfg *tokens;    // tokenizer.tokens
    size_t              n_tokens;
    long                pad_to_multiple_of; // tokenizer.pad_to_multiple_of, or 0
};

// Parse and validate a config file. Paths stay as written (resolved later against the config's folder).
int  graft_config_load(const char *path, struct graft_merge_config **out, struct graft_err *err);
int  graft_config_parse(const char *text, size_t len, const char *label, struct graft_merge_config **out,
                        struct graft_err *err);
void graft_config_free(struct graft_merge_config *c);

// Find a parameter by name in a list, or NULL.
const struct graft_pv *graft_params_get(const struct graft_params *ps, const char *name);

// Evaluate a parameter value for `tensor` at gradient position t ∈ [0,1] (MergeKit evaluate_setting).
// Returns false when no conditional matches (fall through to the next precedence level).
// Numbers and booleans come back in *num; strings in *str.
bool graft_pv_eval(const struct graft_pv *v, const char *tensor, double t, double *num, const char **str);
// mergekit-moe configs (see src/ops/moe.c).
struct graft_moe_expert {
    char   *model;
    char  **pos, **neg;           // positive / negative prompts
    size_t  n_pos, n_neg;
    double  noise_scale, residual_scale;
    bool    has_noise, has_residual;
    int     line;
};
struct graft_moe_config {
    char   *path, *text;
    char   *base_model, *gate_mode, *architecture;
    int     dtype;                // -1: the base's
    int     experts_per_token;
    struct graft_moe_expert *experts;
    size_t  n_experts;
    struct graft_moe_expert shared; // shared_experts[0] (Qwen2-MoE output) when has_shared
    bool    has_shared;
};
int  graft_moe_config_load(const char *path, struct graft_moe_config **out, struct graft_err *err);
void graft_moe_config_free(struct graft_moe_config *c);

// graft merge-lora configs (src/ops/lora_merge.c): the spec with its strings; adapter and base paths
// made relative to the config's folder.
#include "graft/lora.h"
struct graft_lora_merge_config {
    char   *path;
    char   *base_model, *base_ref;    // resolved path / as written
    char  **adapters;                  // resolved paths
    struct graft_lora_merge_input *inputs;
    size_t  n;
    struct graft_lora_merge_spec spec; // points into the above
};
int  graft_lora_merge_config_load(const char *path, struct graft_lora_merge_config **out, struct graft_err *err);
int  graft_lora_merge_config_parse(const char *text, size_t len, const char *label, struct graft_lora_merge_config **out,
                                   struct graft_err *err);
void graft_lora_merge_config_free(struct graft_lora_merge_config *c);
#endif
