// LoRA extraction (mergekit-extract-lora) and application (PEFT merge_and_unload).
//
// Extract — plan: walk the fine-tune's tensors; a tensor "<m>.weight" is module <m>, "<m>.bias" its
// bias. Each module becomes a low-rank pair (2-D weights; the input embedding and lm_head only with
// embed_lora and an unchanged vocabulary), is saved whole (modules_to_save: embeddings and lm_head by
// default, 1-D and ≥3-D weights unless skip_undecomposable, --save-module), or is left out (include /
// exclude). With a fixed rank the output is laid out at once; when the rank depends on the spectrum
// (energy, sv_epsilon) a first pass computes every spectrum, then the layout, then the factors.
// Execute: one module per work item — Δ = W_ft − W_base in f32, truncated SVD (core/linalg.c),
// A = √S·Vᵀ and B = U·√S (or S·Vᵀ and U), cast to the fine-tune's dtype. Memory: per thread one Δ,
// one Gram matrix and the factors of the largest module.
//
// Apply — every base tensor is written once: copied, replaced (modules_to_save), or computed as
// W + s·B·A in f32 row blocks with sgemm and cast once to the base's dtype. One tensor per work item
// (A and B are converted to f32 once per tensor).
#include <jansson.h>
#include <math.h>
#include <regex.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "graft/convert.h"
#include "graft/lora.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

#define PFX "base_model.model."

// ---- shared -----------------------------------------------------------------------------------------


// nn.Embedding modules (PEFT's lora_embedding_*) and output heads, by the names transformers uses:
// token embeddings, and the learned position / token-type tables of GPT-2, OPT, BERT, BLOOM and the
// CLIP / SigLIP vision towers of VLMs (position_embedding; CLIP text's token_embedding)
bool graft__lora_is_embedding(const char *m) {
    static const char *const names[] = {"embed_tokens", "wte", "word_embeddings", "tok_embeddings", "embed_in", "wpe", "embed_positions",
                                        "position_embeddings", "token_type_embeddings", "position_embedding", "token_embedding"};
    const char *last = strrchr(m, '.');
    last = last ? last + 1 : m;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(last, names[i])) return true;
    return false;
}
static bool is_output_head(const char *m) {
    const char *last = strrchr(m, '.');
    last = last ? last + 1 : m;
    return !strcmp(last, "lm_head") || !strcmp(last, "embed_out");
}

// GPT-2's transformers Conv1D layers (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj), stored [in, out]:
// PEFT gives them fan_in_fan_out whatever the config says (lora_A [r, in], lora_B [out, r], Δ = (B·A)ᵀ)
// and never to the model's nn.Linear or embeddings. Whether the base is GPT-2 is read once per call.
static bool is_gpt2(const struct graft_model *base) {
    const char *cfg = graft_model_config_json(base);
    json_t *c = cfg ? json_loads(cfg, 0, NULL) : NULL;
    const char *arch = json_string_value(json_array_get(json_object_get(c, "architectures"), 0)), *mt = json_string_value(json_object_get(c, "model_type"));
    bool gpt2 = (arch && !strncmp(arch, "GPT2", 4)) || (mt && !strcmp(mt, "gpt2"));
    json_decref(c);
    return gpt2;
}
static bool conv1d_name(const char *m) {
    const char *last = strrchr(m, '.');
    last = last ? last + 1 : m;
    return !strcmp(last, "c_attn") || !strcmp(last, "c_proj") || !strcmp(last, "c_fc");
}

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

// A tensor of `m` decoded to f32 (rows × cols elements starting at element e0) into dst.
static void load_f32(const struct graft_model *m, const struct graft_model_tensor *t, uint64_t e0, uint64_t n, float *dst) {
    uint64_t off, len;
    graft_dtype_nbytes(t->info->dtype, e0, &off);
    graft_dtype_nbytes(t->info->dtype, n, &len);
    graft_st_populate(graft_model_shard(m, t->shard), t->info->begin + off, len);
    graft_row_to_f32(t->info->dtype, graft_model_data(m, t) + off, dst, (size_t)n);
}

// The base tensor that stands for `name` ("<m>.weight"): the tensor itself, or for a missing
// lm_head of a tied model its input embedding.
const struct graft_model_tensor *graft__lora_find_or_tied(const struct graft_model *m, const char *name) {
    const struct graft_model_tensor *t = graft_model_find(m, name, strlen(name));
    if (t || !strstr(name, "lm_head.weight")) return t;
    static const char *const tied[] = {"model.embed_tokens.weight", "transformer.wte.weight", "model.language_model.embed_tokens.weight",
                                       "language_model.model.embed_tokens.weight"};
    for (size_t i = 0; i < sizeof tied / sizeof tied[0] && !t; i++) t = graft_model_find(m, tied[i], strlen(tied[i]));
    return t;
}

static uint64_t cols_of(const struct graft_tensor_info *t) { return t->n_dims >= 1 && t->ne[0] ? t->n_elem / t->ne[0] : 1; }

// ---- extract ----------------------------------------------------------------------------------------

struct graft_lora_extract_params graft_lora_extract_default_params(void) {
    return (struct graft_lora_extract_params){.max_rank = 128, .distribute_scale = true, .oversample = 10, .power_iters = 2, .n_threads = 1};
}

void graft_lora_report_free(struct graft_lora_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) graft__free(r->mods[i].name);
    graft__free(r->mods);
    memset(r, 0, sizeof *r);
}

struct xmod {
    char                            *name;
    enum graft_lora_kind             kind;
    const struct graft_model_tensor *bw, *fw; // weights (base may be the tied embedding)
    const struct graft_model_tensor *bb, *fb; // biases (NULL when absent)
    uint64_t                         rows, cols, k; // Δ as rows × cols (embeddings: transposed, dim × vocab)
    int                              rank;
    bool                             bias_delta; // low-rank module with a nonzero bias delta
    bool                             conv1d;     // GPT-2's Conv1D: Δᵀ decomposed, as PEFT lays it out
    double                           rel_error;
    long                             id_a, id_b, id_bias, id_w; // output tensor ids
};

struct xjob {
    const struct graft_model *base, *ft;
    const struct graft_lora_extract_params *p;
    struct xmod *mods;
    size_t       n;
    struct graft_writer *w;
    bool         spectrum_only; // first pass of a data-dependent rank
    // per thread, Δ and a scratch of the largest module so far: grown, then reused by later modules (a
    // fresh 200 MB buffer per module costs a page fault per 4 KiB, as much as the randomized SVD itself)
    float      **dbuf, **tbuf;
    size_t      *cap;
};

// Thread ith's Δ and scratch buffers, at least n floats each.
static int thread_buffers(struct xjob *j, int ith, size_t n, float **D, float **tmp) {
    if (j->cap[ith] < n) {
        graft__free(j->dbuf[ith]), graft__free(j->tbuf[ith]);
        j->dbuf[ith] = graft__malloc(n * sizeof(float)), j->tbuf[ith] = graft__malloc(n * sizeof(float));
        j->cap[ith] = j->dbuf[ith] && j->tbuf[ith] ? n : 0;
        graft__advise_huge(j->dbuf[ith], n * sizeof(float)), graft__advise_huge(j->tbuf[ith], n * sizeof(float));
    }
    *D = j->dbuf[ith], *tmp = j->tbuf[ith];
    return j->cap[ith] ? GRAFT_OK : GRAFT_E_NOMEM;
}

static bool rx_any(const regex_t *rx, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (regexec(&rx[i], s, 0, NULL, 0) == 0) return true;
    return false;
}

// A --save-module name matches the module itself or its last components ("lm_head", "mlp.down_proj").
static bool name_matches(const char *module, const char *want) {
    size_t a = strlen(module), b = strlen(want);
    return a == b ? !strcmp(module, want) : a > b && module[a - b - 1] == '.' && !strcmp(module + a - b, want);
}

