// Function-preserving growth of Llama-family models (Gesmundo & Maile 2023, methods-research B2),
// by tensor names (model.layers.N.{self_attn,mlp}.*):
//   --hidden H'        embeddings gain zero columns; q/k/v, gate/up and lm_head gain input columns
//                      drawn N(0, σ²); o_proj and down_proj gain zero output rows; every RMSNorm gain g
//                      becomes g·√(h/H') with zero new entries (the RMS over H' dims of a vector whose new
//                      dims are 0 is √(h/H') times the old one, once rms_norm_eps is scaled by h/H' too).
//                      config: hidden_size, rms_norm_eps, head_dim kept.
//   --intermediate I'  gate/up gain rows drawn N(0, σ²); down_proj gains zero columns.
//   --heads H'         new attention heads of the same head_dim: q_proj rows drawn N(0, σ²) (and, for
//                      multi-head attention, new k/v heads too), o_proj zero input columns, so the new
//                      heads add nothing. With grouped KV heads, H' must be a multiple of the KV-head
//                      count and the new query heads join the groups evenly: old heads are reordered
//                      (q rows and o_proj columns together) so each keeps its KV head. head_dim and
//                      RoPE are unchanged; config: num_attention_heads (num_key_value_heads), head_dim.
//   --add-layers N@P   N new blocks after layer P−1 (P = 0: first), copies of the block before them (or
//                      after, at P = 0) with o_proj and down_proj zero: each computes the identity.
//                      Repeatable; every P counts the input's layers.
//   --duplicate A:B    depth up-scaling (SOLAR): layers A…B−1 copied again right after B−1 — NOT
//                      function preserving; for continued training.
// σ = --init-std, else config.json's initializer_range, else 0.02; draws keyed by (--seed, tensor name).
// Layers are renumbered; num_hidden_layers, hidden_size, intermediate_size updated. RoPE is untouched
// (head_dim does not change), so attention is exact too. Tied embeddings stay tied (the new
// columns are zero in both).
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graft/convert.h"
#include "graft/expand.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

#pragma GCC diagnostic ignored "-Wformat-truncation" // names are checked to be ≤ 512 bytes first

struct graft_expand_params graft_expand_default_params(void) { return (struct graft_expand_params){.n_threads = 1}; }

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

enum fill { F_ZERO, F_RAND };
struct xt {
    char    *name;
    const struct graft_model_tensor *src;
    int      n_dims;
    uint64_t ne[2];           // output shape (1-D: ne[0])
    enum fill new_rows, new_cols;
    double   scale;           // applied to the copied values (RMSNorm gains)
    const int64_t *rmap, *cmap; // output row / column → source row / column, −1 new (NULL: the first
                                // rows / columns are the source's, the rest new)
    bool     zero;            // all zero (the o_proj / down_proj of a new block)
    long     id;
};

struct xjob {
    const struct graft_model *m;
    const struct graft_expand_params *p;
    struct xt *ts;
    size_t n, cap;
    double std;
    struct graft_writer *w;
    int64_t *qmap, *kvmap;    // --heads: q rows (o_proj columns) and, for MHA, k/v rows
    uint64_t q_old, q_new, kv_old, kv_new; // their widths before and after
};

static float draw(uint64_t key, uint64_t i) { return (float)graft__rng_normal(key, i, 1.0); }

