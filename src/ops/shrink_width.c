// Width pruning (graft shrink --intermediate / --heads / --hidden; include/graft/shrink.h has the
// importances). One evaluator pass over the calibration windows accumulates the importances (in
// double, token by token in window order: independent of the threads); each tensor is then written
// as a slice of its mapping (rows and columns gathered in pieces of CHUNK bytes), the tensors spread
// over the threads.
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graft/convert.h"
#include "graft/eval.h"
#include "graft/shrink.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

#define CHUNK (16u << 20)

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

// What a tensor's rows / columns index.
enum axis { AX_ALL, AX_HID, AX_Q, AX_KV, AX_QKV, AX_FFN, AX_FFN2 };

static const struct role { const char *suffix; enum axis rows, cols; bool norm; } roles[] = {
    {"self_attn.q_proj.weight", AX_Q, AX_HID, false},       {"self_attn.q_proj.bias", AX_Q, AX_ALL, false},
    {"self_attn.k_proj.weight", AX_KV, AX_HID, false},      {"self_attn.k_proj.bias", AX_KV, AX_ALL, false},
    {"self_attn.v_proj.weight", AX_KV, AX_HID, false},      {"self_attn.v_proj.bias", AX_KV, AX_ALL, false},
    {"self_attn.qkv_proj.weight", AX_QKV, AX_HID, false},   {"self_attn.qkv_proj.bias", AX_QKV, AX_ALL, false},
    {"self_attn.o_proj.weight", AX_HID, AX_Q, false},       {"self_attn.o_proj.bias", AX_HID, AX_ALL, false},
    {"self_attn.q_norm.weight", AX_ALL, AX_ALL, false},     {"self_attn.k_norm.weight", AX_ALL, AX_ALL, false},
    {"mlp.gate_proj.weight", AX_FFN, AX_HID, false},        {"mlp.gate_proj.bias", AX_FFN, AX_ALL, false},
    {"mlp.up_proj.weight", AX_FFN, AX_HID, false},          {"mlp.up_proj.bias", AX_FFN, AX_ALL, false},
    {"mlp.gate_up_proj.weight", AX_FFN2, AX_HID, false},    {"mlp.down_proj.weight", AX_HID, AX_FFN, false},
    {"mlp.down_proj.bias", AX_HID, AX_ALL, false},          {"input_layernorm.weight", AX_HID, AX_ALL, true},
    {"post_attention_layernorm.weight", AX_HID, AX_ALL, true}, {"pre_feedforward_layernorm.weight", AX_HID, AX_ALL, true},
    {"post_feedforward_layernorm.weight", AX_HID, AX_ALL, true},
};

struct wt { struct graft__slice s; long id; };

struct wjob {
    const struct graft_model *m;
    struct graft_writer *w;
    struct wt *ts;
    unsigned flags;
};

static int write_one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct wjob *j = ctx;
    const struct graft__slice *s = &j->ts[item].s;
    if (!s->rows && !s->cols && s->scale == 1.0) return graft__ops_copy_tensor(j->w, j->ts[item].id, j->m, s->src, NULL, err);
    return graft__ops_write_slice(j->w, j->ts[item].id, j->m, s, CHUNK, j->flags, err);
}

struct ranked { double v; uint32_t i; };
static int by_importance(const void *a, const void *b) { // descending, lower index first on ties
    const struct ranked *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}
static int by_index(const void *a, const void *b) { uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b; return x < y ? -1 : x > y; }

// The k largest of v[0..n) (lower index on ties), ascending, into keep.
static int top_k(const double *v, size_t n, size_t k, uint32_t *keep) {
    struct ranked *o = graft__malloc(n * sizeof *o);
    if (!o) return -1;
    for (size_t i = 0; i < n; i++) o[i] = (struct ranked){isnan(v[i]) ? -INFINITY : v[i], (uint32_t)i};
    qsort(o, n, sizeof *o, by_importance);
    for (size_t i = 0; i < k; i++) keep[i] = o[i].i;
    qsort(keep, k, sizeof *keep, by_index);
    graft__free(o);
    return 0;
}