// The rank kept for a spectrum: the cap, then energy and sv_epsilon (never below 1).
static int choose_rank(const struct graft__svd *s, const struct graft_lora_extract_params *p) {
    size_t r = s->k < (size_t)p->max_rank ? s->k : (size_t)p->max_rank;
    if (p->energy > 0 && s->energy == 0) return 1; // Δ = 0: one (zero) component is the fewest
    if (p->energy > 0) {
        double run = 0;
        size_t need = 0;
        while (need < s->k && run < p->energy * s->energy) run += s->lambda[need++];
        if (need < r) r = need;
    }
    if (p->sv_epsilon > 0) {
        size_t above = 0;
        while (above < s->k && graft__svd_sv(s, above) > p->sv_epsilon) above++;
        if (above < r) r = above;
    }
    return r < 1 ? 1 : (int)r;
}

// Δ of a module as rows × cols f32 (embeddings transposed: dim × vocab), into D.
static void load_delta(const struct xjob *j, const struct xmod *x, float *D, float *tmp) {
    uint64_t n = x->rows * x->cols;
    load_f32(j->ft, x->fw, 0, n, D);
    load_f32(j->base, x->bw, 0, n, tmp);
    for (uint64_t i = 0; i < n; i++) D[i] -= tmp[i];
    if (x->kind == GRAFT_LORA_EMBEDDING || x->conv1d) { // stored vocab × dim (in × out); decompose dim × vocab (out × in), as MergeKit / PEFT do
        memcpy(tmp, D, n * sizeof *D);
        for (uint64_t v = 0; v < x->cols; v++)
            for (uint64_t d = 0; d < x->rows; d++) D[d * x->cols + v] = tmp[v * x->rows + d];
    }
}

static int write_f32(struct graft_writer *w, long id, enum graft_dtype dt, const float *src, uint64_t n, void *enc, struct graft_err *err) {
    uint64_t nb;
    graft_dtype_nbytes(dt, n, &nb);
    if (!nb) return GRAFT_OK;
    graft_row_from_f32(dt, src, enc, (size_t)n);
    return graft_writer_write(w, id, 0, enc, (size_t)nb, err);
}

static int extract_module(void *ctx, size_t item, int ith, struct graft_err *err) {
    struct xjob *j = ctx;
    if (j->p->cancel && __atomic_load_n(j->p->cancel, __ATOMIC_RELAXED)) return graft_err_set(err, GRAFT_E_CANCELLED, NULL, NULL, 0, "cancelled");
    struct xmod *x = &j->mods[item];
    const struct graft_model *ft = j->ft;
    if (x->kind == GRAFT_LORA_WHOLE) {
        if (j->spectrum_only) return GRAFT_OK;
        int rc = graft_writer_write(j->w, x->id_w, 0, graft_model_data(ft, x->fw), (size_t)x->fw->info->n_bytes, err);
        if (!rc && x->fb) rc = graft_writer_write(j->w, x->id_bias, 0, graft_model_data(ft, x->fb), (size_t)x->fb->info->n_bytes, err);
        graft_progress_add(j->p->progress, x->fw->info->n_bytes);
        return rc;
    }
    uint64_t n = x->rows * x->cols;
    float *D, *tmp;
    double *U = NULL, *S = NULL, *Vt = NULL;
    void *enc = NULL;
    struct graft__svd s = {0};
    int rc = GRAFT_OK;
    if (thread_buffers(j, ith, (size_t)n, &D, &tmp)) { rc = nomem(err); goto out; }
    load_delta(j, x, D, tmp);
    size_t r = (size_t)x->rank;
    // the range finder only pays when it samples fewer directions than the matrix has; at (nearly) full
    // rank it would also lose the smallest ones to f32 rounding in the power iterations: exact route
    bool randomized = j->p->randomized && r + (size_t)j->p->oversample < (x->rows < x->cols ? x->rows : x->cols);
    if (!randomized) {
        if ((rc = graft__svd_gram(D, (size_t)x->rows, (size_t)x->cols, j->spectrum_only ? 0 : r, &s, err))) goto out;
        if (j->spectrum_only) { x->rank = choose_rank(&s, j->p); goto out; }
        x->rel_error = s.energy > 0 ? sqrt(graft__svd_tail(&s, r) / s.energy) : 0.0;
    }
    U = graft__malloc(x->rows * r * sizeof *U), S = graft__malloc(r * sizeof *S), Vt = graft__malloc(r * x->cols * sizeof *Vt);
    enc = graft__malloc(n * 8 > 64 ? n * 8 : 64);
    if (!U || !S || !Vt || !enc) { rc = nomem(err); goto out; }
    if (randomized) { // the error is exact for the factors written (their tail energy)
        double energy, tail;
        uint64_t key = graft_rng_key(j->p->seed, 0, x->fw->info->name, x->fw->info->name_len);
        if ((rc = graft__svd_randomized(D, (size_t)x->rows, (size_t)x->cols, r, (size_t)j->p->oversample, j->p->power_iters, key, U, S, Vt, &energy,
                                        &tail, err)))
            goto out;
        x->rel_error = energy > 0 ? sqrt(tail / energy) : 0.0;
    } else if ((rc = graft__svd_factors(&s, D, r, U, S, Vt, err))) {
        goto out;
    }
    // A (r × cols) into D, B (rows × r) into tmp
    for (size_t c = 0; c < r; c++) {
        double sa = j->p->distribute_scale ? sqrt(S[c]) : S[c], sb = j->p->distribute_scale ? sqrt(S[c]) : 1.0;
        for (uint64_t i = 0; i < x->cols; i++) D[c * x->cols + i] = (float)(sa * Vt[c * x->cols + i]);
        for (uint64_t i = 0; i < x->rows; i++) tmp[i * r + c] = (float)(U[i * r + c] * sb);
    }
    enum graft_dtype dt = x->fw->info->dtype;
    if ((rc = write_f32(j->w, x->id_a, dt, D, r * x->cols, enc, err))) goto out;
    if ((rc = write_f32(j->w, x->id_b, dt, tmp, x->rows * r, enc, err))) goto out;
    if (x->bias_delta) {
        uint64_t nb = x->fb->info->n_elem;
        load_f32(ft, x->fb, 0, nb, D);
        load_f32(j->base, x->bb, 0, nb, tmp);
        for (uint64_t i = 0; i < nb; i++) D[i] -= tmp[i];
        rc = write_f32(j->w, x->id_bias, x->fb->info->dtype, D, nb, enc, err);
    }
    graft_progress_add(j->p->progress, x->fw->info->n_bytes);
out:
    graft__svd_free(&s);
    graft__free(U), graft__free(S), graft__free(Vt), graft__free(enc);
    if (rc && !strstr(err->msg, x->name)) graft__err_prefix(err, NULL, x->fw->info->name, x->fw->info->name_len);
    return rc;
}

static bool bias_changed(const struct graft_model *base, const struct graft_model *ft, const struct graft_model_tensor *bb,
                         const struct graft_model_tensor *fb) {
    if (!bb || !fb || bb->info->n_elem != fb->info->n_elem) return fb != NULL;
    if (bb->info->dtype == fb->info->dtype) return memcmp(graft_model_data(base, bb), graft_model_data(ft, fb), (size_t)fb->info->n_bytes) != 0;
    for (uint64_t i = 0; i < fb->info->n_elem; i++) {
        float a, b;
        load_f32(base, bb, i, 1, &a), load_f32(ft, fb, i, 1, &b);
        if (a != b) return true;
    }
    return false;
}

