// The merge plan shared by the engine and its helpers (vocabulary remapping): opened models, output
// tensors with their inputs and resolved parameters. Internal to src/merge.
#ifndef GRAFT_MERGE_PLAN_H
#define GRAFT_MERGE_PLAN_H
#include "graft/graft.h"
#include "engine.h"
#include "../config/config.h"

#define GRAFT_MAX_MODULES 8

struct mmodel {
    char               *path;      // resolved (a LoRA reference: "<base>+<adapter>", both resolved)
    const char         *ref;       // as written in the config
    struct graft_model *m;
    bool                borrowed;  // from graft_merge_options.cache: not closed here
    // per module of the config (one when there is no `modules:`), from the tensor names:
    int                 n_layers[GRAFT_MAX_MODULES]; // max layer index + 1 (0 when no layered tensors)
    char               *prefix[GRAFT_MAX_MODULES];   // layer prefix, e.g. "model.layers"
};

struct oin { int model; const struct graft_model_tensor *t; };

// A statistics file (Fisher diagonals, Gram matrices) named in the config.
struct mstats {
    char               *path;      // resolved
    struct graft_model *m;
    bool                borrowed;  // from graft_merge_options.cache
    double              norm2;     // Σ of squares of every value (−1 until computed)
    double              scale;     // 1/N for `graft eval --collect gram` files (Σ x xᵀ over graft_tokens = N), else 1
};

struct otensor {
    char            *name;
    enum graft_dtype dtype;
    int              n_dims;
    uint64_t         ne[GRAFT_MAX_DIMS];
    int              n_in;
    struct oin       in[GRAFT_MAX_INPUTS];
    struct graft_mt  mt;
    long             wid;
    bool             identity; // only the base has this tensor: the output is the base (converted)
    bool             copy;     // identity (or passthrough × 1) in the same dtype: bytes are copied
    bool             remap;    // embedding rows follow the output vocabulary (tokenizer merge)
    float           *pad;      // remap with padding: per input, the mean row used for padding rows
    _Atomic uint64_t n_bad;    // non-finite values written (NaN, ±Inf in the output dtype)
    _Atomic uint64_t n_bad_f32; // … of which were already non-finite in float32 (not from the encoding)
    _Atomic uint64_t first_bad; // the smallest element index among them (UINT64_MAX: none)
    _Atomic uint64_t in_bad[GRAFT_MAX_INPUTS]; // NaN / ±Inf each input holds (as read by the final pass)
    bool             in_counted; // in_bad was filled while the chunks were merged (else counted afterwards)
    bool             rkey_ok;   // graft_merge_options.reuse: rkey identifies what this tensor is merged from
    uint64_t         rkey;
};

struct plan {
    const struct graft_merge_config *cfg;
    const struct graft_method       *method;
    const struct graft_merge_options *opt;
    char                            *cfg_dir;
    char                            *lora_dir;    // where `model+lora` references are applied (beside the output), or NULL
    bool                             lora_made;   // lora_dir exists and must be removed
    struct mmodel                    models[GRAFT_MAX_INPUTS];
    int                              n_models;
    int                              base;        // model index of base_model, or -1
    struct mstats                    stats[GRAFT_MAX_INPUTS];
    int                              n_stats;
    struct otensor                  *t;
    size_t                           n, cap;
    int                              mod_layers[GRAFT_MAX_MODULES]; // output layers per module
    struct { int model, layer; }    *layer_src[GRAFT_MAX_MODULES];  // slices: each output layer's first source and its layer
    char                            *config_out;  // the donor's config.json with rewritten per-layer lists, or NULL
    char                            *chat_template;                // resolved `chat_template`, or NULL
    struct json_t                   *tok_config, *tok_special;     // tokenizer_config.json / special_tokens_map.json to write, or NULL
    int                              donor;       // model whose config/tokenizer the output takes
    struct graft_vplan              *vp;          // output vocabulary (tokenizer_source / tokenizer), or NULL
    uint64_t                         crop_rows;   // without vp: embeddings cropped to this many rows (0: none), config's vocab_size follows
    struct graft_writer             *extra;       // a second output (opcm's state), committed right after the model
    struct graft_err                *err;
};


// Address of element `elem` of input i of o, in its stored dtype.
static inline const uint8_t *graft__plan_input_at(const struct plan *p, const struct otensor *o, int i, uint64_t elem) {
    uint64_t off;
    graft_dtype_nbytes(o->in[i].t->info->dtype, elem, &off);
    return graft_model_data(p->models[o->in[i].model].m, o->in[i].t) + off;
}

// Config error (exit 4) naming the config file.
int  graft__plan_fail(struct plan *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void graft__plan_warn(struct plan *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Write tensor o as its base input (bytes when o->copy, else converted to o->dtype).
int  graft__engine_copy_base(struct plan *p, struct graft_writer *w, struct otensor *o);
// Encode n output floats of o (elements e0…) into enc in o's dtype, counting NaN / ±Inf as stored;
// after all of o is written, graft__engine_check_nonfinite warns (inherited) or fails (made here).
void graft__engine_encode(struct otensor *o, uint64_t e0, const float *f, void *enc, size_t n);
int  graft__engine_check_nonfinite(struct plan *p, struct otensor *o);
// Open (or find, by real path) the model a config reference names.
int  graft__plan_open_model(struct plan *p, const char *ref, int *out);

// ---- vocabulary (vocab.c) ----------------------------------------------------------------------------
// Build p->vp from tokenizer_source / tokenizer: MergeKit's output vocabulary (base, a model, union)
// and each model's permutation new id → old row.
int  graft__vplan_build(struct plan *p);
void graft__vplan_free(struct graft_vplan *vp);
// Check an embedding tensor's inputs against the token sources (rows in range, sources present).
int  graft__vplan_check_tensor(struct plan *p, const struct otensor *o);
// Input i of remapped tensor o, elements [e0, e0+n) of the [rows × H] output-vocabulary matrix, as f32.
// `tmp` holds at least n floats.
void graft__vplan_load(const struct plan *p, const struct otensor *o, int i, uint64_t e0, uint64_t n, float *dst, float *tmp);
// Padding rows: per input, the mean of its first len(vocab) remapped rows (sets o->pad).
int  graft__vplan_pad_rows(struct plan *p, struct otensor *o);
// Tokenizer files of the output (vocabulary, chat template, the rest copied from the source model).
// At plan time, so that a bad chat template or tokenizer_config.json fails before any merge work.
int  graft__plan_tokenizer_prepare(struct plan *p);
void graft__plan_tokenizer_free(struct plan *p);
int  graft__plan_write_tokenizer(struct plan *p, struct graft_writer *w);
// Output embedding rows (the padded vocabulary), also config.json's vocab_size; -1 without a vplan.
long graft__vplan_vocab_size(const struct graft_vplan *vp);
#endif
