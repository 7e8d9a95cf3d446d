// mergekit-moe (shared/methods-mergekit.md §6.3), Mixtral output. Every tensor outside `.mlp.` comes
// from base_model; per layer, expert e's gate_proj / up_proj / down_proj (from its source_model)
// become block_sparse_moe.experts.e.w1 / w3 / w2 — down_proj times residual_scale, and N(0, s²) noise
// added when noise_scale is set — and block_sparse_moe.gate.weight [E, hidden] is the router. Gates:
// random (N(0, 1), as torch.randn) and uniform_random (U(−1/√H, 1/√H)) from graft's counter-based
// generator keyed by (--seed, tensor name); hidden / hidden_last / hidden_avg from the base model's
// residual stream on BOS + prompt (graft's evaluator), cheap_embed from its embedding rows (see
// prompt_gates). Validation as
// MergeKit's: experts_per_token ≤ number of experts; prompts required unless random (uniform_random
// too, a MergeKit quirk); identical prompt sets rejected; all experts from one model rejected without
// allow_same_model. Inputs must be Llama or Mistral; the output dtype is `dtype:` or the base's.
// Streaming: expert tensors are copied from their mappings (converted when the dtype changes).
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include "graft/convert.h"
#include "graft/eval.h"
#include "graft/moe.h"
#include "graft/tokenizer.h"
#include "graft/writer.h"
#include "../config/config.h"
#include "../merge/method.h" // GRAFT_MAX_INPUTS
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

struct graft_moe_options graft_moe_default_options(void) { return (struct graft_moe_options){.n_threads = 1, .copy_tokenizer = true}; }

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

struct mt_out {
    char *name;
    const struct graft_model *m;
    const struct graft_model_tensor *src; // NULL: a router
    const float *data;                    // a router from prompts: its rows (f32), else drawn
    enum graft_dtype dt;
    uint64_t ne[2];
    int n_dims;
    double scale, noise;                  // expert down_proj residual scale, noise σ
    bool zero;                            // all zeros (attention biases Qwen2-MoE needs)
    long id;
};

struct mjob {
    struct mt_out *ts;
    size_t n;
    bool uniform;
    uint64_t seed;
    unsigned flags; // writer flags (GRAFT_WRITER_ALLOW_NONFINITE)
    struct graft_writer *w;
    struct graft_progress *progress;
};

static float normal_draw(uint64_t key, uint64_t i) { return (float)graft__rng_normal(key, i, 1.0); }

static int write_one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct mjob *j = ctx;
    struct mt_out *x = &j->ts[item];
    uint64_t n = x->n_dims == 1 ? x->ne[0] : x->ne[0] * x->ne[1], nb;
    if (x->zero) {
        graft_dtype_nbytes(x->dt, n, &nb);
        void *z = graft__calloc(1, (size_t)(nb ? nb : 1));
        int rc = z ? graft_writer_write(j->w, x->id, 0, z, (size_t)nb, err) : nomem(err);
        graft__free(z);
        return rc;
    }
    if (x->src && x->src->info->dtype == x->dt && x->scale == 1.0 && x->noise == 0) {
        int rc = x->src->info->n_bytes ? graft_writer_write(j->w, x->id, 0, graft_model_data(x->m, x->src), (size_t)x->src->info->n_bytes, err) : GRAFT_OK;
        graft_progress_add(j->progress, x->src->info->n_bytes);
        return rc;
    }
    float *v = graft__malloc((size_t)(n ? n : 1) * sizeof *v);
    void *enc = graft__malloc((size_t)(n ? n : 1) * 8);
    if (!v || !enc) { graft__free(v), graft__free(enc); return nomem(err); }
    uint64_t key = graft_rng_key(j->seed, 0, x->name, strlen(x->name));
    if (x->data) memcpy(v, x->data, (size_t)n * sizeof *v);
    else if (x->src) {
        graft_row_to_f32(x->src->info->dtype, graft_model_data(x->m, x->src), v, (size_t)n);
        // noise first, then residual_scale, as MergeKit's noise_and_scale
        for (uint64_t i = 0; i < n; i++) v[i] = (float)((v[i] + (x->noise > 0 ? (float)x->noise * normal_draw(key, i) : 0.0f)) * x->scale);
    } else {
        float b = 1.0f / sqrtf((float)x->ne[1]);
        for (uint64_t i = 0; i < n; i++) v[i] = j->uniform ? (2.0f * graft_rng_uniform(key, i) - 1.0f) * b : normal_draw(key, i);
    }
    graft_dtype_nbytes(x->dt, n, &nb);
    int rc = graft__ops_encode("moe", x->name, strlen(x->name), x->dt, v, enc, (size_t)n, x->m, x->data ? NULL : x->src, j->flags, err);
    if (!rc) rc = graft_writer_write(j->w, x->id, 0, enc, (size_t)nb, err);
    graft__free(v), graft__free(enc);
    graft_progress_add(j->progress, nb);
    return rc;
}

