// MergeKit YAML reader on libyaml's document API. Every node keeps its line so errors can say where.
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>
#include "config.h"
#include "graft/dtype.h"
#include "../core/impl.h"
#include "../io/io-impl.h"

#define CONFIG_MAX_BYTES (16u << 20)

struct rd {
    yaml_document_t *doc;
    const char      *label;
    struct graft_err *err;
};

static yaml_node_t *node(struct rd *r, int id) { return yaml_document_get_node(r->doc, id); }
static int line_of(yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 0; }

static int fail(struct rd *r, yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct rd *r, yaml_node_t *n, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return graft_err_set(r->err, GRAFT_E_CONFIG, r->label, NULL, 0, "line %d: %s", line_of(n), msg);
}

static const char *scalar(yaml_node_t *n) { return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL; }
static bool is_plain(yaml_node_t *n) { return n && n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE; }
// A YAML null (plain ``, `~`, `null`, `Null`, `NULL`): MergeKit's None, "not set".
static bool is_null(yaml_node_t *n) {
    const char *s = is_plain(n) ? scalar(n) : NULL;
    return s && (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"));
}

// YAML 1.1/1.2 core-schema reading of a plain scalar as a number.
static bool scalar_number(yaml_node_t *n, double *out) {
    const char *s = scalar(n);
    if (!s || !is_plain(n) || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool scalar_bool(yaml_node_t *n, bool *out) {
    const char *s = scalar(n);
    if (!s || !is_plain(n)) return false;
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) { *out = true; return true; }
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) { *out = false; return true; }
    return false;
}

// Check the keys of a mapping against an allowed list; returns 0 or an error.
static int check_keys(struct rd *r, yaml_node_t *map, const char *where, const char *const *allowed) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(r, p->key);
        const char *ks = scalar(k);
        if (!ks) return fail(r, k, "%s: keys must be plain strings", where);
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++) ok = !strcmp(*a, ks);
        if (!ok) {
            char list[300] = "";
            for (const char *const *a = allowed; *a; a++) {
                strncat(list, *a, sizeof list - strlen(list) - 3);
                if (a[1]) strncat(list, ", ", sizeof list - strlen(list) - 1);
            }
            return fail(r, k, "unknown key '%s' in %s (allowed: %s)", ks, where, list);
        }
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++)
            if (scalar(node(r, q->key)) && !strcmp(scalar(node(r, q->key)), ks)) return fail(r, k, "duplicate key '%s' in %s", ks, where);
    }
    return GRAFT_OK;
}

static yaml_node_t *get(struct rd *r, yaml_node_t *map, const char *key) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const char *ks = scalar(node(r, p->key));
        if (ks && !strcmp(ks, key)) return node(r, p->value);
    }
    return NULL;
}

static int dup_str(struct rd *r, yaml_node_t *n, const char *what, char **out) {
    const char *s = scalar(n);
    if (!s) return fail(r, n, "%s must be a string", what);
    if (!(*out = graft__strdup(s))) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
    return GRAFT_OK;
}

// Is `p` (relative to the config file's folder) a PEFT adapter folder (it has adapter_config.json)?
// Then "model@p" names a LoRA, not a Hugging Face revision.
static bool is_adapter_dir(const char *config_path, const char *p) {
    const char *slash = strrchr(config_path, '/');
    char *f = p[0] == '/' ? graft__asprintf("%s/adapter_config.json", p)
            : graft__asprintf("%.*s/%s/adapter_config.json", slash ? (int)(slash - config_path) : 1, slash ? config_path : ".", p);
    struct stat sb;
    bool yes = f && stat(f, &sb) == 0 && S_ISREG(sb.st_mode);
    graft__free(f);
    return yes;
}

// A model reference: "path", "path+lora" (MergeKit's LoRA syntax: the PEFT adapter folder `lora` is
// applied to `path`; "path@lora" too when lora is an adapter folder, else '@' is a revision), or {model: {path: ..., lora: ...}} / {path: ..., lora: ...}; kept as "path" or
// "path+lora" for the planner. Revisions are refused (they need the Hugging Face Hub).
static int read_model_ref_at(struct rd *r, yaml_node_t *n, char **out, int depth);
static int read_model_ref(struct rd *r, yaml_node_t *n, char **out) { return read_model_ref_at(r, n, out, 0); }
static int read_model_ref_at(struct rd *r, yaml_node_t *n, char **out, int depth) {
    if (n && n->type == YAML_MAPPING_NODE) {
        if (depth > 4) return fail(r, n, "a model reference nested too deeply (an alias that refers to itself?)");
        static const char *const allowed[] = {"model", "path", "lora", "override_architecture", "revision", NULL};
        int rc = check_keys(r, n, "a model reference", allowed);
        if (rc) return rc;
        if (get(r, n, "revision")) return fail(r, n, "'revision' needs the Hugging Face Hub; graft works offline on local folders");
        yaml_node_t *m = get(r, n, "model"), *l = get(r, n, "lora");
        if (m && m->type == YAML_MAPPING_NODE) {
            if (l) return fail(r, l, "'lora' goes inside the inner model reference");
            return read_model_ref_at(r, m, out, depth + 1);
        }
        yaml_node_t *p = m ? m : get(r, n, "path");
        if (!p) return fail(r, n, "a model reference needs 'path'");
        if ((rc = dup_str(r, p, "model path", out))) return rc;
        if (strchr(*out, '+')) return fail(r, p, "'%s': a path with '+' is read as model+lora; give 'lora' separately", *out);
        if (l && l->type == YAML_MAPPING_NODE) {
            static const char *const lk[] = {"path", "revision", NULL};
            if ((rc = check_keys(r, l, "a LoRA reference", lk))) return rc;
            if (get(r, l, "revision")) return fail(r, l, "'revision' needs the Hugging Face Hub; graft works offline on local folders");
            l = get(r, l, "path");
            if (!l) return fail(r, n, "a LoRA reference needs 'path'");
        }
        if (l) {
            const char *ls = scalar(l);
            if (!ls || !*ls || strchr(ls, '+')) return fail(r, l, "'lora' must be the path of a PEFT adapter folder");
            char *both = graft__asprintf("%s+%s", *out, ls);
            if (!both) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
            graft__free(*out);
            *out = both;
        }
        return GRAFT_OK;
    }
    const char *s = scalar(n);
    if (!s || !*s) return fail(r, n, "model must be a path string");
    const char *plus = strchr(s, '+');
    if (plus && (plus == s || !plus[1] || strchr(plus + 1, '+')))
        return fail(r, n, "'%s': a LoRA reference is model+lora (one '+', both paths non-empty)", s);
    const char *at = strchr(s, '@');
    if (at && !plus && at > s && at[1] && !strchr(at + 1, '@') && is_adapter_dir(r->label, at + 1)) { // model@adapter: a LoRA reference too
        if ((*out = graft__strdup(s))) (*out)[at - s] = '+';
        return *out ? GRAFT_OK : graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
    }
    if (at) return fail(r, n, "'%s': revisions need the Hugging Face Hub; graft works offline on local folders", s);
    return dup_str(r, n, "model", out);
}