static int write_one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct xjob *j = ctx;
    struct xt *x = &j->ts[item];
    const struct graft_tensor_info *t = x->src->info;
    uint64_t R = x->ne[0], C = x->n_dims == 2 ? x->ne[1] : 1, r0 = t->ne[0], c0 = t->n_dims == 2 ? t->ne[1] : 1, nb;
    if (!x->zero && R == r0 && C == c0 && x->scale == 1.0 && !x->rmap && !x->cmap)
        return graft__ops_copy_tensor(j->w, x->id, j->m, x->src, j->p->progress, err);
    float *in = graft__malloc((size_t)(r0 * c0) * sizeof *in), *out = graft__malloc((size_t)(R * C) * sizeof *out);
    void *enc = graft__malloc((size_t)(R * C) * 8 + 8);
    if (!in || !out || !enc) { graft__free(in), graft__free(out), graft__free(enc); return nomem(err); }
    graft_row_to_f32(t->dtype, graft_model_data(j->m, x->src), in, (size_t)(r0 * c0));
    uint64_t key = graft_rng_key(j->p->seed, 0, x->name, strlen(x->name));
    for (uint64_t r = 0; r < R; r++)
        for (uint64_t c = 0; c < C; c++) {
            int64_t sr = x->rmap ? x->rmap[r] : r < r0 ? (int64_t)r : -1, sc = x->cmap ? x->cmap[c] : c < c0 ? (int64_t)c : -1;
            float v;
            if ((sr >= 0 && (uint64_t)sr >= r0) || (sc >= 0 && (uint64_t)sc >= c0)) { // a map past the source: a bug, never garbage
                graft__free(in), graft__free(out), graft__free(enc);
                return graft_err_set(err, GRAFT_E_INTERNAL, NULL, x->name, strlen(x->name), "row/column map out of range");
            }
            if (x->zero) v = 0;
            else if (sr >= 0 && sc >= 0) v = (float)(in[(uint64_t)sr * c0 + (uint64_t)sc] * x->scale);
            else if ((sr < 0 && x->new_rows == F_RAND) || (sr >= 0 && sc < 0 && x->new_cols == F_RAND)) v = (float)j->std * draw(key, r * C + c);
            else v = 0;
            out[r * C + c] = v;
        }
    graft_dtype_nbytes(t->dtype, R * C, &nb);
    int rc = graft__ops_encode("expand", x->name, strlen(x->name), t->dtype, out, enc, (size_t)(R * C), j->m, x->src, j->p->writer_flags, err);
    if (!rc) rc = graft_writer_write(j->w, x->id, 0, enc, (size_t)nb, err);
    graft__free(in), graft__free(out), graft__free(enc);
    return rc;
}

// How a tensor named `rest` (the part after "model.layers.N.", or a top-level name) grows.
static int plan_shape(const struct graft_expand_params *p, const struct xjob *j, uint64_t h, uint64_t I, const char *name, const struct graft_tensor_info *t, struct xt *x,
                      struct graft_err *err, const char *path) {
    uint64_t H = p->hidden ? (uint64_t)p->hidden : h, I2 = p->intermediate ? (uint64_t)p->intermediate : I;
    x->n_dims = t->n_dims, x->ne[0] = t->ne[0], x->ne[1] = t->n_dims == 2 ? t->ne[1] : 1, x->scale = 1.0, x->new_rows = x->new_cols = F_ZERO;
    if (t->n_dims > 2) return graft_err_set(err, GRAFT_E_FORMAT, path, t->name, t->name_len, "a %d-D tensor: only Llama-family layouts can grow", t->n_dims);
    const char *s;
    bool grow_h = H != h;
    if (j->qmap && (strstr(name, "q_proj.") || (j->kvmap && (strstr(name, "k_proj.") || strstr(name, "v_proj."))))) {
        bool q = strstr(name, "q_proj.") != NULL;
        if (t->ne[0] != (q ? j->q_old : j->kv_old)) goto odd;
        x->rmap = q ? j->qmap : j->kvmap, x->ne[0] = q ? j->q_new : j->kv_new;
        if (t->n_dims == 2) { // weights: new heads' rows drawn; biases: zero
            if (t->ne[1] != h) goto odd;
            x->ne[1] = H, x->new_rows = F_RAND, x->new_cols = F_RAND;
        }
        return GRAFT_OK;
    }
    if (j->qmap && strstr(name, "o_proj.weight")) {
        if (t->ne[0] != h || t->ne[1] != j->q_old) goto odd;
        x->ne[0] = H, x->ne[1] = j->q_new, x->cmap = j->qmap; // zero columns for the new heads
        return GRAFT_OK;
    }
    if (strstr(name, "q_proj.bias") || strstr(name, "k_proj.bias") || strstr(name, "v_proj.bias")) {
        return GRAFT_OK; // attention widths do not change
    } else if (strstr(name, "o_proj.bias") || strstr(name, "down_proj.bias")) {
        if (t->ne[0] != h) goto odd;
        x->ne[0] = H; // zero new outputs
    } else if (strstr(name, "gate_proj.bias") || strstr(name, "up_proj.bias")) {
        if (t->ne[0] != I) goto odd;
        x->ne[0] = I2, x->new_rows = F_RAND;
    } else if ((s = strstr(name, "_proj.weight")) && (strstr(name, "q_proj") || strstr(name, "k_proj") || strstr(name, "v_proj"))) {
        if (t->ne[1] != h) goto odd;
        x->ne[1] = H, x->new_cols = F_RAND;
    } else if (strstr(name, "o_proj.weight")) {
        if (t->ne[0] != h) goto odd;
        x->ne[0] = H;
    } else if (strstr(name, "gate_proj.weight") || strstr(name, "up_proj.weight")) {
        if (t->ne[0] != I || t->ne[1] != h) goto odd;
        x->ne[0] = I2, x->ne[1] = H, x->new_rows = F_RAND, x->new_cols = F_RAND;
    } else if (strstr(name, "down_proj.weight")) {
        if (t->ne[0] != h || t->ne[1] != I) goto odd;
        x->ne[0] = H, x->ne[1] = I2;
    } else if (strstr(name, "embed_tokens.weight")) {
        if (t->ne[1] != h) goto odd;
        x->ne[1] = H;
    } else if (strstr(name, "lm_head.weight")) {
        if (t->ne[1] != h) goto odd;
        x->ne[1] = H, x->new_cols = F_RAND;
    } else if (t->n_dims == 1 && t->ne[0] == h && (strstr(name, "norm.weight") || strstr(name, "layernorm.weight"))) {
        x->ne[0] = H, x->scale = sqrt((double)h / (double)H);
    } else if (grow_h && t->n_dims >= 1 && (t->ne[0] == h || (t->n_dims == 2 && t->ne[1] == h))) {
        goto odd; // something of width h that we do not know how to grow
    } else if (I2 != I && t->n_dims >= 1 && (t->ne[0] == I || (t->n_dims == 2 && t->ne[1] == I))) {
        goto odd; // the same for the intermediate width
    }
    return GRAFT_OK;
odd:
    return graft_err_set(err, GRAFT_E_FORMAT, path, t->name, t->name_len,
                         "shape does not fit hidden_size %llu / intermediate_size %llu, or the tensor's role is unknown: only Llama-family layouts can grow",
                         (unsigned long long)h, (unsigned long long)I);
}