// Qwen2MoeConfig fields (as MergeKit's qwen output): experts of the base's intermediate size, one
// shared expert of the same size, every layer sparse, top-k probabilities renormalised.
static int add_qwen_config(struct graft_writer *w, json_t *root, int experts, int per_token, struct graft_err *err) {
    graft__ops_fill_config_defaults(root);
    json_t *is = json_object_get(root, "intermediate_size");
    json_object_set_new(root, "architectures", json_pack("[s]", "Qwen2MoeForCausalLM"));
    json_object_set_new(root, "model_type", json_string("qwen2_moe"));
    json_object_set_new(root, "num_experts", json_integer(experts));
    json_object_set_new(root, "num_experts_per_tok", json_integer(per_token));
    json_object_set_new(root, "decoder_sparse_step", json_integer(1));
    json_object_set_new(root, "norm_topk_prob", json_true());
    json_object_set_new(root, "moe_intermediate_size", json_incref(is));
    json_object_set_new(root, "shared_expert_intermediate_size", json_incref(is));
    json_object_set_new(root, "mlp_only_layers", json_array());
    json_object_set_new(root, "use_sliding_window", json_false());
    json_object_set_new(root, "output_router_logits", json_false());
    json_object_set_new(root, "router_aux_loss_coef", json_real(0.001));
    json_object_del(root, "attention_bias");
    return graft__ops_add_json(w, "config.json", root, err);
}

// The text MergeKit puts before each prompt: tokenizer.bos_token (tokenizer_config.json, else
// special_tokens_map.json) whenever one is named — whether or not the tokenizer adds it itself, and
// whether or not it is a token (then it is tokenized as text). NULL: none.
static char *prompt_bos(const struct graft_model *base) {
    static const char *const files[] = {"tokenizer_config.json", "special_tokens_map.json"};
    char *bos = NULL;
    for (int f = 0; f < 2 && !bos; f++) {
        char *path = graft__asprintf("%s/%s", graft_model_dir(base), files[f]);
        json_t *root = NULL;
        struct graft_err e;
        graft_err_clear(&e);
        if (path && !graft__load_json_file(path, 64u << 20, &root, &e)) {
            json_t *b = json_object_get(root, "bos_token");
            if (json_is_object(b)) b = json_object_get(b, "content");
            if (json_is_string(b)) bos = graft__strdup(json_string_value(b));
            json_decref(root);
        }
        graft__free(path);
    }
    return bos;
}

