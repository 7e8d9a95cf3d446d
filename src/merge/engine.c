// Merge engine: config → plan (every output tensor with its inputs and resolved parameters, the whole
// output layout) → execution (statistic passes and an apply pass per tensor, in fixed chunks on a
// worker pool) → atomic HF folder.
//
// Architecture handling is driven by tensor names: the first ".N." in a name splits it into a layer
// prefix, a layer index and a per-layer name, so any HF decoder layout (Llama, Mistral, Qwen2, Gemma,
// Phi-3, GPT-2, GPT-NeoX, Mixtral…) plans the same way. Non-layer tensors are "pre" weights when they
// are embeddings (taken from the first slice's models) and "post" weights otherwise (last slice).
#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "graft/graft.h"
#include "engine.h"
#include "plan.h"
#include "../config/config.h"
#include "../io/io-impl.h"
#include "graft/lora.h"

#define DEFAULT_CHUNK (1u << 16)

int graft_mparam_index(const struct graft_method *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return i;
    return 0; // unreachable for correct methods; tests cover every method's parameter names
}

struct graft_merge_options graft_merge_default_options(void) {
    return (struct graft_merge_options){.n_threads = 1, .copy_tokenizer = true, .write_model_card = true};
}

int graft__plan_fail(struct plan *p, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return graft_err_set(p->err, GRAFT_E_CONFIG, p->cfg->path, NULL, 0, "%s", msg);
}

void graft__plan_warn(struct plan *p, const char *fmt, ...) {
    if (p->opt->dist && p->opt->dist->rank > 0) return; // every rank plans the same: rank 0 says it once
    FILE *f = p->opt->log ? p->opt->log : stderr;
    va_list ap;
    va_start(ap, fmt);
    fputs("graft: warning: ", f);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    va_end(ap);
}

// ---- models ------------------------------------------------------------------------------------------

// Split "model.layers.12.mlp.up_proj.weight" at the first ".N." into prefix, index and rest.
static bool split_layer(const char *name, size_t len, size_t *pre_len, long *idx, const char **rest) {
    for (size_t i = 0; i + 2 < len; i++) {
        if (name[i] != '.' || name[i + 1] < '0' || name[i + 1] > '9') continue;
        size_t j = i + 1;
        long v = 0;
        while (j < len && name[j] >= '0' && name[j] <= '9' && v < 1000000) v = v * 10 + (name[j] - '0'), j++;
        if (j < len && name[j] == '.') {
            *pre_len = i, *idx = v, *rest = name + j + 1;
            return true;
        }
    }
    return false;
}

static bool is_embed_name(const char *n) {
    return strstr(n, "embed_tokens") || strstr(n, "lm_head") || strstr(n, "wte.") || strstr(n, "embed_in") ||
           strstr(n, "embed_out") || strstr(n, "word_embeddings") || strstr(n, "tok_embeddings");
}

static bool is_pre_name(const char *n) {
    return strstr(n, "embed_tokens") || strstr(n, "wte.") || strstr(n, "wpe.") || strstr(n, "embed_in") ||
           strstr(n, "word_embeddings") || strstr(n, "tok_embeddings") || strstr(n, "embeddings.");
}

// ---- modules ---------------------------------------------------------------------------------------
// `modules:` splits a multi-module model (VLM, encoder–decoder) by tensor name. MergeKit's modular
// architectures name their modules as below; a tensor belongs to the module whose marker appears as
// whole dotted components furthest left in its name (the longest marker on a tie), so
// "vision_tower.vision_model.encoder.layers.0…" is vision_tower, "visual.merger.mlp.0.weight" is the
// projector and "encoder.block.0…" is encoder. A module name not in the table is its own marker.
// Tensors with no marker ("model.layers.0…" of Qwen2-VL, a top-level "lm_head.weight") belong to the
// first listed of text_decoder, language_model, shared, decoder.
// What graft knows of each module name: its markers and the config.json keys counting its layers.
struct module_kind {
    const char *module;
    const char *marks[4];
    const char *layer_keys[3];
};
static const struct module_kind module_kinds[] = {
    {"text_decoder", {"language_model", NULL}, {"text_config.num_hidden_layers", "num_hidden_layers", NULL}},
    {"language_model", {"language_model", NULL}, {"text_config.num_hidden_layers", "num_hidden_layers", NULL}},
    {"vision_tower", {"vision_tower", "vision_model", "visual", NULL}, {"vision_config.num_hidden_layers", "vision_config.depth", NULL}},
    {"vision_model", {"vision_model", "vision_tower", "visual", NULL}, {"vision_config.num_hidden_layers", "vision_config.depth", NULL}},
    {"multi_modal_projector", {"multi_modal_projector", "visual.merger", "mm_projector", NULL}, {NULL}},
    {"encoder", {"encoder", NULL}, {"num_layers", "encoder_layers", NULL}},
    {"decoder", {"decoder", NULL}, {"num_decoder_layers", "decoder_layers", NULL}},
    {"shared", {"shared", NULL}, {NULL}},
};
#define N_MODULE_KINDS (sizeof module_kinds / sizeof module_kinds[0])

// Does `mark` occur in name at position i as whole components?
static bool mark_at(const char *name, size_t len, size_t i, const char *mark) {
    size_t n = strlen(mark);
    return i + n <= len && !memcmp(name + i, mark, n) && (i + n == len || name[i + n] == '.');
}

static const struct module_kind *kind_of(const char *module) {
    for (size_t k = 0; k < N_MODULE_KINDS; k++)
        if (!strcmp(module_kinds[k].module, module)) return &module_kinds[k];
    return NULL;
}

// The config module (index) tensor `name` belongs to; -1 when it belongs to a module the config does
// not list (*unlisted: that module's name, or NULL when no module claims it). Always 0 without `modules:`.
static int module_of(const struct plan *p, const char *name, size_t len, const char **unlisted) {
    const struct graft_merge_config *c = p->cfg;
    if (unlisted) *unlisted = NULL;
    if (!c->modules[0].name) return 0;
    for (size_t i = 0; i < len; i++) {
        if (i && name[i - 1] != '.') continue;
        int best = -1;
        size_t best_len = 0;
        const char *best_unlisted = NULL;
        for (size_t m = 0; m < c->n_modules; m++) { // listed modules first: they win ties with unlisted ones
            const struct module_kind *mk = kind_of(c->modules[m].name);
            const char *self[2] = {c->modules[m].name, NULL};
            for (const char *const *k = mk ? mk->marks : self; *k; k++)
                if (strlen(*k) > best_len && mark_at(name, len, i, *k)) best = (int)m, best_len = strlen(*k);
        }
        for (size_t k = 0; k < N_MODULE_KINDS; k++)
            for (const char *const *mk = module_kinds[k].marks; *mk; mk++)
                if (strlen(*mk) > best_len && mark_at(name, len, i, *mk)) best = -1, best_len = strlen(*mk), best_unlisted = module_kinds[k].module;
        if (best >= 0) return best;
        if (best_unlisted) {
            if (unlisted) *unlisted = best_unlisted;
            return -1;
        }
    }
    static const char *const fallback[] = {"text_decoder", "language_model", "shared", "decoder"};
    for (size_t f = 0; f < sizeof fallback / sizeof fallback[0]; f++)
        for (size_t m = 0; m < c->n_modules; m++)
            if (!strcmp(c->modules[m].name, fallback[f])) return (int)m;
    return -1;
}

// A path of the config resolved to a real path (relative to the config's folder), or a config error.
// A path of the config (relative to its folder) made real; `what` names it in the error ("model", or
// "statistics file", which gets no Hugging Face hint).
static int resolve_path(struct plan *p, const char *ref, const char *what, char *real) {
    char *path = ref[0] == '/' ? graft__strdup(ref) : graft__asprintf("%s/%s", p->cfg_dir, ref);
    if (!path) return graft_err_set(p->err, GRAFT_E_NOMEM, ref, NULL, 0, "out of memory");
    struct stat sb;
    if (stat(path, &sb) != 0 || !realpath(path, real)) {
        int rc;
        if (!strcmp(what, "model") && ref[0] != '/' && ref[0] != '.' && strchr(ref, '/') && !strchr(strchr(ref, '/') + 1, '/'))
            rc = graft__plan_fail(p, "model '%s' is not a local folder (looked in %s); graft works offline on local folders: download the "
                          "Hugging Face repo first and give its path", ref, path);
        else
            rc = graft__plan_fail(p, "%s '%s' not found (looked in %s)", what, ref, path);
        graft__free(path);
        return rc;
    }
    graft__free(path);
    return GRAFT_OK;
}

static int resolve_ref(struct plan *p, const char *ref, char *real) { return resolve_path(p, ref, "model", real); }

// `base+adapter` (MergeKit's LoRA reference): the adapter is applied into a folder under p->lora_dir
// (beside the output, removed when the merge ends) and that model is opened. A dry run checks that the
// adapter fits and plans with the base, whose tensors have the same names and shapes.
static int open_lora_model(struct plan *p, const char *base_real, const char *ad_real, struct graft_model **out) {
    struct graft_model *base = NULL;
    int rc = graft_model_open(base_real, &base, p->err);
    if (rc) return rc;
    struct graft_lora_apply_params ap = graft_lora_apply_default_params();
    ap.n_threads = p->opt->n_threads > 0 ? p->opt->n_threads : 1;
    ap.dry_run = p->opt->dry_run;
    char *target = NULL;
    if (!ap.dry_run) {
        if (!p->lora_made) {
            if (mkdir(p->lora_dir, 0755) != 0) {
                rc = graft_err_set(p->err, GRAFT_E_IO, p->lora_dir, NULL, 0, "cannot create a folder for LoRA-applied models: %s", strerror(errno));
                graft_model_close(base);
                return rc;
            }
            p->lora_made = true;
        }
        target = graft__asprintf("%s/%d", p->lora_dir, p->n_models);
        if (!target) { graft_model_close(base); return graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }
    }
    rc = graft_lora_apply(base, ad_real, ap.dry_run ? "" : target, &ap, NULL, NULL, p->err);
    if (rc || ap.dry_run) {
        if (!rc) *out = base;
        else graft_model_close(base);
        graft__free(target);
        return rc;
    }
    graft_model_close(base);
    rc = graft_model_open(target, out, p->err);
    graft__free(target);
    return rc;
}