// Plan the modules (see the top of the file). Errors name the tensor and what does not match.
static int plan_extract(struct xjob *j, regex_t *inc, regex_t *exc, size_t *n_skipped, struct graft_err *err) {
    const struct graft_model *base = j->base, *ft = j->ft;
    const struct graft_lora_extract_params *p = j->p;
    size_t nt = graft_model_n_tensors(ft);
    bool gpt2 = is_gpt2(base);
    // a tied fine-tune over an untied base: its head is its embedding (transformers ties it), which
    // differs from the base's head, and which the fine-tune's tensors below never name: one more item
    const struct graft_model_tensor *tied_head = NULL;
    if (graft_model_find(base, "lm_head.weight", 14) && !graft_model_find(ft, "lm_head.weight", 14))
        tied_head = graft__lora_find_or_tied(ft, "lm_head.weight");
    j->mods = graft__calloc(nt + 1, sizeof *j->mods);
    if (!j->mods) return nomem(err);
    for (size_t i = 0; i < nt + (tied_head != NULL); i++) {
        const struct graft_model_tensor *fw = i < nt ? graft_model_tensor(ft, i) : tied_head;
        const struct graft_tensor_info *t = fw->info;
        const char *tname = i < nt ? t->name : "lm_head.weight"; // the weight's name in the fine-tune's model
        size_t tlen = i < nt ? t->name_len : 14;
        if (!graft__ends_with(tname, tlen, ".weight")) continue; // biases ride with their weight; buffers are skipped
        char *name = graft__strndup(tname, tlen - 7);
        if (!name) return nomem(err);
        if ((p->n_include && !rx_any(inc, p->n_include, name)) || rx_any(exc, p->n_exclude, name)) {
            graft__free(name);
            (*n_skipped)++;
            continue;
        }
        struct xmod *x = &j->mods[j->n];
        *x = (struct xmod){.name = name, .fw = fw, .rel_error = -1, .id_a = -1, .id_b = -1, .id_bias = -1, .id_w = -1};
        j->n++;
        x->bw = graft__lora_find_or_tied(base, tname);
        if (!x->bw)
            return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(base), tname, tlen,
                                 "the fine-tune has this tensor but the base does not: are they the same architecture?");
        const struct graft_tensor_info *b = x->bw->info;
        char bias_name[1024];
        snprintf(bias_name, sizeof bias_name, "%s.bias", name);
        x->fb = graft_model_find(ft, bias_name, strlen(bias_name));
        x->bb = graft_model_find(base, bias_name, strlen(bias_name));
        bool embed = graft__lora_is_embedding(name), head = is_output_head(name), save = false;
        for (size_t k = 0; k < p->n_save_module; k++) save |= name_matches(name, p->save_module[k]);
        bool same_shape = b->n_dims == t->n_dims && b->n_elem == t->n_elem;
        for (int d = 0; same_shape && d < t->n_dims; d++) same_shape = b->ne[d] == t->ne[d];
        if (t->n_dims == 2 && (embed || head)) {
            if (b->n_dims != 2 || b->ne[1] != t->ne[1] || b->ne[0] > t->ne[0])
                return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(ft), t->name, t->name_len,
                                     "shape [%llu, %llu] does not extend the base's [%llu, %llu]", (unsigned long long)t->ne[0],
                                     (unsigned long long)t->ne[1], (unsigned long long)b->ne[0], (unsigned long long)(b->n_dims > 1 ? b->ne[1] : 0));
            if (!p->embed_lora || !same_shape || save) x->kind = GRAFT_LORA_WHOLE; // vocab grew: the whole tensor
            else x->kind = embed ? GRAFT_LORA_EMBEDDING : GRAFT_LORA_LOW_RANK;
        } else {
            if (!same_shape)
                return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(ft), t->name, t->name_len,
                                     "shape differs from the base's tensor (%d-D, %llu elements there): are they the same architecture?",
                                     b->n_dims, (unsigned long long)b->n_elem);
            if (t->n_dims == 2 && !save) x->kind = GRAFT_LORA_LOW_RANK;
            else if (p->skip_undecomposable && !save) {
                graft__free(x->name);
                j->n--;
                (*n_skipped)++;
                continue;
            } else x->kind = GRAFT_LORA_WHOLE;
        }
        // factors are written in the fine-tune's dtype: it must be one graft can encode; an empty weight
        // has nothing to decompose
        if (x->kind != GRAFT_LORA_WHOLE && (!graft_dtype_is_float_target(t->dtype) || t->n_elem == 0)) x->kind = GRAFT_LORA_WHOLE;
        if (x->kind == GRAFT_LORA_WHOLE) {
            x->rows = t->n_dims ? t->ne[0] : 1, x->cols = cols_of(t);
            continue;
        }
        x->conv1d = x->kind == GRAFT_LORA_LOW_RANK && gpt2 && conv1d_name(name);
        if (x->kind == GRAFT_LORA_EMBEDDING || x->conv1d) x->rows = t->ne[1], x->cols = t->ne[0];
        else x->rows = t->ne[0], x->cols = t->ne[1];
        x->k = x->rows < x->cols ? x->rows : x->cols;
        x->rank = (int)(x->k < (uint64_t)p->max_rank ? x->k : (uint64_t)p->max_rank);
        if (x->fb && (!x->bb || x->bb->info->n_elem != x->fb->info->n_elem))
            return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(base), bias_name, strlen(bias_name),
                                 "the fine-tune has this bias but the base has none of its size");
        x->bias_delta = x->fb && bias_changed(base, ft, x->bb, x->fb);
    }
    return GRAFT_OK;
}

static int declare(struct graft_writer *w, const char *module, const char *suffix, enum graft_dtype dt, int nd, const uint64_t *ne,
                   long *id, struct graft_err *err) {
    char name[1100];
    int len = snprintf(name, sizeof name, PFX "%s%s", module, suffix);
    if (len < 0 || (size_t)len >= sizeof name) return graft_err_set(err, GRAFT_E_LIMIT, NULL, module, strlen(module), "module name too long");
    *id = graft_writer_add_tensor(w, name, (size_t)len, dt, nd, ne, err);
    return *id < 0 ? (int)*id : GRAFT_OK;
}

