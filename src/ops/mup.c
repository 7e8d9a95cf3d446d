// μP / scaled-parameterization fold (graft reparam --fold mup): a MiniCPM-style checkpoint becomes a
// plain Llama one with the same function.
//
// MiniCPM's forward (MiniCPMForCausalLM, transformers remote code) differs from Llama's by three
// scalars in config.json: the embeddings are multiplied by scale_emb, each residual branch (attention
// output and MLP output) by scale_depth / √num_hidden_layers, and the final hidden state is divided by
// hidden_size / dim_model_base before lm_head (MiniCPMConfig's defaults: 1, 1 and 1). Every one of
// them multiplies a linear map's output, so it folds into that map's weights:
//   embed_tokens' = scale_emb · embed_tokens
//   o_proj' = c · o_proj, down_proj' = c · down_proj (and their biases), c = scale_depth / √L
//   lm_head' = (dim_model_base / hidden_size) · lm_head — for a tied model, of the embedding as it was
// A tied model therefore becomes untied (its two matrices now differ). config.json: LlamaForCausalLM,
// model_type llama, the three scalars and auto_map removed, tie_word_embeddings false.
// Streaming: one tensor per work item, in row blocks, scaled in f32 and rounded once to the tensor's
// dtype (exact up to that rounding: bit-exact logits need f32 weights).
#include <jansson.h>
#include <math.h>
#include <string.h>
#include "graft/convert.h"
#include "graft/reparam.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

struct mt { const struct graft_model_tensor *t; float scale; long id; const char *name; size_t len; }; // name: the output's

struct mjob { const struct graft_model *m; struct mt *ts; size_t n; struct graft_writer *w; unsigned flags; };

static bool ends(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n >= k && !memcmp(s + n - k, suf, k);
}

static int scale_one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct mjob *j = ctx;
    struct mt *x = &j->ts[item];
    const struct graft_tensor_info *t = x->t->info;
    if (x->scale == 1.0f) return graft__ops_copy_tensor(j->w, x->id, j->m, x->t, NULL, err);
    uint64_t blk = 1u << 20, n = t->n_elem;
    float *f = graft__malloc((size_t)(blk < n ? blk : n) * sizeof *f + 4);
    void *enc = graft__malloc((size_t)(blk < n ? blk : n) * 8 + 8);
    int rc = f && enc ? GRAFT_OK : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (uint64_t e0 = 0; !rc && e0 < n; e0 += blk) {
        uint64_t m = n - e0 < blk ? n - e0 : blk, off, len;
        graft_dtype_nbytes(t->dtype, e0, &off);
        graft_dtype_nbytes(t->dtype, m, &len);
        graft_row_to_f32(t->dtype, graft_model_data(j->m, x->t) + off, f, (size_t)m);
        for (uint64_t i = 0; i < m; i++) f[i] *= x->scale;
        rc = graft__ops_encode("reparam --fold mup", x->name, x->len, t->dtype, f, enc, (size_t)m, j->m, x->t, j->flags, err);
        if (!rc) rc = graft_writer_write(j->w, x->id, off, enc, (size_t)len, err);
    }
    graft__free(f), graft__free(enc);
    return rc;
}

// A positive finite number from config.json, or the default when absent.
static int scalar(json_t *c, const char *key, double dflt, double *out, const char *path, struct graft_err *err) {
    json_t *v = json_object_get(c, key);
    if (!v || json_is_null(v)) { *out = dflt; return GRAFT_OK; }
    if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)) || json_number_value(v) > 1e30)
        return graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "config.json: \"%s\" must be a positive number", key);
    *out = json_number_value(v);
    return GRAFT_OK;
}