static int read_pv(struct rd *r, yaml_node_t *n, const char *name, struct graft_pv *v, int depth);

static int read_conds(struct rd *r, yaml_node_t *n, const char *name, struct graft_pv *v, int depth) {
    size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    v->kind = GRAFT_PV_CONDS;
    v->conds = graft__calloc(cnt, sizeof *v->conds);
    if (!v->conds) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *c = node(r, n->data.sequence.items.start[i]);
        if (!c || c->type != YAML_MAPPING_NODE) return fail(r, c, "parameter '%s': a list must hold only numbers or only {filter, value} entries", name);
        static const char *const allowed[] = {"filter", "value", NULL};
        int rc = check_keys(r, c, "a conditional parameter", allowed);
        if (rc) return rc;
        yaml_node_t *f = get(r, c, "filter"), *val = get(r, c, "value");
        if (!val) return fail(r, c, "parameter '%s': conditional entry without 'value'", name);
        v->n_conds++;
        if (f && is_null(f)) f = NULL; // `filter: null`: no filter, every tensor (MergeKit's None)
        if (f && (rc = dup_str(r, f, "filter", &v->conds[i].filter))) return rc;
        if ((rc = read_pv(r, val, name, &v->conds[i].value, depth + 1))) return rc;
        if (v->conds[i].value.kind == GRAFT_PV_CONDS) return fail(r, val, "parameter '%s': a conditional value cannot itself be conditional", name);
    }
    return GRAFT_OK;
}

static int read_pv(struct rd *r, yaml_node_t *n, const char *name, struct graft_pv *v, int depth) {
    memset(v, 0, sizeof *v);
    v->line = line_of(n);
    if (!n || depth > 4) return fail(r, n, "parameter '%s': bad value", name);
    if (n->type == YAML_SCALAR_NODE) {
        bool b;
        if (scalar_number(n, &v->num)) { v->kind = GRAFT_PV_NUMBER; return GRAFT_OK; }
        if (scalar_bool(n, &b)) { v->kind = GRAFT_PV_BOOL, v->num = b; return GRAFT_OK; }
        v->kind = GRAFT_PV_STRING;
        return dup_str(r, n, "parameter", &v->str);
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (!cnt) return fail(r, n, "parameter '%s': empty list", name);
        yaml_node_t *first = node(r, n->data.sequence.items.start[0]);
        if (first && first->type == YAML_MAPPING_NODE) return read_conds(r, n, name, v, depth);
        v->kind = GRAFT_PV_GRADIENT;
        v->grad = graft__calloc(cnt, sizeof *v->grad);
        if (!v->grad) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
        for (size_t i = 0; i < cnt; i++) {
            yaml_node_t *e = node(r, n->data.sequence.items.start[i]);
            bool b;
            if (scalar_number(e, &v->grad[i])) continue;
            if (scalar_bool(e, &b)) { v->grad[i] = b; continue; }
            return fail(r, e, "parameter '%s': gradient values must be numbers", name);
        }
        v->n_grad = cnt;
        return GRAFT_OK;
    }
    return fail(r, n, "parameter '%s': expected a number, a list of numbers, or a list of {filter, value}", name);
}

static int read_params(struct rd *r, yaml_node_t *n, struct graft_params *ps) {
    if (!n || n->type == YAML_SCALAR_NODE) {
        if (n && scalar(n) && (!*scalar(n) || !strcmp(scalar(n), "null") || !strcmp(scalar(n), "~"))) return GRAFT_OK;
        return fail(r, n, "'parameters' must be a mapping of name: value");
    }
    if (n->type != YAML_MAPPING_NODE) return fail(r, n, "'parameters' must be a mapping of name: value");
    size_t cnt = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    ps->p = graft__calloc(cnt ? cnt : 1, sizeof *ps->p);
    if (!ps->p) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        yaml_node_t *k = node(r, p->key);
        if (!scalar(k)) return fail(r, k, "parameter names must be strings");
        for (size_t j = 0; j < ps->n; j++)
            if (!strcmp(ps->p[j].name, scalar(k))) return fail(r, k, "duplicate parameter '%s'", scalar(k));
        int rc = dup_str(r, k, "parameter name", &ps->p[ps->n].name);
        ps->n++;
        if (rc || (rc = read_pv(r, node(r, p->value), scalar(k), &ps->p[ps->n - 1].value, 0))) return rc;
    }
    return GRAFT_OK;
}