// MergeKit's router vectors from prompts (mergekit/moe/router.py): each prompt is the tokenizer's
// bos_token + text; hidden / hidden_last: per prompt the layer's input at the last token, hidden_avg:
// its mean over the tokens, averaged over the positive prompts minus the same over the negative ones;
// cheap_embed: the sum of the embedding rows of every token of every positive prompt, normalised,
// minus the same of the negative prompts — the same for every layer. Then L2-normalised per layer.
// out: n_sets × layers × H, set s = expert s (the shared expert last).
static int prompt_gates(const struct graft_model *base, const char *mode, const struct graft_moe_expert *const *sets, int n_sets, int n_threads,
                        float **out, int *out_layers, struct graft_err *err) {
    struct graft_tokenizer *tk = NULL;
    struct graft_llama *L = NULL;
    double *acc = NULL, *cheap_sum = NULL;
    float *hs = NULL, *res = NULL;
    int32_t *ids = NULL;
    char *bos = NULL;
    int rc = graft_model_is_dir(base) ? graft_tokenizer_load(graft_model_dir(base), &tk, err)
                                      : graft_err_set(err, GRAFT_E_NOTFOUND, graft_model_path(base), NULL, 0, "gate_mode %s needs the base model's folder (tokenizer.json)", mode);
    if (!rc) rc = graft_llama_open(base, n_threads, &L, err);
    if (rc) goto out;
    bool cheap = !strcmp(mode, "cheap_embed"), avg = !strcmp(mode, "hidden_avg");
    size_t NL = (size_t)graft_llama_n_layers(L), H = (size_t)graft_llama_hidden(L);
    bos = prompt_bos(base);
    const struct graft_model_tensor *emb = graft_model_find(base, "model.embed_tokens.weight", 25);
    acc = graft__malloc(NL * H * sizeof *acc), res = graft__calloc((size_t)n_sets * NL * H, sizeof *res);
    cheap_sum = graft__calloc(H ? H : 1, sizeof *cheap_sum);
    if (!acc || !res || !cheap_sum || !emb) { rc = emb ? nomem(err) : graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(base), "model.embed_tokens.weight", 25, "missing"); goto out; }
    for (int s = 0; s < n_sets && !rc; s++) {
        memset(acc, 0, NL * H * sizeof *acc);
        for (int neg = 0; neg < 2 && !rc; neg++) {
            char **pr = neg ? sets[s]->neg : sets[s]->pos;
            size_t np = neg ? sets[s]->n_neg : sets[s]->n_pos;
            for (size_t p = 0; p < np && !rc; p++) {
                // bos_token + prompt tokenized as one text, as MergeKit does (a Metaspace "first" prefix
                // then goes only before the BOS: the prompt after it gets none)
                size_t bl = bos ? strlen(bos) : 0, plen = strlen(pr[p]);
                char *text = graft__malloc(bl + plen + 1);
                if (!text) { rc = nomem(err); break; }
                memcpy(text, bos ? bos : "", bl);
                memcpy(text + bl, pr[p], plen + 1);
                graft__free(ids), ids = NULL;
                size_t T;
                rc = graft_tokenizer_encode(tk, text, bl + plen, &ids, &T, err);
                graft__free(text);
                if (rc) break;
                if (!T) continue;
                double wgt = (neg ? -1.0 : 1.0) / (double)np;
                if (cheap) { // the set's raw sum goes to cheap_sum, normalised once the set is done
                    float *row = graft__malloc(H * sizeof *row);
                    if (!row) { rc = nomem(err); break; }
                    size_t es = (size_t)graft_dtype_traits(emb->info->dtype)->bits / 8;
                    for (size_t t = 0; t < T; t++) {
                        if ((uint64_t)ids[t] >= emb->info->ne[0]) { rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(base), NULL, 0, "token id %ld beyond the embedding rows", (long)ids[t]); break; }
                        graft_row_to_f32(emb->info->dtype, graft_model_data(base, emb) + (size_t)ids[t] * H * es, row, H);
                        for (size_t j = 0; j < H; j++) cheap_sum[j] += row[j];
                    }
                    graft__free(row);
                    continue;
                }
                graft__free(hs);
                if (!(hs = graft__malloc(NL * T * H * sizeof *hs))) { rc = nomem(err); break; }
                if ((rc = graft_llama_layer_inputs(L, ids, (int)T, hs, err))) break;
                for (size_t l = 0; l < NL; l++)
                    for (size_t t = avg ? 0 : T - 1; t < T; t++)
                        for (size_t j = 0; j < H; j++) acc[l * H + j] += wgt * hs[(l * T + t) * H + j] / (avg ? (double)T : 1.0);
            }
            if (cheap && np && !rc) { // ± the set's sum / ‖sum‖ (clamped at 1e-8), on every layer
                double nrm = 0;
                for (size_t j = 0; j < H; j++) nrm += cheap_sum[j] * cheap_sum[j];
                nrm = fmax(sqrt(nrm), 1e-8);
                for (size_t l = 0; l < NL; l++)
                    for (size_t j = 0; j < H; j++) acc[l * H + j] += (neg ? -1.0 : 1.0) * cheap_sum[j] / nrm;
                memset(cheap_sum, 0, H * sizeof *cheap_sum);
            }
        }
        for (size_t l = 0; l < NL && !rc; l++) {
            double nrm = 0;
            for (size_t j = 0; j < H; j++) nrm += acc[l * H + j] * acc[l * H + j];
            nrm = fmax(sqrt(nrm), 1e-8);
            for (size_t j = 0; j < H; j++) res[((size_t)s * NL + l) * H + j] = (float)(acc[l * H + j] / nrm);
        }
    }
    if (!rc) *out = res, res = NULL, *out_layers = (int)NL;
out:
    graft__free(acc), graft__free(cheap_sum), graft__free(hs), graft__free(res), graft__free(ids), graft__free(bos);
    graft_llama_free(L);
    graft_tokenizer_free(tk);
    return rc;
}