int graft__fold_mup(const struct graft_model *m, const char *target, const struct graft_reparam_params *p, size_t *n_folds, struct graft_err *err) {
    const char *cj = graft_model_config_json(m), *path = graft_model_path(m);
    if (!cj) return graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "--fold mup needs the model folder's config.json (scale_emb, scale_depth, dim_model_base)");
    json_t *c = json_loads(cj, 0, NULL);
    if (!json_is_object(c)) { json_decref(c); return graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "config.json is not a JSON object"); }
    const char *arch = json_string_value(json_array_get(json_object_get(c, "architectures"), 0)), *mt = json_string_value(json_object_get(c, "model_type"));
    bool minicpm = (arch && !strcmp(arch, "MiniCPMForCausalLM")) || (mt && !strcmp(mt, "minicpm"));
    bool any = json_object_get(c, "scale_emb") || json_object_get(c, "scale_depth") || json_object_get(c, "dim_model_base");
    struct mjob j = {.m = m, .flags = p->writer_flags};
    struct graft_writer *w = NULL;
    int rc = GRAFT_OK;
    long L = graft__json_int(c, "num_hidden_layers", -1), H = graft__json_int(c, "hidden_size", -1);
    double se = 1, sd = 1, dmb = 1;
    if (!minicpm && !any)
        rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "not a μP / MiniCPM-style checkpoint: config.json has no scale_emb, scale_depth or "
                                                               "dim_model_base (architecture %s)", arch ? arch : "(none)");
    else if (!minicpm) // the scalars only mean something to MiniCPM's code: transformers' Llama ignores them
        rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "architecture %s ignores scale_emb / scale_depth / dim_model_base: its logits do not "
                                                               "use them, so there is nothing to fold (only MiniCPMForCausalLM applies them)", arch ? arch : "(none)");
    else if (json_is_false(json_object_get(c, "use_mup")))
        rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "config.json says use_mup: false: the scalars are not applied, nothing to fold");
    else if ((arch && strcmp(arch, "MiniCPMForCausalLM")) || json_object_get(c, "q_lora_rank") ||
             json_object_get(c, "kv_lora_rank") || graft__json_int(c, "num_experts", 0) > 0)
        rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "--fold mup folds MiniCPM's Llama-shaped decoder (MiniCPMForCausalLM); %s "
                                                               "(latent attention or experts) has no Llama equivalent", arch ? arch : "this model");
    else if (L < 1 || L > 100000 || H < 1 || H > (1 << 24))
        rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "config.json: num_hidden_layers and hidden_size must be positive whole numbers");
    if (!rc) rc = scalar(c, "scale_emb", 1, &se, path, err);
    if (!rc) rc = scalar(c, "scale_depth", 1, &sd, path, err);
    if (!rc) rc = scalar(c, "dim_model_base", 1, &dmb, path, err);
    const float fe = (float)se, fr = (float)(sd / sqrt((double)L)), fl = (float)(dmb / (double)H);
    size_t nt = graft_model_n_tensors(m);
    const struct graft_model_tensor *emb = graft_model_find(m, "model.embed_tokens.weight", 25), *head = graft_model_find(m, "lm_head.weight", 14);
    if (!rc && !emb) rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "no model.embed_tokens.weight: not a MiniCPM / Llama checkpoint");
    if (!rc && !(j.ts = graft__calloc(nt + 1, sizeof *j.ts))) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    size_t folds = 0;
    for (size_t i = 0; !rc && i < nt; i++) {
        const struct graft_model_tensor *t = graft_model_tensor(m, i);
        const char *s = t->info->name;
        size_t n = t->info->name_len;
        struct mt *x = &j.ts[j.n++];
        *x = (struct mt){.t = t, .scale = 1.0f, .name = s, .len = n, .id = -1};
        bool branch = !strncmp(s, "model.layers.", 13) && (ends(s, n, ".self_attn.o_proj.weight") || ends(s, n, ".self_attn.o_proj.bias") ||
                                                           ends(s, n, ".mlp.down_proj.weight") || ends(s, n, ".mlp.down_proj.bias"));
        if (t == emb) x->scale = fe;
        else if (t == head) x->scale = fl;
        else if (branch) x->scale = fr;
        if (x->scale != 1.0f && !graft_dtype_is_float_target(t->info->dtype))
            rc = graft_err_set(err, GRAFT_E_FORMAT, path, s, n, "stored as %s: only float16, bfloat16 and float32 weights can be rescaled",
                               graft_dtype_traits(t->info->dtype) ? graft_dtype_traits(t->info->dtype)->name : "?");
        folds += branch;
    }
    if (!rc && !head) // tied: lm_head' = the original embedding scaled by dim_model_base / hidden_size
        j.ts[j.n++] = (struct mt){.t = emb, .scale = fl, .name = "lm_head.weight", .len = 14, .id = -1};
    if (!rc && !folds) rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "no model.layers.N.self_attn.o_proj / mlp.down_proj weights to fold");
    if (!rc && !p->dry_run) {
        bool single = graft__ops_single_file(target);
        rc = graft__ops_writer_open(m, target, 0, p->writer_flags, &w, err);
        j.w = w;
        for (size_t i = 0; !rc && i < j.n; i++) {
            const struct graft_tensor_info *t = j.ts[i].t->info;
            if ((j.ts[i].id = graft_writer_add_tensor(w, j.ts[i].name, j.ts[i].len, t->dtype, t->n_dims, t->ne, err)) < 0) rc = (int)j.ts[i].id;
        }
        if (!rc) rc = graft_writer_layout(w, err);
        if (!rc) rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, j.n, scale_one, &j, NULL, NULL, err);
        if (!rc && !single) {
            json_object_set_new(c, "architectures", json_pack("[s]", "LlamaForCausalLM"));
            json_object_set_new(c, "model_type", json_string("llama"));
            json_object_set_new(c, "tie_word_embeddings", json_false());
            static const char *const gone[] = {"scale_emb", "scale_depth", "dim_model_base", "auto_map"};
            for (size_t k = 0; k < sizeof gone / sizeof gone[0]; k++) json_object_del(c, gone[k]);
            rc = graft__ops_add_json(w, "config.json", c, err);
            if (!rc) rc = graft_writer_copy_tokenizer(w, m, err);
        }
        if (!rc) rc = graft_writer_commit(w, err);
    }
    if (n_folds) *n_folds = folds + 2;
    graft_writer_free(w);
    graft__free(j.ts);
    json_decref(c);
    return rc;
}