// adapter_config.json as MergeKit writes it (r = the largest rank, lora_alpha = r, patterns for the rest).
static int write_adapter_config(struct graft_writer *w, const struct xjob *j, struct graft_err *err) {
    json_t *root = json_object(), *tm = json_array(), *ms = json_array(), *rp = json_object(), *ap = json_object();
    struct graft__buf b;
    graft__buf_init(&b, SIZE_MAX / 2);
    int r = 0, rc = GRAFT_OK;
    bool bias = false;
    for (size_t i = 0; i < j->n; i++)
        if (j->mods[i].kind != GRAFT_LORA_WHOLE && j->mods[i].rank > r) r = j->mods[i].rank;
    // target_modules / modules_to_save: unique last name components, sorted (PEFT matches by suffix)
    const char **last = graft__calloc(j->n ? j->n : 1, sizeof *last);
    if (!root || !tm || !ms || !rp || !ap || !last) { rc = nomem(err); goto out; }
    for (int pass = 0; pass < 2; pass++) {
        size_t nl = 0;
        for (size_t i = 0; i < j->n; i++) {
            const struct xmod *x = &j->mods[i];
            if ((x->kind == GRAFT_LORA_WHOLE) != (pass == 1)) continue;
            const char *l = strrchr(x->name, '.');
            l = l ? l + 1 : x->name;
            bool seen = false;
            for (size_t k = 0; k < nl && !seen; k++) seen = !strcmp(last[k], l);
            if (!seen) last[nl++] = l;
        }
        for (size_t a = 1; a < nl; a++) // insertion sort: few names
            for (size_t k = a; k > 0 && strcmp(last[k - 1], last[k]) > 0; k--) { const char *t = last[k]; last[k] = last[k - 1], last[k - 1] = t; }
        for (size_t k = 0; k < nl; k++) json_array_append_new(pass ? ms : tm, json_string(last[k]));
    }
    for (size_t i = 0; i < j->n; i++) {
        const struct xmod *x = &j->mods[i];
        if (x->kind == GRAFT_LORA_WHOLE) continue;
        bias |= x->bias_delta;
        if (x->rank != r) json_object_set_new(rp, x->name, json_integer(x->rank)), json_object_set_new(ap, x->name, json_integer(x->rank));
    }
    json_object_set_new(root, "alpha_pattern", ap);
    json_object_set_new(root, "base_model_name_or_path", json_string(j->p->base_ref ? j->p->base_ref : ""));
    json_object_set_new(root, "bias", json_string("none"));
    bool conv1d = false; // (GPT-2: PEFT transposes its Conv1D layers whatever this says; say so)
    for (size_t i = 0; i < j->n; i++) conv1d |= j->mods[i].conv1d;
    json_object_set_new(root, "fan_in_fan_out", json_boolean(conv1d));
    json_object_set_new(root, "inference_mode", json_true());
    json_object_set_new(root, "lora_alpha", json_integer(r));
    if (bias) json_object_set_new(root, "lora_bias", json_true());
    json_object_set_new(root, "lora_dropout", json_integer(0));
    json_object_set_new(root, "modules_to_save", ms);
    json_object_set_new(root, "peft_type", json_string("LORA"));
    json_object_set_new(root, "r", json_integer(r));
    json_object_set_new(root, "rank_pattern", rp);
    json_object_set_new(root, "target_modules", tm);
    json_object_set_new(root, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(root, "use_rslora", json_false());
    tm = ms = rp = ap = NULL;
    graft__json_dump_pretty(&b, root);
    if (b.failed) { rc = nomem(err); goto out; }
    rc = graft_writer_add_file(w, "adapter_config.json", b.data, b.len, err);
out:
    json_decref(root), json_decref(tm), json_decref(ms), json_decref(rp), json_decref(ap);
    graft__free(last);
    graft__buf_free(&b);
    return rc;
}

static int write_card(struct graft_writer *w, const struct xjob *j, struct graft_err *err) {
    struct graft__buf b;
    graft__buf_init(&b, 1u << 20);
    bool vocab = false;
    for (size_t i = 0; i < j->n; i++)
        vocab |= j->mods[i].kind == GRAFT_LORA_WHOLE && j->mods[i].bw && j->mods[i].bw->info->n_elem != j->mods[i].fw->info->n_elem;
    graft__buf_printf(&b, "---\nbase_model: %s\nlibrary_name: peft\ntags:\n- graft\n- lora\n---\n# LoRA adapter\n\n", j->p->base_ref ? j->p->base_ref : "");
    graft__buf_puts(&b, "Extracted with `graft extract-lora`: a truncated SVD of each weight difference between the fine-tuned "
                        "model and its base (as mergekit-extract-lora does).\n");
    if (vocab)
        graft__buf_puts(&b, "\nThe fine-tune's vocabulary is larger than the base's: call `model.resize_token_embeddings(...)` on the "
                            "base before loading this adapter.\n");
    int rc = b.failed ? nomem(err) : graft_writer_add_file(w, "README.md", b.data, b.len, err);
    graft__buf_free(&b);
    return rc;
}

static int compile_all(regex_t *rx, const char *const *pat, size_t n, const char *what, size_t *done, struct graft_err *err) {
    for (*done = 0; *done < n; (*done)++) {
        int e = regcomp(&rx[*done], pat[*done], REG_EXTENDED | REG_NOSUB);
        if (e) {
            char msg[128];
            regerror(e, &rx[*done], msg, sizeof msg);
            return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "%s '%s' is not a valid regular expression: %s", what, pat[*done], msg);
        }
    }
    return GRAFT_OK;
}

int graft_lora_extract(const struct graft_model *base, const struct graft_model *ft, const char *target,
                       const struct graft_lora_extract_params *p, struct graft_lora_report *rep, struct graft_err *err) {
    if (p->max_rank < 1) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "the rank must be at least 1");
    if (!(p->energy >= 0 && p->energy <= 1)) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--energy must be in (0, 1]");
    if (p->randomized && (p->energy > 0 || p->sv_epsilon > 0))
        return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--svd randomized finds the top --rank components only: drop --energy / --sv-epsilon");
    if (p->randomized && (p->oversample < 0 || p->power_iters < 0))
        return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--oversample and --power-iters must be ≥ 0");
    graft__blas_single_thread();
    struct xjob j = {.base = base, .ft = ft, .p = p};
    regex_t *inc = graft__calloc(p->n_include + 1, sizeof *inc), *exc = graft__calloc(p->n_exclude + 1, sizeof *exc);
    size_t n_inc = 0, n_exc = 0, n_skipped = 0;
    struct graft_writer *w = NULL;
    int rc = !inc || !exc ? nomem(err) : GRAFT_OK;
    int nth = p->n_threads > 0 ? p->n_threads : 1;
    if (!rc) rc = compile_all(inc, p->include, p->n_include, "--include", &n_inc, err);
    if (!rc) rc = compile_all(exc, p->exclude, p->n_exclude, "--exclude", &n_exc, err);
    if (!rc) rc = plan_extract(&j, inc, exc, &n_skipped, err);
    if (!rc && j.n == 0) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "no module to extract (check --include / --exclude)");
    if (!rc && rep && !(rep->mods = graft__calloc(j.n, sizeof *rep->mods))) rc = nomem(err); // now: nothing may fail once the output exists
    bool data_rank = p->energy > 0 || p->sv_epsilon > 0;
    j.dbuf = graft__calloc((size_t)nth, sizeof *j.dbuf), j.tbuf = graft__calloc((size_t)nth, sizeof *j.tbuf), j.cap = graft__calloc((size_t)nth, sizeof *j.cap);
    if (!rc && (!j.dbuf || !j.tbuf || !j.cap)) rc = nomem(err);
    if (!rc && data_rank && !p->dry_run) { // ranks from the spectra first
        j.spectrum_only = true;
        rc = graft_pool_run(nth, j.n, extract_module, &j, NULL, NULL, err);
        j.spectrum_only = false;
    }
    if (!rc && !p->dry_run) {
        size_t n_protect = (size_t)graft_model_n_shards(base) + (size_t)graft_model_n_shards(ft) + 2, np = 0;
        const char **protect = graft__calloc(n_protect, sizeof *protect);
        if (!protect) rc = nomem(err);
        for (int i = 0; !rc && i < graft_model_n_shards(base); i++) protect[np++] = graft_st_path(graft_model_shard(base, i));
        for (int i = 0; !rc && i < graft_model_n_shards(ft); i++) protect[np++] = graft_st_path(graft_model_shard(ft, i));
        if (!rc && graft_model_is_dir(base)) protect[np++] = graft_model_dir(base);
        if (!rc && graft_model_is_dir(ft)) protect[np++] = graft_model_dir(ft);
        struct graft_writer_params wp = graft_writer_default_params();
        wp.max_shard_bytes = UINT64_MAX; // one unsplit adapter file, as PEFT and MergeKit write it
        wp.flags = p->writer_flags & ~(unsigned)GRAFT_WRITER_SINGLE_FILE, wp.protect = protect, wp.n_protect = np, wp.stem = "adapter_model";
        if (!rc) rc = graft_writer_open(target, &wp, &w, err);
        graft__free(protect);
        j.w = w;
        for (size_t i = 0; !rc && i < j.n; i++) {
            struct xmod *x = &j.mods[i];
            const struct graft_tensor_info *t = x->fw->info;
            uint64_t r = (uint64_t)x->rank;
            if (x->kind == GRAFT_LORA_WHOLE) {
                rc = declare(w, x->name, ".weight", t->dtype, t->n_dims, t->ne, &x->id_w, err);
                if (!rc && x->fb) rc = declare(w, x->name, ".bias", x->fb->info->dtype, x->fb->info->n_dims, x->fb->info->ne, &x->id_bias, err);
            } else if (x->kind == GRAFT_LORA_EMBEDDING) {
                uint64_t a[2] = {r, x->cols}, b[2] = {x->rows, r};
                rc = declare(w, x->name, ".lora_embedding_A", t->dtype, 2, a, &x->id_a, err);
                if (!rc) rc = declare(w, x->name, ".lora_embedding_B", t->dtype, 2, b, &x->id_b, err);
            } else {
                uint64_t a[2] = {r, x->cols}, b[2] = {x->rows, r};
                rc = declare(w, x->name, ".lora_A.weight", t->dtype, 2, a, &x->id_a, err);
                if (!rc) rc = declare(w, x->name, ".lora_B.weight", t->dtype, 2, b, &x->id_b, err);
                if (!rc && x->bias_delta)
                    rc = declare(w, x->name, ".lora_B.bias", x->fb->info->dtype, x->fb->info->n_dims, x->fb->info->ne, &x->id_bias, err);
            }
        }
        if (!rc) rc = graft_writer_layout(w, err);
        if (!rc)
            rc = graft_pool_run(nth, j.n, extract_module, &j, p->progress && p->progress->enabled ? graft_progress_draw : NULL, p->progress, err);
        if (!rc) rc = write_adapter_config(w, &j, err);
        if (!rc) rc = write_card(w, &j, err);
        if (!rc) rc = graft_writer_commit(w, err);
    }
    if (!rc && rep) {
        for (size_t i = 0; i < j.n; i++) {
            const struct xmod *x = &j.mods[i];
            rep->mods[i] = (struct graft_lora_module){.name = x->name, .kind = x->kind, .rows = x->kind == GRAFT_LORA_EMBEDDING || x->conv1d ? x->cols : x->rows,
                                                       .cols = x->kind == GRAFT_LORA_EMBEDDING || x->conv1d ? x->rows : x->cols,
                                                       .rank = x->kind == GRAFT_LORA_WHOLE ? 0 : x->rank, .rel_error = x->rel_error};
            j.mods[i].name = NULL; // moved into the report
        }
        rep->n = j.n, rep->n_skipped = n_skipped;
    }
    if (rc && rep) graft__free(rep->mods), rep->mods = NULL;
    graft_writer_free(w);
    for (int t = 0; j.dbuf && j.tbuf && t < nth; t++) graft__free(j.dbuf[t]), graft__free(j.tbuf[t]);
    graft__free(j.dbuf), graft__free(j.tbuf), graft__free(j.cap);
    for (size_t i = 0; i < j.n; i++) graft__free(j.mods[i].name);
    graft__free(j.mods);
    for (size_t i = 0; i < n_inc; i++) regfree(&inc[i]);
    for (size_t i = 0; i < n_exc; i++) regfree(&exc[i]);
    graft__free(inc), graft__free(exc);
    return rc;
}

