// Depth pruning (graft shrink --drop-layers; include/graft/shrink.h has the metrics). The evaluator
// runs each calibration window once and keeps every layer's input and the last layer's output; the
// metric is accumulated in double, window by window, in window order (so it does not depend on the
// threads, which the forward pass uses inside each window). The output is written tensor by tensor:
// the dropped layers' tensors left out, the others renamed to their new index.
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

struct graft_shrink_params graft_shrink_default_params(void) {
    return (struct graft_shrink_params){.drop = 1, .metric = GRAFT_DEPTH_ANGULAR, .ctx = 256, .windows = 32, .n_threads = 1};
}

void graft_shrink_report_free(struct graft_shrink_report *r) {
    if (!r) return;
    graft__free(r->dropped), graft__free(r->values), graft__free(r->ffn_imp), graft__free(r->head_imp), graft__free(r->hidden_imp);
    graft__free(r->ffn_keep), graft__free(r->group_keep), graft__free(r->hidden_keep);
    memset(r, 0, sizeof *r);
}

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    double c = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 1.0;
    return c > 1 ? 1 : c < -1 ? -1 : c;
}

// The mean NLL per scored token of the calibration windows with `skip` layers left out.
static int window_nll(struct graft_llama *lm, const int32_t *ids, size_t n_ids, int32_t bos, const struct graft_shrink_params *p, const bool *skip,
                      int32_t *win, double *out, struct graft_err *err) {
    double nll = 0;
    uint64_t scored = 0;
    int rc = graft_llama_skip_layers(lm, skip, err), used = 0;
    for (size_t at = 0, T; !rc && used < p->windows && (T = graft__ops_next_window(ids, n_ids, bos, (size_t)p->ctx, &at, win)); used++)
        rc = graft_llama_forward(lm, win, 1, (int)T, NULL, &nll, &scored, NULL, NULL, err);
    if (!rc && !scored) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "the calibration text has fewer than 2 tokens");
    *out = scored ? nll / (double)scored : 0;
    return rc;
}

// --metric ppl: greedy rounds of single-layer removals by measured NLL.
static int greedy_ppl(struct graft_llama *lm, const int32_t *ids, size_t n_ids, int32_t bos, const struct graft_shrink_params *p, int L,
                      struct graft_shrink_report *rep, struct graft_err *err) {
    long need = 0;
    for (int r = 0; r < p->drop; r++) need += L - r;
    if (p->budget > 0 && need > p->budget)
        return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--metric ppl needs %ld evaluations of the calibration text for %d layers and --drop-layers %d: "
                                                              "raise --budget (now %d) or use angular / block-influence", need, L, p->drop, p->budget);
    bool *skip = graft__calloc((size_t)L, sizeof *skip);
    int32_t *win = graft__malloc((size_t)p->ctx * sizeof *win);
    rep->values = graft__calloc((size_t)L, sizeof *rep->values), rep->dropped = graft__malloc((size_t)p->drop * sizeof *rep->dropped);
    int rc = skip && win && rep->values && rep->dropped ? GRAFT_OK : nomem(err);
    for (int r = 0; !rc && r < p->drop; r++) {
        int best = -1;
        double bv = 0;
        for (int l = 0; !rc && l < L; l++) {
            if (skip[l]) continue;
            double v;
            skip[l] = true;
            rc = window_nll(lm, ids, n_ids, bos, p, skip, win, &v, err);
            skip[l] = false;
            if (rc == GRAFT_E_NONFINITE) rc = GRAFT_OK, graft_err_clear(err), v = INFINITY; // this removal breaks the model: never chosen
            if (r == 0) rep->values[l] = v;
            if (!rc && (best < 0 || v < bv)) best = l, bv = v;
        }
        if (!rc && (best < 0 || !isfinite(bv)))
            rc = graft_err_set(err, GRAFT_E_NONFINITE, NULL, NULL, 0, "every candidate layer's removal gives a non-finite loss");
        if (!rc) skip[best] = true;
    }
    for (int l = 0, k = 0; !rc && l < L; l++)
        if (skip[l]) rep->dropped[k++] = l;
    rep->n_dropped = p->drop, rep->n_values = L;
    for (size_t at = 0; !rc && rep->windows < p->windows && graft__ops_next_window(ids, n_ids, bos, (size_t)p->ctx, &at, win);) rep->windows++;
    graft__free(skip), graft__free(win);
    return rc;
}