// MergeKit's warn_degenerate_gates: the layers whose experts' router vectors have a condition number
// (σ_max / σ_min) above 5 — prompts too alike to tell the experts apart.
static void warn_degenerate(const float *gates, int E, int layers, size_t H, FILE *log) {
    float *M = E > 1 ? graft__malloc((size_t)E * H * sizeof *M) : NULL;
    int n_bad = 0, first = -1;
    for (int l = 0; M && l < layers; l++) {
        for (int e = 0; e < E; e++) memcpy(M + (size_t)e * H, gates + ((size_t)e * (size_t)layers + (size_t)l) * H, H * sizeof *M);
        struct graft__svd s;
        struct graft_err e2;
        graft_err_clear(&e2);
        if (graft__svd_gram(M, (size_t)E, H, 0, &s, &e2)) continue;
        double hi = graft__svd_sv(&s, 0), lo = s.n_vals ? graft__svd_sv(&s, s.n_vals - 1) : 0;
        if (s.n_vals < (size_t)E || !(lo > 0) || hi / lo > 5) n_bad++, first = first < 0 ? l : first;
        graft__svd_free(&s);
    }
    graft__free(M);
    if (n_bad)
        fprintf(log, "graft: warning: the routers of %d of %d layers (the first: layer %d) are nearly degenerate (condition number above 5): "
                     "the prompts may be too similar, and some experts will be underused\n", n_bad, layers, first);
}

// Rows [first, first + n) of the routers for one layer, gathered into a fresh [n × H] array.
static const float *route_rows(const float *gates, int n, int first, int layers, int layer, size_t H, float **keep) {
    float *r = graft__malloc((size_t)n * H * sizeof *r);
    if (!r) return NULL;
    for (int e = 0; e < n; e++) memcpy(r + (size_t)e * H, gates + ((size_t)(first + e) * layers + layer) * H, H * sizeof *r);
    return *keep = r;
}

static bool same_prompts(const struct graft_moe_expert *a, const struct graft_moe_expert *b) {
    if (a->n_pos != b->n_pos || a->n_neg != b->n_neg) return false;
    for (size_t i = 0; i < a->n_pos; i++)
        if (strcmp(a->pos[i], b->pos[i])) return false;
    for (size_t i = 0; i < a->n_neg; i++)
        if (strcmp(a->neg[i], b->neg[i])) return false;
    return true;
}