// Importances over the calibration windows.
static int measure(const struct graft_model *m, const int32_t *ids, size_t n_ids, int32_t bos, const struct graft_shrink_params *p,
                   struct graft_shrink_report *r, struct graft_err *err) {
    struct graft_llama *lm = NULL;
    struct graft_llama_stats *st = NULL;
    int L = r->n_layers;
    int rc = graft_llama_open(m, p->n_threads > 0 ? p->n_threads : 1, &lm, err);
    if (!rc && (graft_llama_n_layers(lm) != L || graft_llama_hidden(lm) != r->hidden))
        rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "config.json's sizes are not the evaluator's");
    if (!rc) rc = graft_llama_stats_new(lm, GRAFT_COLLECT_IMPORTANCE, &st, err);
    size_t ctx = (size_t)p->ctx;
    int32_t *win = rc ? NULL : graft__malloc(ctx * sizeof *win);
    if (!rc && !win) rc = nomem(err);
    size_t H = (size_t)r->hidden, I = (size_t)r->ffn, nh = (size_t)r->heads, per = H + nh + H + I; // one layer's sums
    double *prev = rc ? NULL : graft__calloc((size_t)L * per, sizeof *prev), *hw = rc ? NULL : graft__malloc(H * sizeof *hw);
    if (!rc && (!prev || !hw || !(r->ffn_imp = graft__calloc((size_t)L * I, sizeof(double))) || !(r->head_imp = graft__calloc((size_t)L * nh, sizeof(double))) ||
                !(r->hidden_imp = graft__calloc(H, sizeof(double)))))
        rc = nomem(err);
    for (size_t at = 0, T; !rc && r->windows < p->windows && (T = graft__ops_next_window(ids, n_ids, bos, ctx, &at, win));) {
        double nll = 0;
        uint64_t scored = 0;
        if ((rc = graft_llama_forward(lm, win, 1, (int)T, NULL, &nll, &scored, NULL, st, err))) break;
        r->tokens += T, r->windows++;
        // Minitron's best aggregation: the mean over the window's tokens, then the 2-norm over windows
        memset(hw, 0, H * sizeof *hw);
        for (int l = 0; !rc && l < L; l++) {
            size_t dn[4];
            const double *a[4];
            for (int k = 0; k < 4; k++) a[k] = graft_llama_stats_sums(st, l, k, &dn[k]);
            if (!a[0] || dn[0] != H || dn[1] != nh || dn[2] != H || dn[3] != I) {
                rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "config.json's sizes are not the evaluator's");
                break;
            }
            double *pv = prev + (size_t)l * per, *p0 = pv, *p1 = pv + H, *p2 = pv + H + nh, *p3 = pv + H + nh + H, v;
            for (size_t i = 0; i < I; i++) v = (a[3][i] - p3[i]) / (double)T, p3[i] = a[3][i], r->ffn_imp[(size_t)l * I + i] += v * v;
            for (size_t i = 0; i < nh; i++) v = (a[1][i] - p1[i]) / (double)T, p1[i] = a[1][i], r->head_imp[(size_t)l * nh + i] += v * v;
            for (size_t i = 0; i < H; i++) hw[i] += (a[0][i] - p0[i] + a[2][i] - p2[i]) / (double)T, p0[i] = a[0][i], p2[i] = a[2][i];
        }
        for (size_t i = 0; i < H; i++) r->hidden_imp[i] += hw[i] * hw[i];
    }
    if (!rc && r->tokens < 2) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "the calibration text has fewer than 2 tokens");
    double nw = r->windows > 0 ? (double)r->windows : 1; // root mean square over the windows
    for (size_t i = 0; !rc && i < (size_t)L * I; i++) r->ffn_imp[i] = sqrt(r->ffn_imp[i] / nw);
    for (size_t i = 0; !rc && i < (size_t)L * nh; i++) r->head_imp[i] = sqrt(r->head_imp[i] / nw);
    for (size_t i = 0; !rc && i < H; i++) r->hidden_imp[i] = sqrt(r->hidden_imp[i] / nw);
    graft__free(prev), graft__free(hw);
    graft__free(win);
    graft_llama_stats_free(st);
    graft_llama_free(lm);
    return rc;
}

// The element indices an axis keeps in layer l (NULL: all); *n their count.
struct keep {
    const struct graft_shrink_report *r;
    int hd;
    uint32_t *q, *kv, *qkv, *ffn2; // per layer, built from the group / neuron lists
};

