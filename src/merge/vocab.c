// Tokenizer merge (MergeKit's tokenizer_source / tokenizer:, shared/methods-mergekit.md §1.5): the
// output vocabulary (the base's stripped to its config vocab_size, a model's, or the union), each
// model's permutation new id → old row, the per-token sources of `tokenizer.tokens`, and the
// embedding rows every model contributes under the new vocabulary. Rows are produced on the fly
// while the engine streams an embedding, so no remapped matrix is ever materialised.
#include <stdlib.h>
#include <string.h>
#include "plan.h"
#include "../io/io-impl.h"

struct vtok {
    enum graft_tok_src kind;
    int                model;  // plan model index (MODEL, MODEL_TOKEN)
    int32_t            row;    // MODEL_TOKEN: the source row
    bool               force;
};

struct graft_vplan {
    uint64_t     n, n_pad;                 // output ids (largest + 1) and embedding rows (padded)
    int32_t     *perm[GRAFT_MAX_INPUTS];   // per plan model: old row of each new id, or -1
    int32_t     *tcfg;                     // per new id: index into tk, or -1
    struct vtok *tk;
    json_t      *tokenizer;                // output tokenizer.json
    json_t      *new_added;                // added_tokens entries appended to it
    int          src_model;                // model whose other tokenizer files are copied
};

long graft__vplan_vocab_size(const struct graft_vplan *vp) { return vp ? (long)vp->n_pad : -1; }

void graft__vplan_free(struct graft_vplan *vp) {
    if (!vp) return;
    for (int i = 0; i < GRAFT_MAX_INPUTS; i++) graft__free(vp->perm[i]);
    graft__free(vp->tcfg), graft__free(vp->tk);
    json_decref(vp->tokenizer), json_decref(vp->new_added);
    graft__free(vp);
}