// ---- apply ------------------------------------------------------------------------------------------

struct graft_lora_apply_params graft_lora_apply_default_params(void) {
    return (struct graft_lora_apply_params){.scale = 1.0, .n_threads = 1, .copy_side_files = true};
}

// What happens to one base tensor.
struct atensor {
    const struct graft_model_tensor *t;     // the base tensor
    const struct graft_model_tensor *repl;  // modules_to_save: the adapter's tensor replaces it
    bool repl_base;                         // ... as PEFT's X.base_layer.*: LoRA factors still apply on top
    const struct graft_model_tensor *a, *b; // LoRA factors (weights), or NULL
    const struct graft_model_tensor *bias;  // lora_B.bias to add (on the module's bias tensor)
    bool   embedding, transposed;           // lora_embedding_* / fan_in_fan_out: W += s·Aᵀ·Bᵀ
    float  s;                               // alpha / r (or / √r) × the user's scale
    long   id;
};

struct ajob {
    const struct graft_model *base, *ad;
    const struct graft_lora_apply_params *p;
    struct atensor *ts;
    size_t n;
    struct graft_writer *w;
    // a tied base whose adapter saves lm_head whole: the output gains that lm_head (untied)
    const struct graft_model_tensor *head, *head_like; // the adapter's tensor; the base embedding it stands beside
    long head_id;
};

// Rows of W processed per sgemm block (rows × cols f32 at most about 4 Mi elements).
static uint64_t block_rows(uint64_t cols) { uint64_t r = cols ? (4u << 20) / cols : 1; return r ? r : 1; }

static int apply_tensor(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct ajob *j = ctx;
    if (item == j->n) { // the untied lm_head, in the embedding's dtype
        const struct graft_tensor_info *h = j->head->info;
        uint64_t nb;
        graft_dtype_nbytes(j->head_like->info->dtype, h->n_elem, &nb);
        void *buf = graft__malloc((size_t)(nb ? nb : 1));
        if (!buf) return nomem(err);
        int rc = graft_row_convert(h->dtype, graft_model_data(j->ad, j->head), j->head_like->info->dtype, buf, (size_t)h->n_elem)
                     ? graft_writer_write(j->w, j->head_id, 0, buf, (size_t)nb, err)
                     : graft_err_set(err, GRAFT_E_FORMAT, NULL, h->name, h->name_len, "cannot convert this tensor to the embedding's dtype");
        graft__free(buf);
        return rc;
    }
    struct atensor *x = &j->ts[item];
    const struct graft_tensor_info *t = x->t->info;
    enum graft_dtype dt = t->dtype;
    int rc = GRAFT_OK;
    if (!x->repl && !x->a && !x->bias) { // unchanged
        rc = t->n_bytes ? graft_writer_write(j->w, x->id, 0, graft_model_data(j->base, x->t), (size_t)t->n_bytes, err) : GRAFT_OK;
        graft_progress_add(j->p->progress, t->n_bytes);
        return rc;
    }
    const struct graft_model_tensor *src = x->repl ? x->repl : x->t;
    const struct graft_model *sm = x->repl ? j->ad : j->base;
    uint64_t rows = src->info->n_dims ? src->info->ne[0] : 1, cols = cols_of(src->info), br = block_rows(cols);
    float *W = graft__malloc((size_t)(br * cols) * sizeof *W), *A = NULL, *B = NULL, *bias = NULL;
    void *enc = graft__malloc((size_t)(br * cols) * 8);
    uint64_t r = 0, na = 0, nbb = 0;
    if (!W || !enc) { rc = nomem(err); goto out; }
    if (x->a) {
        r = x->a->info->ne[0], na = x->a->info->n_elem, nbb = x->b->info->n_elem;
        A = graft__malloc((size_t)na * sizeof *A), B = graft__malloc((size_t)nbb * sizeof *B);
        if (!A || !B) { rc = nomem(err); goto out; }
        load_f32(j->ad, x->a, 0, na, A), load_f32(j->ad, x->b, 0, nbb, B);
    }
    if (x->bias) {
        bias = graft__malloc((size_t)x->bias->info->n_elem * sizeof *bias);
        if (!bias) { rc = nomem(err); goto out; }
        load_f32(j->ad, x->bias, 0, x->bias->info->n_elem, bias);
    }
    for (uint64_t r0 = 0; r0 < rows && !rc; r0 += br) {
        uint64_t h = rows - r0 < br ? rows - r0 : br, n = h * cols, off, len;
        load_f32(sm, src, r0 * cols, n, W);
        if (x->a && !x->embedding && !x->transposed) // W[r0:r0+h] += s · B[r0:r0+h] · A
            graft__sgemm_acc(false, false, (size_t)h, (size_t)cols, (size_t)r, x->s, B + r0 * r, (size_t)r, A, (size_t)cols, W, (size_t)cols);
        else if (x->a) // W[r0:r0+h] += s · A[:, r0:r0+h]ᵀ · Bᵀ   (A is r × rows, B is cols × r)
            graft__sgemm_acc(true, true, (size_t)h, (size_t)cols, (size_t)r, x->s, A + r0, (size_t)rows, B, (size_t)r, W, (size_t)cols);
        if (bias)
            for (uint64_t i = 0; i < n; i++) W[i] += x->s * bias[r0 * cols + i];
        graft_dtype_nbytes(dt, r0 * cols, &off);
        graft_dtype_nbytes(dt, n, &len);
        graft_row_from_f32(dt, W, enc, (size_t)n);
        uint64_t bad = graft_count_nonfinite(dt, enc, (size_t)n, NULL);
        // (factors or bias that hold NaN/Inf make every non-finite output value inherited)
        if (bad && !graft_count_nonfinite(GRAFT_DTYPE_F32, A, (size_t)na, NULL) && !graft_count_nonfinite(GRAFT_DTYPE_F32, B, (size_t)nbb, NULL) &&
            !(bias && graft_count_nonfinite(GRAFT_DTYPE_F32, bias, (size_t)x->bias->info->n_elem, NULL))) {
            // made here unless the base rows held them: an overflow of W + s·B·A or of the output dtype
            uint64_t soff;
            graft_dtype_nbytes(src->info->dtype, r0 * cols, &soff);
            uint64_t had = graft_count_nonfinite(src->info->dtype, graft_model_data(sm, src) + soff, (size_t)n, NULL);
            if (bad > had && !j->p->allow_nonfinite) {
                rc = graft_err_set(err, GRAFT_E_NONFINITE, NULL, t->name, t->name_len,
                                   "applying the adapter (s = %g) gives %llu NaN or infinite values in rows %llu…%llu where the base holds %llu; "
                                   "nothing was written (--allow-nonfinite writes them anyway)",
                                   (double)x->s, (unsigned long long)(bad - had), (unsigned long long)r0, (unsigned long long)(r0 + h - 1),
                                   (unsigned long long)had);
                break;
            }
            if (bad > had)
                fprintf(stderr, "graft: warning: tensor '%.*s': %llu NaN or infinite values written (--allow-nonfinite)\n", (int)t->name_len, t->name,
                        (unsigned long long)(bad - had));
        }
        rc = graft_writer_write(j->w, x->id, off, enc, (size_t)len, err);
    }
    graft_progress_add(j->p->progress, t->n_bytes);
out:
    graft__free(W), graft__free(enc), graft__free(A), graft__free(B), graft__free(bias);
    if (rc && !strstr(err->msg, t->name)) graft__err_prefix(err, NULL, t->name, t->name_len);
    return rc;
}