// The metric over the calibration windows: values[] and the layers to drop.
static int measure(const struct graft_model *m, const int32_t *ids, size_t n_ids, int32_t bos, const struct graft_shrink_params *p, int L,
                   struct graft_shrink_report *rep, struct graft_err *err) {
    struct graft_llama *lm = NULL;
    int rc = graft_llama_open(m, p->n_threads > 0 ? p->n_threads : 1, &lm, err);
    if (rc) return rc;
    if (graft_llama_n_layers(lm) != L) { // every buffer below is sized by L
        graft_llama_free(lm);
        return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "config.json says %d layers, the evaluator finds %d", L,
                             graft_llama_n_layers(lm));
    }
    if (p->metric == GRAFT_DEPTH_PPL) {
        rc = greedy_ppl(lm, ids, n_ids, bos, p, L, rep, err);
        graft_llama_free(lm);
        return rc;
    }
    size_t H = (size_t)graft_llama_hidden(lm), ctx = (size_t)p->ctx;
    int nv = p->metric == GRAFT_DEPTH_ANGULAR ? L - p->drop + 1 : L;
    double *acc = graft__calloc((size_t)nv, sizeof *acc);
    float *hs = graft__malloc((size_t)(L + 1) * ctx * H * sizeof *hs);
    int32_t *win = graft__malloc(ctx * sizeof *win);
    size_t count = 0; // windows (angular) or tokens (block influence)
    if (!acc || !hs || !win) rc = nomem(err);
    for (size_t at = 0, T; !rc && rep->windows < p->windows && (T = graft__ops_next_window(ids, n_ids, bos, ctx, &at, win));) {
        if ((rc = graft_llama_hidden_states(lm, win, (int)T, hs, err))) break;
        const float *h = hs;
        if (p->metric == GRAFT_DEPTH_ANGULAR) { // at the window's last token
            for (int l = 0; l < nv; l++)
                acc[l] += acos(cosine(h + ((size_t)l * T + T - 1) * H, h + ((size_t)(l + p->drop) * T + T - 1) * H, H)) / M_PI;
            count++;
        } else {
            for (int l = 0; l < L; l++)
                for (size_t t = 0; t < T; t++) acc[l] += 1.0 - cosine(h + ((size_t)l * T + t) * H, h + ((size_t)(l + 1) * T + t) * H, H);
            count += T;
        }
        rep->windows++;
    }
    if (!rc && !count) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "the calibration text has fewer than 2 tokens");
    if (!rc) {
        rep->values = acc, rep->n_values = nv, acc = NULL;
        for (int l = 0; l < nv; l++) rep->values[l] /= (double)count;
        if (!(rep->dropped = graft__malloc((size_t)p->drop * sizeof *rep->dropped))) rc = nomem(err);
        if (!rc && p->metric == GRAFT_DEPTH_ANGULAR) { // the block with the smallest distance (first on ties)
            int best = 0;
            for (int l = 1; l < nv; l++)
                if (rep->values[l] < rep->values[best]) best = l;
            for (int k = 0; k < p->drop; k++) rep->dropped[k] = best + k;
        } else if (!rc) { // the drop lowest influences (lower index on ties), then ascending
            bool *taken = graft__calloc((size_t)L, sizeof *taken);
            if (!taken) rc = nomem(err);
            for (int k = 0; !rc && k < p->drop; k++) {
                int best = -1;
                for (int l = 0; l < L; l++)
                    if (!taken[l] && (best < 0 || rep->values[l] < rep->values[best])) best = l;
                taken[best] = true;
            }
            for (int l = 0, k = 0; !rc && l < L; l++)
                if (taken[l]) rep->dropped[k++] = l;
            graft__free(taken);
        }
        rep->n_dropped = p->drop;
    }
    graft__free(acc), graft__free(hs), graft__free(win);
    graft_llama_free(lm);
    return rc;
}