int graft_moe(const char *config_path, const char *out_dir, const struct graft_moe_options *o, int *n_experts, int *n_layers, struct graft_err *err) {
    struct graft_moe_config *c = NULL;
    int rc = graft_moe_config_load(config_path, &c, err);
    if (rc) return rc;
    int E = (int)c->n_experts, K = c->experts_per_token, layers = 0;
    bool random = !strcmp(c->gate_mode, "random"), uniform = !strcmp(c->gate_mode, "uniform_random");
    struct graft_model *models[GRAFT_MAX_INPUTS + 1] = {0};
    char *paths[GRAFT_MAX_INPUTS + 1] = {0};
    int midx[GRAFT_MAX_INPUTS + 1] = {0}, n_models = 0; // experts, then the shared expert
    bool qwen = c->has_shared; // a shared expert: Qwen2-MoE's layout
    struct mjob j = {.seed = o->seed, .uniform = uniform, .flags = o->writer_flags, .progress = o->progress};
    struct graft_writer *w = NULL;
    json_t *root = NULL;
    float *gates = NULL, **owned = NULL; // prompt routers: (E + shared) × layers × H; per-router row copies
    int gate_layers = 0;
    size_t n_owned = 0;
    const char *slash = strrchr(config_path, '/');
    char *dir = slash ? graft__strndup(config_path, slash == config_path ? 1 : (size_t)(slash - config_path)) : graft__strdup(".");
    if (!dir) { rc = nomem(err); goto out; }
    if (K > E) { rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "experts_per_token %d is more than the %d experts", K, E); goto out; }
    if (E > GRAFT_MAX_INPUTS) { rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "at most %d experts", GRAFT_MAX_INPUTS); goto out; }
    for (int e = 0; e < E && !random; e++) {
        if (!c->experts[e].n_pos) { rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "line %d: gate_mode %s needs positive_prompts for every expert", c->experts[e].line, c->gate_mode); goto out; }
    }
    if (!random && E > 1) {
        bool all_same = true;
        for (int e = 1; e < E; e++) all_same &= same_prompts(&c->experts[0], &c->experts[e]);
        if (all_same) { rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "every expert has the same prompts: the router could not tell them apart"); goto out; }
    }
    if (!random && !uniform && strcmp(c->gate_mode, "hidden") && strcmp(c->gate_mode, "hidden_last") && strcmp(c->gate_mode, "hidden_avg") &&
        strcmp(c->gate_mode, "cheap_embed")) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "gate_mode '%s' (hidden, hidden_avg, hidden_last, cheap_embed, random, uniform_random)", c->gate_mode);
        goto out;
    }
    // MergeKit keeps the output architectures whose name starts with `architecture` ("mix", "qwen"; an
    // empty one is none): graft writes Mixtral's ("Mixtral") or, with a shared expert, Qwen2-MoE's ("Qwen MoE")
    const char *arch_name = qwen ? "qwen moe" : "mixtral";
    bool arch_given = c->architecture && *c->architecture;
    if (arch_given && strncasecmp(arch_name, c->architecture, strlen(c->architecture))) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "architecture '%s': graft writes %s", c->architecture,
                           qwen ? "Qwen2-MoE's layout when there is a shared expert" : "Mixtral's layout (Qwen2-MoE needs one shared expert)");
        goto out;
    }
    if (qwen && !random && !c->shared.n_pos) { rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "line %d: the shared expert needs positive_prompts", c->shared.line); goto out; }

    // open base (model 0), each distinct expert model, and the shared expert's
    for (int e = -1; e < E + (qwen ? 1 : 0); e++) {
        const char *ref = e < 0 ? c->base_model : e < E ? c->experts[e].model : c->shared.model;
        char *p = ref[0] == '/' ? graft__strdup(ref) : graft__asprintf("%s/%s", dir, ref), real[PATH_MAX];
        if (!p) { rc = nomem(err); goto out; }
        struct stat sb;
        if (stat(p, &sb) != 0 || !realpath(p, real)) {
            rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "model '%s' not found (looked in %s); graft works offline on local folders", ref, p);
            graft__free(p);
            goto out;
        }
        graft__free(p);
        int found = -1;
        for (int i = 0; i < n_models; i++)
            if (!strcmp(paths[i], real)) found = i;
        if (found < 0) {
            if (n_models > GRAFT_MAX_INPUTS) { rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "more than %d distinct models", GRAFT_MAX_INPUTS); goto out; }
            if (!(paths[n_models] = graft__strdup(real))) { rc = nomem(err); goto out; }
            if ((rc = graft_model_open(real, &models[n_models], err))) { graft__free(paths[n_models]), paths[n_models] = NULL; goto out; }
            found = n_models++; // owned from here: closed at the end whatever happens
            const char *cfg = graft_model_config_json(models[found]);
            json_t *cj = cfg ? json_loads(cfg, 0, NULL) : NULL;
            const char *mt = json_string_value(json_object_get(cj, "model_type"));
            bool ok = mt && (!strcmp(mt, "llama") || !strcmp(mt, "mistral") || (qwen && !strcmp(mt, "qwen2")));
            if (!ok) rc = graft_err_set(err, GRAFT_E_CONFIG, real, NULL, 0, "%s output needs %s models (model_type '%s')", qwen ? "Qwen2-MoE" : "Mixtral",
                                        qwen ? "Llama, Mistral or Qwen2" : "Llama or Mistral", mt ? mt : "?");
            json_decref(cj); // mt lived in it
            if (rc) goto out;
        }
        if (e >= 0) midx[e] = found;
    }
    // a shared expert without prompts under random gates, all models Llama (or all Mistral): MergeKit
    // builds DeepSeek's layout (the shared expert always on, no gate), which graft does not write
    if (qwen && random && !c->shared.n_pos && !arch_given) {
        char t0[32] = "", ti[32];
        bool deepseek = true;
        for (int i = 0; i < n_models && deepseek; i++) {
            json_t *cj = graft_model_config_json(models[i]) ? json_loads(graft_model_config_json(models[i]), 0, NULL) : NULL;
            snprintf(ti, sizeof ti, "%s", json_string_value(json_object_get(cj, "model_type")) ? json_string_value(json_object_get(cj, "model_type")) : "");
            json_decref(cj);
            if (!i) snprintf(t0, sizeof t0, "%s", ti);
            deepseek = (!strcmp(ti, "llama") || !strcmp(ti, "mistral")) && !strcmp(ti, t0);
        }
        if (deepseek) {
            rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "line %d: a shared expert without prompts under gate_mode random, over %s models, is "
                               "DeepSeek's layout in MergeKit (the shared expert always on), which graft does not write; architecture: qwen writes "
                               "Qwen2-MoE's, whose shared expert gets a random gate", c->shared.line, t0);
            goto out;
        }
    }
    if (E > 1 && !o->allow_same_model) {
        bool same = true;
        for (int e = 1; e < E; e++) same &= midx[e] == midx[0];
        if (same) { rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "every expert is the same model: pass --i-understand-this-is-not-useful-without-training"); goto out; }
    }
    const struct graft_model *base = models[0];
    if (!random && !uniform) {
        const struct graft_moe_expert *sets[GRAFT_MAX_INPUTS + 1];
        for (int e = 0; e < E; e++) sets[e] = &c->experts[e];
        if (qwen) sets[E] = &c->shared;
        if ((rc = prompt_gates(base, c->gate_mode, sets, E + qwen, o->n_threads, &gates, &gate_layers, err))) goto out;
        const struct graft_model_tensor *et = graft_model_find(base, "model.embed_tokens.weight", 25); // (prompt_gates needed it: there)
        warn_degenerate(gates, E + qwen, gate_layers, (size_t)et->info->ne[1], o->log ? o->log : stderr); // (the shared expert's too, as MergeKit)
    }
    root = json_loads(graft_model_config_json(base), 0, NULL);
    if (!root) { rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(base), NULL, 0, "config.json cannot be parsed"); goto out; }
    // the output dtype: the config's, else the base config's torch_dtype (MergeKit's select_dtype), for
    // every float tensor — experts stored in other dtypes come out in one
    enum graft_dtype out_dt = c->dtype >= 0 ? (enum graft_dtype)c->dtype : GRAFT_DTYPE_COUNT;
    if (out_dt == GRAFT_DTYPE_COUNT) {
        const char *td = json_string_value(json_object_get(root, "torch_dtype"));
        if (!td) td = json_string_value(json_object_get(root, "dtype"));
        int d = td ? graft_dtype_from_cli_name(td) : -1;
        if (d == GRAFT_DTYPE_F32 || d == GRAFT_DTYPE_F16 || d == GRAFT_DTYPE_BF16) out_dt = (enum graft_dtype)d;
    }
    size_t nt = graft_model_n_tensors(base);
    // what the output class cannot hold would be dropped at load, silently: Mixtral has no biases,
    // Qwen2-MoE only q/k/v ones, and both derive head_dim from hidden / heads
    for (size_t i = 0; i < nt && !rc; i++) {
        const struct graft_tensor_info *ti = graft_model_tensor(base, i)->info;
        bool bias = graft__ends_with(ti->name, ti->name_len, ".bias") && (strstr(ti->name, ".self_attn.") || strstr(ti->name, ".mlp."));
        bool qkv = strstr(ti->name, "_proj.bias") && (strstr(ti->name, ".q_proj.") || strstr(ti->name, ".k_proj.") || strstr(ti->name, ".v_proj."));
        if (bias && (!qwen || !qkv))
            rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(base), ti->name, ti->name_len, "%s has no such bias: it would be dropped when the "
                               "model loads%s", qwen ? "Qwen2-MoE" : "Mixtral", qwen ? "" : " (a shared expert gives Qwen2-MoE's layout, which keeps q/k/v biases)");
    }
    if (!rc && qwen) {
        json_int_t hs = json_integer_value(json_object_get(root, "hidden_size")), nh = json_integer_value(json_object_get(root, "num_attention_heads"));
        json_t *hd = json_object_get(root, "head_dim");
        if (nh <= 0 || hs % nh || (json_is_integer(hd) && json_integer_value(hd) * nh != hs))
            rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(base), NULL, 0, "Qwen2-MoE takes head_dim = hidden_size / num_attention_heads; this "
                               "base has hidden_size %lld, %lld heads%s", (long long)hs, (long long)nh, json_is_integer(hd) ? " and its own head_dim" : "");
    }
    if (rc) goto out;
    if (!(j.ts = graft__calloc(nt * (size_t)(E + 1) + 1, sizeof *j.ts))) { rc = nomem(err); goto out; }
    uint64_t gate_stride = 0;
    if (gates) {
        const struct graft_model_tensor *et = graft_model_find(base, "model.embed_tokens.weight", 25);
        gate_stride = et ? et->info->ne[1] : 0;
        if (!(owned = graft__calloc(2 * (size_t)gate_layers + 2, sizeof *owned))) { rc = nomem(err); goto out; }
    }
    static const char *const parts[3] = {"gate_proj", "up_proj", "down_proj"}, *const wn[3] = {"w1", "w3", "w2"};
    for (size_t i = 0; i < nt && !rc; i++) {
        const struct graft_model_tensor *t = graft_model_tensor(base, i);
        const char *name = t->info->name, *mlp = strstr(name, ".mlp.");
        enum graft_dtype dt = out_dt != GRAFT_DTYPE_COUNT && graft_dtype_traits(t->info->dtype)->is_float ? out_dt : t->info->dtype;
        if (!mlp) {
            struct mt_out *x = &j.ts[j.n++];
            *x = (struct mt_out){.name = graft__strndup(name, t->info->name_len), .m = base, .src = t, .dt = dt, .n_dims = t->info->n_dims,
                                 .scale = 1.0, .id = -1};
            x->ne[0] = t->info->ne[0], x->ne[1] = t->info->n_dims > 1 ? t->info->ne[1] : 1;
            if (t->info->n_dims > 2) { rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(base), name, t->info->name_len, "tensors above 2-D are not expected here"); break; }
            if (!x->name) rc = nomem(err);
            continue;
        }
        if (strcmp(mlp + 5, "gate_proj.weight")) continue; // one layer at a time, at its gate_proj
        int pre = (int)(mlp - name);
        struct mt_out *r = &j.ts[j.n++];
        *r = (struct mt_out){.name = qwen ? graft__asprintf("%.*s.mlp.gate.weight", pre, name) : graft__asprintf("%.*s.block_sparse_moe.gate.weight", pre, name),
                             .dt = dt, .n_dims = 2, .ne = {(uint64_t)E, t->info->ne[1]}, .scale = 1.0, .id = -1};
        if (!r->name) { rc = nomem(err); break; }
        int layer = -1;
        const char *ls = strstr(name, "layers.");
        if (gates && (!ls || sscanf(ls + 7, "%d", &layer) != 1 || layer < 0 || layer >= gate_layers || t->info->ne[1] != gate_stride)) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(base), name, t->info->name_len, "no layer index the prompt routers cover");
            break;
        }
        // rows e of the router: expert e's vector for this layer
        if (gates && !(r->data = route_rows(gates, E, 0, gate_layers, layer, (size_t)gate_stride, &owned[n_owned++]))) { rc = nomem(err); break; }
        if (qwen) { // the shared expert's gate, and zero q/k/v biases where the base has none
            struct mt_out *sg = &j.ts[j.n++];
            *sg = (struct mt_out){.name = graft__asprintf("%.*s.mlp.shared_expert_gate.weight", pre, name), .dt = dt, .n_dims = 2,
                                  .ne = {1, t->info->ne[1]}, .scale = 1.0, .id = -1};
            if (!sg->name) { rc = nomem(err); break; }
            if (gates && !(sg->data = route_rows(gates, 1, E, gate_layers, layer, (size_t)gate_stride, &owned[n_owned++]))) { rc = nomem(err); break; }
            for (int q = 0; q < 3 && !rc; q++) {
                char bn[1100], wn2[1100];
                snprintf(bn, sizeof bn, "%.*s.self_attn.%c_proj.bias", pre, name, "qkv"[q]);
                snprintf(wn2, sizeof wn2, "%.*s.self_attn.%c_proj.weight", pre, name, "qkv"[q]);
                const struct graft_model_tensor *wt = graft_model_find(base, wn2, strlen(wn2));
                if (graft_model_find(base, bn, strlen(bn))) continue;
                if (!wt) { rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(base), wn2, strlen(wn2), "missing"); break; }
                struct mt_out *bz = &j.ts[j.n++];
                *bz = (struct mt_out){.name = graft__strdup(bn), .dt = dt, .n_dims = 1, .ne = {wt->info->ne[0], 1}, .zero = true, .scale = 1.0, .id = -1};
                if (!bz->name) rc = nomem(err);
            }
        }
        for (int e = 0; e < E + (qwen ? 1 : 0) && !rc; e++)
            for (int k = 0; k < 3 && !rc; k++) {
                char src[1100];
                snprintf(src, sizeof src, "%.*s.mlp.%s.weight", pre, name, parts[k]);
                const struct graft_model *em = models[midx[e]];
                const struct graft_model_tensor *st = graft_model_find(em, src, strlen(src)), *bt = graft_model_find(base, src, strlen(src));
                if (!st || !bt || st->info->n_dims != 2 || bt->info->n_dims != 2 || st->info->ne[0] != bt->info->ne[0] || st->info->ne[1] != bt->info->ne[1]) {
                    rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(em), src, strlen(src), "missing, or shaped unlike the base's: the experts must share the base's architecture");
                    break;
                }
                if (!graft_dtype_is_float_target(st->info->dtype)) {
                    rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(em), src, strlen(src), "stored as %s: experts need float16, bfloat16 or float32 weights",
                                       graft_dtype_traits(st->info->dtype) ? graft_dtype_traits(st->info->dtype)->name : "?");
                    break;
                }
                struct mt_out *x = &j.ts[j.n++];
                const struct graft_moe_expert *ex = e < E ? &c->experts[e] : &c->shared;
                char *on = !qwen ? graft__asprintf("%.*s.block_sparse_moe.experts.%d.%s.weight", pre, name, e, wn[k])
                         : e < E ? graft__asprintf("%.*s.mlp.experts.%d.%s.weight", pre, name, e, parts[k])
                                 : graft__asprintf("%.*s.mlp.shared_expert.%s.weight", pre, name, parts[k]);
                *x = (struct mt_out){.name = on, .m = em, .src = st,
                                     .dt = out_dt != GRAFT_DTYPE_COUNT ? out_dt : st->info->dtype, .n_dims = 2, .ne = {st->info->ne[0], st->info->ne[1]},
                                     .scale = k == 2 && ex->has_residual ? ex->residual_scale : 1.0,
                                     .noise = ex->has_noise ? ex->noise_scale : 0.0, .id = -1};
                if (!x->name) rc = nomem(err);
            }
        layers++;
    }
    if (!rc && !layers) rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(base), NULL, 0, "no layers.N.mlp.gate_proj in the base model");
    if (!rc && !o->dry_run) {
        const char *protect[2 * GRAFT_MAX_INPUTS + 2];
        size_t np = 0;
        for (int i = 0; i < n_models; i++) protect[np++] = paths[i];
        struct graft_writer_params wp = graft_writer_default_params();
        wp.max_shard_bytes = o->max_shard_bytes, wp.flags = o->writer_flags, wp.protect = protect, wp.n_protect = np;
        rc = graft_writer_open(out_dir, &wp, &w, err);
        j.w = w;
        for (size_t i = 0; !rc && i < j.n; i++) {
            struct mt_out *x = &j.ts[i];
            uint64_t ne[2] = {x->ne[0], x->ne[1]};
            if ((x->id = graft_writer_add_tensor(w, x->name, strlen(x->name), x->dt, x->n_dims, ne, err)) < 0) rc = (int)x->id;
        }
        if (!rc) rc = graft_writer_layout(w, err);
        if (!rc) rc = graft_pool_run(o->n_threads > 0 ? o->n_threads : 1, j.n, write_one, &j, o->progress && o->progress->enabled ? graft_progress_draw : NULL,
                                     o->progress, err);
        if (!rc) {
            if (out_dt != GRAFT_DTYPE_COUNT) json_object_set_new(root, "torch_dtype", json_string(graft_dtype_torch_name(out_dt)));
            rc = qwen ? add_qwen_config(w, root, E, K, err) : graft__ops_add_mixtral_config(w, root, E, K, err);
        }
        if (!rc && o->copy_tokenizer) rc = graft_writer_copy_tokenizer(w, base, err);
        if (!rc) rc = graft_writer_add_file(w, "mergekit_moe_config.yml", c->text, strlen(c->text), err);
        if (!rc) rc = graft_writer_commit(w, err);
    }
    if (!rc && (E & (E - 1))) fprintf(o->log ? o->log : stderr, "graft: warning: %d experts is not a power of two (llama.cpp prefers powers of two)\n", E);
out:
    if (n_experts) *n_experts = E;
    if (n_layers) *n_layers = layers;
    graft_writer_free(w);
    for (size_t i = 0; j.ts && i < j.n; i++) graft__free(j.ts[i].name);
    graft__free(j.ts);
    for (size_t i = 0; i < n_owned; i++) graft__free(owned[i]);
    graft__free(owned), graft__free(gates);
    for (int i = 0; i < n_models; i++) graft_model_close(models[i]), graft__free(paths[i]);
    json_decref(root);
    graft__free(dir);
    graft_moe_config_free(c);
    return rc;
}