int graft__plan_open_model(struct plan *p, const char *ref, int *out) {
    char real[PATH_MAX], ad_real[PATH_MAX] = "";
    const char *plus = strchr(ref, '+');
    int rc;
    if (plus) { // base+adapter
        if (strchr(plus + 1, '+')) return graft__plan_fail(p, "'%s': a model reference holds at most one '+' (model+lora)", ref);
        char *b = graft__strndup(ref, (size_t)(plus - ref));
        if (!b) return graft_err_set(p->err, GRAFT_E_NOMEM, ref, NULL, 0, "out of memory");
        rc = !*b || !plus[1] ? graft__plan_fail(p, "'%s': expected model+lora", ref) : resolve_ref(p, b, real);
        graft__free(b);
        if (!rc) rc = resolve_ref(p, plus + 1, ad_real);
        if (rc) return rc;
    } else if ((rc = resolve_ref(p, ref, real))) {
        return rc;
    }
    char key[2 * PATH_MAX + 2];
    snprintf(key, sizeof key, "%s%s%s", real, *ad_real ? "+" : "", ad_real);
    for (int i = 0; i < p->n_models; i++)
        if (!strcmp(p->models[i].path, key)) { *out = i; return GRAFT_OK; }
    if (p->n_models == GRAFT_MAX_INPUTS) return graft__plan_fail(p, "more than %d models", GRAFT_MAX_INPUTS);
    struct mmodel *mm = &p->models[p->n_models];
    memset(mm, 0, sizeof *mm);
    if (!(mm->path = graft__strdup(key))) return graft_err_set(p->err, GRAFT_E_NOMEM, ref, NULL, 0, "out of memory");
    mm->ref = ref;
    mm->borrowed = !*ad_real && p->opt->cache;
    rc = *ad_real ? open_lora_model(p, real, ad_real, &mm->m) : mm->borrowed ? graft_model_cache_open(p->opt->cache, real, &mm->m, p->err)
                                                                           : graft_model_open(real, &mm->m, p->err);
    if (rc) { graft__free(mm->path); return rc; }
    p->n_models++;
    // A quantized checkpoint (bitsandbytes, GPTQ, AWQ, FP8 with block scales, graft quantize) stores
    // codes whose meaning depends on per-model scales: merging them as numbers is wrong
    if (strcmp(p->method->name, "passthrough")) {
        json_t *cfg = graft_model_config_json(mm->m) ? json_loads(graft_model_config_json(mm->m), 0, NULL) : NULL;
        json_t *q = json_object_get(cfg, "quantization_config");
        if (!q) q = json_object_get(json_object_get(cfg, "text_config"), "quantization_config");
        const char *qm = json_string_value(json_object_get(q, "quant_method"));
        char msg[160];
        snprintf(msg, sizeof msg, "%s%s%s", qm ? " (quant_method \"" : "", qm ? qm : "", qm ? "\")" : "");
        json_decref(cfg);
        if (q)
            return graft__plan_fail(p, "'%s' is a quantized checkpoint: config.json has quantization_config%s; %s merges float weights: dequantize "
                                    "it first (`graft dequantize` reads graft's own formats)", ref, msg, p->method->name);
    }
    // Layer structure of each module from the names.
    for (size_t i = 0; i < graft_model_n_tensors(mm->m); i++) {
        const struct graft_tensor_info *t = graft_model_tensor(mm->m, i)->info;
        size_t pl;
        long idx;
        const char *rest;
        int mi = module_of(p, t->name, t->name_len, NULL);
        if (mi < 0 || !split_layer(t->name, t->name_len, &pl, &idx, &rest)) continue;
        if (!mm->prefix[mi]) {
            if (!(mm->prefix[mi] = graft__strndup(t->name, pl))) return graft_err_set(p->err, GRAFT_E_NOMEM, ref, NULL, 0, "out of memory");
        } else if (strlen(mm->prefix[mi]) != pl || strncmp(mm->prefix[mi], t->name, pl)) {
            continue; // a second layered part of the module (e.g. a vision tower): its tensors count as non-layer weights
        }
        if (idx + 1 > mm->n_layers[mi]) mm->n_layers[mi] = (int)idx + 1;
    }
    *out = p->n_models - 1;
    return GRAFT_OK;
}

// Is `name` a layer tensor of model mm in module mi (under the module's layer prefix)?
static bool in_layers(const struct mmodel *mm, int mi, const char *name, size_t len) {
    size_t pl;
    long idx;
    const char *rest;
    return mm->prefix[mi] && split_layer(name, len, &pl, &idx, &rest) && pl == strlen(mm->prefix[mi]) && !strncmp(name, mm->prefix[mi], pl);
}

// ---- parameters --------------------------------------------------------------------------------------

// Precedence: source > slice > module > top level > the method's default (global parameters skip the source).
static int resolve_params(struct plan *p, struct otensor *o, const struct graft_module *g, const struct graft_slice *sl,
                          const struct graft_source *const *srcs, const char *const *in_names, double t) {
    const struct graft_method *m = p->method;
    struct graft_mt *mt = &o->mt;
    for (int k = 0; k < m->n_params; k++) {
        const struct graft_mparam *mp = &m->params[k];
        if (!mp->per_model) {
            // global: slice > top level > default, evaluated on the output name
            const struct graft_pv *v;
            double x = mp->def;
            const char *s = NULL;
            bool found = false;
            if (sl && (v = graft_params_get(&sl->params, mp->name))) found = graft_pv_eval(v, o->name, t, &x, &s);
            if (!found && (v = graft_params_get(&g->params, mp->name))) found = graft_pv_eval(v, o->name, t, &x, &s);
            if (!found && (v = graft_params_get(&p->cfg->params, mp->name))) found = graft_pv_eval(v, o->name, t, &x, &s);
            if (s) return graft__plan_fail(p, "parameter '%s' must be a number, got '%s'", mp->name, s);
            if (!found && mp->required) return graft__plan_fail(p, "missing required parameter '%s' for tensor %s (merge_method %s)", mp->name, o->name, m->name);
            if (!(fabs(x) <= FLT_MAX))
                return graft__plan_fail(p, "parameter '%s' is %g for tensor %s: not a finite float32 number (the merge computes in float32)", mp->name, x, o->name);
            mt->gp[k] = x;
            continue;
        }
        for (int i = 0; i < o->n_in; i++) {
            const struct graft_pv *v;
            double x = mp->def;
            const char *s = NULL;
            bool found = false;
            if (srcs[i] && (v = graft_params_get(&srcs[i]->params, mp->name))) found = graft_pv_eval(v, in_names[i], t, &x, &s);
            if (!found && sl && (v = graft_params_get(&sl->params, mp->name))) found = graft_pv_eval(v, in_names[i], t, &x, &s);
            if (!found && (v = graft_params_get(&g->params, mp->name))) found = graft_pv_eval(v, in_names[i], t, &x, &s);
            if (!found && (v = graft_params_get(&p->cfg->params, mp->name))) found = graft_pv_eval(v, in_names[i], t, &x, &s);
            if (s) return graft__plan_fail(p, "parameter '%s' must be a number, got '%s'", mp->name, s);
            if (!found && mp->required && i != mt->base)
                return graft__plan_fail(p, "missing required parameter '%s' for model '%s', tensor %s", mp->name, p->models[o->in[i].model].ref, o->name);
            if (!found && mp->required && i == mt->base && m->base == GRAFT_BASE_IGNORED)
                return graft__plan_fail(p, "base_model '%s' takes part in this %s merge but has no '%s': list it under models with one, or drop base_model",
                             p->models[o->in[i].model].ref, m->name, mp->name);
            if (!(fabs(x) <= FLT_MAX))
                return graft__plan_fail(p, "parameter '%s' of model '%s' is %g for tensor %s: not a finite float32 number (the merge computes in float32)",
                                        mp->name, p->models[o->in[i].model].ref, x, o->name);
            mt->pm[i][k] = x;
        }
        if (!strcmp(mp->name, "weight")) { // weights are summed (normalisation, rescaling): the sum must fit too
            double sw = 0;
            for (int i = 0; i < o->n_in; i++) sw += fabs(mt->pm[i][k]);
            if (!(sw <= FLT_MAX))
                return graft__plan_fail(p, "the weights of tensor %s sum to %g in magnitude: beyond float32 (the merge computes in float32)", o->name, sw);
        }
    }
    return GRAFT_OK;
}

// ---- planning ----------------------------------------------------------------------------------------

static struct otensor *new_tensor(struct plan *p, const char *name) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        struct otensor *t = graft__realloc(p->t, cap * sizeof *t);
        if (!t) return NULL;
        p->t = t, p->cap = cap;
    }
    struct otensor *o = &p->t[p->n];
    memset(o, 0, sizeof *o);
    atomic_init(&o->first_bad, UINT64_MAX);
    if (!(o->name = graft__strdup(name))) return NULL;
    p->n++;
    return o;
}

static const char *shape_text(char *buf, size_t cap, int n_dims, const uint64_t *ne) {
    size_t pos = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < n_dims && pos < cap; d++) pos += (size_t)snprintf(buf + pos, cap - pos, d ? ", %llu" : "%llu", (unsigned long long)ne[d]);
    if (pos < cap) snprintf(buf + pos, cap - pos, "]");
    return buf;
}

// Add one output tensor whose input i is tensor in_names[i] of model models[i] (NULL entries: absent).
// ---- statistics files (Fisher, Gram) -----------------------------------------------------------------

static int open_stats(struct plan *p, const char *ref, int *out) {
    char real[PATH_MAX];
    int rc = resolve_path(p, ref, "statistics file", real);
    if (rc) return rc;
    for (int i = 0; i < p->n_stats; i++)
        if (!strcmp(p->stats[i].path, real)) { *out = i; return GRAFT_OK; }
    if (p->n_stats == GRAFT_MAX_INPUTS) return graft__plan_fail(p, "more than %d statistics files", GRAFT_MAX_INPUTS);
    struct mstats *ms = &p->stats[p->n_stats];
    memset(ms, 0, sizeof *ms);
    ms->norm2 = -1;
    if (!(ms->path = graft__strdup(real))) return graft_err_set(p->err, GRAFT_E_NOMEM, ref, NULL, 0, "out of memory");
    ms->borrowed = p->opt->cache != NULL;
    rc = ms->borrowed ? graft_model_cache_open(p->opt->cache, real, &ms->m, p->err) : graft_model_open(real, &ms->m, p->err);
    if (rc) { graft__free(ms->path); return rc; }
    ms->scale = 1;
    const struct graft_st *sh = graft_model_n_shards(ms->m) ? graft_model_shard(ms->m, 0) : NULL;
    const char *kind = sh ? graft_st_meta_get(sh, "graft_statistics") : NULL, *ntok = sh ? graft_st_meta_get(sh, "graft_tokens") : NULL;
    uint64_t nt;
    if (kind && !strcmp(kind, "gram") && ntok && graft_parse_u64(ntok, UINT64_MAX, &nt) && nt) ms->scale = 1.0 / (double)nt;
    *out = p->n_stats++;
    return GRAFT_OK;
}

// Σ of squares of every floating value of a statistics file (Fisher normalisation), read once.
static int stats_norm2(struct plan *p, struct mstats *ms) {
    if (ms->norm2 >= 0) return GRAFT_OK;
    float buf[4096];
    double s = 0;
    for (size_t i = 0; i < graft_model_n_tensors(ms->m); i++) {
        const struct graft_model_tensor *t = graft_model_tensor(ms->m, i);
        if (!graft_dtype_traits(t->info->dtype)->is_float) continue;
        const uint8_t *d = graft_model_data(ms->m, t);
        size_t es = (size_t)graft_dtype_traits(t->info->dtype)->bits / 8;
        for (uint64_t e = 0; e < t->info->n_elem; e += 4096) {
            size_t n = t->info->n_elem - e < 4096 ? (size_t)(t->info->n_elem - e) : 4096;
            graft_row_to_f32(t->info->dtype, d + e * es, buf, n);
            for (size_t k = 0; k < n; k++) s += (double)buf[k] * buf[k];
        }
    }
    if (!isfinite(s)) return graft__plan_fail(p, "statistics file %s holds non-finite values", ms->path);
    ms->norm2 = s;
    return GRAFT_OK;
}

static const char *shape_text(char *buf, size_t cap, int n_dims, const uint64_t *ne);