static int read_source(struct rd *r, yaml_node_t *n, struct graft_source *s, bool need_range) {
    s->line = line_of(n);
    if (n && n->type == YAML_SCALAR_NODE && !need_range) return read_model_ref(r, n, &s->model); // `- path` shorthand
    if (!n || n->type != YAML_MAPPING_NODE) return fail(r, n, "expected a mapping with 'model'");
    static const char *const allowed[] = {"model", "layer_range", "parameters", NULL};
    int rc = check_keys(r, n, need_range ? "a slice source" : "a model entry", allowed);
    if (rc) return rc;
    yaml_node_t *m = get(r, n, "model"), *lr = get(r, n, "layer_range"), *pa = get(r, n, "parameters");
    if (!m) return fail(r, n, "missing 'model'");
    if ((rc = read_model_ref(r, m, &s->model))) return rc;
    if (lr) {
        if (!need_range) return fail(r, lr, "'layer_range' belongs in slices, not in models");
        if (lr->type != YAML_SEQUENCE_NODE || lr->data.sequence.items.top - lr->data.sequence.items.start != 2)
            return fail(r, lr, "layer_range must be [start, end]");
        for (int i = 0; i < 2; i++) {
            double v;
            yaml_node_t *e = node(r, lr->data.sequence.items.start[i]);
            if (!scalar_number(e, &v) || v < 0 || v != floor(v) || v > 1e6) return fail(r, e, "layer_range values must be whole numbers ≥ 0");
            s->range[i] = (int)v;
        }
        if (s->range[1] <= s->range[0]) return fail(r, lr, "layer_range [%d, %d] is empty (end must be greater than start)", s->range[0], s->range[1]);
        s->has_range = true;
    } else if (need_range) {
        return fail(r, n, "slice source '%s' needs 'layer_range: [start, end]'", s->model);
    }
    if (pa && (rc = read_params(r, pa, &s->params))) return rc;
    return GRAFT_OK;
}

static int read_dtype(struct rd *r, yaml_node_t *n, int *out) {
    const char *s = scalar(n);
    if (!s) return fail(r, n, "dtype must be a string");
    if (!strncmp(s, "torch.", 6)) s += 6;
    int t = graft_dtype_from_cli_name(s);
    if (t != GRAFT_DTYPE_F32 && t != GRAFT_DTYPE_F16 && t != GRAFT_DTYPE_BF16 && t != GRAFT_DTYPE_F64)
        return fail(r, n, "unsupported dtype '%s' (allowed: bfloat16, float16, float32)", s);
    *out = t;
    return GRAFT_OK;
}

// tokenizer.tokens: {TOKEN: {source: MODEL | {kind: model_token, model, token | token_id} | {kind: zero}, force}}
static int read_tokens(struct rd *r, yaml_node_t *n, struct graft_merge_config *c) {
    if (n->type != YAML_MAPPING_NODE) return fail(r, n, "tokenizer.tokens must be a mapping of token → {source, force}");
    size_t cnt = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (!(c->tokens = graft__calloc(cnt ? cnt : 1, sizeof *c->tokens))) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
    int rc;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(r, p->key), *v = node(r, p->value);
        struct graft_token_cfg *t = &c->tokens[c->n_tokens++];
        t->line = line_of(k), t->src_id = -1;
        if ((rc = dup_str(r, k, "a tokenizer.tokens key", &t->token))) return rc;
        if (!v || v->type != YAML_MAPPING_NODE) return fail(r, v, "tokenizer.tokens['%s'] must be a mapping (source, force)", t->token);
        static const char *const allowed[] = {"source", "force", NULL};
        if ((rc = check_keys(r, v, "a tokenizer.tokens entry", allowed))) return rc;
        yaml_node_t *f = get(r, v, "force"), *s = get(r, v, "source");
        if (f && !scalar_bool(f, &t->force)) return fail(r, f, "force must be true or false");
        if (!s) continue;
        if (s->type != YAML_MAPPING_NODE) {
            t->kind = GRAFT_TOKSRC_MODEL;
            if ((rc = read_model_ref(r, s, &t->model))) return rc;
            continue;
        }
        static const char *const sallowed[] = {"kind", "model", "token", "token_id", NULL};
        if ((rc = check_keys(r, s, "a token source", sallowed))) return rc;
        const char *kind = scalar(get(r, s, "kind"));
        if (kind && !strcmp(kind, "zero")) { t->kind = GRAFT_TOKSRC_ZERO; continue; }
        if (!kind || strcmp(kind, "model_token"))
            return fail(r, s, "token source kind must be 'model_token' or 'zero'");
        t->kind = GRAFT_TOKSRC_MODEL_TOKEN;
        yaml_node_t *m = get(r, s, "model"), *tn = get(r, s, "token"), *ti = get(r, s, "token_id");
        if (!m) return fail(r, s, "a model_token source needs 'model'");
        if ((rc = read_model_ref(r, m, &t->model))) return rc;
        if (!tn == !ti) return fail(r, s, "a model_token source needs exactly one of 'token' and 'token_id'");
        if (tn && (rc = dup_str(r, tn, "token", &t->src_token))) return rc;
        double id;
        if (ti && (!is_plain(ti) || !scalar_number(ti, &id) || id != floor(id) || id < 0 || id > 1e9))
            return fail(r, ti, "token_id must be a non-negative integer");
        if (ti) t->src_id = (long)id;
    }
    return GRAFT_OK;
}

// A model listed twice in one slice: MergeKit keys its sources by model, so it merges that model once
// (which entry's parameters then count differs between its readers); graft would merge it twice.
static int check_twice(struct rd *r, const struct graft_slice *sl, size_t i, yaml_node_t *at) {
    for (size_t j = 0; j < i; j++)
        if (!strcmp(sl->src[j].model, sl->src[i].model))
            return fail(r, at, "model '%s' is listed twice in one slice (MergeKit merges it once); list it once", sl->src[i].model);
    return GRAFT_OK;
}