static const uint32_t *axis_index(const struct keep *k, enum axis a, int l, size_t *n) {
    const struct graft_shrink_report *r = k->r;
    size_t hd = (size_t)k->hd, qk = (size_t)r->heads_kept * hd, kk = (size_t)r->kv_kept * hd;
    switch (a) {
    case AX_HID: *n = (size_t)r->hidden_kept; return r->hidden_keep;
    case AX_Q: *n = qk; return r->group_keep ? k->q + (size_t)l * qk : NULL;
    case AX_KV: *n = kk; return r->group_keep ? k->kv + (size_t)l * kk : NULL;
    case AX_QKV: *n = qk + 2 * kk; return r->group_keep ? k->qkv + (size_t)l * (qk + 2 * kk) : NULL;
    case AX_FFN: *n = (size_t)r->ffn_kept; return r->ffn_keep ? r->ffn_keep + (size_t)l * r->ffn_kept : NULL;
    case AX_FFN2: *n = 2 * (size_t)r->ffn_kept; return r->ffn_keep ? k->ffn2 + (size_t)l * 2 * r->ffn_kept : NULL;
    default: *n = 0; return NULL;
    }
}

static uint64_t axis_full(const struct graft_shrink_report *r, int hd, enum axis a) {
    switch (a) {
    case AX_HID: return (uint64_t)r->hidden;
    case AX_Q: return (uint64_t)r->heads * hd;
    case AX_KV: return (uint64_t)r->kv_heads * hd;
    case AX_QKV: return (uint64_t)(r->heads + 2 * r->kv_heads) * hd;
    case AX_FFN: return (uint64_t)r->ffn;
    case AX_FFN2: return 2 * (uint64_t)r->ffn;
    default: return 0;
    }
}

// Expand the kept groups and neurons into row lists.
static int build_keep(struct keep *k, int L) {
    const struct graft_shrink_report *r = k->r;
    size_t hd = (size_t)k->hd, gs = (size_t)(r->heads / r->kv_heads), qk = (size_t)r->heads_kept * hd, kk = (size_t)r->kv_kept * hd;
    if (r->group_keep) {
        if (!(k->q = graft__malloc((size_t)L * qk * 4)) || !(k->kv = graft__malloc((size_t)L * kk * 4)) || !(k->qkv = graft__malloc((size_t)L * (qk + 2 * kk) * 4)))
            return -1;
        for (int l = 0; l < L; l++) {
            uint32_t *q = k->q + (size_t)l * qk, *kv = k->kv + (size_t)l * kk, *f = k->qkv + (size_t)l * (qk + 2 * kk);
            size_t nq = 0, nk = 0;
            for (int g = 0; g < r->kv_kept; g++) {
                size_t grp = r->group_keep[(size_t)l * r->kv_kept + g];
                for (size_t h = grp * gs; h < (grp + 1) * gs; h++)
                    for (size_t i = 0; i < hd; i++) q[nq++] = (uint32_t)(h * hd + i);
                for (size_t i = 0; i < hd; i++) kv[nk++] = (uint32_t)(grp * hd + i);
            }
            memcpy(f, q, qk * 4);
            for (size_t i = 0; i < kk; i++) f[qk + i] = (uint32_t)((size_t)r->heads * hd) + kv[i], f[qk + kk + i] = (uint32_t)((size_t)(r->heads + r->kv_heads) * hd) + kv[i];
        }
    }
    if (r->ffn_keep) {
        size_t fk = (size_t)r->ffn_kept;
        if (!(k->ffn2 = graft__malloc((size_t)L * 2 * fk * 4))) return -1;
        for (int l = 0; l < L; l++)
            for (size_t i = 0; i < fk; i++)
                k->ffn2[(size_t)l * 2 * fk + i] = r->ffn_keep[(size_t)l * fk + i], k->ffn2[(size_t)l * 2 * fk + fk + i] = (uint32_t)r->ffn + r->ffn_keep[(size_t)l * fk + i];
    }
    return 0;
}

// Layer of a tensor named "…layers.N.rest" (*rest set), or −1.
static int layer_of(const char *name, size_t len, int L, const char **rest) {
    const char *p = memmem(name, len, "layers.", 7);
    int l, off = 0;
    if (!p || (p != name && p[-1] != '.') || sscanf(p, "layers.%d.%n", &l, &off) != 1 || off <= 0 || l < 0 || l >= L) return -1;
    *rest = p + off;
    return l;
}

static bool ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n >= k && !memcmp(s + n - k, suf, k) && (n == k || s[n - k - 1] == '.');
}