// Find each input's statistics for tensor o (methods with m->stats).
static int plan_stats(struct plan *p, struct otensor *o, const struct graft_source *const *srcs, const char *const *in_names) {
    const struct graft_method *m = p->method;
    struct graft_mt *mt = &o->mt;
    int have = 0, need = 0, missing = -1;
    const char *missing_file = NULL;
    for (int i = 0; i < o->n_in; i++) {
        mt->stat[i] = NULL;
        if (i == mt->base && m->base != GRAFT_BASE_IGNORED) continue;
        const struct graft_tensor_info *x = o->in[i].t->info;
        if (!graft_dtype_traits(x->dtype)->is_float) continue;
        const struct graft_pv *v = srcs[i] ? graft_params_get(&srcs[i]->params, m->stats) : NULL;
        if (!v || v->kind != GRAFT_PV_STRING)
            return graft__plan_fail(p, "model '%s' needs its %s statistics for merge_method %s: give it `parameters: {%s: PATH}` (a safetensors "
                                       "file or folder; docs/merge.md)", p->models[o->in[i].model].ref, m->stats, m->name, m->stats);
        int si = 0, rc = open_stats(p, v->str, &si);
        if (rc) return rc;
        struct mstats *ms = &p->stats[si];
        if (m->stats_kind == GRAFT_STATS_GRAM && x->n_dims != 2) continue; // Gram matrices belong to linear weights only
        need++;
        const struct graft_model_tensor *t = graft_model_find(ms->m, in_names[i], strlen(in_names[i]));
        if (!t) { if (missing < 0) missing = i, missing_file = ms->path; continue; }
        uint64_t want[2] = {m->stats_kind == GRAFT_STATS_GRAM ? x->ne[1] : 0, x->ne[1]};
        bool ok = graft_dtype_traits(t->info->dtype)->is_float && t->info->n_dims == (m->stats_kind == GRAFT_STATS_GRAM ? 2 : x->n_dims);
        for (int d = 0; ok && d < t->info->n_dims; d++) ok = t->info->ne[d] == (m->stats_kind == GRAFT_STATS_GRAM ? want[d] : x->ne[d]);
        if (!ok) {
            char a[96], b[96];
            return graft__plan_fail(p, "statistics tensor %s in %s is %s %s; %s needs a floating tensor of shape %s", in_names[i], ms->path,
                                    graft_dtype_traits(t->info->dtype)->name, shape_text(a, sizeof a, t->info->n_dims, t->info->ne), m->name,
                                    m->stats_kind == GRAFT_STATS_GRAM ? shape_text(b, sizeof b, 2, want) : shape_text(b, sizeof b, x->n_dims, x->ne));
        }
        mt->stat[i] = graft_model_data(ms->m, t), mt->stat_dt[i] = t->info->dtype;
        if (m->stats_kind == GRAFT_STATS_SAME && (rc = stats_norm2(p, ms))) return rc;
        mt->stat_norm2[i] = ms->norm2, mt->stat_scale[i] = ms->scale;
        have++;
    }
    // Fisher needs every merged tensor; Gram matrices may be absent for all models (that tensor is averaged)
    if (missing >= 0 && (have || m->stats_kind == GRAFT_STATS_SAME))
        return graft__plan_fail(p, "statistics file %s has no tensor %s (model '%s'); every model's %s file must cover the same tensors", missing_file,
                                in_names[missing], p->models[o->in[missing].model].ref, m->stats);
    return GRAFT_OK;
}

// Buffers some checkpoints of one architecture store and others do not: RoPE's inv_freq, GPT-2's causal
// masks, position ids.
static bool optional_buffer(const char *name) {
    size_t n = strlen(name);
    return graft__ends_with(name, n, "inv_freq") || graft__ends_with(name, n, ".attn.bias") || graft__ends_with(name, n, ".attn.masked_bias") ||
           graft__ends_with(name, n, "position_ids");
}

// The input embeddings a missing lm_head.weight is tied to (after the same prefix, e.g. "language_model.").
static const char *const tied_embeds[] = {"model.embed_tokens.weight", "transformer.wte.weight", "model.embed_in.weight",
                                          "model.language_model.embed_tokens.weight"};

static int plan_tensor(struct plan *p, const char *out_name, int n_src, const int *models, const char *const *in_names,
                       const struct graft_module *g, const struct graft_slice *sl, const struct graft_source *const *srcs, double t) {
    struct oin in[GRAFT_MAX_INPUTS];
    const char *names[GRAFT_MAX_INPUTS], *asked[GRAFT_MAX_INPUTS]; // the tensor read; the name asked for (filters match it)
    const struct graft_source *src[GRAFT_MAX_INPUTS];
    char tied_buf[GRAFT_MAX_INPUTS][256];
    int n_in = 0, base = -1, missing = -1;
    bool embed = is_embed_name(out_name);
    for (int i = 0; i < n_src; i++) {
        const struct graft_model_tensor *mt = graft_model_find(p->models[models[i]].m, in_names[i], strlen(in_names[i]));
        const char *used = in_names[i];
        size_t nl = strlen(in_names[i]);
        if (!mt && nl >= 14 && !strcmp(in_names[i] + nl - 14, "lm_head.weight")) { // tied: the embedding stands in for lm_head
            for (size_t k = 0; k < sizeof tied_embeds / sizeof tied_embeds[0] && !mt; k++) { // under the same prefix ("language_model.")
                snprintf(tied_buf[i], sizeof tied_buf[i], "%.*s%s", (int)(nl - 14), in_names[i], tied_embeds[k]);
                if ((mt = graft_model_find(p->models[models[i]].m, tied_buf[i], strlen(tied_buf[i])))) used = tied_buf[i];
            }
        }
        if (!mt) {
            if (missing < 0) missing = models[i];
            continue;
        }
        in[n_in] = (struct oin){models[i], mt};
        names[n_in] = used, asked[n_in] = in_names[i];
        src[n_in] = srcs ? srcs[i] : NULL;
        if (models[i] == p->base && base < 0) base = n_in;
        n_in++;
    }
    if (n_in == 0) return GRAFT_OK; // optional weight nobody has
    // a tensor some models lack: another architecture, or a damaged checkpoint (MergeKit fails on a
    // missing weight); buffers that checkpoints keep or not are taken from those that have them
    if (missing >= 0 && !p->opt->allow_crimes && !graft__ends_with(out_name, strlen(out_name), "lm_head.weight") && !optional_buffer(out_name))
        return graft__plan_fail(p, "tensor %s: '%s' has no such tensor, other models have it: are they the same architecture? "
                                "(--allow-crimes merges what each model has)", out_name, p->models[missing].ref);
    // lm_head only through tied fallbacks everywhere: under the donor's tied config the output stays
    // tied (no lm_head written: transformers would tie it again, as it does with MergeKit's); under an
    // untied donor's (slices ending in tied models) it is written from their embeddings
    if (strstr(out_name, "lm_head.weight")) {
        bool real = false;
        for (int i = 0; i < n_in; i++) real |= strstr(names[i], "lm_head") != NULL;
        if (!real && !graft_model_find(p->models[p->donor].m, out_name, strlen(out_name))) return GRAFT_OK;
    }
    // Shapes: equal, except embeddings' row counts.
    int ref = base >= 0 ? base : 0;
    const struct graft_tensor_info *r = in[ref].t->info;
    uint64_t rows = r->n_dims ? r->ne[0] : 1;
    bool rows_differ = false;
    int keep = 0;
    for (int i = 0; i < n_in; i++) {
        const struct graft_tensor_info *x = in[i].t->info;
        bool same = x->n_dims == r->n_dims;
        for (int d = 0; same && d < r->n_dims; d++) same = x->ne[d] == r->ne[d] || (d == 0 && embed && r->n_dims == 2);
        if (!same) {
            char a[96], b[96];
            if (p->method->base == GRAFT_BASE_REQUIRED && i != base && p->method->max_models != 1 && !embed) {
                graft__plan_warn(p, "%s: model '%s' has shape %s, base has %s: left out of this tensor", out_name, p->models[in[i].model].ref,
                      shape_text(a, sizeof a, x->n_dims, x->ne), shape_text(b, sizeof b, r->n_dims, r->ne));
                continue;
            }
            return graft__plan_fail(p, "tensor %s: shape %s in '%s' does not match %s in '%s'", out_name, shape_text(a, sizeof a, x->n_dims, x->ne),
                         p->models[in[i].model].ref, shape_text(b, sizeof b, r->n_dims, r->ne), p->models[in[ref].model].ref);
        }
        // cropped to the rows every model has, as MergeKit's rectify_embed_sizes (its task-vector methods
        // crop to the base's rows and fail when a model has fewer: the same crop then)
        if (embed && r->n_dims == 2 && x->ne[0] < rows && !p->vp) rows = x->ne[0];
        rows_differ |= embed && r->n_dims == 2 && x->ne[0] != r->ne[0];
        in[keep] = in[i], names[keep] = names[i], asked[keep] = asked[i], src[keep] = src[i];
        if (i == base) base = keep;
        keep++;
    }
    n_in = keep;
    struct otensor *o = new_tensor(p, out_name);
    if (!o) return graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    o->n_in = n_in;
    memcpy(o->in, in, sizeof in[0] * (size_t)n_in);
    o->n_dims = r->n_dims;
    memcpy(o->ne, r->ne, sizeof o->ne);
    if (embed && r->n_dims == 2 && p->vp) { // rows follow the output vocabulary
        o->remap = true;
        o->ne[0] = (uint64_t)graft__vplan_vocab_size(p->vp);
    } else if (embed && r->n_dims == 2 && rows_differ) {
        graft__plan_warn(p, "%s: embedding row counts differ between models; using the first %llu rows (config.json's vocab_size follows; "
                            "a copied tokenizer may hold ids past them: tokenizer_source builds a vocabulary that fits)", out_name, (unsigned long long)rows);
        o->ne[0] = rows;
        if (!p->crop_rows || rows < p->crop_rows) p->crop_rows = rows;
    }
    struct graft_mt *mt = &o->mt;
    mt->m = p->method, mt->name = o->name, mt->n_in = n_in, mt->base = base, mt->is_embed = embed;
    mt->numel = 1;
    for (int d = 0; d < o->n_dims; d++) mt->numel *= o->ne[d];
    mt->row_len = o->n_dims ? o->ne[o->n_dims - 1] : 1;
    mt->dim0 = o->n_dims && o->ne[0] ? o->ne[0] : 1;
    mt->n_dims = o->n_dims;
    if (!mt->row_len) mt->row_len = 1;
    for (int i = 0; i < n_in; i++) {
        mt->model_id[i] = in[i].model;
        mt->key[i] = graft_rng_key(p->opt->seed, (uint64_t)in[i].model, o->name, strlen(o->name));
    }
    int others = n_in - (base >= 0 && p->method->base != GRAFT_BASE_IGNORED ? 1 : 0);
    if (p->method->base == GRAFT_BASE_REQUIRED && base < 0)
        return graft__plan_fail(p, "tensor %s: the base model has no such tensor, and %s needs it", out_name, p->method->name);
    if (others < p->method->min_models || (p->method->max_models >= 0 && others > p->method->max_models)) {
        if (others == 0 && base >= 0) { // only the base has it: carried over unchanged below
        } else if (p->method->max_models >= 0 && p->method->min_models == p->method->max_models)
            return graft__plan_fail(p, "merge_method %s takes exactly %d model%s besides the base; tensor %s has %d", p->method->name,
                         p->method->min_models, p->method->min_models == 1 ? "" : "s", out_name, others);
        else if (others < p->method->min_models)
            return graft__plan_fail(p, "merge_method %s needs at least %d models besides the base; tensor %s has %d", p->method->name,
                         p->method->min_models, out_name, others);
        else
            return graft__plan_fail(p, "merge_method %s takes at most %d models; tensor %s has %d", p->method->name, p->method->max_models, out_name, others);
    }
    // per-model filters see lm_head.weight where a tied embedding stands in for it, as in MergeKit
    int rc = resolve_params(p, o, g, sl, src, asked, t);
    if (rc) return rc;
    if (p->method->stats && (rc = plan_stats(p, o, src, names))) return rc;
    if (o->remap && (rc = graft__vplan_check_tensor(p, o))) return rc;
    if (p->method->validate && (rc = p->method->validate(mt, p->err))) {
        if (p->err->code == GRAFT_E_CONFIG && !strstr(p->err->msg, p->cfg->path)) graft__err_prefix(p->err, p->cfg->path, NULL, 0);
        return rc;
    }
    // Output dtype: out_dtype, else dtype, else the reference input's.
    o->dtype = p->cfg->out_dtype >= 0 ? (enum graft_dtype)p->cfg->out_dtype
             : p->cfg->dtype >= 0   ? (enum graft_dtype)p->cfg->dtype
                                    : r->dtype;
    if (!graft_dtype_traits(r->dtype)->is_float) o->dtype = r->dtype;
    // A tensor only the base has (with a method that needs the base) is the base; a passthrough with
    // scale 1 is its input. Both are byte copies when the dtype and size do not change.
    int lone = base >= 0 ? base : 0;
    o->identity = base >= 0 && others == 0 && p->method->base != GRAFT_BASE_IGNORED;
    bool unscaled = !strcmp(p->method->name, "passthrough") && PM(mt, 0, "scale") == 1.0;
    o->copy = (o->identity || unscaled) && !o->remap && o->dtype == in[lone].t->info->dtype && mt->numel == in[lone].t->info->n_elem;
    // Integer and bool tensors (position ids, attention masks, quantized codes) are never computed on:
    // the same bytes in every model are copied; anything else is refused
    if (!graft_dtype_traits(r->dtype)->is_float && !o->copy) {
        const uint8_t *a = graft_model_data(p->models[in[lone].model].m, in[lone].t);
        for (int i = 0; i < n_in; i++) {
            const struct graft_tensor_info *x = in[i].t->info;
            if (x->dtype == r->dtype && x->n_bytes == r->n_bytes && !o->remap && mt->numel == r->n_elem &&
                !memcmp(graft_model_data(p->models[in[i].model].m, in[i].t), a, r->n_bytes))
                continue;
            return graft__plan_fail(p, "tensor %s is stored as %s and differs between '%s' and '%s' (or is cropped): integer tensors (quantized "
                                    "weights?) are not merged; dequantize the models first", out_name, graft_dtype_traits(r->dtype)->name,
                                    p->models[in[lone].model].ref, p->models[in[i].model].ref);
        }
        o->copy = o->dtype == r->dtype;
    }
    return GRAFT_OK;
}