// `models:` or `slices:` of the whole model or of one module.
static int read_group(struct rd *r, yaml_node_t *models, yaml_node_t *slices, struct graft_module *g) {
    int rc;
    if (models) {
        if (models->type != YAML_SEQUENCE_NODE || models->data.sequence.items.top == models->data.sequence.items.start)
            return fail(r, models, "'models' must be a non-empty list");
        size_t cnt = (size_t)(models->data.sequence.items.top - models->data.sequence.items.start);
        g->from_models = true;
        g->slices = graft__calloc(1, sizeof *g->slices);
        if (!g->slices || !(g->slices[0].src = graft__calloc(cnt, sizeof *g->slices[0].src)))
            return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
        g->n_slices = 1;
        g->slices[0].line = line_of(models);
        for (size_t i = 0; i < cnt; i++) {
            g->slices[0].n_src++;
            if ((rc = read_source(r, node(r, models->data.sequence.items.start[i]), &g->slices[0].src[i], false))) return rc;
            if ((rc = check_twice(r, &g->slices[0], i, node(r, models->data.sequence.items.start[i])))) return rc;
        }
    } else {
        if (slices->type != YAML_SEQUENCE_NODE || slices->data.sequence.items.top == slices->data.sequence.items.start)
            return fail(r, slices, "'slices' must be a non-empty list");
        size_t cnt = (size_t)(slices->data.sequence.items.top - slices->data.sequence.items.start);
        g->slices = graft__calloc(cnt, sizeof *g->slices);
        if (!g->slices) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
        for (size_t i = 0; i < cnt; i++) {
            yaml_node_t *s = node(r, slices->data.sequence.items.start[i]);
            struct graft_slice *sl = &g->slices[i];
            g->n_slices++;
            sl->line = line_of(s);
            if (!s || s->type != YAML_MAPPING_NODE) return fail(r, s, "each slice must be a mapping with 'sources'");
            static const char *const sallowed[] = {"sources", "parameters", "base_model", "residual_weight", NULL};
            if ((rc = check_keys(r, s, "a slice", sallowed))) return rc;
            if (get(r, s, "base_model")) // MergeKit's per-slice base: not read, and ignoring it would merge against another base
                return fail(r, get(r, s, "base_model"), "a slice's own base_model is not supported; give base_model at the top level");
            yaml_node_t *src = get(r, s, "sources");
            if (!src || src->type != YAML_SEQUENCE_NODE || src->data.sequence.items.top == src->data.sequence.items.start)
                return fail(r, s, "a slice needs a non-empty 'sources' list");
            size_t ns = (size_t)(src->data.sequence.items.top - src->data.sequence.items.start);
            if (!(sl->src = graft__calloc(ns, sizeof *sl->src))) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
            for (size_t j = 0; j < ns; j++) {
                sl->n_src++;
                if ((rc = read_source(r, node(r, src->data.sequence.items.start[j]), &sl->src[j], true))) return rc;
                if ((rc = check_twice(r, sl, j, node(r, src->data.sequence.items.start[j])))) return rc;
                int len0 = sl->src[0].range[1] - sl->src[0].range[0], len = sl->src[j].range[1] - sl->src[j].range[0];
                if (len != len0)
                    return fail(r, node(r, src->data.sequence.items.start[j]), "all sources of a slice must span the same number of layers (%d vs %d)", len, len0);
            }
            yaml_node_t *pa = get(r, s, "parameters");
            if (pa && (rc = read_params(r, pa, &sl->params))) return rc;
        }
    }
    return GRAFT_OK;
}