// "model.layers.N.rest": N and rest, or false.
static bool split_layer(const char *name, long *n, const char **rest) {
    const char *l = strstr(name, "layers.");
    if (!l) return false;
    char *end;
    long v = strtol(l + 7, &end, 10);
    if (end == l + 7 || *end != '.') return false;
    *n = v, *rest = end + 1;
    return true;
}

static struct xt *push(struct xjob *j, struct graft_err *err) {
    if (j->n == j->cap) {
        size_t c = j->cap ? 2 * j->cap : 256;
        struct xt *t = graft__realloc(j->ts, c * sizeof *t);
        if (!t) { nomem(err); return NULL; }
        j->ts = t, j->cap = c;
    }
    struct xt *x = &j->ts[j->n++];
    memset(x, 0, sizeof *x);
    x->id = -1;
    return x;
}

int graft_expand(const struct graft_model *m, const char *target, const struct graft_expand_params *p, int *n_layers_out, struct graft_err *err) {
    const char *cfg = graft_model_config_json(m);
    json_t *root = cfg ? json_loads(cfg, 0, NULL) : NULL;
    struct xjob j = {.m = m, .p = p};
    struct graft_writer *w = NULL;
    int rc = GRAFT_OK, L = 0;
    long *order = NULL; // output layer k comes from input layer order[k]; −(1 + src) marks a new identity block copied from src
    if (!root) return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "needs the model's config.json");
    // Gemma's (1 + w) norms and √hidden embedding scale, Qwen3's per-head q/k norms and Phi-3's fused
    // projections need growth rules of their own: refused (exit 4) rather than grown wrongly
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    if (!mt || (strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "qwen2"))) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(m), NULL, 0, "model_type '%s': expand applies to Llama, Mistral and Qwen2 models",
                           mt ? mt : "(none)");
        json_decref(root);
        return rc;
    }
    uint64_t h = (uint64_t)json_integer_value(json_object_get(root, "hidden_size")), I = (uint64_t)json_integer_value(json_object_get(root, "intermediate_size"));
    L = (int)json_integer_value(json_object_get(root, "num_hidden_layers"));
    double ir = json_number_value(json_object_get(root, "initializer_range"));
    j.std = p->init_std > 0 ? p->init_std : ir > 0 ? ir : 0.02;
    if (!h || !I || L < 1) { rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "config.json needs hidden_size, intermediate_size and num_hidden_layers"); goto out; }
    if ((p->hidden && (uint64_t)p->hidden < h) || (p->intermediate && (uint64_t)p->intermediate < I)) {
        rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "growth only: --hidden ≥ %llu and --intermediate ≥ %llu", (unsigned long long)h, (unsigned long long)I);
        goto out;
    }
    uint64_t nh = (uint64_t)json_integer_value(json_object_get(root, "num_attention_heads")), nkv = nh, hd = 0, nkv2 = 0;
    if (json_is_integer(json_object_get(root, "num_key_value_heads"))) nkv = (uint64_t)json_integer_value(json_object_get(root, "num_key_value_heads"));
    if (p->heads) {
        hd = json_is_integer(json_object_get(root, "head_dim")) ? (uint64_t)json_integer_value(json_object_get(root, "head_dim")) : nh ? h / nh : 0;
        uint64_t H2 = (uint64_t)p->heads;
        if (!nh || !nkv || nh % nkv || !hd) { rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "config.json needs num_attention_heads (and consistent num_key_value_heads)"); goto out; }
        bool mha = nkv == nh;
        if (H2 <= nh) { rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--heads %d: growth only, more than the %llu heads", p->heads, (unsigned long long)nh); goto out; }
        if (!mha && H2 % nkv) {
            rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--heads %d must be a multiple of the %llu key/value heads (grouped-query attention)", p->heads,
                               (unsigned long long)nkv);
            goto out;
        }
        nkv2 = mha ? H2 : nkv;
        j.q_old = nh * hd, j.q_new = H2 * hd, j.kv_old = nkv * hd, j.kv_new = nkv2 * hd;
        if (!(j.qmap = graft__malloc(j.q_new * sizeof *j.qmap)) || (mha && !(j.kvmap = graft__malloc(j.kv_new * sizeof *j.kvmap)))) { rc = nomem(err); goto out; }
        uint64_t g = nh / nkv, g2 = H2 / nkv2; // query heads per KV head, before and after (MHA: 1 and 1)
        for (uint64_t head = 0; head < H2; head++) {
            uint64_t grp = head / g2, slot = head % g2;
            bool old = grp < nkv && slot < g; // MHA: the first nh heads; GQA: the first g of each group
            for (uint64_t d = 0; d < hd; d++) j.qmap[head * hd + d] = old ? (int64_t)((grp * g + slot) * hd + d) : -1;
        }
        for (uint64_t r = 0; mha && r < j.kv_new; r++) j.kvmap[r] = r < j.kv_old ? (int64_t)r : -1;
    }
    int nl = L + (p->dup_b - p->dup_a);
    for (int a = 0; a < p->n_adds; a++) {
        if (p->add_at[a] < 0 || p->add_at[a] > L) { rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--add-layers position %d is past the %d layers", p->add_at[a], L); goto out; }
        nl += p->add_n[a];
    }
    if (p->dup_b && !(0 <= p->dup_a && p->dup_a < p->dup_b && p->dup_b <= L)) { rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--duplicate A:B needs 0 ≤ A < B ≤ %d", L); goto out; }
    if (!(order = graft__calloc((size_t)nl, sizeof *order))) { rc = nomem(err); goto out; }
    {
        int k = 0;
        for (int l = 0; l <= L; l++) {
            for (int a = 0; a < p->n_adds; a++) // positions refer to the input's layers; several may coincide
                if (l == p->add_at[a])
                    for (int b = 0; b < p->add_n[a]; b++) order[k++] = -(1 + (l > 0 ? l - 1 : 0));
            if (l == L) break;
            order[k++] = l;
            if (p->dup_b && l == p->dup_b - 1)
                for (int d = p->dup_a; d < p->dup_b; d++) order[k++] = d;
        }
    }
    for (size_t i = 0; i < graft_model_n_tensors(m); i++)
        if (graft_model_tensor(m, i)->info->name_len > 512) { rc = graft_err_set(err, GRAFT_E_LIMIT, graft_model_path(m), NULL, 0, "a tensor name is longer than 512 bytes"); goto out; }
    { // the layers must be the ones num_hidden_layers says: a layer past it would be dropped, a missing one invented
        bool *seen = graft__calloc((size_t)L, sizeof *seen);
        if (!seen) { rc = nomem(err); goto out; }
        for (size_t i = 0; !rc && i < graft_model_n_tensors(m); i++) {
            const struct graft_tensor_info *ti = graft_model_tensor(m, i)->info;
            long n;
            const char *rest;
            if (!split_layer(ti->name, &n, &rest)) continue;
            if (n < 0 || n >= L) rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), ti->name, ti->name_len, "in layer %ld, past num_hidden_layers %d", n, L);
            else seen[n] = true;
        }
        for (int l = 0; !rc && l < L; l++)
            if (!seen[l]) rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "layer %d has no tensors, though num_hidden_layers is %d", l, L);
        graft__free(seen);
        // inserted layers: config.json's per-layer rules must follow (layer_types is rewritten below)
        if (!rc && nl != L) rc = graft__ops_layer_keys_check(root, L, graft_model_path(m), "expanded", err);
        if (rc) goto out;
    }
    // non-layer tensors, then the layers in output order
    for (size_t i = 0; !rc && i < graft_model_n_tensors(m); i++) {
        const struct graft_model_tensor *t = graft_model_tensor(m, i);
        long n;
        const char *rest;
        if (split_layer(t->info->name, &n, &rest)) continue;
        struct xt *x = push(&j, err);
        if (!x) { rc = GRAFT_E_NOMEM; break; }
        x->src = t, x->name = graft__strndup(t->info->name, t->info->name_len);
        if (!x->name) { rc = nomem(err); break; }
        rc = plan_shape(p, &j, h, I, x->name, t->info, x, err, graft_model_path(m));
    }
    for (int k = 0; !rc && k < nl; k++) {
        long src = order[k] >= 0 ? order[k] : -order[k] - 1;
        bool fresh = order[k] < 0;
        for (size_t i = 0; !rc && i < graft_model_n_tensors(m); i++) {
            const struct graft_model_tensor *t = graft_model_tensor(m, i);
            long n;
            const char *rest;
            if (!split_layer(t->info->name, &n, &rest) || n != src) continue;
            struct xt *x = push(&j, err);
            if (!x) { rc = GRAFT_E_NOMEM; break; }
            const char *l = strstr(t->info->name, "layers.");
            x->src = t, x->name = graft__asprintf("%.*slayers.%d.%s", (int)(l - t->info->name), t->info->name, k, rest);
            if (!x->name) { rc = nomem(err); break; }
            rc = plan_shape(p, &j, h, I, x->name, t->info, x, err, graft_model_path(m));
            x->zero = fresh && (strstr(rest, "o_proj.") || strstr(rest, "down_proj."));
        }
    }
    if (!rc && !p->dry_run) {
        rc = graft__ops_writer_open(m, target, p->max_shard_bytes, p->writer_flags, &w, err);
        j.w = w;
        for (size_t i = 0; !rc && i < j.n; i++) {
            struct xt *x = &j.ts[i];
            if ((x->id = graft_writer_add_tensor(w, x->name, strlen(x->name), x->src->info->dtype, x->n_dims, x->ne, err)) < 0) rc = (int)x->id;
        }
        if (!rc) rc = graft_writer_layout(w, err);
        if (!rc) rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, j.n, write_one, &j, p->progress && p->progress->enabled ? graft_progress_draw : NULL,
                                     p->progress, err);
        if (!rc) {
            json_object_set_new(root, "num_hidden_layers", json_integer(nl));
            json_t *types = json_object_get(root, "layer_types");
            if (json_is_array(types) && nl != L) { // each output layer takes its source layer's type (a new block: the layer it copies)
                json_t *nt = json_array();
                for (int k = 0; nt && k < nl; k++) json_array_append(nt, json_array_get(types, (size_t)(order[k] >= 0 ? order[k] : -order[k] - 1)));
                json_object_set_new(root, "layer_types", nt);
            }
            if (p->hidden) {
                uint64_t heads = (uint64_t)json_integer_value(json_object_get(root, "num_attention_heads"));
                if (!json_object_get(root, "head_dim") && heads) json_object_set_new(root, "head_dim", json_integer((json_int_t)(h / heads)));
                json_object_set_new(root, "hidden_size", json_integer(p->hidden));
                // RMS over H dims with zeros in the new ones: √((h/H)·ms + ε'); ε' = ε·h/H makes it exactly
                // √(h/H) times the old √(ms + ε), which the gains' √(h/H) undo
                json_t *e = json_object_get(root, "rms_norm_eps"); // (absent: transformers' Llama default, 1e-6)
                json_object_set_new(root, "rms_norm_eps", json_real((json_is_number(e) ? json_number_value(e) : 1e-6) * (double)h / (double)p->hidden));
            }
            if (p->intermediate) json_object_set_new(root, "intermediate_size", json_integer(p->intermediate));
            if (p->heads) {
                json_object_set_new(root, "num_attention_heads", json_integer(p->heads));
                json_object_set_new(root, "num_key_value_heads", json_integer((json_int_t)nkv2));
                json_object_set_new(root, "head_dim", json_integer((json_int_t)hd));
            }
            rc = graft__ops_add_json(w, "config.json", root, err);
        }
        if (!rc) rc = graft_writer_copy_tokenizer(w, m, err);
        if (!rc) rc = graft_writer_commit(w, err);
    }
    if (n_layers_out) *n_layers_out = nl;
out:
    graft_writer_free(w);
    for (size_t i = 0; i < j.n; i++) graft__free(j.ts[i].name);
    graft__free(j.ts), graft__free(order), graft__free(j.qmap), graft__free(j.kvmap);
    json_decref(root);
    return rc;
}