int graft_shrink_width(const struct graft_model *m, const int32_t *ids, size_t n_ids, int32_t bos, const char *target,
                       const struct graft_shrink_params *p, struct graft_shrink_report *rep, struct graft_err *err) {
    struct graft_shrink_report r = {0};
    const char *path = graft_model_path(m), *cj = graft_model_config_json(m);
    json_t *c = cj ? json_loads(cj, 0, NULL) : NULL;
    int rc = json_is_object(c) ? GRAFT_OK : graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "shrink needs the model folder's config.json");
    if (rc) json_decref(c), c = NULL;
    const char *arch = rc ? NULL : json_string_value(json_array_get(json_object_get(c, "architectures"), 0));
    // Gemma 3 vision-language: the decoder's settings are in text_config, its tensors under
    // language_model.; the vision tower is copied as it is
    json_t *root = c;
    bool vl = arch && !strcmp(arch, "Gemma3ForConditionalGeneration");
    if (vl && !json_is_object(c = json_object_get(root, "text_config")))
        rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "config.json: Gemma3ForConditionalGeneration without a text_config"), c = root;
    int hd = 0;
    if (!rc) {
        r.n_layers = (int)graft__json_int(c, "num_hidden_layers", -1), r.hidden = (int)graft__json_int(c, "hidden_size", -1);
        r.ffn = (int)graft__json_int(c, "intermediate_size", -1), r.heads = (int)graft__json_int(c, "num_attention_heads", vl ? 8 : -1);
        r.kv_heads = (int)graft__json_int(c, "num_key_value_heads", vl ? 4 : r.heads); // (Gemma3TextConfig's defaults)
        hd = (int)graft__json_int(c, "head_dim", r.heads > 0 ? r.hidden / r.heads : -1);
        if (arch && !strncmp(arch, "Gemma", 5) && !json_integer_value(json_object_get(c, "head_dim"))) hd = 256;
        if (r.n_layers < 1 || r.n_layers > 4096 || r.hidden < 1 || r.ffn < 1 || r.heads < 1 || r.kv_heads < 1 || r.heads % r.kv_heads || hd < 1 ||
            r.hidden > (1 << 24) || r.ffn > (1 << 26) || (int64_t)r.heads * hd > (1 << 24))
            rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "config.json: num_hidden_layers, hidden_size, intermediate_size, num_attention_heads, "
                                                                 "num_key_value_heads or head_dim missing or inconsistent");
    }
    if (!rc && json_integer_value(json_object_get(c, "num_local_experts")) > 0)
        rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "width pruning of mixture-of-experts layers is not supported (dense models only)");
    bool gemma = arch && !strncmp(arch, "Gemma", 5), minicpm = arch && !strcmp(arch, "MiniCPMForCausalLM");
    // sizes whose change these architectures' own code would not follow
    if (!rc && p->hidden && (gemma || minicpm))
        rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "%s scales by the hidden size (%s): --hidden would change what the model computes",
                           arch, gemma ? "embeddings × √hidden" : "dim_model_base / hidden");
    if (!rc && p->heads && minicpm) rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "MiniCPM derives head_dim from the head count: --heads is not supported");
    int gs = rc ? 1 : r.heads / r.kv_heads, L = r.n_layers;
    if (!rc && !p->intermediate && !p->heads && !p->hidden) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "nothing to prune: give --intermediate, --heads or --hidden");
    if (!rc && (p->intermediate < 0 || p->intermediate > r.ffn)) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--intermediate must be in 1…%d", r.ffn);
    if (!rc && (p->hidden < 0 || p->hidden > r.hidden)) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--hidden must be in 1…%d", r.hidden);
    if (!rc && (p->heads < 0 || p->heads > r.heads || p->heads % gs))
        rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--heads must be a multiple of %d in %d…%d: with %d query heads on %d key/value heads, each group "
                                                            "of %d stays whole", gs, gs, r.heads, r.heads, r.kv_heads, gs);
    if (!rc && (p->ctx < 2 || p->windows < 1)) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--ctx must be ≥ 2 and --windows ≥ 1");
    if (!rc && !ids) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "width pruning needs calibration text");
    if (!rc) rc = measure(m, ids, n_ids, bos, p, &r, err);
    r.ffn_kept = p->intermediate ? p->intermediate : r.ffn, r.heads_kept = p->heads ? p->heads : r.heads;
    r.kv_kept = r.heads_kept / gs, r.hidden_kept = p->hidden ? p->hidden : r.hidden;
    // the kept units
    if (!rc && r.ffn_kept < r.ffn) {
        if (!(r.ffn_keep = graft__malloc((size_t)L * r.ffn_kept * 4))) rc = nomem(err);
        for (int l = 0; !rc && l < L; l++)
            if (top_k(r.ffn_imp + (size_t)l * r.ffn, (size_t)r.ffn, (size_t)r.ffn_kept, r.ffn_keep + (size_t)l * r.ffn_kept)) rc = nomem(err);
    }
    if (!rc && r.kv_kept < r.kv_heads) {
        double *gi = graft__calloc((size_t)r.kv_heads, sizeof *gi);
        if (!gi || !(r.group_keep = graft__malloc((size_t)L * r.kv_kept * 4))) rc = nomem(err);
        for (int l = 0; !rc && l < L; l++) {
            for (int g = 0; g < r.kv_heads; g++) {
                gi[g] = 0;
                for (int h = g * gs; h < (g + 1) * gs; h++) gi[g] += r.head_imp[(size_t)l * r.heads + h];
            }
            if (top_k(gi, (size_t)r.kv_heads, (size_t)r.kv_kept, r.group_keep + (size_t)l * r.kv_kept)) rc = nomem(err);
        }
        graft__free(gi);
    }
    if (!rc && r.hidden_kept < r.hidden) {
        if (!(r.hidden_keep = graft__malloc((size_t)r.hidden_kept * 4)) || top_k(r.hidden_imp, (size_t)r.hidden, (size_t)r.hidden_kept, r.hidden_keep))
            rc = nomem(err);
    }
    // the plan: every tensor's slice
    struct keep k = {.r = &r, .hd = hd};
    if (!rc && build_keep(&k, L)) rc = nomem(err);
    size_t nt = graft_model_n_tensors(m);
    struct wt *ts = rc ? NULL : graft__calloc(nt ? nt : 1, sizeof *ts);
    if (!rc && !ts) rc = nomem(err);
    double nscale = sqrt((double)r.hidden / (double)r.hidden_kept); // RMSNorm's mean over fewer channels
    const uint64_t changed[] = {r.hidden_kept < r.hidden ? (uint64_t)r.hidden : 0, r.ffn_kept < r.ffn ? (uint64_t)r.ffn : 0,
                                r.kv_kept < r.kv_heads ? (uint64_t)r.heads * hd : 0, r.kv_kept < r.kv_heads ? (uint64_t)r.kv_heads * hd : 0};
    for (size_t i = 0; !rc && i < nt; i++) {
        const struct graft_model_tensor *mt = graft_model_tensor(m, i);
        const struct graft_tensor_info *t = mt->info;
        const char *rest = NULL;
        bool decoder = !vl || (t->name_len > 15 && !memcmp(t->name, "language_model.", 15));
        int l = t->name_len < 1000 && decoder ? layer_of(t->name, t->name_len, L, &rest) : -1;
        enum axis ra = AX_ALL, ca = AX_ALL;
        bool norm = false, known = false;
        struct graft__slice *s = &ts[i].s;
        s->src = mt, s->scale = 1.0;
        if (!decoder) continue;
        if (l >= 0) {
            size_t rl = t->name_len - (size_t)(rest - t->name);
            for (size_t q = 0; q < sizeof roles / sizeof roles[0] && !known; q++)
                if (rl == strlen(roles[q].suffix) && !memcmp(rest, roles[q].suffix, rl)) ra = roles[q].rows, ca = roles[q].cols, norm = roles[q].norm, known = true;
        } else if (ends_with(t->name, t->name_len, "embed_tokens.weight") || ends_with(t->name, t->name_len, "lm_head.weight")) {
            ca = AX_HID, known = true;
        } else if (ends_with(t->name, t->name_len, "model.norm.weight") || (t->name_len == 11 && !memcmp(t->name, "norm.weight", 11))) {
            ra = AX_HID, norm = true, known = true;
        }
        s->scale = norm && r.hidden_kept < r.hidden ? nscale : 1.0;
        if (!known) { // copied whole, unless it has a size that changes
            for (int d = 0; d < t->n_dims && !rc; d++)
                for (size_t q = 0; q < sizeof changed / sizeof changed[0]; q++)
                    if (changed[q] && t->ne[d] == changed[q]) {
                        rc = graft_err_set(err, GRAFT_E_CONFIG, path, t->name, t->name_len, "graft shrink does not know how to slice this tensor (dimension %d "
                                                                                           "is a size being pruned)", d);
                        break;
                    }
            continue;
        }
        uint64_t want_r = ra == AX_ALL ? t->ne[0] : axis_full(&r, hd, ra), want_c = ca == AX_ALL ? (t->n_dims > 1 ? t->ne[1] : 0) : axis_full(&r, hd, ca);
        if (t->n_dims < 1 || t->n_dims > 2 || (ca != AX_ALL && t->n_dims != 2) || t->ne[0] != want_r || (t->n_dims == 2 && t->ne[1] != want_c)) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, path, t->name, t->name_len, "shape [%llu%s%llu] is not what config.json implies ([%llu, %llu])",
                               (unsigned long long)t->ne[0], t->n_dims > 1 ? ", " : "", (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 0),
                               (unsigned long long)want_r, (unsigned long long)want_c);
            break;
        }
        if (ra != AX_ALL) s->rows = axis_index(&k, ra, l, &s->n_rows);
        if (ca != AX_ALL) s->cols = axis_index(&k, ca, l, &s->n_cols);
        uint64_t ne[2];
        if ((s->rows || s->cols || s->scale != 1.0) && !graft__ops_slice_shape(s, ne))
            rc = graft_err_set(err, GRAFT_E_CONFIG, path, t->name, t->name_len, "a %s tensor is not sliced (whole-byte floats only)", graft_dtype_traits(t->dtype)->name);
    }
    for (size_t i = 0; !rc && i < nt; i++) {
        uint64_t ne[2];
        r.params += ts[i].s.src->info->n_elem;
        r.params_kept += graft__ops_slice_shape(&ts[i].s, ne) ? ne[0] * ne[1] : ts[i].s.src->info->n_elem;
    }
    struct graft_writer *w = NULL;
    if (!rc && !p->dry_run) {
        rc = graft__ops_writer_open(m, target, p->max_shard_bytes, p->writer_flags, &w, err);
        for (size_t i = 0; !rc && i < nt; i++) {
            const struct graft_tensor_info *t = ts[i].s.src->info;
            uint64_t ne[2];
            bool sliced = ts[i].s.rows || ts[i].s.cols || ts[i].s.scale != 1.0;
            if (sliced) graft__ops_slice_shape(&ts[i].s, ne);
            ts[i].id = sliced ? graft_writer_add_tensor(w, t->name, t->name_len, t->dtype, t->n_dims, ne, err)
                              : graft_writer_add_tensor(w, t->name, t->name_len, t->dtype, t->n_dims, t->ne, err);
            if (ts[i].id < 0) rc = (int)ts[i].id;
        }
        if (!rc) rc = graft_writer_layout(w, err);
        struct wjob j = {m, w, ts, p->writer_flags};
        if (!rc) rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, nt, write_one, &j, NULL, NULL, err);
        if (!rc && !graft__ops_single_file(target)) {
            json_object_set_new(c, "intermediate_size", json_integer(r.ffn_kept));
            json_object_set_new(c, "hidden_size", json_integer(r.hidden_kept));
            json_object_set_new(c, "num_attention_heads", json_integer(r.heads_kept));
            if (json_object_get(c, "num_key_value_heads") || r.kv_heads != r.heads) json_object_set_new(c, "num_key_value_heads", json_integer(r.kv_kept));
            if (r.hidden_kept < r.hidden || r.heads_kept < r.heads) json_object_set_new(c, "head_dim", json_integer(hd)); // no longer hidden / heads
            if (r.hidden_kept < r.hidden) { // ε over the kept channels' mean: with the gains' √(hidden / kept), exactly the original's norm
                double eps = graft__json_num(c, "rms_norm_eps", arch && !strcmp(arch, "Phi3ForCausalLM") ? 1e-5 : 1e-6);
                json_object_set_new(c, "rms_norm_eps", json_real(eps * (double)r.hidden / (double)r.hidden_kept));
            }
            rc = graft__ops_add_json(w, "config.json", root, err);
            if (!rc) rc = graft_writer_copy_tokenizer(w, m, err);
        }
        if (!rc) rc = graft_writer_commit(w, err);
    }
    graft_writer_free(w);
    graft__free(ts), graft__free(k.q), graft__free(k.kv), graft__free(k.qkv), graft__free(k.ffn2);
    json_decref(root);
    if (!rc && rep) *rep = r;
    else graft_shrink_report_free(&r);
    return rc;
}