static int read_config(struct rd *r, struct graft_merge_config *c) {
    yaml_node_t *root = yaml_document_get_root_node(r->doc);
    if (!root) return fail(r, NULL, "the file is empty");
    if (root->type != YAML_MAPPING_NODE) return fail(r, root, "the top level must be a mapping (merge_method: …, models: …)");
    static const char *const allowed[] = {"merge_method", "base_model", "models", "slices", "modules", "parameters", "dtype",
                                          "out_dtype", "tokenizer_source", "tokenizer", "chat_template", "name", NULL};
    int rc = check_keys(r, root, "the top level", allowed);
    if (rc) return rc;
    yaml_node_t *mm = get(r, root, "merge_method");
    if (!mm) return fail(r, root, "missing 'merge_method'");
    if ((rc = dup_str(r, mm, "merge_method", &c->merge_method))) return rc;
    c->method_line = line_of(mm);
    yaml_node_t *bm = get(r, root, "base_model");
    if (bm && (rc = read_model_ref(r, bm, &c->base_model))) return rc;
    yaml_node_t *models = get(r, root, "models"), *slices = get(r, root, "slices"), *modules = get(r, root, "modules");
    if (!!models + !!slices + !!modules != 1) return fail(r, root, "exactly one of 'models', 'slices' or 'modules' is required");
    if (modules) {
        if (modules->type != YAML_MAPPING_NODE || modules->data.mapping.pairs.top == modules->data.mapping.pairs.start)
            return fail(r, modules, "'modules' must be a non-empty mapping of module name → {models | slices, parameters}");
        size_t cnt = (size_t)(modules->data.mapping.pairs.top - modules->data.mapping.pairs.start);
        if (!(c->modules = graft__calloc(cnt, sizeof *c->modules))) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
        for (size_t i = 0; i < cnt; i++) {
            yaml_node_pair_t *pr = &modules->data.mapping.pairs.start[i];
            yaml_node_t *k = node(r, pr->key), *v = node(r, pr->value);
            struct graft_module *g = &c->modules[c->n_modules++];
            g->line = line_of(k);
            if ((rc = dup_str(r, k, "a module name", &g->name))) return rc;
            for (size_t j = 0; j + 1 < c->n_modules; j++)
                if (!strcmp(c->modules[j].name, g->name)) return fail(r, k, "module '%s' is listed twice", g->name);
            if (!v || v->type != YAML_MAPPING_NODE) return fail(r, v ? v : k, "module '%s' must be a mapping with 'models' or 'slices'", g->name);
            static const char *const mallowed[] = {"models", "slices", "parameters", NULL};
            if ((rc = check_keys(r, v, "a module", mallowed))) return rc;
            yaml_node_t *gm = get(r, v, "models"), *gs = get(r, v, "slices"), *mp = get(r, v, "parameters");
            if (!!gm + !!gs != 1) return fail(r, v, "module '%s' needs exactly one of 'models' or 'slices'", g->name);
            if ((rc = read_group(r, gm, gs, g))) return rc;
            if (mp && (rc = read_params(r, mp, &g->params))) return rc;
        }
    } else {
        if (!(c->modules = graft__calloc(1, sizeof *c->modules))) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
        c->n_modules = 1;
        c->modules[0].line = line_of(root);
        if ((rc = read_group(r, models, slices, &c->modules[0]))) return rc;
    }
    yaml_node_t *pa = get(r, root, "parameters");
    if (pa && (rc = read_params(r, pa, &c->params))) return rc;
    yaml_node_t *dt = get(r, root, "dtype"), *odt = get(r, root, "out_dtype");
    if (dt && (rc = read_dtype(r, dt, &c->dtype))) return rc;
    if (odt && (rc = read_dtype(r, odt, &c->out_dtype))) return rc;
    yaml_node_t *ts = get(r, root, "tokenizer_source"), *tk = get(r, root, "tokenizer");
    if (ts && is_null(ts)) ts = NULL; // unset, as in MergeKit
    if (ts && tk) return fail(r, tk, "use either 'tokenizer_source' or 'tokenizer', not both");
    if (ts && (rc = dup_str(r, ts, "tokenizer_source", &c->tokenizer_source))) return rc;
    if (tk) {
        if (tk->type != YAML_MAPPING_NODE) return fail(r, tk, "'tokenizer' must be a mapping (source, tokens, pad_to_multiple_of)");
        static const char *const tallowed[] = {"source", "tokens", "pad_to_multiple_of", NULL};
        if ((rc = check_keys(r, tk, "tokenizer", tallowed))) return rc;
        yaml_node_t *s = get(r, tk, "source");
        if ((rc = dup_str(r, s ? s : tk, "tokenizer.source", &c->tokenizer_source)) && s) return rc;
        if (!s) { graft_err_clear(r->err); c->tokenizer_source = graft__strdup("union"); }
        yaml_node_t *pm = get(r, tk, "pad_to_multiple_of");
        if (pm) {
            double v;
            if (!is_plain(pm) || !scalar_number(pm, &v) || v != floor(v) || v < 1 || v > 1e6)
                return fail(r, pm, "tokenizer.pad_to_multiple_of must be a positive integer");
            c->pad_to_multiple_of = (long)v;
        }
        yaml_node_t *tl = get(r, tk, "tokens");
        if (tl && (rc = read_tokens(r, tl, c))) return rc;
    }
    yaml_node_t *ct = get(r, root, "chat_template");
    if (ct && !is_null(ct) && (rc = dup_str(r, ct, "chat_template", &c->chat_template))) return rc;
    return GRAFT_OK;
}

// One YAML document from text; a syntax error is a config error naming line and column.
static int parse_yaml(const char *text, size_t len, const char *label, yaml_document_t *doc, struct graft_err *err) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = GRAFT_OK;
    if (!yaml_parser_load(&parser, doc))
        rc = parser.error == YAML_MEMORY_ERROR ? graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory reading the YAML")
           : graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %zu column %zu: invalid YAML: %s", parser.problem_mark.line + 1,
                           parser.problem_mark.column + 1, parser.problem ? parser.problem : "syntax error");
    // a second document (after ---) would be ignored silently; PyYAML's safe_load, so MergeKit, refuses it
    yaml_document_t next;
    if (!rc && yaml_parser_load(&parser, &next)) {
        if (yaml_document_get_root_node(&next))
            rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %zu: a second YAML document; a config is one document",
                               (size_t)yaml_document_get_root_node(&next)->start_mark.line + 1);
        yaml_document_delete(&next);
    }
    if (rc && rc != GRAFT_E_NOMEM && doc->nodes.start) yaml_document_delete(doc), memset(doc, 0, sizeof *doc);
    yaml_parser_delete(&parser);
    return rc;
}

// parse_yaml, then `reader` on the document (which is freed either way).
static int parse_with(const char *text, size_t len, const char *label, int (*reader)(struct rd *, void *), void *c, struct graft_err *err) {
    yaml_document_t doc;
    int rc = parse_yaml(text, len, label, &doc, err);
    if (rc) return rc;
    struct rd r = {&doc, label, err};
    rc = reader(&r, c);
    yaml_document_delete(&doc);
    return rc;
}

// A config file's text; one that cannot be read (missing, a folder, too big, an I/O error) is a config
// error (exit 4).
static int read_config_file(const char *path, char **text, size_t *len, struct graft_err *err) {
    int rc = graft__read_small_file(path, CONFIG_MAX_BYTES, text, len, err);
    if (rc && rc != GRAFT_E_NOMEM) {
        if (err) err->code = GRAFT_E_CONFIG;
        rc = GRAFT_E_CONFIG;
    }
    return rc;
}

static int read_config_v(struct rd *r, void *c) { return read_config(r, c); }