int graft_shrink_depth(const struct graft_model *m, const int32_t *ids, size_t n_ids, int32_t bos, const char *target,
                       const struct graft_shrink_params *p, struct graft_shrink_report *rep, struct graft_err *err) {
    struct graft_shrink_report r = {0};
    const char *cj = graft_model_config_json(m);
    json_t *c = cj ? json_loads(cj, 0, NULL) : NULL;
    int rc = json_is_object(c) ? GRAFT_OK : graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "shrink needs the model folder's config.json");
    int L = rc ? 0 : (int)graft__json_int(c, "num_hidden_layers", -1);
    const char *arch = rc ? NULL : json_string_value(json_array_get(json_object_get(c, "architectures"), 0));
    json_t *types = rc ? NULL : json_object_get(c, "layer_types");
    if (!rc && (L < 1 || L > 4096)) rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "config.json: num_hidden_layers missing or out of range");
    // layer-position rules that dropping layers would silently change
    if (!rc) rc = graft__ops_layer_keys_check(c, L, graft_model_path(m), "shrunk", err);
    r.n_layers = L;
    if (!rc && p->n_layers) { // named layers
        if (!(r.dropped = graft__malloc(p->n_layers * sizeof *r.dropped))) rc = nomem(err);
        for (size_t i = 0; !rc && i < p->n_layers; i++) {
            if (p->layers[i] < 0 || p->layers[i] >= L) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "layer %d: the model has layers 0…%d", p->layers[i], L - 1);
            for (size_t k = 0; !rc && k < i; k++)
                if (p->layers[k] == p->layers[i]) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "layer %d named twice", p->layers[i]);
            r.dropped[r.n_dropped++] = p->layers[i];
        }
        for (int a = 1; !rc && a < r.n_dropped; a++) // ascending
            for (int b = a; b > 0 && r.dropped[b - 1] > r.dropped[b]; b--) { int t = r.dropped[b]; r.dropped[b] = r.dropped[b - 1], r.dropped[b - 1] = t; }
    } else if (!rc) {
        if (p->drop < 1 || p->drop >= L) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--drop-layers must be in 1…%d (the model has %d layers)", L - 1, L);
        else if (p->ctx < 2 || p->windows < 1) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--ctx must be ≥ 2 and --windows ≥ 1");
        else if (!ids) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "a metric needs calibration text");
        else rc = measure(m, ids, n_ids, bos, p, L, &r, err);
    }
    if (!rc && r.n_dropped >= L) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "at least one layer must stay");
    size_t nt0 = graft_model_n_tensors(m);
    int *per = rc ? NULL : graft__calloc((size_t)L, sizeof *per); // tensors of each layer
    if (!rc && !per) rc = nomem(err);
    for (size_t i = 0; !rc && i < nt0; i++) {
        const struct graft_tensor_info *t = graft_model_tensor(m, i)->info;
        int l, off = 0;
        bool under = t->name_len > 13 && !memcmp(t->name, "model.layers.", 13);
        if (under && t->name_len >= 1000)
            rc = graft_err_set(err, GRAFT_E_LIMIT, graft_model_path(m), t->name, 100, "tensor name too long");
        else if (under && (sscanf(t->name, "model.layers.%d.%n", &l, &off) != 1 || off <= 0 || l < 0 || l >= L))
            rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(m), t->name, t->name_len, "a layer the config does not count (%d layers)", L);
        else if (under) per[l]++;
        else if (memmem(t->name, t->name_len, "layers.", 7) || memmem(t->name, t->name_len, ".h.", 3) || memmem(t->name, t->name_len, ".blocks.", 8))
            rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(m), t->name, t->name_len, "per-layer tensors outside model.layers.N: graft shrink "
                                                                                            "renumbers model.layers.N only");
    }
    for (int l = 0; !rc && l < L; l++)
        if (!per[l]) rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(m), NULL, 0, "layer %d has no model.layers.%d.* tensors", l, l);
    graft__free(per);
    int *map = rc ? NULL : graft__malloc((size_t)L * sizeof *map); // old layer → new index, or −1
    if (!rc && !map) rc = nomem(err);
    for (int l = 0, nl = 0, k = 0; !rc && l < L; l++) {
        bool drop = k < r.n_dropped && r.dropped[k] == l;
        map[l] = drop ? -1 : nl++;
        k += drop;
    }
    struct graft_writer *w = NULL;
    size_t nt = graft_model_n_tensors(m);
    long *ids_out = NULL;
    if (!rc && !p->dry_run) {
        rc = graft__ops_writer_open(m, target, p->max_shard_bytes, p->writer_flags, &w, err);
        if (!rc && !(ids_out = graft__malloc((nt + 1) * sizeof *ids_out))) rc = nomem(err);
        for (size_t i = 0; !rc && i < nt; i++) {
            const struct graft_tensor_info *t = graft_model_tensor(m, i)->info;
            char name[1100];
            int l, off = 0;
            ids_out[i] = -1;
            if (t->name_len < sizeof name - 16 && sscanf(t->name, "model.layers.%d.%n", &l, &off) == 1 && off > 0 && l >= 0 && l < L) {
                if (map[l] < 0) continue; // a dropped layer
                int len = snprintf(name, sizeof name, "model.layers.%d.%.*s", map[l], (int)(t->name_len - (size_t)off), t->name + off);
                ids_out[i] = graft_writer_add_tensor(w, name, (size_t)len, t->dtype, t->n_dims, t->ne, err);
            } else {
                ids_out[i] = graft_writer_add_tensor(w, t->name, t->name_len, t->dtype, t->n_dims, t->ne, err);
            }
            if (ids_out[i] < 0) rc = (int)ids_out[i];
        }
        if (!rc) rc = graft_writer_layout(w, err);
        for (size_t i = 0; !rc && i < nt; i++)
            if (ids_out[i] >= 0) rc = graft__ops_copy_tensor(w, ids_out[i], m, graft_model_tensor(m, i), NULL, err);
        if (!rc && !graft__ops_single_file(target)) {
            json_object_set_new(c, "num_hidden_layers", json_integer(L - r.n_dropped));
            // MiniCPM scales each residual branch by scale_depth / √layers: keep the branches' scale
            if (arch && !strcmp(arch, "MiniCPMForCausalLM"))
                json_object_set_new(c, "scale_depth", json_real(graft__json_num(c, "scale_depth", 1) * sqrt((double)(L - r.n_dropped) / (double)L)));
            if (json_is_array(types)) {
                json_t *nt2 = json_array();
                for (int l = 0; nt2 && l < L; l++)
                    if (map[l] >= 0) json_array_append(nt2, json_array_get(types, (size_t)l));
                json_object_set_new(c, "layer_types", nt2);
            }
            rc = graft__ops_add_json(w, "config.json", c, err);
            if (!rc) rc = graft_writer_copy_tokenizer(w, m, err);
        }
        if (!rc) rc = graft_writer_commit(w, err);
    }
    graft_writer_free(w);
    graft__free(map), graft__free(ids_out);
    json_decref(c);
    if (!rc && rep) *rep = r;
    else graft_shrink_report_free(&r);
    return rc;
}