// The non-layer tensors of module mi, pre or post, in the sources' tensor order.
// Tensors outside the layers, before them (pre) or after, from the first n_src sources of slice sl.
static int plan_loose(struct plan *p, int mi, const struct graft_slice *sl, const int *models, bool pre, int n_src) {
    const struct graft_source *srcs[GRAFT_MAX_INPUTS];
    for (int i = 0; i < n_src; i++) srcs[i] = &sl->src[i];
    for (int s = 0; s < n_src; s++) {
        const struct mmodel *mm = &p->models[models[s]];
        for (size_t k = 0; k < graft_model_n_tensors(mm->m); k++) {
            const struct graft_tensor_info *ti = graft_model_tensor(mm->m, k)->info;
            if (module_of(p, ti->name, ti->name_len, NULL) != mi || in_layers(mm, mi, ti->name, ti->name_len) || is_pre_name(ti->name) != pre)
                continue;
            bool done = false; // planned already (from an earlier source of this slice)
            for (size_t j = 0; j < p->n && !done; j++) done = !strcmp(p->t[j].name, ti->name);
            if (done) continue;
            const char *names[GRAFT_MAX_INPUTS];
            for (int i = 0; i < n_src; i++) names[i] = ti->name;
            int rc = plan_tensor(p, ti->name, n_src, models, names, &p->cfg->modules[mi], sl, srcs, 0.0);
            if (rc) return rc;
        }
    }
    // Sources that all tie their head leave no lm_head to plan above; the output still needs one when its
    // config is an untied donor's (slices ending in tied models)
    if (!pre) {
        const char *en = NULL; // the module's input embedding, and its name's prefix length
        size_t plen = 0;
        for (size_t j = 0; j < p->n; j++) {
            size_t nl = strlen(p->t[j].name);
            if (graft__ends_with(p->t[j].name, nl, "lm_head.weight")) return GRAFT_OK;
            for (size_t k = 0; k < sizeof tied_embeds / sizeof tied_embeds[0] && !en; k++)
                if (graft__ends_with(p->t[j].name, nl, tied_embeds[k]) && module_of(p, p->t[j].name, nl, NULL) == mi)
                    en = p->t[j].name, plen = nl - strlen(tied_embeds[k]);
        }
        char head[256];
        if (!en || plen + 15 > sizeof head) return GRAFT_OK;
        snprintf(head, sizeof head, "%.*slm_head.weight", (int)plen, en);
        if (!graft_model_find(p->models[p->donor].m, head, strlen(head))) return GRAFT_OK;
        const char *names[GRAFT_MAX_INPUTS];
        for (int i = 0; i < n_src; i++) names[i] = head;
        return plan_tensor(p, head, n_src, models, names, &p->cfg->modules[mi], sl, srcs, 0.0);
    }
    return GRAFT_OK;
}

static int plan_layers(struct plan *p, int mi, const struct graft_slice *sl, const int *models) {
    int n_src = (int)sl->n_src, L = sl->src[0].range[1] - sl->src[0].range[0];
    const struct graft_source *srcs[GRAFT_MAX_INPUTS];
    for (int i = 0; i < n_src; i++) srcs[i] = &sl->src[i];
    const char *out_prefix = p->models[models[0]].prefix[mi];
    for (int k = 0; k < L; k++, p->mod_layers[mi]++) {
        double t = L == 1 ? 1.0 : (double)k / (double)(L - 1);
        void *nl = graft__realloc(p->layer_src[mi], (size_t)(p->mod_layers[mi] + 1) * sizeof *p->layer_src[mi]);
        if (!nl) return graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
        p->layer_src[mi] = nl;
        p->layer_src[mi][p->mod_layers[mi]].model = models[0], p->layer_src[mi][p->mod_layers[mi]].layer = sl->src[0].range[0] + k;
        // per-layer names: union over the sources, in the first source's order
        for (int s = 0; s < n_src; s++) {
            const struct mmodel *mm = &p->models[models[s]];
            long in_layer = sl->src[s].range[0] + k;
            bool seen = false;
            for (size_t x = 0; x < graft_model_n_tensors(mm->m); x++) {
                const struct graft_tensor_info *ti = graft_model_tensor(mm->m, x)->info;
                size_t pl;
                long idx;
                const char *rest;
                if (!in_layers(mm, mi, ti->name, ti->name_len) || !split_layer(ti->name, ti->name_len, &pl, &idx, &rest) || idx != in_layer) continue;
                seen = true;
                char out_name[1024];
                snprintf(out_name, sizeof out_name, "%s.%d.%s", out_prefix, p->mod_layers[mi], rest);
                bool done = false;
                for (size_t j = p->n; j-- > 0 && !done;) done = !strcmp(p->t[j].name, out_name);
                if (done) continue;
                char in_buf[GRAFT_MAX_INPUTS][1024];
                const char *names[GRAFT_MAX_INPUTS];
                for (int i = 0; i < n_src; i++) {
                    snprintf(in_buf[i], sizeof in_buf[i], "%s.%d.%s", p->models[models[i]].prefix[mi] ? p->models[models[i]].prefix[mi] : "",
                             sl->src[i].range[0] + k, rest);
                    names[i] = in_buf[i];
                }
                int rc = plan_tensor(p, out_name, n_src, models, names, &p->cfg->modules[mi], sl, srcs, t);
                if (rc) return rc;
            }
            // (the layer count comes from the highest index: a gap would be written as a layer of nothing)
            if (!seen) return graft__plan_fail(p, "'%s' has no tensors for layer %ld: is the checkpoint complete?", mm->ref, in_layer);
        }
    }
    return GRAFT_OK;
}

// One module's slices: normalise `models:` (whole layer range, the base appended when not listed),
// check the ranges, then plan its pre weights, layers and post weights.
static int plan_module(struct plan *p, int mi, int **idx) {
    struct graft_module *g = &p->cfg->modules[mi];
    const char *what = g->name ? g->name : "the model";
    struct graft_slice *sl0 = &g->slices[0];
    int rc;
    if (g->from_models) {
        bool base_listed = false;
        for (size_t i = 0; i < sl0->n_src; i++) base_listed |= idx[0][i] == p->base;
        struct graft_source extra = {0};
        if (p->base >= 0 && !base_listed) { // MergeKit appends an unlisted base as a source without parameters
            extra.model = p->cfg->base_model;
            idx[0][sl0->n_src] = p->base;
        }
        int L = -1;
        for (size_t i = 0; i < sl0->n_src + (extra.model ? 1 : 0); i++) {
            struct graft_source *src = i < sl0->n_src ? &sl0->src[i] : &extra;
            const struct mmodel *mm = &p->models[idx[0][i]];
            if (L >= 0 && mm->n_layers[mi] != L)
                return graft__plan_fail(p, "models have different numbers of layers in %s (%d in '%s', %d in '%s'); use slices to choose layer ranges",
                                        what, L, p->models[idx[0][0]].ref, mm->n_layers[mi], mm->ref);
            L = mm->n_layers[mi];
            src->range[0] = 0, src->range[1] = mm->n_layers[mi], src->has_range = true;
        }
        if (extra.model) { // the config now owns a copy of the base reference as the extra source
            struct graft_source *ns = graft__realloc(sl0->src, (sl0->n_src + 1) * sizeof *sl0->src);
            if (ns) sl0->src = ns;
            if (!ns || !(extra.model = graft__strdup(p->cfg->base_model))) return graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
            sl0->src[sl0->n_src++] = extra;
        }
    } else {
        for (size_t s = 0; s < g->n_slices; s++)
            for (size_t i = 0; i < g->slices[s].n_src; i++) {
                const struct graft_source *src = &g->slices[s].src[i];
                const struct mmodel *mm = &p->models[idx[s][i]];
                if (src->range[1] > mm->n_layers[mi])
                    return graft__plan_fail(p, "line %d: layer_range [%d, %d] is past the %d layers of '%s'%s%s", src->line, src->range[0], src->range[1],
                                            mm->n_layers[mi], src->model, g->name ? " in module " : "", g->name ? g->name : "");
            }
        if (p->method->base == GRAFT_BASE_REQUIRED)
            for (size_t s = 0; s < g->n_slices; s++) {
                bool has = false;
                for (size_t i = 0; i < g->slices[s].n_src; i++) has |= idx[s][i] == p->base;
                if (!has) return graft__plan_fail(p, "line %d: base_model '%s' must be one of this slice's sources", g->slices[s].line, p->cfg->base_model);
            }
    }
    const struct mmodel *first = &p->models[idx[0][0]];
    for (size_t s = 0; s < g->n_slices; s++)
        for (size_t i = 0; i < g->slices[s].n_src; i++) {
            const struct mmodel *mm = &p->models[idx[s][i]];
            if (mm->n_layers[mi] && first->n_layers[mi] && strcmp(mm->prefix[mi], first->prefix[mi]))
                return graft__plan_fail(p, "'%s' names its layers '%s.N' but '%s' uses '%s.N'", mm->ref, mm->prefix[mi], first->ref, first->prefix[mi]);
        }
    for (size_t s = 0; s < g->n_slices; s++) // (the base appended above included: the planner's arrays hold that many)
        if (g->slices[s].n_src > GRAFT_MAX_INPUTS)
            return graft__plan_fail(p, "line %d: %zu sources in one slice (at most %d)", g->slices[s].line, g->slices[s].n_src, GRAFT_MAX_INPUTS);
    size_t n0 = p->n;
    if ((rc = plan_loose(p, mi, sl0, idx[0], true, (int)sl0->n_src))) return rc;
    for (size_t s = 0; s < g->n_slices; s++)
        if ((rc = plan_layers(p, mi, &g->slices[s], idx[s]))) return rc;
    // MergeKit pairs the last slice's sources with the first slice's count of weight names (zip): only
    // the first that many merge the tensors after the layers (final norm, lm_head)
    const struct graft_slice *sll = &g->slices[g->n_slices - 1];
    int n_post = sll->n_src < sl0->n_src ? (int)sll->n_src : (int)sl0->n_src;
    if (n_post < (int)sll->n_src)
        graft__plan_warn(p, "line %d: the tensors after the layers merge only the first %d of this last slice's %zu sources, as MergeKit "
                            "does (its first slice has %zu)", sll->line, n_post, sll->n_src, sl0->n_src);
    if ((rc = plan_loose(p, mi, sll, idx[g->n_slices - 1], false, n_post))) return rc;
    if (g->name && p->n == n0)
        return graft__plan_fail(p, "line %d: module '%s' matches no tensor of its models (graft finds a module by the name components of "
                                "its tensors: text_decoder ← language_model, vision_tower ← vision_tower/vision_model/visual, "
                                "multi_modal_projector ← multi_modal_projector/visual.merger, other names ← themselves)", g->line, g->name);
    return GRAFT_OK;
}