int graft_config_parse(const char *text, size_t len, const char *label, struct graft_merge_config **out, struct graft_err *err) {
    *out = NULL;
    struct graft_merge_config *c = graft__calloc(1, sizeof *c);
    if (!c) return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
    c->dtype = c->out_dtype = -1;
    c->path = graft__strdup(label);
    c->text = graft__strndup(text, len);
    if (!c->path || !c->text) { graft_config_free(c); return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory"); }
    int rc = parse_with(text, len, label, read_config_v, c, err);
    if (rc) { graft_config_free(c); return rc; }
    *out = c;
    return GRAFT_OK;
}

int graft_config_load(const char *path, struct graft_merge_config **out, struct graft_err *err) {
    char *text;
    size_t len;
    *out = NULL;
    int rc = read_config_file(path, &text, &len, err);
    if (rc) return rc;
    rc = graft_config_parse(text, len, path, out, err);
    graft__free(text);
    return rc;
}

static void pv_free(struct graft_pv *v) {
    graft__free(v->str);
    graft__free(v->grad);
    for (size_t i = 0; i < v->n_conds; i++) graft__free(v->conds[i].filter), pv_free(&v->conds[i].value);
    graft__free(v->conds);
}

static void params_free(struct graft_params *ps) {
    for (size_t i = 0; i < ps->n; i++) graft__free(ps->p[i].name), pv_free(&ps->p[i].value);
    graft__free(ps->p);
}

void graft_config_free(struct graft_merge_config *c) {
    if (!c) return;
    for (size_t m = 0; m < c->n_modules; m++) {
        struct graft_module *g = &c->modules[m];
        for (size_t i = 0; i < g->n_slices; i++) {
            for (size_t j = 0; j < g->slices[i].n_src; j++) graft__free(g->slices[i].src[j].model), params_free(&g->slices[i].src[j].params);
            graft__free(g->slices[i].src);
            params_free(&g->slices[i].params);
        }
        graft__free(g->slices);
        params_free(&g->params);
        graft__free(g->name);
    }
    graft__free(c->modules);
    params_free(&c->params);
    graft__free(c->path), graft__free(c->text), graft__free(c->merge_method), graft__free(c->base_model);
    graft__free(c->tokenizer_source), graft__free(c->chat_template);
    for (size_t i = 0; i < c->n_tokens; i++) graft__free(c->tokens[i].token), graft__free(c->tokens[i].model), graft__free(c->tokens[i].src_token);
    graft__free(c->tokens);
    graft__free(c);
}

const struct graft_pv *graft_params_get(const struct graft_params *ps, const char *name) {
    for (size_t i = 0; i < ps->n; i++)
        if (!strcmp(ps->p[i].name, name)) return &ps->p[i].value;
    return NULL;
}

bool graft_pv_eval(const struct graft_pv *v, const char *tensor, double t, double *num, const char **str) {
    switch (v->kind) {
    case GRAFT_PV_NUMBER:
    case GRAFT_PV_BOOL: *num = v->num; return true;
    case GRAFT_PV_STRING: *str = v->str; return true;
    case GRAFT_PV_GRADIENT: {
        // piecewise-linear over anchors spread evenly on [0, 1] (MergeKit evaluate_setting)
        size_t n = v->n_grad;
        double p = t * (double)(n - 1);
        size_t i0 = (size_t)p, i1 = i0 + 1 < n ? i0 + 1 : n - 1;
        if (i0 >= n) i0 = n - 1;
        double f = p - (double)i0;
        *num = (1 - f) * v->grad[i0] + f * v->grad[i1];
        return true;
    }
    case GRAFT_PV_CONDS:
        for (size_t i = 0; i < v->n_conds; i++) {
            const char *f = v->conds[i].filter;
            if (!f || !strcmp(f, "*") || strstr(tensor, f)) return graft_pv_eval(&v->conds[i].value, tensor, t, num, str);
        }
        return false;
    }
    return false;
}

// ---- mergekit-moe configs ------------------------------------------------------------------------

static int read_prompts(struct rd *r, yaml_node_t *n, const char *what, char ***out, size_t *cnt) {
    if (!n) return GRAFT_OK;
    if (n->type != YAML_SEQUENCE_NODE) return fail(r, n, "%s must be a list of strings", what);
    size_t k = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (!(*out = graft__calloc(k + 1, sizeof **out))) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
    for (size_t i = 0; i < k; i++) {
        int rc = dup_str(r, node(r, n->data.sequence.items.start[i]), what, &(*out)[i]);
        if (rc) return rc;
        (*cnt)++;
    }
    return GRAFT_OK;
}

static int read_moe_expert(struct rd *r, yaml_node_t *n, struct graft_moe_expert *e) {
    if (!n || n->type != YAML_MAPPING_NODE) return fail(r, n, "an expert must be a mapping with source_model");
    static const char *const allowed[] = {"source_model", "positive_prompts", "negative_prompts", "noise_scale", "residual_scale", NULL};
    int rc = check_keys(r, n, "an expert", allowed);
    if (rc) return rc;
    e->line = line_of(n);
    yaml_node_t *m = get(r, n, "source_model");
    if (!m) return fail(r, n, "an expert needs source_model");
    if ((rc = read_model_ref(r, m, &e->model))) return rc;
    if (strchr(e->model, '+')) return fail(r, m, "LoRA references are not supported in MoE configs: apply the adapter first (graft apply-lora)");
    if ((rc = read_prompts(r, get(r, n, "positive_prompts"), "positive_prompts", &e->pos, &e->n_pos))) return rc;
    if ((rc = read_prompts(r, get(r, n, "negative_prompts"), "negative_prompts", &e->neg, &e->n_neg))) return rc;
    yaml_node_t *ns = get(r, n, "noise_scale"), *rs = get(r, n, "residual_scale");
    if (ns && !(scalar(ns) && !strcmp(scalar(ns), "null"))) {
        if (!scalar_number(ns, &e->noise_scale) || e->noise_scale < 0) return fail(r, ns, "noise_scale must be a number ≥ 0");
        e->has_noise = true;
    }
    if (rs && !(scalar(rs) && !strcmp(scalar(rs), "null"))) {
        if (!scalar_number(rs, &e->residual_scale)) return fail(r, rs, "residual_scale must be a number");
        e->has_residual = true;
    }
    return GRAFT_OK;
}

static int read_moe(struct rd *r, struct graft_moe_config *c) {
    yaml_node_t *root = yaml_document_get_root_node(r->doc);
    if (!root || root->type != YAML_MAPPING_NODE) return fail(r, root, "a MoE config must be a mapping");
    static const char *const allowed[] = {"base_model", "gate_mode", "dtype", "experts_per_token", "architecture", "experts", "shared_experts", NULL};
    int rc = check_keys(r, root, "the MoE config", allowed);
    if (rc) return rc;
    yaml_node_t *n;
    if (!(n = get(r, root, "base_model"))) return fail(r, root, "base_model is required");
    if ((rc = read_model_ref(r, n, &c->base_model))) return rc;
    if (strchr(c->base_model, '+')) return fail(r, n, "LoRA references are not supported in MoE configs: apply the adapter first (graft apply-lora)");
    if ((n = get(r, root, "gate_mode"))) {
        if ((rc = dup_str(r, n, "gate_mode", &c->gate_mode))) return rc;
        static const char *const modes[] = {"hidden", "hidden_avg", "hidden_last", "cheap_embed", "random", "uniform_random", NULL};
        bool ok = false;
        for (const char *const *m = modes; *m && !ok; m++) ok = !strcmp(*m, c->gate_mode);
        if (!ok) return fail(r, n, "unknown gate_mode '%s' (allowed: hidden, hidden_avg, hidden_last, cheap_embed, random, uniform_random)", c->gate_mode);
    } else if (!(c->gate_mode = graft__strdup("hidden"))) {
        return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
    }
    if ((n = get(r, root, "dtype")) && (rc = read_dtype(r, n, &c->dtype))) return rc;
    c->experts_per_token = 2;
    if ((n = get(r, root, "experts_per_token"))) {
        double v;
        if (!scalar_number(n, &v) || v != floor(v) || v < 1 || v > 1024) return fail(r, n, "experts_per_token must be a whole number ≥ 1");
        c->experts_per_token = (int)v;
    }
    if ((n = get(r, root, "architecture")) && !(scalar(n) && !strcmp(scalar(n), "null")) && (rc = dup_str(r, n, "architecture", &c->architecture))) return rc;
    if ((n = get(r, root, "shared_experts")) && !(scalar(n) && !strcmp(scalar(n), "null"))) {
        if (n->type != YAML_SEQUENCE_NODE) return fail(r, n, "shared_experts must be a list");
        size_t ns = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (ns > 1) return fail(r, n, "at most one shared expert");
        if (ns == 1) {
            c->has_shared = true;
            if ((rc = read_moe_expert(r, node(r, n->data.sequence.items.start[0]), &c->shared))) return rc;
        }
    }
    yaml_node_t *ex = get(r, root, "experts");
    if (!ex || ex->type != YAML_SEQUENCE_NODE || ex->data.sequence.items.top == ex->data.sequence.items.start)
        return fail(r, ex ? ex : root, "experts must be a non-empty list");
    size_t k = (size_t)(ex->data.sequence.items.top - ex->data.sequence.items.start);
    if (!(c->experts = graft__calloc(k, sizeof *c->experts))) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
    for (size_t i = 0; i < k; i++) {
        c->n_experts++;
        if ((rc = read_moe_expert(r, node(r, ex->data.sequence.items.start[i]), &c->experts[i]))) return rc;
    }
    return GRAFT_OK;
}

static int read_moe_v(struct rd *r, void *c) { return read_moe(r, c); }

void graft_moe_config_free(struct graft_moe_config *c) {
    if (!c) return;
    for (size_t k = 0; k < c->shared.n_pos; k++) graft__free(c->shared.pos[k]);
    for (size_t k = 0; k < c->shared.n_neg; k++) graft__free(c->shared.neg[k]);
    graft__free(c->shared.pos), graft__free(c->shared.neg), graft__free(c->shared.model);
    for (size_t i = 0; i < c->n_experts; i++) {
        struct graft_moe_expert *e = &c->experts[i];
        for (size_t k = 0; k < e->n_pos; k++) graft__free(e->pos[k]);
        for (size_t k = 0; k < e->n_neg; k++) graft__free(e->neg[k]);
        graft__free(e->pos), graft__free(e->neg), graft__free(e->model);
    }
    graft__free(c->experts), graft__free(c->base_model), graft__free(c->gate_mode), graft__free(c->architecture), graft__free(c->path), graft__free(c->text);
    graft__free(c);
}

int graft_moe_config_load(const char *path, struct graft_moe_config **out, struct graft_err *err) {
    *out = NULL;
    char *text;
    size_t len;
    int rc = read_config_file(path, &text, &len, err);
    if (rc) return rc;
    struct graft_moe_config *c = graft__calloc(1, sizeof *c);
    if (!c || !(c->path = graft__strdup(path))) {
        graft__free(text), graft_moe_config_free(c);
        return graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
    }
    c->text = text, c->dtype = -1;
    if ((rc = parse_with(text, len, path, read_moe_v, c, err))) { graft_moe_config_free(c); return rc; }
    *out = c;
    return GRAFT_OK;
}

// ---- graft merge-lora configs ---------------------------------------------------------------------

// `ref` relative to the config's folder (absolute paths stay).
static int rel_path(struct rd *r, const char *ref, char **out) {
    const char *slash = strrchr(r->label, '/');
    *out = ref[0] == '/' || !slash ? graft__strdup(ref) : graft__asprintf("%.*s/%s", (int)(slash - r->label), r->label, ref);
    return *out ? GRAFT_OK : graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
}

static int read_density(struct rd *r, yaml_node_t *n, double *out) {
    if (!scalar_number(n, out) || !(*out > 0 && *out <= 1)) return fail(r, n, "density must be a number in (0, 1] (the fraction of entries kept)");
    return GRAFT_OK;
}

static int read_lora_merge(struct rd *r, struct graft_lora_merge_config *c) {
    yaml_node_t *root = yaml_document_get_root_node(r->doc);
    if (!root || root->type != YAML_MAPPING_NODE) return fail(r, root, "a merge-lora config must be a mapping with adapters");
    static const char *const allowed[] = {"base_model", "adapters", "combination", "combination_type", "rank", "svd_rank", "density",
                                          "majority_sign_method", "svd_clamp", "peft_svd_scaling", NULL};
    int rc = check_keys(r, root, "the merge-lora config", allowed);
    if (rc) return rc;
    struct graft_lora_merge_spec *s = &c->spec;
    yaml_node_t *n;
    if ((n = get(r, root, "base_model"))) {
        const char *v = scalar(n);
        if (!v || !*v || strchr(v, '+')) return fail(r, n, "base_model must be the path of the adapters' base model");
        if ((rc = dup_str(r, n, "base_model", &c->base_ref)) || (rc = rel_path(r, v, &c->base_model))) return rc;
    }
    if (get(r, root, "combination") && get(r, root, "combination_type")) return fail(r, root, "give combination or combination_type, not both");
    if ((n = get(r, root, "combination")) || (n = get(r, root, "combination_type"))) {
        const char *v = scalar(n);
        if (!v || !graft_lora_combination_parse(v, &s->combination))
            return fail(r, n, "unknown combination '%s' (allowed: svd, linear, cat, ties, dare_linear, dare_ties, magnitude_prune, ties_svd, "
                              "dare_linear_svd, dare_ties_svd, magnitude_prune_svd)", v ? v : "?");
    }
    if (get(r, root, "rank") && get(r, root, "svd_rank")) return fail(r, root, "give rank or svd_rank, not both");
    if ((n = get(r, root, "rank")) || (n = get(r, root, "svd_rank"))) {
        double v;
        if (!scalar_number(n, &v) || v != floor(v) || v < 1 || v > 1 << 20) return fail(r, n, "rank must be a whole number ≥ 1");
        s->rank = (int)v;
    }
    if ((n = get(r, root, "density")) && (rc = read_density(r, n, &s->density))) return rc;
    if ((n = get(r, root, "majority_sign_method"))) {
        const char *v = scalar(n);
        if (!v || (strcmp(v, "total") && strcmp(v, "frequency"))) return fail(r, n, "majority_sign_method must be total or frequency");
        s->sign_frequency = !strcmp(v, "frequency");
    }
    if ((n = get(r, root, "svd_clamp")) && !(scalar(n) && !strcmp(scalar(n), "null"))) {
        if (!scalar_number(n, &s->svd_clamp) || !(s->svd_clamp > 0 && s->svd_clamp <= 1)) return fail(r, n, "svd_clamp must be a quantile in (0, 1]");
    }
    if ((n = get(r, root, "peft_svd_scaling")) && !scalar_bool(n, &s->peft_svd_scaling)) return fail(r, n, "peft_svd_scaling must be true or false");
    yaml_node_t *ad = get(r, root, "adapters");
    if (!ad || ad->type != YAML_SEQUENCE_NODE || ad->data.sequence.items.top == ad->data.sequence.items.start)
        return fail(r, ad ? ad : root, "adapters must be a non-empty list of {adapter: PATH, weight: W, density: D}");
    size_t k = (size_t)(ad->data.sequence.items.top - ad->data.sequence.items.start);
    if (k > 4096) return fail(r, ad, "at most 4096 adapters");
    c->adapters = graft__calloc(k, sizeof *c->adapters), c->inputs = graft__calloc(k, sizeof *c->inputs);
    if (!c->adapters || !c->inputs) return graft_err_set(r->err, GRAFT_E_NOMEM, r->label, NULL, 0, "out of memory");
    for (size_t i = 0; i < k; i++) {
        yaml_node_t *e = node(r, ad->data.sequence.items.start[i]), *p = e;
        struct graft_lora_merge_input *in = &c->inputs[i];
        in->weight = 1.0, in->density = -1;
        if (e && e->type == YAML_MAPPING_NODE) {
            static const char *const ek[] = {"adapter", "path", "weight", "density", NULL};
            if ((rc = check_keys(r, e, "an adapter entry", ek))) return rc;
            if (get(r, e, "adapter") && get(r, e, "path")) return fail(r, e, "give adapter or path, not both");
            p = get(r, e, "adapter") ? get(r, e, "adapter") : get(r, e, "path");
            if (!p) return fail(r, e, "an adapter entry needs adapter: PATH");
            yaml_node_t *w = get(r, e, "weight"), *d = get(r, e, "density");
            if (w && !scalar_number(w, &in->weight)) return fail(r, w, "weight must be a number");
            if (d && (rc = read_density(r, d, &in->density))) return rc;
        }
        const char *v = scalar(p);
        if (!v || !*v) return fail(r, p, "an adapter must be the path of a PEFT adapter folder");
        if ((rc = rel_path(r, v, &c->adapters[i]))) return rc;
        in->adapter = c->adapters[i];
        c->n++;
    }
    s->inputs = c->inputs, s->n_inputs = c->n, s->base = c->base_model, s->base_ref = c->base_ref;
    return GRAFT_OK;
}

static int read_lora_merge_v(struct rd *r, void *c) { return read_lora_merge(r, c); }

void graft_lora_merge_config_free(struct graft_lora_merge_config *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) graft__free(c->adapters[i]);
    graft__free(c->adapters), graft__free(c->inputs), graft__free(c->base_model), graft__free(c->base_ref), graft__free(c->path);
    graft__free(c);
}

int graft_lora_merge_config_parse(const char *text, size_t len, const char *label, struct graft_lora_merge_config **out, struct graft_err *err) {
    *out = NULL;
    struct graft_lora_merge_config *c = graft__calloc(1, sizeof *c);
    if (!c || !(c->path = graft__strdup(label))) {
        graft_lora_merge_config_free(c);
        return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
    }
    c->spec = graft_lora_merge_default_spec();
    int rc = parse_with(text, len, label, read_lora_merge_v, c, err);
    if (rc) { graft_lora_merge_config_free(c); return rc; }
    *out = c;
    return GRAFT_OK;
}

int graft_lora_merge_config_load(const char *path, struct graft_lora_merge_config **out, struct graft_err *err) {
    *out = NULL;
    char *text;
    size_t len;
    int rc = read_config_file(path, &text, &len, err);
    if (rc) return rc;
    rc = graft_lora_merge_config_parse(text, len, path, out, err);
    graft__free(text);
    return rc;
}