static int nomem(struct plan *p) { return graft_err_set(p->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

struct idtok { json_int_t id; const char *tok; };
static int cmp_idtok(const void *a, const void *b) {
    const struct idtok *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id ? 1 : strcmp(x->tok, y->tok);
}

// Tokens of `ids` in id order (HF dicts have no defined order; ids give a reproducible one).
static struct idtok *sorted_tokens(const json_t *ids, size_t *n) {
    *n = json_object_size(ids);
    struct idtok *a = graft__malloc((*n ? *n : 1) * sizeof *a);
    if (!a) return NULL;
    size_t k = 0;
    const char *tok;
    json_t *id;
    json_object_foreach((json_t *)ids, tok, id) a[k++] = (struct idtok){json_integer_value(id), tok};
    qsort(a, *n, sizeof *a, cmp_idtok);
    return a;
}

static uint64_t max_id(const json_t *ids) {
    uint64_t n = 0;
    const char *tok;
    json_t *id;
    json_object_foreach((json_t *)ids, tok, id)
        if ((uint64_t)json_integer_value(id) + 1 > n) n = (uint64_t)json_integer_value(id) + 1;
    return n;
}

// MergeKit's stripped base tokenizer: tokens with id ≥ vocab_size removed from the BPE vocabulary,
// the added tokens and the merges that use them. *ids gets token → id of what remains.
static int strip_vocab(struct plan *p, const struct graft__vocab *v, long vs, json_t **root, json_t **ids) {
    *root = json_deep_copy(v->root), *ids = json_object();
    if (!*root || !*ids) return nomem(p);
    json_t *unused = json_object();
    if (!unused) return nomem(p);
    const char *tok;
    json_t *id;
    json_object_foreach(v->ids, tok, id) {
        if (json_integer_value(id) < vs) json_object_set(*ids, tok, id);
        else json_object_set_new(unused, tok, json_true());
    }
    int rc = GRAFT_OK;
    if (json_object_size(unused)) {
        json_t *model = json_object_get(*root, "model");
        const char *type = json_string_value(json_object_get(model, "type"));
        if (!type || strcmp(type, "BPE")) {
            rc = graft__plan_fail(p, "%s: %zu tokens have ids ≥ the config vocab_size %ld and the tokenizer is %s, not BPE: it cannot be "
                                     "stripped for a tokenizer merge", v->path, json_object_size(unused), vs, type ? type : "of unknown type");
            goto out;
        }
        json_t *vocab = json_object_get(model, "vocab");
        json_object_foreach(unused, tok, id) json_object_del(vocab, tok);
        json_t *added = json_object_get(*root, "added_tokens"), *kept = json_array();
        if (!kept) { rc = nomem(p); goto out; }
        for (size_t i = 0; i < json_array_size(added); i++) {
            json_t *e = json_array_get(added, i);
            if (json_integer_value(json_object_get(e, "id")) < vs) json_array_append(kept, e);
        }
        json_object_set_new(*root, "added_tokens", kept);
        json_t *merges = json_object_get(model, "merges"), *mk = json_array();
        if (!mk) { rc = nomem(p); goto out; }
        for (size_t i = 0; i < json_array_size(merges); i++) {
            json_t *m = json_array_get(merges, i);
            bool keep = true;
            if (json_is_string(m)) { // "left right"
                const char *s = json_string_value(m), *sp = strchr(s, ' ');
                char *l = sp ? graft__strndup(s, (size_t)(sp - s)) : NULL;
                if (sp && !l) { rc = nomem(p); goto out; }
                keep = !(l && json_object_get(unused, l)) && !(sp && json_object_get(unused, sp + 1));
                graft__free(l);
            } else {
                for (size_t k = 0; k < json_array_size(m) && keep; k++) {
                    const char *part = json_string_value(json_array_get(m, k));
                    keep = !part || !json_object_get(unused, part);
                }
            }
            if (keep) json_array_append(mk, m);
        }
        if (merges) json_object_set_new(model, "merges", mk);
        else json_decref(mk);
    }
out:
    json_decref(unused);
    return rc;
}

// Append an added token (HF AddedToken fields, in tokenizers' order) with the next free id, *next.
static int add_token(struct plan *p, struct graft_vplan *vp, json_t *ids, json_int_t *next, const char *tok, const json_t *like) {
    json_int_t nid = (*next)++;
    json_t *e = json_object();
    if (!e) return nomem(p);
    json_object_set_new(e, "id", json_integer(nid));
    json_object_set_new(e, "content", json_string(tok));
    static const char *const flags[] = {"single_word", "lstrip", "rstrip", "normalized", "special"};
    for (size_t k = 0; k < 5; k++) {
        json_t *f = like ? json_object_get(like, flags[k]) : NULL;
        json_object_set_new(e, flags[k], f ? json_copy(f) : json_boolean(k == 3)); // regular tokens: normalized, not special
    }
    json_t *added = json_object_get(vp->tokenizer, "added_tokens");
    if (!json_is_array(added)) json_object_set_new(vp->tokenizer, "added_tokens", added = json_array());
    if (!added || json_array_append(added, e) || json_array_append(vp->new_added, e) || json_object_set_new(ids, tok, json_integer(nid))) {
        json_decref(e);
        return nomem(p);
    }
    json_decref(e);
    return GRAFT_OK;
}

static long vocab_rows(const struct graft__vocab *v) { return v->config_vocab > 0 ? v->config_vocab : (long)v->n_ids; }

// Token → id of model m as the merge sees it: the base's stripped vocabulary (sids) for the base and
// for models whose tokenizer could not be read (assumed to be the base's), else its own.
static const json_t *model_ids(struct graft__vocab *const *v, int m, int base, const json_t *sids) {
    return m == base || !v[m] ? sids : v[m]->ids;
}

int graft__vplan_build(struct plan *p) {
    const struct graft_merge_config *c = p->cfg;
    if (!c->tokenizer_source) return GRAFT_OK;
    int n_ref = p->n_models, base = p->donor, rc = GRAFT_OK, src = base;
    struct graft__vocab *v[GRAFT_MAX_INPUTS] = {0};
    json_t *sroot = NULL, *sids = NULL, *ids = NULL, *out_added = NULL;
    struct idtok *order = NULL;
    json_int_t next = 0; // the id the next added token gets
    struct graft_vplan *vp = graft__calloc(1, sizeof *vp);
    if (!vp || !(vp->new_added = json_array())) { rc = nomem(p); goto out; }
    vp->src_model = base;
    if ((rc = graft__vocab_load(p->models[base].m, &v[base], p->err))) goto out;
    for (int i = 0; i < n_ref; i++) {
        if (i == base || !(rc = graft__vocab_load(p->models[i].m, &v[i], p->err))) continue;
        if (rc == GRAFT_E_NOMEM || rc == GRAFT_E_IO) goto out; // only a missing or unusable tokenizer is tolerated
        rc = GRAFT_OK;
        graft__plan_warn(p, "%s; assuming '%s' has the same vocabulary as '%s'", p->err->msg, p->models[i].ref, p->models[base].ref);
        graft_err_clear(p->err);
    }
    if ((rc = strip_vocab(p, v[base], vocab_rows(v[base]), &sroot, &sids))) goto out;
    const char *s = c->tokenizer_source;
    if (!strcmp(s, "base")) {
        vp->tokenizer = json_incref(sroot), ids = json_incref(sids);
    } else if (!strcmp(s, "union")) {
        vp->tokenizer = json_deep_copy(sroot), ids = json_deep_copy(sids), out_added = json_object();
        next = (json_int_t)max_id(sids);
        json_t *regular = json_array();
        if (!vp->tokenizer || !ids || !out_added || !regular) { json_decref(regular); rc = nomem(p); goto out; }
        // regular tokens of every model (base first), then every added token; the first definition wins
        for (int k = -1; k < n_ref && !rc; k++) {
            int m = k < 0 ? base : k;
            if ((k >= 0 && m == base) || !v[m]) continue;
            const json_t *mids = model_ids(v, m, base, sids);
            long vs = vocab_rows(v[m]);
            size_t nt;
            struct idtok *a = sorted_tokens(mids, &nt);
            if (!a) { rc = nomem(p); break; }
            for (size_t t = 0; t < nt; t++)
                if (a[t].id < vs && !json_object_get(v[m]->added, a[t].tok)) // (the stripped base's tokens are skipped below)
                    json_array_append_new(regular, json_string(a[t].tok));
            graft__free(a);
            for (size_t t = 0; t < json_array_size(json_object_get(v[m]->root, "added_tokens")); t++) {
                json_t *e = json_array_get(json_object_get(v[m]->root, "added_tokens"), t);
                const char *tok = json_string_value(json_object_get(e, "content"));
                if (json_integer_value(json_object_get(e, "id")) >= vs) continue;
                json_t *prev = json_object_get(out_added, tok);
                if (!prev) json_object_set(out_added, tok, e);
                else if (!json_equal(json_object_get(prev, "special"), json_object_get(e, "special")) ||
                         !json_equal(json_object_get(prev, "normalized"), json_object_get(e, "normalized")))
                    graft__plan_warn(p, "token '%s' is added with different settings in '%s'; using the first definition", tok, p->models[m].ref);
            }
        }
        for (size_t t = 0; t < json_array_size(regular) && !rc; t++) {
            const char *tok = json_string_value(json_array_get(regular, t));
            if (!json_object_get(ids, tok) && !json_object_get(out_added, tok)) rc = add_token(p, vp, ids, &next, tok, NULL);
        }
        json_decref(regular);
        const char *tok;
        json_t *e;
        json_object_foreach(out_added, tok, e)
            if (!rc && !json_object_get(ids, tok)) rc = add_token(p, vp, ids, &next, tok, e);
        if (rc) goto out;
    } else {
        if ((rc = graft__plan_open_model(p, s, &src))) goto out;
        if (!v[src] && (rc = graft__vocab_load(p->models[src].m, &v[src], p->err))) goto out;
        vp->tokenizer = json_deep_copy(v[src]->root), ids = json_deep_copy(v[src]->ids);
        if (!vp->tokenizer || !ids) { rc = nomem(p); goto out; }
        vp->src_model = src;
    }
    if (strcmp(s, "union")) next = (json_int_t)max_id(ids);
    for (size_t k = 0; k < c->n_tokens && !rc; k++)
        if (!json_object_get(ids, c->tokens[k].token)) rc = add_token(p, vp, ids, &next, c->tokens[k].token, NULL);
    if (rc) goto out;
    vp->n = (uint64_t)next;
    long pm = c->pad_to_multiple_of > 0 ? c->pad_to_multiple_of : 1;
    vp->n_pad = (vp->n + (uint64_t)pm - 1) / (uint64_t)pm * (uint64_t)pm;
    // Without pad_to_multiple_of the source's padded row count is kept when the vocabulary fits in it
    // (Qwen's 151,936 rows for 151,665 tokens: tensor-parallel sizes); MergeKit cuts to the tokens
    const struct graft__vocab *sv = v[vp->src_model];
    if (c->pad_to_multiple_of <= 0 && sv && sv->config_vocab > 0 && (uint64_t)sv->config_vocab > vp->n) {
        vp->n_pad = (uint64_t)sv->config_vocab;
        graft__plan_warn(p, "the output vocabulary has %llu tokens; its embeddings keep %s's %llu rows (config.json vocab_size), the padding "
                            "rows each model's mean row (tokenizer.pad_to_multiple_of: 1 cuts them, as MergeKit does)",
                         (unsigned long long)vp->n, p->models[vp->src_model].ref, (unsigned long long)vp->n_pad);
    }
    // Permutations: a model's row for every output token it has below its vocab_size.
    size_t nt;
    if (!(order = sorted_tokens(ids, &nt))) { rc = nomem(p); goto out; }
    size_t missing = 0;
    const char *first_missing = NULL;
    for (int m = 0; m < p->n_models; m++) {
        if (!(vp->perm[m] = graft__malloc((size_t)vp->n * sizeof(int32_t)))) { rc = nomem(p); goto out; }
        for (uint64_t r = 0; r < vp->n; r++) vp->perm[m][r] = -1;
        const json_t *mids = model_ids(v, m, base, sids);
        long vs = v[m] ? vocab_rows(v[m]) : graft__config_vocab_size(graft_model_config_json(p->models[m].m));
        if (vs < 0) vs = (long)json_object_size(mids);
        for (size_t t = 0; t < nt; t++) {
            json_t *o = json_object_get(mids, order[t].tok);
            if (o && json_integer_value(o) < vs) vp->perm[m][order[t].id] = (int32_t)json_integer_value(o);
        }
    }
    // tokenizer.tokens sources
    if (c->n_tokens) {
        if (!(vp->tcfg = graft__malloc((size_t)vp->n * sizeof(int32_t))) || !(vp->tk = graft__calloc(c->n_tokens, sizeof *vp->tk))) { rc = nomem(p); goto out; }
        for (uint64_t r = 0; r < vp->n; r++) vp->tcfg[r] = -1;
        for (size_t k = 0; k < c->n_tokens; k++) {
            const struct graft_token_cfg *tc = &c->tokens[k];
            struct vtok *t = &vp->tk[k];
            json_int_t r = json_integer_value(json_object_get(ids, tc->token));
            vp->tcfg[r] = (int32_t)k;
            t->kind = tc->kind, t->force = tc->force, t->model = -1;
            if (tc->model) {
                int before = p->n_models;
                if ((rc = graft__plan_open_model(p, tc->model, &t->model))) goto out;
                if (t->model >= n_ref || p->n_models != before) {
                    rc = graft__plan_fail(p, "line %d: token '%s': source model '%s' is not part of the merge", tc->line, tc->token, tc->model);
                    goto out;
                }
            }
            if (tc->kind == GRAFT_TOKSRC_MODEL && vp->perm[t->model][r] < 0) {
                rc = graft__plan_fail(p, "line %d: token '%s' is not in the vocabulary of '%s'", tc->line, tc->token, tc->model);
                goto out;
            }
            if (tc->kind == GRAFT_TOKSRC_MODEL_TOKEN) {
                const json_t *mids = model_ids(v, t->model, base, sids);
                json_t *o = tc->src_token ? json_object_get(mids, tc->src_token) : NULL;
                if (tc->src_token && !o) {
                    rc = graft__plan_fail(p, "line %d: token '%s' is not in the vocabulary of '%s'", tc->line, tc->src_token, tc->model);
                    goto out;
                }
                t->row = o ? (int32_t)json_integer_value(o) : (int32_t)tc->src_id;
            }
        }
    }
    for (size_t t = 0; t < nt; t++) {
        int k = vp->tcfg ? vp->tcfg[order[t].id] : -1;
        bool any = k >= 0 && vp->tk[k].kind != GRAFT_TOKSRC_AUTO;
        for (int m = 0; m < n_ref && !any; m++) any = vp->perm[m][order[t].id] >= 0;
        if (!any && !missing++) first_missing = order[t].tok;
    }
    if (missing)
        graft__plan_warn(p, "%zu output token%s (e.g. '%s') are in no model's vocabulary: their embedding rows are zero unless "
                            "tokenizer.tokens gives a source", missing, missing == 1 ? "" : "s", first_missing ? first_missing : "?");
    p->vp = vp, vp = NULL;
out:
    graft__free(order);
    for (int i = 0; i < GRAFT_MAX_INPUTS; i++) graft__vocab_free(v[i]);
    json_decref(sroot), json_decref(sids), json_decref(ids), json_decref(out_added);
    graft__vplan_free(vp);
    return rc;
}

// ---- rows --------------------------------------------------------------------------------------------

static int input_of(const struct otensor *o, int model) {
    for (int i = 0; i < o->n_in; i++)
        if (o->in[i].model == model) return i;
    return -1;
}

int graft__vplan_check_tensor(struct plan *p, const struct otensor *o) {
    const struct graft_vplan *vp = p->vp;
    for (size_t k = 0; vp->tk && k < p->cfg->n_tokens; k++) {
        const struct vtok *t = &vp->tk[k];
        if (t->kind != GRAFT_TOKSRC_MODEL && t->kind != GRAFT_TOKSRC_MODEL_TOKEN) continue;
        int j = input_of(o, t->model);
        if (j < 0)
            return graft__plan_fail(p, "line %d: token '%s': '%s' has no %s tensor to take the row from", p->cfg->tokens[k].line,
                                    p->cfg->tokens[k].token, p->models[t->model].ref, o->name);
        if (t->kind == GRAFT_TOKSRC_MODEL_TOKEN && (t->row < 0 || (uint64_t)t->row >= o->in[j].t->info->ne[0]))
            return graft__plan_fail(p, "line %d: token '%s': row %d is past the %llu rows of %s in '%s'", p->cfg->tokens[k].line,
                                    p->cfg->tokens[k].token, t->row, (unsigned long long)o->in[j].t->info->ne[0], o->name, p->models[t->model].ref);
    }
    return GRAFT_OK;
}

// Old row of new id r in input j of o, or -1 (absent, or past that tensor's rows).
static int32_t row_of(const struct plan *p, const struct otensor *o, int j, uint64_t r) {
    int32_t x = p->vp->perm[o->in[j].model][r];
    return x >= 0 && (uint64_t)x < o->in[j].t->info->ne[0] ? x : -1;
}

static void load_row(const struct plan *p, const struct otensor *o, int j, uint64_t row, uint64_t c0, uint64_t len, float *d) {
    const struct graft_tensor_info *ti = o->in[j].t->info;
    graft_row_to_f32(ti->dtype, graft__plan_input_at(p, o, j, row * ti->ne[1] + c0), d, (size_t)len);
}

// The row a model lacking token r (or forced) gets: the token's configured source, else the only
// model having it, else zeros (nobody has it), else the base's row, else the mean of those having it.
static void default_row(const struct plan *p, const struct otensor *o, uint64_t r, int k, uint64_t c0, uint64_t len, float *d, float *tmp) {
    const struct graft_vplan *vp = p->vp;
    if (k >= 0 && vp->tk[k].kind != GRAFT_TOKSRC_AUTO) {
        const struct vtok *t = &vp->tk[k];
        int j = t->kind == GRAFT_TOKSRC_ZERO ? -1 : input_of(o, t->model);
        if (j < 0) memset(d, 0, (size_t)len * sizeof *d);
        else load_row(p, o, j, t->kind == GRAFT_TOKSRC_MODEL ? (uint64_t)row_of(p, o, j, r) : (uint64_t)t->row, c0, len, d);
        return;
    }
    int count = 0, only = -1;
    for (int j = 0; j < o->n_in; j++)
        if (row_of(p, o, j, r) >= 0) count++, only = j;
    if (count == 0) { memset(d, 0, (size_t)len * sizeof *d); return; }
    int b = o->mt.base;
    if (count > 1 && b >= 0 && row_of(p, o, b, r) >= 0) only = b, count = 1;
    if (count == 1) { load_row(p, o, only, (uint64_t)row_of(p, o, only, r), c0, len, d); return; }
    memset(d, 0, (size_t)len * sizeof *d);
    for (int j = 0; j < o->n_in; j++) {
        int32_t x = row_of(p, o, j, r);
        if (x < 0) continue;
        load_row(p, o, j, (uint64_t)x, c0, len, tmp);
        for (uint64_t e = 0; e < len; e++) d[e] += tmp[e];
    }
    for (uint64_t e = 0; e < len; e++) d[e] /= (float)count;
}

void graft__vplan_load(const struct plan *p, const struct otensor *o, int i, uint64_t e0, uint64_t n, float *dst, float *tmp) {
    const struct graft_vplan *vp = p->vp;
    uint64_t H = o->ne[1];
    for (uint64_t e = e0; e < e0 + n;) {
        uint64_t r = e / H, c0 = e % H, len = H - c0 < e0 + n - e ? H - c0 : e0 + n - e;
        float *d = dst + (e - e0);
        if (r >= vp->n) {
            if (o->pad) memcpy(d, o->pad + (size_t)i * H + c0, (size_t)len * sizeof *d);
            else memset(d, 0, (size_t)len * sizeof *d);
        } else {
            int k = vp->tcfg ? vp->tcfg[r] : -1;
            int32_t x = row_of(p, o, i, r);
            if (x >= 0 && !(k >= 0 && vp->tk[k].force)) load_row(p, o, i, (uint64_t)x, c0, len, d);
            else default_row(p, o, r, k, c0, len, d, tmp);
        }
        e += len;
    }
}

int graft__vplan_pad_rows(struct plan *p, struct otensor *o) {
    const struct graft_vplan *vp = p->vp;
    if (vp->n_pad == vp->n || vp->n == 0) return GRAFT_OK;
    uint64_t H = o->ne[1];
    double *acc = graft__malloc((size_t)H * sizeof *acc);
    float *row = graft__malloc(2 * (size_t)H * sizeof *row);
    o->pad = graft__calloc((size_t)o->n_in * H, sizeof *o->pad);
    int rc = acc && row && o->pad ? GRAFT_OK : nomem(p);
    for (int i = 0; i < o->n_in && !rc; i++) { // John Hewitt's init: the mean of the real rows
        memset(acc, 0, (size_t)H * sizeof *acc);
        for (uint64_t r = 0; r < vp->n; r++) {
            graft__vplan_load(p, o, i, r * H, H, row, row + H);
            for (uint64_t e = 0; e < H; e++) acc[e] += row[e];
        }
        for (uint64_t e = 0; e < H; e++) o->pad[(size_t)i * H + e] = (float)(acc[e] / (double)vp->n);
    }
    graft__free(acc), graft__free(row);
    return rc;
}

// ---- files -------------------------------------------------------------------------------------------

// Built-in chat templates (MergeKit's names; graft's own Jinja for each well-known format).
static const struct { const char *name, *text; } builtin_templates[] = {
    {"chatml", "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {"llama3", "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
               "message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    {"alpaca", "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
               "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
               "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}"
               "{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"},
    {"exaone", "{% for message in messages %}{{ '[|' + message['role'] + '|]' + message['content'] }}{% if message['role'] == 'user' %}"
               "{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"},
};

// A model's chat template: tokenizer_config.json's (a string, or the "default" of a named list),
// else chat_template.jinja. NULL if none.
static char *model_chat_template(const struct graft_model *m) {
    char *path = graft__asprintf("%s/tokenizer_config.json", graft_model_dir(m)), *res = NULL;
    json_t *tc = NULL;
    struct graft_err e = {0};
    if (path && !graft__load_json_file(path, 64u << 20, &tc, &e)) {
        json_t *ct = json_object_get(tc, "chat_template");
        if (json_is_string(ct)) res = graft__strdup(json_string_value(ct));
        for (size_t i = 0; json_is_array(ct) && i < json_array_size(ct) && !res; i++) {
            json_t *x = json_array_get(ct, i);
            const char *nm = json_string_value(json_object_get(x, "name")), *tx = json_string_value(json_object_get(x, "template"));
            if (nm && tx && !strcmp(nm, "default")) res = graft__strdup(tx);
        }
    }
    json_decref(tc);
    graft__free(path);
    if (!res && (path = graft__asprintf("%s/chat_template.jinja", graft_model_dir(m)))) {
        size_t len;
        if (graft__read_small_file(path, 16u << 20, &res, &len, &e)) res = NULL;
        graft__free(path);
    }
    return res;
}

static int resolve_chat_template(struct plan *p, char **out) {
    const char *ct = p->cfg->chat_template;
    *out = NULL;
    if (!ct) return GRAFT_OK;
    if (!strcmp(ct, "auto")) { // the most common template among the models (first seen wins a tie)
        char *t[GRAFT_MAX_INPUTS] = {0};
        int best = -1, best_n = 0;
        for (int i = 0; i < p->n_models; i++) t[i] = model_chat_template(p->models[i].m);
        for (int i = 0; i < p->n_models; i++) {
            int n = 0;
            for (int j = 0; j < p->n_models && t[i]; j++) n += t[j] && !strcmp(t[i], t[j]);
            if (n > best_n) best = i, best_n = n;
        }
        if (best >= 0) *out = t[best], t[best] = NULL;
        else graft__plan_warn(p, "chat_template: auto found no chat template in any model; none is set");
        for (int i = 0; i < p->n_models; i++) graft__free(t[i]);
        return GRAFT_OK;
    }
    for (size_t i = 0; i < sizeof builtin_templates / sizeof builtin_templates[0]; i++)
        if (!strcmp(ct, builtin_templates[i].name)) return (*out = graft__strdup(builtin_templates[i].text)) ? GRAFT_OK : nomem(p);
    if (strlen(ct) < 20 || !strchr(ct, '{'))
        return graft__plan_fail(p, "chat_template '%s' is neither 'auto', a built-in name (alpaca, chatml, exaone, llama3) nor a Jinja "
                                   "template (at least 20 characters with '{')", ct);
    return (*out = graft__strdup(ct)) ? GRAFT_OK : nomem(p);
}

static int add_json(struct plan *p, struct graft_writer *w, const char *name, const json_t *j) {
    struct graft__buf b;
    graft__buf_init(&b, 1u << 30);
    graft__json_dump_pretty(&b, j);
    int rc = b.failed ? nomem(p) : graft_writer_add_file(w, name, b.data, b.len, p->err);
    graft__buf_free(&b);
    return rc;
}

// The output tokenizer's id of `content` (its vocabulary or added tokens), or -1.
static json_int_t out_id(const json_t *tok, const char *content) {
    const json_t *v = json_object_get(json_object_get(json_object_get(tok, "model"), "vocab"), content), *e;
    if (json_is_integer(v)) return json_integer_value(v);
    size_t i;
    json_array_foreach(json_object_get(tok, "added_tokens"), i, e) {
        const char *c = json_string_value(json_object_get(e, "content"));
        if (c && !strcmp(c, content)) return json_integer_value(json_object_get(e, "id"));
    }
    return -1;
}

// additional_special_tokens and the bos/eos/unk/pad/… roles without the tokens the output vocabulary
// lacks (strings or {"content": …}); a dropped role is warned about.
static void drop_missing_specials(struct plan *p, const json_t *tok, json_t *obj, const char *file) {
    json_t *list = json_object_get(obj, "additional_special_tokens"), *e;
    for (size_t i = json_array_size(list); i-- > 0;) {
        e = json_array_get(list, i);
        const char *c = json_is_string(e) ? json_string_value(e) : json_string_value(json_object_get(e, "content"));
        if (c && out_id(tok, c) < 0) json_array_remove(list, i);
    }
    static const char *const roles[] = {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"};
    for (size_t r = 0; r < sizeof roles / sizeof *roles; r++) {
        e = json_object_get(obj, roles[r]);
        const char *c = json_is_string(e) ? json_string_value(e) : json_string_value(json_object_get(e, "content"));
        if (!c || out_id(tok, c) >= 0) continue;
        graft__plan_warn(p, "%s: %s '%s' is not in the output vocabulary: set to null (transformers would add it past the last embedding row)",
                         file, roles[r], c);
        json_object_set_new(obj, roles[r], json_null()); // (null, not absent: absent would bring back the tokenizer class's default)
    }
}

int graft__plan_tokenizer_prepare(struct plan *p) {
    const struct graft_vplan *vp = p->vp;
    if (!vp && p->opt->copy_tokenizer && !p->opt->in_memory) { // the donor's tokenizer files go out as they are: do its ids fit the output's rows? (not per evolve candidate)
        long rows = -1;
        for (size_t i = 0; i < p->n && rows < 0; i++)
            if (p->t[i].mt.is_embed && p->t[i].n_dims == 2 && !strstr(p->t[i].name, "lm_head")) rows = (long)p->t[i].ne[0];
        struct graft_err e;
        graft_err_clear(&e);
        if (rows > 0 && graft__vocab_fits(p->models[p->donor].m, rows, false, &e))
            graft__plan_warn(p, "the output takes '%s''s tokenizer files: %s (tokenizer_source builds a vocabulary that fits)",
                             p->models[p->donor].ref, strstr(e.msg, ": ") ? strstr(e.msg, ": ") + 2 : e.msg);
    }
    int rc = resolve_chat_template(p, &p->chat_template);
    if (rc || (!vp && (!p->chat_template || !p->opt->copy_tokenizer))) return rc;
    const struct graft_model *src = p->models[vp ? vp->src_model : p->donor].m;
    // tokenizer_config.json: the source's, with the new added tokens and the chat template; entries of
    // tokens the output dropped (a base stripped to its vocab_size) go, or transformers would add them
    // again past the last embedding row
    char *path = graft__asprintf("%s/tokenizer_config.json", graft_model_dir(src));
    json_t *tc = NULL;
    if (!path) return nomem(p);
    rc = graft__load_json_file(path, 64u << 20, &tc, p->err);
    graft__free(path);
    if (rc == GRAFT_E_NOTFOUND) graft_err_clear(p->err), rc = GRAFT_OK, tc = json_object();
    if (rc) return rc;
    if (!(p->tok_config = tc)) return nomem(p);
    json_t *dec = json_object_get(tc, "added_tokens_decoder");
    bool vocab_map = vp && json_is_object(json_object_get(json_object_get(vp->tokenizer, "model"), "vocab"));
    if (vocab_map && json_is_object(dec)) {
        const char *key;
        json_t *e, *tmp;
        json_object_foreach_safe(dec, tmp, key, e) {
            const char *c = json_string_value(json_object_get(e, "content"));
            char idtxt[32];
            snprintf(idtxt, sizeof idtxt, "%lld", c ? (long long)out_id(vp->tokenizer, c) : -1LL);
            if (strcmp(idtxt, key)) json_object_del(dec, key);
        }
    }
    for (size_t i = 0; vp && dec && i < json_array_size(vp->new_added); i++) {
        json_t *e = json_deep_copy(json_array_get(vp->new_added, i));
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)json_integer_value(json_object_get(e, "id")));
        json_object_del(e, "id");
        json_object_set_new(dec, key, e);
    }
    if (vocab_map) drop_missing_specials(p, vp->tokenizer, tc, "tokenizer_config.json");
    if (p->chat_template) json_object_set_new(tc, "chat_template", json_string(p->chat_template));
    if (vocab_map) { // special_tokens_map.json likewise
        path = graft__asprintf("%s/special_tokens_map.json", graft_model_dir(src));
        if (!path) return nomem(p);
        rc = graft__load_json_file(path, 64u << 20, &p->tok_special, p->err);
        graft__free(path);
        if (rc == GRAFT_E_NOTFOUND) return graft_err_clear(p->err), GRAFT_OK;
        if (rc) return rc;
        drop_missing_specials(p, vp->tokenizer, p->tok_special, "special_tokens_map.json");
    }
    return GRAFT_OK;
}

void graft__plan_tokenizer_free(struct plan *p) {
    graft__free(p->chat_template);
    json_decref(p->tok_config), json_decref(p->tok_special);
}

int graft__plan_write_tokenizer(struct plan *p, struct graft_writer *w) {
    const struct graft_vplan *vp = p->vp;
    if (!vp && !p->chat_template) return p->opt->copy_tokenizer ? graft_writer_copy_tokenizer(w, p->models[p->donor].m, p->err) : GRAFT_OK;
    if (!vp && !p->opt->copy_tokenizer) return GRAFT_OK;
    const struct graft_model *src = p->models[vp ? vp->src_model : p->donor].m;
    const char *skip[8] = {"tokenizer_config.json"};
    int ns = 1, rc;
    if (vp) skip[ns++] = "tokenizer.json", skip[ns++] = "added_tokens.json";
    if (p->chat_template) skip[ns++] = "chat_template.jinja", skip[ns++] = "chat_template.json";
    if (p->tok_special) skip[ns++] = "special_tokens_map.json";
    if ((rc = graft__writer_copy_tokenizer_except(w, src, skip, p->err))) return rc;
    if (vp && (rc = add_json(p, w, "tokenizer.json", vp->tokenizer))) return rc;
    if (p->tok_special && (rc = add_json(p, w, "special_tokens_map.json", p->tok_special))) return rc;
    return add_json(p, w, "tokenizer_config.json", p->tok_config);
}