// One entry of a model's layer_types (in obj = its config or text_config), or what transformers makes
// of a config without the list: Gemma 2 / 3 slide every layer but each pattern-th, Qwen2 / 3 (with
// use_sliding_window) from max_window_layers on, others attend fully. `positional` (NULL: any): set to
// whether the layers' kinds depend on their position (so a list must be written for slices).
static const char *layer_type_of(const json_t *root, const char *sub, long layer, bool *positional) {
    const json_t *obj = sub ? json_object_get(root, sub) : root, *types = json_object_get(obj, "layer_types");
    bool pos = true;
    const char *t = NULL;
    const char *arch = json_string_value(json_array_get(json_object_get(root, "architectures"), 0));
    if (json_is_array(types)) t = json_string_value(json_array_get(types, (size_t)layer));
    else if (!json_object_get(obj, "num_hidden_layers")) pos = false; // not a layer stack's config (a VLM's top level)
    else if (arch && (!strncmp(arch, "Gemma2", 6) || !strncmp(arch, "Gemma3", 6))) {
        json_int_t pat = json_integer_value(json_object_get(obj, "sliding_window_pattern"));
        if (pat <= 0) pat = !strncmp(arch, "Gemma2", 6) ? 2 : 6;
        t = (layer + 1) % pat ? "sliding_attention" : "full_attention";
    } else if (json_is_true(json_object_get(obj, "use_sliding_window")) && !json_is_null(json_object_get(obj, "sliding_window"))) {
        // (Qwen2Config's defaults: sliding_window 4096, max_window_layers 28)
        json_int_t mwl = json_is_integer(json_object_get(obj, "max_window_layers")) ? json_integer_value(json_object_get(obj, "max_window_layers")) : 28;
        t = layer >= mwl ? "sliding_attention" : "full_attention";
    } else pos = false, t = "full_attention";
    if (positional) *positional = pos;
    return t;
}

// Slices renumber the layers: a per-layer list in the donor's config.json (layer_types; for Gemma 2 /
// 3 the positional sliding pattern, made explicit) is rebuilt from each output layer's source layer.
// transformers refuses a layer_types of another length, and a positional pattern would silently put
// the sliding windows on other layers.
static int plan_layer_types(struct plan *p) {
    const char *text = graft_model_config_json(p->models[p->donor].m);
    json_t *root = text ? json_loads(text, 0, NULL) : NULL, *cfgs[GRAFT_MAX_INPUTS] = {0}; // each source's config, parsed once
    bool changed = false;
    int rc = GRAFT_OK;
    for (size_t m = 0; root && m < p->cfg->n_modules && !rc; m++) {
        const struct graft_module *g = &p->cfg->modules[m];
        if (g->from_models || !p->mod_layers[m]) continue;
        const char *subs[2] = {NULL, "text_config"}; // the whole model: both; a text module: text_config
        for (int s = g->name ? 1 : 0; s < 2 && !rc; s++) {
            if (g->name && strcmp(g->name, "text_decoder") && strcmp(g->name, "language_model")) break;
            json_t *obj = subs[s] ? json_object_get(root, subs[s]) : root;
            bool positional = false;
            if (!json_is_object(obj) || !layer_type_of(root, subs[s], 0, &positional) || !positional) continue;
            json_t *types = json_array();
            if (!types) { rc = graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); break; }
            for (int j = 0; j < p->mod_layers[m] && !rc; j++) {
                int sm = p->layer_src[m][j].model;
                if (!cfgs[sm] && graft_model_config_json(p->models[sm].m)) cfgs[sm] = json_loads(graft_model_config_json(p->models[sm].m), 0, NULL);
                const char *t = layer_type_of(cfgs[sm], subs[s], p->layer_src[m][j].layer, NULL);
                if (t) json_array_append_new(types, json_string(t));
                else rc = graft__plan_fail(p, "'%s' has no %slayer_types entry for its layer %d, which the output's config needs",
                                           p->models[p->layer_src[m][j].model].ref, subs[s] ? "text_config." : "", p->layer_src[m][j].layer);
            }
            if (!rc) json_object_set(obj, "layer_types", types), changed = true;
            json_decref(types);
        }
    }
    if (!rc && changed && !(p->config_out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER)))
        rc = graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    json_decref(root);
    for (int i = 0; i < GRAFT_MAX_INPUTS; i++) json_decref(cfgs[i]);
    return rc;
}

static int build_plan(struct plan *p) {
    const struct graft_merge_config *c = p->cfg;
    int rc;
    p->base = -1;
    if (c->n_modules > GRAFT_MAX_MODULES) return graft__plan_fail(p, "more than %d modules", GRAFT_MAX_MODULES);
    if (c->base_model && (rc = graft__plan_open_model(p, c->base_model, &p->base))) return rc;
    if (p->method->base == GRAFT_BASE_REQUIRED && p->base < 0)
        return graft__plan_fail(p, "merge_method %s needs base_model", p->method->name);
    // model index of every source of every slice of every module
    int **idx[GRAFT_MAX_MODULES] = {0};
    for (size_t m = 0; m < c->n_modules; m++) {
        const struct graft_module *g = &c->modules[m];
        if (g->n_slices > 65536) { rc = graft__plan_fail(p, "more than 65536 slices"); goto out; } // (a frankenmerge of single-layer slices needs hundreds)
        if (!(idx[m] = graft__calloc(g->n_slices, sizeof *idx[m]))) goto nomem;
        for (size_t s = 0; s < g->n_slices; s++) {
            if (!(idx[m][s] = graft__calloc(g->slices[s].n_src + 1, sizeof(int)))) goto nomem;
            for (size_t i = 0; i < g->slices[s].n_src; i++)
                if ((rc = graft__plan_open_model(p, g->slices[s].src[i].model, &idx[m][s][i]))) goto out;
        }
    }
    p->donor = p->base >= 0 ? p->base : idx[0][0][0];
    // Architecture check: the same `architectures` everywhere unless --allow-crimes.
    const char *arch0 = graft_model_config_json(p->models[p->donor].m);
    for (int i = 0; i < p->n_models && !p->opt->allow_crimes; i++) {
        json_t *a = arch0 ? json_loads(arch0, 0, NULL) : NULL, *b = graft_model_config_json(p->models[i].m) ? json_loads(graft_model_config_json(p->models[i].m), 0, NULL) : NULL;
        json_t *aa = a ? json_object_get(a, "architectures") : NULL, *bb = b ? json_object_get(b, "architectures") : NULL;
        bool differ = aa && bb && !json_equal(aa, bb);
        json_decref(a), json_decref(b);
        if (differ) { rc = graft__plan_fail(p, "'%s' and '%s' have different architectures; pass --allow-crimes to merge them anyway", p->models[p->donor].ref, p->models[i].ref); goto out; }
    }
    // With `modules:`, every tensor of the donor must belong to a listed module: an unlisted one would be
    // missing from the output (MergeKit drops it silently).
    const struct graft_model *dm = p->models[p->donor].m;
    for (size_t k = 0; c->modules[0].name && k < graft_model_n_tensors(dm); k++) {
        const struct graft_tensor_info *ti = graft_model_tensor(dm, k)->info;
        const char *unl;
        if (module_of(p, ti->name, ti->name_len, &unl) >= 0) continue;
        rc = unl ? graft__plan_fail(p, "tensor %s of '%s' belongs to module '%s', which 'modules' does not list: add %s with its models or slices",
                                    ti->name, p->models[p->donor].ref, unl, unl)
                 : graft__plan_fail(p, "tensor %s of '%s' belongs to none of the listed modules: add a text_decoder (or decoder/shared) module for it",
                                    ti->name, p->models[p->donor].ref);
        goto out;
    }
    if ((rc = graft__vplan_build(p))) goto out;
    for (size_t m = 0; m < c->n_modules && !rc; m++) rc = plan_module(p, (int)m, idx[m]);
    if (!rc && p->n == 0) rc = graft__plan_fail(p, "the plan has no tensors");
    if (!rc) rc = plan_layer_types(p);
    if (!rc) rc = graft__plan_tokenizer_prepare(p);
    goto out;
nomem:
    rc = graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
out:
    for (size_t m = 0; m < c->n_modules; m++) {
        for (size_t s = 0; idx[m] && s < c->modules[m].n_slices; s++) graft__free(idx[m][s]);
        graft__free(idx[m]);
    }
    return rc;
}

// ---- dry run -----------------------------------------------------------------------------------------

static void print_plan(struct plan *p, struct graft_writer *w, int nth, int max_in, uint64_t max_chunk, FILE *f) {
    int layers = 0;
    for (size_t m = 0; m < p->cfg->n_modules; m++) layers += p->mod_layers[m];
    fprintf(f, "plan: merge_method %s, %zu output tensors, %d layers, %d models", p->method->name, p->n, layers, p->n_models);
    if (p->base >= 0) fprintf(f, ", base %s", p->models[p->base].ref);
    fprintf(f, "\noutput: %d shard%s, %llu bytes\n", graft_writer_n_shards(w), graft_writer_n_shards(w) == 1 ? "" : "s",
            (unsigned long long)graft_writer_total_bytes(w));
    // the I/O and memory a run will take (users.md §5): the inputs' bytes (read once by the final pass;
    // a method's statistics passes — TIES' top-k, DARE's rescale — read a tensor again from the page
    // cache), the output written once; the work buffers are the threads' chunk buffers (exec_alloc)
    uint64_t read = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct otensor *o = &p->t[i];
        for (int k = 0; k < o->n_in; k++)
            if (!o->copy || k == (o->mt.base >= 0 ? o->mt.base : 0)) read += o->in[k].t->info->n_bytes;
    }
    uint64_t work = (uint64_t)nth * ((uint64_t)max_in * 4 + ((uint64_t)max_in + 2) * 4 + 4 + 8) * max_chunk;
    char rb[32], wb[32], mb[32];
    graft__human_bytes(rb, sizeof rb, (double)read), graft__human_bytes(wb, sizeof wb, (double)graft_writer_total_bytes(w));
    graft__human_bytes(mb, sizeof mb, (double)work);
    fprintf(f, "estimate: reads %s of inputs, writes %s; work buffers %s (%d threads × %d inputs × %llu-element chunks)%s\n", rb, wb, mb,
            nth, max_in, (unsigned long long)max_chunk, p->method->heavy_combine || p->method->whole ? "; its SVDs / solves hold whole tensors besides" : "");
    for (size_t i = 0; i < p->n; i++) {
        const struct otensor *o = &p->t[i];
        char sh[96];
        fprintf(f, "%s %s %s -> %s\n", o->name, shape_text(sh, sizeof sh, o->n_dims, o->ne), graft_dtype_traits(o->dtype)->name,
                graft_writer_shard_name(w, graft_writer_tensor_shard(w, o->wid)));
        for (int g = 0; g < p->method->n_params; g++)
            if (!p->method->params[g].per_model) fprintf(f, "  %s = %g\n", p->method->params[g].name, o->mt.gp[g]);
        if (o->remap) fprintf(f, "  rows follow the output vocabulary (%s)\n", p->cfg->tokenizer_source);
        for (int k = 0; k < o->n_in; k++) {
            fprintf(f, "  %s%s:%s", k == o->mt.base ? "base " : "", p->models[o->in[k].model].ref, o->in[k].t->info->name);
            for (int g = 0; g < p->method->n_params; g++)
                if (p->method->params[g].per_model) fprintf(f, " %s=%g", p->method->params[g].name, o->mt.pm[k][g]);
            fputc('\n', f);
        }
    }
}