// rank_pattern / alpha_pattern: keys are regexes matched against the end of the module name after a
// dot, as PEFT matches them (Python's re: PCRE2 reads \d, (?:…) the same; POSIX read \d as d); the
// first key (in file order) that matches wins. Compiled once per adapter; a key that does not compile
// is refused, as Python's re would raise.
#define PATTERN_KEYS_MAX 65536

static int compile_patterns(json_t *pat, struct graft__lora_pat *out, const char *path, struct graft_err *err) {
    out->n = 0;
    if (!pat) return GRAFT_OK;
    size_t n = json_object_size(pat);
    if (n > PATTERN_KEYS_MAX) return graft_err_set(err, GRAFT_E_LIMIT, path, NULL, 0, "a rank or alpha pattern with %zu keys (at most %d)", n, PATTERN_KEYS_MAX);
    out->key = graft__calloc(n + 1, sizeof *out->key), out->val = graft__calloc(n + 1, sizeof *out->val), out->rx = graft__calloc(n + 1, sizeof *out->rx);
    if (!out->key || !out->val || !out->rx) return nomem(err);
    const char *key;
    json_t *v;
    json_object_foreach(pat, key, v) {
        if (!json_is_number(v)) continue;
        size_t i = out->n++;
        out->key[i] = key, out->val[i] = json_number_value(v);
        char *re = graft__asprintf("^(.*\\.)?(%s)$", key);
        if (!re) return nomem(err);
        int ec;
        PCRE2_SIZE eo;
        out->rx[i] = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &eo, NULL);
        graft__free(re);
        if (!out->rx[i]) return graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "rank_pattern / alpha_pattern key \"%.80s\" is not a valid regex", key);
    }
    return GRAFT_OK;
}

static void free_patterns(struct graft__lora_pat *p) {
    for (size_t i = 0; p->rx && i < p->n; i++)
        pcre2_code_free(p->rx[i]);
    graft__free(p->key), graft__free(p->val), graft__free(p->rx);
    memset(p, 0, sizeof *p);
}

void graft__lora_cfg_free(struct graft__lora_cfg *c) {
    free_patterns(&c->rank_rx), free_patterns(&c->alpha_rx);
    json_decref(c->root);
    memset(c, 0, sizeof *c);
}

// The value for module `m`: *out is kept when no key matches; fails only for lack of memory (a silent
// miss would apply the default rank or alpha).
static int pattern_value(const struct graft__lora_pat *p, const char *m, double *out, struct graft_err *err) {
    for (size_t i = 0; i < p->n; i++) {
        bool hit = !strcmp(p->key[i], m);
        if (!hit) {
            pcre2_match_data *md = pcre2_match_data_create_from_pattern(p->rx[i], NULL);
            if (!md) return nomem(err);
            int x = pcre2_match(p->rx[i], (PCRE2_SPTR)m, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL);
            pcre2_match_data_free(md);
            hit = x >= 0;
        }
        if (hit) { *out = p->val[i]; return GRAFT_OK; }
    }
    return GRAFT_OK;
}

int graft__lora_read_config(const char *dir, struct graft__lora_cfg *c, struct graft_err *err) {
    char *path = graft__asprintf("%s/adapter_config.json", dir);
    if (!path) return nomem(err);
    int rc = graft__load_json_file(path, 16u << 20, &c->root, err);
    if (rc) { graft__free(path); return rc; }
    json_t *r = json_object_get(c->root, "r"), *a = json_object_get(c->root, "lora_alpha"), *pt = json_object_get(c->root, "peft_type");
    if (pt && (!json_is_string(pt) || strcmp(json_string_value(pt), "LORA")))
        rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "peft_type is not \"LORA\": only LoRA adapters can be applied");
    else if (!json_is_number(r) || json_number_value(r) < 1 || json_number_value(r) != floor(json_number_value(r)))
        rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "\"r\" must be a positive integer");
    else if (a && !json_is_number(a))
        rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "\"lora_alpha\" must be a number");
    if (!rc) {
        c->r = json_number_value(r), c->alpha = a ? json_number_value(a) : 8.0; // PEFT's default lora_alpha
        c->rslora = json_is_true(json_object_get(c->root, "use_rslora"));
        c->fan_in_fan_out = json_is_true(json_object_get(c->root, "fan_in_fan_out"));
        c->rank_pattern = json_object_get(c->root, "rank_pattern"), c->alpha_pattern = json_object_get(c->root, "alpha_pattern");
        if (c->rank_pattern && !json_is_object(c->rank_pattern)) c->rank_pattern = NULL;
        if (c->alpha_pattern && !json_is_object(c->alpha_pattern)) c->alpha_pattern = NULL;
        rc = compile_patterns(c->rank_pattern, &c->rank_rx, path, err);
        if (!rc) rc = compile_patterns(c->alpha_pattern, &c->alpha_rx, path, err);
    }
    graft__free(path);
    return rc;
}

// Module `module`'s scale: alpha / r (use_rslora: alpha / √r) with r and alpha from rank_pattern /
// alpha_pattern or r / lora_alpha; the config's rank must equal the factors' (`rank`).
int graft__lora_scale(const struct graft__lora_cfg *c, const char *module, uint64_t rank, double *s, const char *path, const char *tensor,
                      size_t tlen, struct graft_err *err) {
    double r_cfg = c->r, alpha = c->alpha;
    int rc = pattern_value(&c->rank_rx, module, &r_cfg, err);
    if (!rc) rc = pattern_value(&c->alpha_rx, module, &alpha, err);
    if (rc) return rc;
    if (!isfinite(alpha) || fabs(alpha) > 1e30)
        return graft_err_set(err, GRAFT_E_FORMAT, path, tensor, tlen, "adapter_config.json gives lora_alpha %g for this module: not a usable number", alpha);
    if (!(r_cfg >= 1 && r_cfg <= 4294967296.0) || r_cfg != floor(r_cfg) || (uint64_t)r_cfg != rank)
        return graft_err_set(err, GRAFT_E_FORMAT, path, tensor, tlen, "adapter_config.json gives rank %g for this module but its lora_A has %llu rows",
                             r_cfg, (unsigned long long)rank);
    *s = c->rslora ? alpha / sqrt((double)rank) : alpha / (double)rank;
    return GRAFT_OK;
}