// ---- execution ---------------------------------------------------------------------------------------

struct exec {
    struct plan          *p;
    int                   nth;         // threads of this exec's chunk passes (its buffers: nth of each)
    struct graft_writer  *w;
    struct otensor       *o;
    int                   pass;        // -1 = apply
    double               *partials;
    size_t                plen;
    void                **accs;        // this pass: the accumulators of the threads that ran a chunk
    size_t                abytes;
    void                **acc_buf;     // per thread, kept across passes and tensors (acc_cap bytes)
    size_t               *acc_cap;
    _Atomic int          *acc_pass;    // the pass token a thread's buffer was last zeroed for
    int                   token;
    float               **in;          // per thread: GRAFT_MAX_INPUTS × chunk floats (one block)
    float               **tmp, **out;
    uint8_t             **enc;
    uint64_t              max_chunk;
};

static void load_chunk(struct exec *x, int ith, uint64_t e0, uint64_t n, const float **ptrs) {
    struct otensor *o = x->o;
    for (int i = 0; i < o->n_in; i++) {
        float *dst = x->in[ith] + (size_t)i * x->max_chunk;
        if (o->remap) graft__vplan_load(x->p, o, i, e0, n, dst, x->tmp[ith]); // the kernel's scratch is free while loading
        else graft_row_to_f32(o->in[i].t->info->dtype, graft__plan_input_at(x->p, o, i, e0), dst, (size_t)n);
        ptrs[i] = dst;
    }
}

void graft__engine_encode(struct otensor *o, uint64_t e0, const float *f, void *enc, size_t n) {
    graft_row_from_f32(o->dtype, f, enc, n);
    // every output chunk is checked for NaN / ±Inf as stored (one pass over bytes in cache); the rare
    // chunk that has some is examined further: where, and whether float32 already held them
    size_t first;
    uint64_t bad = graft_count_nonfinite(o->dtype, enc, n, &first);
    if (bad) {
        atomic_fetch_add(&o->n_bad, bad);
        atomic_fetch_add(&o->n_bad_f32, graft_count_nonfinite(GRAFT_DTYPE_F32, f, n, NULL));
        graft__atomic_min_u64(&o->first_bad, e0 + first);
    }
}

// Encode thread ith's output chunk (elements e0…e0+n) in the output dtype and write it.
static int write_chunk(struct exec *x, int ith, uint64_t e0, uint64_t n, struct graft_err *err) {
    struct otensor *o = x->o;
    uint64_t off, len;
    graft_dtype_nbytes(o->dtype, e0, &off);
    graft_dtype_nbytes(o->dtype, n, &len);
    graft__engine_encode(o, e0, x->out[ith], x->enc[ith], (size_t)n);
    int rc = graft_writer_write(x->w, o->wid, off, x->enc[ith], (size_t)len, err);
    graft_progress_add(x->p->opt->progress, len);
    return rc;
}

// NaN / ±Inf an input holds, counted on the chunk the final pass has just read (for one warning per input tensor).
static void count_input(struct otensor *o, int i, enum graft_dtype dt, const void *p, uint64_t n) {
    uint64_t k = graft_count_nonfinite(dt, p, (size_t)n, NULL);
    if (k) atomic_fetch_add_explicit(&o->in_bad[i], k, memory_order_relaxed);
}

static int exec_chunk(void *ctx, size_t item, int ith, struct graft_err *err) {
    struct exec *x = ctx;
    if (x->p->opt->cancel && __atomic_load_n(x->p->opt->cancel, __ATOMIC_RELAXED))
        return graft_err_set(err, GRAFT_E_CANCELLED, NULL, NULL, 0, "cancelled");
    struct otensor *o = x->o;
    struct graft_mt *mt = &o->mt;
    uint64_t e0 = (uint64_t)item * mt->chunk, n = mt->numel - e0 < mt->chunk ? mt->numel - e0 : mt->chunk;
    const float *ptrs[GRAFT_MAX_INPUTS];
    if (x->pass >= 0 && mt->m->wants_chunk && !mt->m->wants_chunk(mt, x->pass, item)) return GRAFT_OK;
    void *acc = NULL;
    if (x->pass >= 0 && x->abytes) { // zeroed on a thread's first chunk of the pass: idle threads cost nothing
        acc = x->acc_buf[ith];
        if (atomic_load_explicit(&x->acc_pass[ith], memory_order_relaxed) != x->token) {
            memset(acc, 0, x->abytes);
            atomic_store_explicit(&x->acc_pass[ith], x->token, memory_order_relaxed);
        }
    }
    if ((x->pass < 0 ? mt->m->apply_raw != NULL : mt->m->stat_raw != NULL) && !o->identity && !o->remap) { // fused kernels on the stored inputs
        const void *raw[GRAFT_MAX_INPUTS];
        enum graft_dtype dt[GRAFT_MAX_INPUTS];
        for (int i = 0; i < o->n_in; i++) dt[i] = o->in[i].t->info->dtype, raw[i] = graft__plan_input_at(x->p, o, i, e0);
        struct graft_chunk rc_ = {.idx = item, .e0 = e0, .n = n, .in = NULL, .tmp = x->tmp[ith]};
        if (x->pass >= 0 && mt->m->stat_raw(mt, x->pass, &rc_, raw, dt, x->partials ? x->partials + item * x->plen : NULL, acc))
            return GRAFT_OK;
        if (x->pass < 0 && mt->m->apply_raw(mt, &rc_, raw, dt, x->out[ith])) {
            for (int i = 0; i < o->n_in; i++) count_input(o, i, dt[i], raw[i], n); // still in cache
            return write_chunk(x, ith, e0, n, err);
        }
    }
    load_chunk(x, ith, e0, n, ptrs);
    if (x->pass < 0)
        for (int i = 0; i < o->n_in; i++) count_input(o, i, GRAFT_DTYPE_F32, ptrs[i], n);
    struct graft_chunk c = {.idx = item, .e0 = e0, .n = n, .in = ptrs, .tmp = x->tmp[ith]};
    if (x->pass >= 0) {
        mt->m->stat(mt, x->pass, &c, x->partials + item * x->plen, acc);
        return GRAFT_OK;
    }
    float *out = x->out[ith];
    if (o->identity) memcpy(out, ptrs[mt->base], (size_t)n * sizeof *out);
    else mt->m->apply(mt, &c, out);
    return write_chunk(x, ith, e0, n, err);
}

static int copy_tensor(struct exec *x) {
    struct otensor *o = x->o;
    const struct oin *in = &o->in[o->mt.base >= 0 ? o->mt.base : 0];
    const struct graft_model *m = x->p->models[in->model].m;
    uint64_t nb = graft_writer_tensor_bytes(x->w, o->wid);
    int rc = nb ? graft_writer_write(x->w, o->wid, 0, graft_model_data(m, in->t), (size_t)nb, x->p->err) : GRAFT_OK;
    graft_progress_add(x->p->opt->progress, nb);
    return rc ? rc : graft__engine_check_nonfinite(x->p, o);
}

int graft__engine_copy_base(struct plan *p, struct graft_writer *w, struct otensor *o) {
    const struct oin *in = &o->in[o->mt.base >= 0 ? o->mt.base : 0];
    const struct graft_model *m = p->models[in->model].m;
    uint64_t nb = graft_writer_tensor_bytes(w, o->wid);
    if (o->copy || !nb) {
        int rc = nb ? graft_writer_write(w, o->wid, 0, graft_model_data(m, in->t), (size_t)nb, p->err) : GRAFT_OK;
        graft_progress_add(p->opt->progress, nb);
        return rc;
    }
    size_t n = (size_t)o->mt.numel;
    float *f = graft__malloc(n * sizeof *f);
    uint8_t *enc = graft__malloc((size_t)nb + 1);
    int rc = f && enc ? GRAFT_OK : graft_err_set(p->err, GRAFT_E_NOMEM, NULL, o->name, strlen(o->name), "out of memory");
    if (!rc) {
        graft_row_to_f32(in->t->info->dtype, graft_model_data(m, in->t), f, n);
        graft__engine_encode(o, 0, f, enc, n);
        rc = graft_writer_write(w, o->wid, 0, enc, (size_t)nb, p->err);
        graft_progress_add(p->opt->progress, nb);
    }
    graft__free(f), graft__free(enc);
    return rc;
}

// After a tensor is merged: one warning per input tensor that holds NaN / ±Inf. If the output holds some
// (n_bad): inherited from those inputs, a warning; made by the merge (or by the conversion to the output
// dtype), refused unless --allow-nonfinite (or an in-memory merge, whose caller scores the result), then a
// warning with the counts.
int graft__engine_check_nonfinite(struct plan *p, struct otensor *o) {
    FILE *log = p->opt->log ? p->opt->log : stderr;
    uint64_t bad = atomic_load(&o->n_bad), bad32 = atomic_load(&o->n_bad_f32), first = atomic_load(&o->first_bad), held = 0;
    if (o->copy) bad = bad32 = 0; // bytes copied: the inputs' count is the output's
    for (int i = 0; i < o->n_in; i++) {
        const struct graft_tensor_info *ti = o->in[i].t->info;
        uint64_t k = o->in_counted ? atomic_load(&o->in_bad[i])
                                   : graft_count_nonfinite(ti->dtype, graft_model_data(p->models[o->in[i].model].m, o->in[i].t), (size_t)ti->n_elem, NULL);
        if (o->copy && i == (o->mt.base >= 0 ? o->mt.base : 0)) bad = bad32 = k;
        if (k && !p->opt->in_memory)
            fprintf(log, "graft: warning: input %s, tensor '%s': holds %llu NaN or infinite values\n", p->models[o->in[i].model].ref,
                    ti->name, (unsigned long long)k);
        held += k;
    }
    if (!bad) return GRAFT_OK;
    // inherited: no conversion overflow, and no more NaN/Inf than the inputs hold between them
    if (held && bad == bad32 && bad <= held) {
        if (!p->opt->in_memory)
            fprintf(log, "graft: warning: tensor '%s': %llu NaN or infinite values in the output, from its inputs (%llu in all inputs)\n",
                    o->name, (unsigned long long)bad, (unsigned long long)held);
        return GRAFT_OK;
    }
    const char *dt = graft_dtype_traits(o->dtype)->name;
    char cause[256] = "";
    if (bad > bad32)
        snprintf(cause, sizeof cause, "; %llu of them are %s overflow (finite float32 values beyond %s's range): use out_dtype: %s",
                 (unsigned long long)(bad - bad32), dt, dt, o->dtype == GRAFT_DTYPE_BF16 ? "float32" : "bfloat16");
    if (p->opt->allow_nonfinite || p->opt->in_memory) {
        if (!p->opt->in_memory)
            fprintf(log, "graft: warning: tensor '%s': %llu NaN or infinite values written (first at element %llu)%s\n", o->name,
                    (unsigned long long)bad, (unsigned long long)first, cause);
        return GRAFT_OK;
    }
    char held_txt[96] = " where no input holds any";
    if (held) snprintf(held_txt, sizeof held_txt, " where its inputs hold %llu", (unsigned long long)held);
    return graft_err_set(p->err, GRAFT_E_NONFINITE, NULL, o->name, strlen(o->name),
                         "the %s merge gives %llu NaN or infinite values (first at element %llu)%s%s%s; "
                         "nothing was written (--allow-nonfinite writes them anyway)",
                         p->method->name, (unsigned long long)bad, (unsigned long long)first, held_txt, cause,
                         bad > bad32 ? ""
                         : held      ? ": the inputs' NaN/Inf spread through the method's per-tensor sums or norms; repair that input (graft verify --values lists them)"
                                     : ": check the weights and parameters (overflow, or a normalisation by ~0)");
}

static int run_tensor(struct exec *x, struct otensor *o) {
    struct plan *p = x->p;
    struct graft_mt *mt = &o->mt;
    x->o = o;
    if (o->copy) return copy_tensor(x);
    int reused_rc;
    if (p->opt->reuse && graft__reuse_copy(p->opt->reuse, x->w, o, p->err, &reused_rc)) return reused_rc;
    int nth = x->nth;
    int rc = GRAFT_OK;
    if (o->remap && (rc = graft__vplan_pad_rows(p, o))) return rc;
    if (!o->identity && mt->m->init) rc = mt->m->init(mt, p->err); // on failure the state is freed below
    for (int pass = 0; !rc && !o->identity && mt->m->n_passes && pass < mt->m->n_passes(mt); pass++) {
        x->pass = pass;
        x->plen = mt->m->partial_len ? mt->m->partial_len(mt, pass) : 0;
        x->abytes = mt->m->acc_bytes ? mt->m->acc_bytes(mt, pass) : 0;
        x->partials = x->plen ? graft__calloc(mt->n_chunks * x->plen, sizeof(double)) : NULL;
        bool ok = !x->plen || x->partials;
        for (int t = 0; ok && x->abytes && t < nth; t++) // grown once, reused by later passes and tensors
            if (x->acc_cap[t] < x->abytes) {
                graft__free(x->acc_buf[t]);
                x->acc_cap[t] = (x->acc_buf[t] = graft__malloc(x->abytes)) ? x->abytes : 0;
                ok = x->acc_buf[t] != NULL;
            }
        if (!ok) rc = graft_err_set(p->err, GRAFT_E_NOMEM, NULL, o->name, strlen(o->name), "out of memory for merge statistics");
        x->token++;
        if (!rc) rc = graft_pool_run(nth, mt->n_chunks, exec_chunk, x, NULL, NULL, p->err);
        int n_accs = 0;
        for (int t = 0; x->abytes && t < nth; t++)
            if (atomic_load(&x->acc_pass[t]) == x->token) x->accs[n_accs++] = x->acc_buf[t];
        if (!rc && mt->m->combine) rc = mt->m->combine(mt, pass, x->partials, x->abytes ? x->accs : NULL, n_accs, p->err);
        graft__free(x->partials);
        x->partials = NULL;
    }
    x->pass = -1;
    o->in_counted = true; // the final pass counts each input's NaN / ±Inf as it reads them
    if (!rc) rc = graft_pool_run(nth, mt->n_chunks, exec_chunk, x, NULL, NULL, p->err);
    if (!rc) rc = graft__engine_check_nonfinite(p, o);
    if (mt->m->free_state) mt->m->free_state(mt);
    graft__free(mt->state);
    mt->state = NULL;
    graft__free(o->pad);
    o->pad = NULL;
    // Input pages of this tensor are consumed: drop them from our resident set.
    for (int i = 0; i < o->n_in; i++) {
        const struct graft_model *m = p->models[o->in[i].model].m;
        graft_st_release(graft_model_shard(m, o->in[i].t->shard), o->in[i].t->info->begin, o->in[i].t->info->n_bytes);
    }
    if (rc && !strstr(p->err->msg, o->name)) graft__err_prefix(p->err, NULL, o->name, strlen(o->name));
    return rc;
}

// Work buffers of an exec for `nth` threads of chunks up to max_chunk elements of max_in inputs.
static bool exec_alloc(struct exec *x, int nth, int max_in, uint64_t max_chunk) {
    x->nth = nth, x->max_chunk = max_chunk;
    x->in = graft__calloc((size_t)nth, sizeof *x->in), x->tmp = graft__calloc((size_t)nth, sizeof *x->tmp);
    x->out = graft__calloc((size_t)nth, sizeof *x->out), x->enc = graft__calloc((size_t)nth, sizeof *x->enc);
    x->accs = graft__calloc((size_t)nth, sizeof *x->accs), x->acc_buf = graft__calloc((size_t)nth, sizeof *x->acc_buf);
    x->acc_cap = graft__calloc((size_t)nth, sizeof *x->acc_cap), x->acc_pass = graft__calloc((size_t)nth, sizeof *x->acc_pass);
    bool ok = x->in && x->tmp && x->out && x->enc && x->accs && x->acc_buf && x->acc_cap && x->acc_pass;
    for (int t = 0; ok && t < nth; t++) {
        x->in[t] = graft__malloc((size_t)max_in * max_chunk * sizeof(float));
        x->tmp[t] = graft__malloc(((size_t)max_in + 2) * max_chunk * sizeof(float)); // kernels' scratch: a mask per input + 2
        x->out[t] = graft__malloc(max_chunk * sizeof(float));
        x->enc[t] = graft__malloc(max_chunk * 8);
        ok = x->in[t] && x->tmp[t] && x->out[t] && x->enc[t];
    }
    return ok;
}

static void exec_free(struct exec *x) {
    for (int t = 0; t < x->nth; t++) {
        if (x->in) graft__free(x->in[t]);
        if (x->tmp) graft__free(x->tmp[t]);
        if (x->out) graft__free(x->out[t]);
        if (x->enc) graft__free(x->enc[t]);
        if (x->acc_buf) graft__free(x->acc_buf[t]);
    }
    graft__free(x->in), graft__free(x->tmp), graft__free(x->out), graft__free(x->enc);
    graft__free(x->accs), graft__free(x->acc_buf), graft__free(x->acc_cap), graft__free((void *)x->acc_pass);
}

// Methods with heavy combines (SVDs; method.h): whole tensors side by side, one per thread, each with
// single-threaded chunk passes and BLAS (the same bits as one at a time), largest first.
struct tjobs {
    struct plan  *p;
    const size_t *idx;
    struct exec  *xs;  // per thread
    struct plan  *ps;  // per thread: the plan with the thread's own error
};

static int tensor_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    struct tjobs *j = ctx;
    struct exec *x = &j->xs[ith];
    j->ps[ith].err = err;
    return run_tensor(x, &j->p->t[j->idx[item]]);
}

static int by_size_desc(const void *a, const void *b, void *plan) {
    const struct plan *sp = plan;
    size_t i = *(const size_t *)a, k = *(const size_t *)b;
    uint64_t x = sp->t[i].mt.numel, y = sp->t[k].mt.numel;
    return x != y ? (x < y ? 1 : -1) : (i > k) - (i < k);
}

static int run_parallel_tensors(struct exec *x0, size_t *idx, size_t n, int max_in) {
    struct plan *p = x0->p;
    int nth = x0->nth;
    struct tjobs j = {p, idx, graft__calloc((size_t)nth, sizeof *j.xs), graft__calloc((size_t)nth, sizeof *j.ps)};
    int rc = j.xs && j.ps ? GRAFT_OK : graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (int t = 0; !rc && t < nth; t++) {
        j.ps[t] = *p;
        j.xs[t].p = &j.ps[t], j.xs[t].w = x0->w, j.xs[t].pass = -1;
        if (!exec_alloc(&j.xs[t], 1, max_in, x0->max_chunk))
            rc = graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for %d × %llu-element work buffers", nth, (unsigned long long)x0->max_chunk);
    }
    if (!rc) {
        qsort_r(idx, n, sizeof *idx, by_size_desc, p);
        rc = graft_pool_run(nth, n, tensor_item, &j, p->opt->progress && p->opt->progress->enabled ? graft_progress_draw : NULL, p->opt->progress, p->err);
    }
    for (int t = 0; j.xs && t < nth; t++) exec_free(&j.xs[t]);
    graft__free(j.xs), graft__free(j.ps);
    return rc;
}

// ---- output files ------------------------------------------------------------------------------------

// config.json keys that count a module's layers (every one that exists is rewritten).
static const char *const *layer_keys(const char *module) {
    static const char *const whole[] = {"num_hidden_layers", "n_layer", "num_layers", "n_layers", "text_config.num_hidden_layers", NULL};
    static const char *const none[] = {NULL};
    if (!module) return whole;
    const struct module_kind *k = kind_of(module);
    return k ? k->layer_keys : none;
}

static int write_config(struct plan *p, struct graft_writer *w) {
    const char *cfg = p->config_out ? p->config_out : graft_model_config_json(p->models[p->donor].m);
    if (!cfg) return GRAFT_OK;
    int dt = p->cfg->out_dtype >= 0 ? p->cfg->out_dtype : p->cfg->dtype;
    // slices: a module's layer count is the sum of its slice lengths (`models:` keeps the model's)
    struct graft__layer_count counts[GRAFT_MAX_MODULES];
    size_t n = 0;
    for (size_t m = 0; m < p->cfg->n_modules; m++)
        if (!p->cfg->modules[m].from_models) counts[n++] = (struct graft__layer_count){layer_keys(p->cfg->modules[m].name), p->mod_layers[m]};
    // a real lm_head written (another model had one) under a tied donor's config: transformers would tie
    // the head to the embeddings again and drop the merged head, so the output says it is untied
    bool head = false;
    for (size_t i = 0; i < p->n && !head; i++) head = graft__ends_with(p->t[i].name, strlen(p->t[i].name), "lm_head.weight");
    return graft__writer_add_config(w, cfg, dt >= 0 ? graft_dtype_torch_name((enum graft_dtype)dt) : NULL, counts, n,
                                    p->vp ? graft__vplan_vocab_size(p->vp) : p->crop_rows ? (long)p->crop_rows : -1, head, p->err);
}

static int write_card(struct plan *p, struct graft_writer *w) {
    struct graft__buf b;
    graft__buf_init(&b, 64u << 20);
    graft__buf_puts(&b, "---\nbase_model:\n");
    for (int i = 0; i < p->n_models; i++) graft__buf_printf(&b, "- %s\n", p->models[i].ref);
    graft__buf_puts(&b, "library_name: transformers\ntags:\n- mergekit\n- merge\n- graft\n---\n# merged\n\n"
                        "This is a merge of pre-trained language models created with graft (MergeKit-compatible configuration).\n\n"
                        "## Merge Details\n### Merge Method\n\n");
    graft__buf_printf(&b, "This model was merged using the %s merge method", p->method->pretty);
    if (p->base >= 0) graft__buf_printf(&b, " using %s as a base", p->models[p->base].ref);
    graft__buf_puts(&b, ".\n\n### Models Merged\n\nThe following models were included in the merge:\n");
    for (int i = 0; i < p->n_models; i++)
        if (i != p->base) graft__buf_printf(&b, "* %s\n", p->models[i].ref);
    graft__buf_puts(&b, "\n### Configuration\n\nThe following YAML configuration was used to produce this model:\n\n```yaml\n");
    graft__buf_puts(&b, p->cfg->text);
    if (b.len && b.data[b.len - 1] != '\n') graft__buf_puts(&b, "\n");
    graft__buf_puts(&b, "```\n");
    int rc = b.failed ? graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory")
                      : graft_writer_add_file(w, "README.md", b.data, b.len, p->err);
    graft__buf_free(&b);
    if (!rc) rc = graft_writer_add_file(w, "mergekit_config.yml", p->cfg->text, strlen(p->cfg->text), p->err);
    return rc;
}