// The adapter folder and its tensor file: `adapter` is the folder (adapter_model.safetensors, else
// PEFT's older adapter_model.bin) or one of those files.
int graft__lora_locate(const char *adapter, char **dir, char **file, struct graft_err *err) {
    struct stat st;
    size_t al = strlen(adapter);
    *dir = *file = NULL;
    if ((al > 12 && !strcmp(adapter + al - 12, ".safetensors")) || (al > 4 && !strcmp(adapter + al - 4, ".bin"))) {
        *file = graft__strdup(adapter);
        const char *slash = strrchr(adapter, '/');
        *dir = slash ? graft__strndup(adapter, (size_t)(slash - adapter)) : graft__strdup(".");
    } else {
        *dir = graft__strdup(adapter);
        *file = graft__asprintf("%s/adapter_model.safetensors", adapter);
    }
    if (!*dir || !*file) return nomem(err);
    if (stat(*file, &st) != 0) {
        char *bin = graft__asprintf("%s/adapter_model.bin", *dir);
        if (!bin) return nomem(err);
        if (stat(bin, &st) == 0) { graft__free(*file), *file = bin; return GRAFT_OK; } // read without executing its pickle (torchbin.c)
        graft__free(bin);
        return graft_err_set(err, GRAFT_E_NOTFOUND, *file, NULL, 0, "not found: is this a PEFT LoRA adapter folder?");
    }
    return GRAFT_OK;
}

static struct atensor *find_target(struct ajob *j, const char *name) {
    const struct graft_model_tensor *t = graft_model_find(j->base, name, strlen(name));
    if (!t) return NULL;
    for (size_t i = 0; i < j->n; i++)
        if (j->ts[i].t == t) return &j->ts[i];
    return NULL;
}

// Match every adapter tensor to the base tensor it changes; check shapes and the config's ranks.
static int plan_apply(struct ajob *j, const struct graft__lora_cfg *c, const char *apath, size_t *n_lora, size_t *n_whole, struct graft_err *err) {
    size_t na = graft_model_n_tensors(j->ad);
    char name[1100];
    bool gpt2 = is_gpt2(j->base);
    for (size_t i = 0; i < na; i++) {
        const struct graft_model_tensor *at = graft_model_tensor(j->ad, i);
        const struct graft_tensor_info *ti = at->info;
        const char *s = ti->name;
        size_t n = ti->name_len;
        if (n > strlen(PFX) && !memcmp(s, PFX, strlen(PFX))) s += strlen(PFX), n -= strlen(PFX);
        if (n >= sizeof name - 16) return graft_err_set(err, GRAFT_E_LIMIT, apath, ti->name, ti->name_len, "tensor name too long");
        static const char *const sufs[] = {".lora_A.weight", ".lora_B.weight", ".lora_B.bias", ".lora_embedding_A", ".lora_embedding_B"};
        int kind = -1;
        for (int k = 0; k < 5 && kind < 0; k++)
            if (graft__ends_with(s, n, sufs[k])) kind = k;
        size_t mlen = kind >= 0 ? n - strlen(sufs[kind]) : n;
        memcpy(name, s, mlen), name[mlen] = 0; // the module (or, for a whole tensor, the tensor name)
        // PEFT saves a LoRA-wrapped module's own tensors as X.base_layer.{weight,bias} (bias="all" /
        // "lora_only", save_embedding_layers): they replace X.{weight,bias}, and X's factors apply on top
        char *bl = kind < 0 ? strstr(name, ".base_layer.") : NULL;
        const size_t bln = sizeof ".base_layer" - 1;
        if (bl) memmove(bl, bl + bln, strlen(bl + bln) + 1);
        if (kind < 0) { // modules_to_save: replaces the base tensor of the same name
            struct atensor *x = find_target(j, name);
            const struct graft_model_tensor *tied = !x && graft__ends_with(name, strlen(name), "lm_head.weight") ? graft__lora_find_or_tied(j->base, name) : NULL;
            if (tied) { // a tied base: the saved lm_head becomes its own tensor
                if (j->head || ti->n_dims != 2 || tied->info->n_dims != 2 || ti->ne[0] != tied->info->ne[0] || ti->ne[1] != tied->info->ne[1] ||
                    !graft_dtype_is_float_target(tied->info->dtype))
                    return graft_err_set(err, GRAFT_E_FORMAT, apath, ti->name, ti->name_len, "does not fit the base's tied embedding");
                j->head = at, j->head_like = tied;
                (*n_whole)++;
                continue;
            }
            if (!x) return graft_err_set(err, GRAFT_E_FORMAT, apath, ti->name, ti->name_len, "the base model has no tensor '%s': is this adapter for another model?", name);
            if (x->repl) return graft_err_set(err, GRAFT_E_FORMAT, apath, ti->name, ti->name_len, "tensor given twice");
            char mod[1100];
            snprintf(mod, sizeof mod, "%s", name);
            if (graft__ends_with(mod, strlen(mod), ".weight")) mod[strlen(mod) - 7] = 0;
            bool rows_only = ti->n_dims == 2 && x->t->info->n_dims == 2 && ti->ne[1] == x->t->info->ne[1] && (graft__lora_is_embedding(mod) || is_output_head(mod));
            if (ti->n_elem != x->t->info->n_elem && !rows_only)
                return graft_err_set(err, GRAFT_E_FORMAT, apath, ti->name, ti->name_len,
                                     "%d-D, %llu elements: does not fit the base's '%s' (%llu elements): is this adapter for another model?", ti->n_dims,
                                     (unsigned long long)ti->n_elem, name, (unsigned long long)x->t->info->n_elem);
            if (ti->n_elem != x->t->info->n_elem)
                return graft_err_set(err, GRAFT_E_FORMAT, apath, ti->name, ti->name_len,
                                     "%llu rows where the base has %llu: resize the base's vocabulary first (graft does not change config.json here)",
                                     (unsigned long long)ti->ne[0], (unsigned long long)x->t->info->ne[0]);
            x->repl = at, x->repl_base = bl != NULL;
            (*n_whole)++;
            continue;
        }
        strcat(name, kind == 2 ? ".bias" : ".weight");
        struct atensor *x = find_target(j, name);
        if (!x && graft__lora_find_or_tied(j->base, name))
            return graft_err_set(err, GRAFT_E_FORMAT, apath, ti->name, ti->name_len,
                                 "the base ties lm_head to its input embedding: LoRA factors for lm_head need an untied base");
        if (!x) return graft_err_set(err, GRAFT_E_FORMAT, apath, ti->name, ti->name_len, "the base model has no tensor '%s': is this adapter for another model?", name);
        if (kind == 2) {
            if (ti->n_elem != x->t->info->n_elem) return graft_err_set(err, GRAFT_E_FORMAT, apath, ti->name, ti->name_len, "bias length differs from the base's");
            x->bias = at;
        } else if (kind == 0 || kind == 3) {
            if (x->a) return graft_err_set(err, GRAFT_E_FORMAT, apath, ti->name, ti->name_len, "tensor given twice");
            x->a = at, x->embedding = kind == 3;
        } else {
            if (x->b) return graft_err_set(err, GRAFT_E_FORMAT, apath, ti->name, ti->name_len, "tensor given twice");
            x->b = at, x->embedding = kind == 4;
        }
    }
    for (size_t i = 0; i < j->n; i++) {
        struct atensor *x = &j->ts[i];
        const struct graft_tensor_info *t = x->t->info;
        if (!x->a != !x->b) return graft_err_set(err, GRAFT_E_FORMAT, apath, t->name, t->name_len, "the adapter has only one of lora_A / lora_B for this tensor");
        if (x->bias && !x->a) {
            // a bias delta alone still needs the module's scale: take it from the weight's factors
            char wname[1100];
            snprintf(wname, sizeof wname, "%.*s.weight", (int)(t->name_len - 5), t->name);
            struct atensor *wx = find_target(j, wname);
            if (!wx || !wx->a) return graft_err_set(err, GRAFT_E_FORMAT, apath, t->name, t->name_len, "lora_B.bias without lora_A / lora_B for the weight");
        }
        if (!x->a) continue;
        if (x->repl && !x->repl_base) return graft_err_set(err, GRAFT_E_FORMAT, apath, t->name, t->name_len, "both replaced whole and given LoRA factors");
        if (!graft_dtype_is_float_target(t->dtype))
            return graft_err_set(err, GRAFT_E_FORMAT, apath, t->name, t->name_len, "the base stores this tensor as %s: LoRA needs a float16, bfloat16 or float32 weight",
                                 graft_dtype_traits(t->dtype) ? graft_dtype_traits(t->dtype)->name : "?");
        const struct graft_tensor_info *A = x->a->info, *B = x->b->info;
        uint64_t rank = A->n_dims ? A->ne[0] : 0;
        // PEFT: fan_in_fan_out for GPT-2's Conv1D layers whatever the config says, never for its nn.Linear;
        // other models as the config says
        char modname[1100];
        snprintf(modname, sizeof modname, "%.*s", (int)(t->name_len > 7 ? t->name_len - 7 : t->name_len), t->name);
        x->transposed = !x->embedding && (gpt2 ? conv1d_name(modname) : c->fan_in_fan_out);
        uint64_t rows = t->n_dims ? t->ne[0] : 1, cols = cols_of(t);
        bool ok;
        if (x->embedding || x->transposed) // A: r × rows (vocab / in), B: cols × r
            ok = A->n_dims == 2 && A->ne[1] == rows && B->n_dims == 2 && B->ne[0] == cols && B->ne[1] == rank;
        else { // A: r × in (conv: r × in × kh × kw, the base's trailing dims), B: rows × r (conv: rows × r × 1 × 1)
            ok = t->n_dims >= 2 && A->n_dims == t->n_dims && B->n_dims == t->n_dims && B->ne[0] == rows && B->ne[1] == rank;
            for (int d = 1; ok && d < t->n_dims; d++) ok = A->ne[d] == t->ne[d] && (d < 2 || B->ne[d] == 1);
        }
        if (!ok || rank == 0)
            return graft_err_set(err, GRAFT_E_FORMAT, apath, t->name, t->name_len,
                                 "LoRA factors of shapes %s-D %llu×… and %llu×… do not fit this %d-D tensor of %llu rows: is this adapter for another model?",
                                 A->n_dims == 2 ? "2" : "n", (unsigned long long)rank, (unsigned long long)(B->n_dims ? B->ne[0] : 0), t->n_dims,
                                 (unsigned long long)rows);
        char module[1100];
        snprintf(module, sizeof module, "%.*s", (int)(t->name_len - 7), t->name);
        double s;
        int prc = graft__lora_scale(c, module, rank, &s, apath, t->name, t->name_len, err);
        if (prc) return prc;
        x->s = (float)(s * j->p->scale);
        (*n_lora)++;
    }
    for (size_t i = 0; i < j->n; i++) { // bias deltas take their weight's scale
        struct atensor *x = &j->ts[i];
        if (!x->bias || x->a) continue;
        char wname[1100];
        snprintf(wname, sizeof wname, "%.*s.weight", (int)(x->t->info->name_len - 5), x->t->info->name);
        x->s = find_target(j, wname)->s;
    }
    return GRAFT_OK;
}