// ---- entry point -------------------------------------------------------------------------------------

// Under MPI: every rank must have planned the same output (a rank that read another config or other
// files, through a different working folder or a stale cache, would write shards of another layout
// into the common folder): a hash of the config and of every output tensor's name, dtype and shape,
// compared through its minimum and maximum over the ranks.
static int same_plan_everywhere(struct plan *p, const char *out_dir) {
    uint64_t h = graft__fnv64(GRAFT_FNV64_INIT, p->cfg->text, strlen(p->cfg->text));
    for (size_t i = 0; i < p->n; i++) {
        const struct otensor *o = &p->t[i];
        int32_t meta[2] = {(int32_t)o->dtype, o->n_dims};
        h = graft__fnv64(h, o->name, strlen(o->name) + 1);
        h = graft__fnv64(h, meta, sizeof meta);
        h = graft__fnv64(h, o->ne, sizeof o->ne[0] * (size_t)o->n_dims);
    }
    int64_t v[2] = {(int64_t)(h >> 1), -(int64_t)(h >> 1)};
    if (p->opt->dist->min_i64(p->opt->dist->ctx, v, 2)) return graft_err_set(p->err, GRAFT_E_IO, out_dir, NULL, 0, "MPI reduction failed");
    if (v[0] != -v[1])
        return graft_err_set(p->err, GRAFT_E_USAGE, out_dir, NULL, 0, "the ranks planned different outputs: every rank must see the same "
                             "config, inputs and options (same working folder, a shared file system)");
    return GRAFT_OK;
}

int graft_merge(const char *config_path, const char *out_dir, const struct graft_merge_options *opt, struct graft_err *err) {
    struct graft_merge_config *cfg = NULL;
    int rc = opt->config_text ? graft_config_parse(opt->config_text, strlen(opt->config_text), config_path, &cfg, err)
                              : graft_config_load(config_path, &cfg, err);
    struct plan p = {.cfg = cfg, .opt = opt, .err = err, .base = -1};
    struct graft_writer *w = NULL;
    struct exec x = {.p = &p};
    bool finished = false; // graft_writer_finish called (a collective under MPI)
    // under MPI every rank takes part in the same collectives in the same order, failed or not
    bool dist = opt->dist && opt->dist->size > 1 && !opt->dry_run && !opt->in_memory;
    // inputs the output must not touch: each model (a LoRA reference: its base and its adapter)
    const char *protect[3 * GRAFT_MAX_INPUTS];
    char *split[GRAFT_MAX_INPUTS] = {0};
    size_t np = 0;
    int nth = opt->n_threads > 0 ? opt->n_threads : 1;
    if (rc) goto agree;
    const char *slash = strrchr(config_path, '/');
    p.cfg_dir = slash ? graft__strndup(config_path, slash == config_path ? 1 : (size_t)(slash - config_path)) : graft__strdup(".");
    if (!p.cfg_dir) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto agree; }
    { // LoRA-applied inputs go beside the output, named like the writer's temp folders (so a later run
      // removes them if this one is killed)
        p.lora_dir = graft__temp_beside(out_dir, "-lora");
        if (!p.lora_dir) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto agree; }
    }
    if (opt->resume && !(p.method = graft_method_find(cfg->merge_method), p.method && p.method->whole)) {
        rc = graft_err_set(err, GRAFT_E_USAGE, cfg->path, NULL, 0, "--resume continues an opcm merge; this config's merge_method is %s", cfg->merge_method);
        goto agree;
    }
    if (!(p.method = graft_method_find(cfg->merge_method))) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, cfg->path, NULL, 0, "line %d: unknown merge_method '%s' (available: %s)", cfg->method_line,
                           cfg->merge_method, graft_method_names());
        goto agree;
    }
    if ((rc = build_plan(&p))) goto agree;

    // Output layout, chunking and scratch sizes are all known before any math.
    for (int i = 0; i < p.n_models; i++) {
        char *plus = strchr(p.models[i].path, '+');
        if (plus && (split[i] = graft__strndup(p.models[i].path, (size_t)(plus - p.models[i].path)))) protect[np++] = split[i], protect[np++] = plus + 1;
        else protect[np++] = p.models[i].path;
    }
    for (int i = 0; i < p.n_stats && np < 3 * GRAFT_MAX_INPUTS; i++) protect[np++] = p.stats[i].path;
    if (opt->check_target && !opt->dry_run) rc = graft__output_check(opt->check_target, protect, np, err);
agree: // (a rank that failed here alone would leave the others waiting in the writer's first collective)
    if (dist) rc = graft__dist_status(opt->dist, rc, out_dir, err);
    if (rc) goto out;
    struct graft_writer_params wp = graft_writer_default_params();
    wp.max_shard_bytes = opt->max_shard_bytes, wp.flags = opt->writer_flags, wp.protect = protect, wp.n_protect = np;
    if (opt->in_memory) wp.flags |= GRAFT_WRITER_MEMORY;
    if (opt->dry_run) wp.flags |= GRAFT_WRITER_FORCE; // nothing is written; a plan of an existing output is fine
    if (!opt->dry_run && !opt->in_memory) wp.dist = opt->dist;
    if ((rc = graft_writer_open(out_dir, &wp, &w, err))) goto out;
    uint64_t chunk = opt->chunk_elems ? opt->chunk_elems : DEFAULT_CHUNK, max_chunk = 1;
    int max_in = 1;
    for (size_t i = 0; i < p.n; i++) {
        struct otensor *o = &p.t[i];
        struct graft_mt *mt = &o->mt;
        mt->chunk = chunk;
        if (p.method->rows) mt->chunk = (chunk / mt->row_len ? chunk / mt->row_len : 1) * mt->row_len;
        mt->n_chunks = (size_t)((mt->numel + mt->chunk - 1) / mt->chunk);
        if (mt->chunk > max_chunk) max_chunk = mt->chunk;
        if (o->n_in > max_in) max_in = o->n_in;
        o->wid = graft_writer_add_tensor(w, o->name, strlen(o->name), o->dtype, o->n_dims, o->ne, err);
        if (o->wid < 0) { rc = (int)o->wid; goto out; }
        // reuse: not for tensors whose rows follow a merged vocabulary, nor methods that look beyond one
        // tensor (whole-model methods, opcm's state)
        if (opt->reuse && opt->in_memory && !o->copy && !o->remap && !p.method->whole && !p.extra && strcmp(p.method->name, "opcm"))
            graft__reuse_key(&p, o);
    }
    if (opt->dry_run) {
        rc = graft_writer_layout(w, err);
        if (!rc) print_plan(&p, w, nth, max_in, max_chunk, opt->plan_out ? opt->plan_out : stdout);
        goto out; // the writer is freed without commit: nothing appears
    }
    rc = graft_writer_layout(w, err); // (shards reserved: a full disk on any rank fails everyone before the math)
    if (dist) rc = graft__dist_status(opt->dist, rc, out_dir, err);
    if (rc) goto out;
    if (dist && (rc = same_plan_everywhere(&p, out_dir))) goto out;
    if (opt->progress) opt->progress->total = graft_writer_total_bytes(w);
    x.w = w;
    if (!exec_alloc(&x, nth, max_in, max_chunk)) {
        rc = graft_err_set(err, GRAFT_E_NOMEM, out_dir, NULL, 0, "out of memory for %d × %llu-element work buffers", nth, (unsigned long long)max_chunk);
        goto out;
    }
    bool whole = p.method->whole != NULL;
    // the bits never depend on --threads, ranks or OpenBLAS's own threads (its SVDs differ with them)
    if (p.method->heavy_combine || whole) graft__blas_single_thread();
    if (whole && (rc = p.method->whole(&p, w, out_dir, err)) > 0) rc = GRAFT_OK, whole = false; // declined: tensor by tensor
    for (size_t i = 0; whole && !rc && i < p.n; i++) // whole-model methods encode through graft__engine_encode too
        if (graft_writer_tensor_local(w, p.t[i].wid)) rc = graft__engine_check_nonfinite(&p, &p.t[i]); // (under MPI: its shard's rank)
    // under MPI each rank merges the tensors of its own output shards (whole-model methods compute
    // everything everywhere; the writer keeps each rank's part)
    size_t *mine = whole ? NULL : graft__malloc((p.n ? p.n : 1) * sizeof *mine), n_mine = 0;
    if (!whole && !mine) rc = graft_err_set(err, GRAFT_E_NOMEM, out_dir, NULL, 0, "out of memory");
    for (size_t i = 0; mine && i < p.n; i++)
        if (graft_writer_tensor_local(w, p.t[i].wid)) mine[n_mine++] = i;
    if (!rc && mine && p.method->heavy_combine && nth > 1) rc = run_parallel_tensors(&x, mine, n_mine, max_in);
    else
        for (size_t i = 0; i < n_mine && !rc; i++) {
            rc = run_tensor(&x, &p.t[mine[i]]);
            if (opt->progress && opt->progress->enabled) graft_progress_draw(opt->progress);
        }
    graft__free(mine);
    if (!rc) rc = write_config(&p, w);
    if (!rc && opt->write_model_card) rc = write_card(&p, w);
    if (!rc) rc = graft__plan_write_tokenizer(&p, w);
    rc = graft_writer_finish(w, rc, err), finished = true; // under MPI: every rank, and the lowest failing rank's error
    if (p.extra && !rc) { // opcm's state after the model: two outputs, so a failure here says which one exists
        // (with the model failed on any rank, the state is dropped on all: freed below, never finished)
        int mrc = rc;
        rc = graft_writer_finish(p.extra, rc, err);
        if (!mrc && rc && err) {
            size_t l = strlen(err->msg);
            snprintf(err->msg + l, sizeof err->msg - l, " (the merged model %s was written, its opcm state not: rerun with --force)", out_dir);
        }
    }
    if (!rc && opt->in_memory && opt->reuse) rc = graft__reuse_update(opt->reuse, w, &p, err), w = NULL; // (the reuse object owns it now)
    if (!rc && opt->in_memory) *opt->in_memory = opt->reuse ? graft__reuse_writer(opt->reuse) : w, w = NULL;
out:
    if (w && !finished && opt->dist && opt->dist->size > 1 && !opt->dry_run) rc = graft_writer_finish(w, rc ? rc : GRAFT_E_INTERNAL, err);
    exec_free(&x);
    graft_writer_free(w);
    graft_writer_free(p.extra);
    for (size_t i = 0; i < p.n; i++) graft__free(p.t[i].name), graft__free(p.t[i].pad);
    graft__free(p.t);
    for (int i = 0; i < p.n_models; i++) {
        if (!p.models[i].borrowed) graft_model_close(p.models[i].m);
        graft__free(p.models[i].path);
        for (int m = 0; m < GRAFT_MAX_MODULES; m++) graft__free(p.models[i].prefix[m]);
    }
    for (int i = 0; i < p.n_stats; i++) {
        if (!p.stats[i].borrowed) graft_model_close(p.stats[i].m);
        graft__free(p.stats[i].path);
    }
    graft__free(p.cfg_dir);
    for (int i = 0; i < GRAFT_MAX_INPUTS; i++) graft__free(split[i]);
    for (int m = 0; m < GRAFT_MAX_MODULES; m++) graft__free(p.layer_src[m]);
    free(p.config_out); // (jansson's allocation)
    if (p.lora_made) graft__rm_tree(p.lora_dir);
    graft__free(p.lora_dir);
    graft__vplan_free(p.vp);
    graft__plan_tokenizer_free(&p);
    graft_config_free(cfg);
    return rc;
}