int graft_lora_apply(const struct graft_model *base, const char *adapter, const char *target,
                     const struct graft_lora_apply_params *p, size_t *n_lora, size_t *n_whole, struct graft_err *err) {
    graft__blas_single_thread();
    size_t nl = 0, nw = 0;
    char *dir = NULL, *file = NULL;
    struct graft__lora_cfg c = {0};
    struct graft_model *ad = NULL;
    struct graft_writer *w = NULL;
    struct ajob j = {.base = base, .p = p};
    int rc = graft__lora_locate(adapter, &dir, &file, err);
    if (!rc) rc = graft__lora_read_config(dir, &c, err);
    if (!rc && json_is_true(json_object_get(c.root, "use_dora"))) // (its magnitude vectors would be refused as unknown tensors)
        rc = graft_err_set(err, GRAFT_E_FORMAT, dir, NULL, 0, "a DoRA adapter (use_dora): graft applies plain LoRA only");
    if (!rc) rc = graft_model_open(file, &ad, err);
    j.ad = ad;
    j.n = graft_model_n_tensors(base);
    if (!rc && !(j.ts = graft__calloc(j.n ? j.n : 1, sizeof *j.ts))) rc = nomem(err);
    for (size_t i = 0; !rc && i < j.n; i++) j.ts[i].t = graft_model_tensor(base, i), j.ts[i].id = -1;
    if (!rc) rc = plan_apply(&j, &c, file, &nl, &nw, err);
    if (!rc && !p->dry_run) {
        size_t np = 0;
        const char *protect[4096];
        for (int i = 0; i < graft_model_n_shards(base) && np < 4090; i++) protect[np++] = graft_st_path(graft_model_shard(base, i));
        protect[np++] = file;
        if (graft_model_is_dir(base)) protect[np++] = graft_model_dir(base);
        protect[np++] = dir;
        struct graft_writer_params wp = graft_writer_default_params();
        size_t tl = strlen(target);
        bool single = tl > 12 && !strcmp(target + tl - 12, ".safetensors");
        wp.max_shard_bytes = p->max_shard_bytes, wp.protect = protect, wp.n_protect = np;
        wp.flags = p->writer_flags | (single ? GRAFT_WRITER_SINGLE_FILE : 0);
        rc = graft_writer_open(target, &wp, &w, err);
        j.w = w;
        for (size_t i = 0; !rc && i < j.n; i++) {
            const struct graft_tensor_info *t = j.ts[i].t->info;
            j.ts[i].id = graft_writer_add_tensor(w, t->name, t->name_len, t->dtype, t->n_dims, t->ne, err);
            if (j.ts[i].id < 0) rc = (int)j.ts[i].id;
        }
        if (!rc && j.head) {
            const char *hn = j.head->info->name + (j.head->info->name_len > strlen(PFX) && !memcmp(j.head->info->name, PFX, strlen(PFX)) ? strlen(PFX) : 0);
            j.head_id = graft_writer_add_tensor(w, hn, strlen(hn), j.head_like->info->dtype, 2, j.head->info->ne, err);
            if (j.head_id < 0) rc = (int)j.head_id;
        }
        if (!rc) rc = graft_writer_layout(w, err);
        if (!rc)
            rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, j.n + (j.head ? 1 : 0), apply_tensor, &j,
                                p->progress && p->progress->enabled ? graft_progress_draw : NULL, p->progress, err);
        bool files = p->copy_side_files && !(wp.flags & GRAFT_WRITER_SINGLE_FILE);
        if (!rc && files && j.head && graft_model_config_json(base)) { // the output is untied now
            json_t *cfg = json_loads(graft_model_config_json(base), 0, NULL);
            if (cfg) json_object_set_new(cfg, "tie_word_embeddings", json_false());
            rc = cfg ? graft__ops_add_json(w, "config.json", cfg, err) : nomem(err);
            json_decref(cfg);
            if (!rc) rc = graft_writer_copy_tokenizer(w, base, err);
        } else if (!rc && files) {
            rc = graft_writer_copy_side_files(w, base, NULL, err);
        }
        if (!rc) rc = graft_writer_commit(w, err);
    }
    if (n_lora) *n_lora = nl;
    if (n_whole) *n_whole = nw;
    graft_writer_free(w);
    graft_model_close(ad);
    graft__lora_cfg_free(&c);
    graft__free(j.ts), graft__free(dir), graft__free(file);
    return rc;
}
