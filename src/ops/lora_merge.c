// graft merge-lora: several PEFT LoRA adapters of one base merged into one adapter, in adapter space
// (PEFT's add_weighted_adapter, from files, streaming one module per work item).
//
// Plan: every adapter tensor is one entry (module, adapter, kind); the entries are sorted by name so
// each module's factors from every adapter meet (n log n, whatever the names). A module is a LoRA pair
// (lora_A/lora_B or lora_embedding_A/B, with an optional lora_B.bias) or a whole tensor
// (modules_to_save). Checks: factors fit each other and agree between adapters (the same p × q product),
// ranks agree where the combination needs it, the base (when given) has the module with that shape.
// Execute, per module: factor types work on the r × q and p × r factors; svd by thin QRs of the stacked
// factors and the SVD of their small core (linalg.c graft__svd_product); the element-pruning *_svd
// types build ΔW of the module row block by row block (p × q per thread) and take its truncated SVD by
// the Gram route. Output: adapter_model.safetensors, adapter_config.json (the first adapter's, with
// r, lora_alpha = r, rank/alpha patterns, target_modules and modules_to_save of the result) and README.md.
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graft/lora.h"
#include "graft/writer.h"
#include "../config/config.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

#define PFX "base_model.model."

static const char *const comb_names[GRAFT_LORA_COMB_COUNT] = {
    "svd", "linear", "cat", "ties", "dare_linear", "dare_ties", "magnitude_prune", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd"};

const char *graft_lora_combination_name(enum graft_lora_combination c) { return (unsigned)c < GRAFT_LORA_COMB_COUNT ? comb_names[c] : "?"; }

bool graft_lora_combination_parse(const char *name, enum graft_lora_combination *out) {
    for (int i = 0; i < GRAFT_LORA_COMB_COUNT; i++)
        if (!strcmp(name, comb_names[i])) { *out = (enum graft_lora_combination)i; return true; }
    return false;
}

struct graft_lora_merge_spec graft_lora_merge_default_spec(void) {
    return (struct graft_lora_merge_spec){.combination = GRAFT_LORA_COMB_SVD, .density = -1};
}
struct graft_lora_merge_params graft_lora_merge_default_params(void) { return (struct graft_lora_merge_params){.n_threads = 1}; }

// What a combination does: element pruning (none, magnitude, random) and TIES's sign election; on the
// factors, on ΔW (dense) or on the product in factored form.
enum { PR_NONE, PR_MAG, PR_RAND };
struct comb_kind { int prune; bool ties, dense, factor_space, svd; };
static struct comb_kind kind_of(enum graft_lora_combination c) {
    switch (c) {
    case GRAFT_LORA_COMB_SVD: return (struct comb_kind){PR_NONE, false, false, false, true};
    case GRAFT_LORA_COMB_LINEAR: return (struct comb_kind){PR_NONE, false, false, true, false};
    case GRAFT_LORA_COMB_CAT: return (struct comb_kind){PR_NONE, false, false, false, false};
    case GRAFT_LORA_COMB_TIES: return (struct comb_kind){PR_MAG, true, false, true, false};
    case GRAFT_LORA_COMB_DARE_LINEAR: return (struct comb_kind){PR_RAND, false, false, true, false};
    case GRAFT_LORA_COMB_DARE_TIES: return (struct comb_kind){PR_RAND, true, false, true, false};
    case GRAFT_LORA_COMB_MAGNITUDE_PRUNE: return (struct comb_kind){PR_MAG, false, false, true, false};
    case GRAFT_LORA_COMB_TIES_SVD: return (struct comb_kind){PR_MAG, true, true, false, true};
    case GRAFT_LORA_COMB_DARE_LINEAR_SVD: return (struct comb_kind){PR_RAND, false, true, false, true};
    case GRAFT_LORA_COMB_DARE_TIES_SVD: return (struct comb_kind){PR_RAND, true, true, false, true};
    default: return (struct comb_kind){PR_MAG, false, true, false, true}; // magnitude_prune_svd
    }
}

enum { K_A, K_B, K_BIAS, K_EA, K_EB, K_WHOLE };

struct ent {
    const char *name; // module (or whole tensor) name, without the "base_model.model." prefix
    size_t      len;
    int         kind;
    size_t      ad;
    const struct graft_model_tensor *t;
};

struct src { size_t ad; const struct graft_model_tensor *a, *b, *bias, *w; double s; }; // one adapter's share of a module

struct mod {
    char        *name;
    bool         whole, embedding;
    struct src  *src;        // the adapters that have the module, ascending (src[0]: the first)
    size_t       n_src;
    uint64_t     p, q;       // B·A is p × q (whole: rows × cols of the tensor)
    uint64_t     r0, rtot;   // the common rank (0 when they differ), Σ rᵢ
    int          rank;       // output rank
    enum graft_dtype dt, bias_dt;
    bool         bias, same; // a bias delta; whole: every adapter holds the same bytes
    const struct graft_model_tensor *bt; // base tensor
    double       rel_error;
    long         id_a, id_b, id_bias, id_w;
};

struct ad { char *dir, *file; struct graft_model *m; struct graft__lora_cfg cfg; double w, d; };

struct job {
    const struct graft_lora_merge_spec *s;
    const struct graft_lora_merge_params *p;
    struct comb_kind k;
    struct ad *ads;
    size_t n_ad;
    struct graft_model *base;
    struct mod *mods;
    size_t n;
    struct src *srcs;        // every module's sources, one array
    struct graft_writer *w;
};

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

static int ent_cmp(const void *x, const void *y) {
    const struct ent *a = x, *b = y;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->name, b->name, n);
    if (c) return c;
    if (a->len != b->len) return a->len < b->len ? -1 : 1;
    if (a->ad != b->ad) return a->ad < b->ad ? -1 : 1;
    return a->kind - b->kind;
}


// f32 copy of tensor t of adapter m; non-finite values are refused (they would spread through the merge).
static int load(const struct graft_model *m, const struct graft_model_tensor *t, float *dst, struct graft_err *err) {
    size_t n = (size_t)t->info->n_elem;
    graft_st_populate(graft_model_shard(m, t->shard), t->info->begin, t->info->n_bytes);
    if (!graft_row_to_f32(t->info->dtype, graft_model_data(m, t), dst, n))
        return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), t->info->name, t->info->name_len, "not a floating-point tensor");
    size_t first = 0;
    uint64_t bad = graft_count_nonfinite(GRAFT_DTYPE_F32, dst, n, &first);
    if (bad)
        return graft_err_set(err, GRAFT_E_NONFINITE, graft_model_path(m), t->info->name, t->info->name_len,
                             "holds %llu NaN or infinite values (the first at element %zu): cannot merge it", (unsigned long long)bad, first);
    return GRAFT_OK;
}

// ---- pruning and TIES (PEFT's merge_utils, element by element) ---------------------------------------

// Magnitude pruning keeps the k = ⌊d·n⌋ entries of largest |x|: all above the k-th largest magnitude
// and, of those equal to it, the first ones in index order (torch.topk leaves that order unspecified).
struct prune { int how; double d; float thr; uint64_t eq_left; bool none; uint64_t key; };

static void mag_threshold(struct prune *pr, const float *x, uint64_t n, float *scratch) {
    uint64_t k = (uint64_t)(pr->d * (double)n);
    if (pr->d >= 1) { pr->how = PR_NONE; return; }
    if (k == 0 || n == 0) { pr->none = true; return; }
    uint64_t gt = 0;
    for (uint64_t i = 0; i < n; i++) scratch[i] = fabsf(x[i]);
    pr->thr = graft__kth_smallest(scratch, (size_t)n, (size_t)(n - k));
    for (uint64_t i = 0; i < n; i++) gt += fabsf(x[i]) > pr->thr;
    pr->eq_left = k - gt;
}

// Prune x[0..n) in place: elements c0.. of the task (counters of the random mask).
static void prune_apply(struct prune *pr, float *x, size_t n, uint64_t c0, float *keep) {
    if (pr->how == PR_NONE) return;
    if (pr->none) { memset(x, 0, n * sizeof *x); return; }
    if (pr->how == PR_MAG) {
        for (size_t i = 0; i < n; i++) {
            float a = fabsf(x[i]);
            if (a > pr->thr) continue;
            if (a == pr->thr && pr->eq_left) { pr->eq_left--; continue; }
            x[i] = 0;
        }
        return;
    }
    if (pr->d >= 1) return; // PEFT's prune() returns the tensor as it is: no mask, no rescale
    graft__rng_keep_block(pr->key, c0, n, (float)pr->d, keep);
    for (size_t i = 0; i < n; i++) x[i] = x[i] * keep[i] / (float)pr->d;
}

// out[i] = Σ wₜ·xₜ[i] or, with ties, TIES's disjoint mean: the majority sign from the unweighted pruned
// values (total: their sum; frequency: the sum of their signs, ≥ 0 → +), and the mean of the weighted
// values that have it.
static void combine(float *const *x, size_t T, const double *w, bool ties, bool freq, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) {
        if (!ties) {
            double acc = 0;
            for (size_t t = 0; t < T; t++) acc += w[t] * (double)x[t][i];
            out[i] = (float)acc;
            continue;
        }
        double sum = 0;
        for (size_t t = 0; t < T; t++) sum += freq ? (double)((x[t][i] > 0) - (x[t][i] < 0)) : (double)x[t][i];
        int maj = sum >= 0 ? 1 : -1;
        double acc = 0;
        int cnt = 0;
        for (size_t t = 0; t < T; t++)
            if ((x[t][i] > 0) - (x[t][i] < 0) == maj) acc += w[t] * (double)x[t][i], cnt++;
        out[i] = (float)(acc / (cnt > 1 ? cnt : 1));
    }
}

static uint64_t key_of(const struct job *j, size_t ad, const char *module, const char *what) {
    char name[1200];
    int len = snprintf(name, sizeof name, "%s%s", module, what);
    return graft_rng_key(j->p->seed, ad, name, len > 0 && (size_t)len < sizeof name ? (size_t)len : 0);
}

// ---- per module -------------------------------------------------------------------------------------

// The inputs are finite (load() refuses others), so NaN / ±Inf here were made by the merge (an
// overflow of a huge weight or lora_alpha, or of the output dtype): refused unless --allow-nonfinite.
static int write_f32(const struct job *j, long id, enum graft_dtype dt, const float *src, uint64_t n, struct graft_err *err) {
    uint64_t nb;
    graft_dtype_nbytes(dt, n, &nb);
    if (!nb) return GRAFT_OK;
    void *enc = graft__malloc((size_t)nb);
    if (!enc) return nomem(err);
    if (!graft_row_from_f32(dt, src, enc, (size_t)n)) {
        graft__free(enc);
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "cannot write this dtype");
    }
    size_t first = 0;
    uint64_t bad = graft_count_nonfinite(dt, enc, (size_t)n, &first);
    if (bad && !(j->p->writer_flags & GRAFT_WRITER_ALLOW_NONFINITE)) {
        graft__free(enc);
        return graft_err_set(err, GRAFT_E_NONFINITE, NULL, NULL, 0, "the merge gives %llu NaN or infinite values (the first at element %zu) from finite "
                                                                  "inputs: a weight or scale too large for the dtype; nothing was written "
                                                                  "(--allow-nonfinite writes them anyway)", (unsigned long long)bad, first);
    }
    if (bad) fprintf(stderr, "graft: warning: %llu NaN or infinite values written (--allow-nonfinite)\n", (unsigned long long)bad);
    int rc = graft_writer_write(j->w, id, 0, enc, (size_t)nb, err);
    graft__free(enc);
    return rc;
}

// The combined update of element-pruning *_svd types into D (p × q): ΔWₜ = sₜ·Bₜ·Aₜ built in row blocks;
// magnitude thresholds need each whole ΔWₜ first (in D, one at a time).
static int dense_delta(const struct job *j, const struct mod *x, float *const *A, float *const *B, const size_t *ids, const uint64_t *rk, size_t T,
                       const double *w, float *D, struct graft_err *err) {
    uint64_t p = x->p, q = x->q, br = (4u << 20) / (q * T) ? (4u << 20) / (q * T) : 1;
    if (br > p) br = p;
    struct prune *pr = graft__calloc(T, sizeof *pr);
    float *scratch = j->k.prune == PR_MAG ? graft__malloc((size_t)(p * q) * sizeof *scratch) : NULL;
    float *blk = graft__malloc((size_t)(T * br * q) * sizeof *blk), *keep = graft__malloc((size_t)(br * q) * sizeof *keep);
    float **xs = graft__calloc(T, sizeof *xs);
    int rc = pr && blk && keep && xs && (j->k.prune != PR_MAG || scratch) ? GRAFT_OK : nomem(err);
    for (size_t t = 0; !rc && t < T; t++) {
        const struct src *sr = &x->src[ids[t]];
        pr[t] = (struct prune){.how = j->k.prune, .d = j->ads[sr->ad].d, .key = key_of(j, sr->ad, x->name, "")};
        xs[t] = blk + t * br * q;
        if (j->k.prune == PR_MAG) {
            memset(D, 0, (size_t)(p * q) * sizeof *D);
            graft__sgemm_acc(false, false, (size_t)p, (size_t)q, (size_t)rk[t], (float)x->src[ids[t]].s, B[t], (size_t)rk[t], A[t], (size_t)q, D, (size_t)q);
            mag_threshold(&pr[t], D, p * q, scratch);
        }
    }
    for (uint64_t r0 = 0; !rc && r0 < p; r0 += br) {
        uint64_t h = p - r0 < br ? p - r0 : br;
        for (size_t t = 0; t < T; t++) {
            memset(xs[t], 0, (size_t)(h * q) * sizeof *xs[t]);
            graft__sgemm_acc(false, false, (size_t)h, (size_t)q, (size_t)rk[t], (float)x->src[ids[t]].s, B[t] + r0 * rk[t], (size_t)rk[t], A[t], (size_t)q,
                             xs[t], (size_t)q);
            prune_apply(&pr[t], xs[t], (size_t)(h * q), r0 * q, keep);
        }
        combine(xs, T, w, j->k.ties, j->s->sign_frequency, (size_t)(h * q), D + r0 * q);
    }
    graft__free(pr), graft__free(scratch), graft__free(blk), graft__free(keep), graft__free(xs);
    return rc;
}

// PEFT's svd_clamp: both factors clamped to ±(quantile `c` of all their entries, linear interpolation).
static int clamp_factors(float *U, size_t nu, float *V, size_t nv, double c, struct graft_err *err) {
    size_t n = nu + nv;
    if (n == 0) return GRAFT_OK;
    float *all = graft__malloc(n * sizeof *all);
    if (!all) return nomem(err);
    memcpy(all, U, nu * sizeof *U), memcpy(all + nu, V, nv * sizeof *V);
    double pos = c * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    float a = graft__kth_smallest(all, n, lo), b = lo + 1 < n ? graft__kth_smallest(all, n, lo + 1) : a;
    float hi = (float)((double)a + (pos - (double)lo) * ((double)b - (double)a));
    for (size_t i = 0; i < nu; i++) U[i] = U[i] > hi ? hi : U[i] < -hi ? -hi : U[i];
    for (size_t i = 0; i < nv; i++) V[i] = V[i] > hi ? hi : V[i] < -hi ? -hi : V[i];
    graft__free(all);
    return GRAFT_OK;
}

// A tensor saved whole: base + Σ wᵢ·(Wᵢ − base) over the adapters that save it (the others leave the
// base's); without a base, the adapters' common bytes (plan() refuses differing ones).
static int merge_whole(struct job *j, struct mod *x, struct graft_err *err) {
    const struct graft_model_tensor *t0 = x->src[0].w;
    if (!x->bt) {
        int rc = graft_writer_write(j->w, x->id_w, 0, graft_model_data(j->ads[x->src[0].ad].m, t0), (size_t)t0->info->n_bytes, err);
        graft_progress_add(j->p->progress, t0->info->n_bytes);
        return rc;
    }
    // base + Σ wᵢ·(Wᵢ − base) over the adapters that replace it
    uint64_t n = t0->info->n_elem;
    float *acc = graft__malloc((size_t)n * sizeof *acc), *b = graft__malloc((size_t)n * sizeof *b), *t = graft__malloc((size_t)n * sizeof *t);
    int rc = acc && b && t ? GRAFT_OK : nomem(err);
    if (!rc) rc = load(j->base, x->bt, b, err);
    if (!rc) memcpy(acc, b, (size_t)n * sizeof *acc);
    for (size_t i = 0; !rc && i < x->n_src; i++) {
        const struct src *sr = &x->src[i];
        if ((rc = load(j->ads[sr->ad].m, sr->w, t, err))) break;
        for (uint64_t e = 0; e < n; e++) acc[e] += (float)(j->ads[sr->ad].w * ((double)t[e] - (double)b[e]));
        graft_progress_add(j->p->progress, sr->w->info->n_bytes);
    }
    if (!rc) rc = write_f32(j, x->id_w, x->dt, acc, n, err);
    graft__free(acc), graft__free(b), graft__free(t);
    return rc;
}

static int merge_module(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct job *j = ctx;
    struct mod *x = &j->mods[item];
    if (x->whole) {
        int rc = merge_whole(j, x, err);
        if (rc && !strstr(err->msg, x->name)) graft__err_prefix(err, NULL, x->name, strlen(x->name));
        return rc;
    }
    const struct comb_kind k = j->k;
    uint64_t p = x->p, q = x->q, R = (uint64_t)x->rank;
    size_t T = 0, ns = x->n_src, *ids = graft__calloc(ns, sizeof *ids);
    uint64_t *rk = graft__calloc(ns, sizeof *rk);
    float **A = graft__calloc(ns, sizeof *A), **B = graft__calloc(ns, sizeof *B);
    double *wa = graft__calloc(ns, sizeof *wa), *wb = graft__calloc(ns, sizeof *wb);
    float *Ao = graft__calloc((size_t)(R * q) + 1, sizeof *Ao), *Bo = graft__calloc((size_t)(p * R) + 1, sizeof *Bo), *bias = NULL, *D = NULL, *tmp = NULL;
    double *U = NULL, *S = NULL, *Vt = NULL, *Bd = NULL, *Ad = NULL;
    struct graft__svd sv = {0};
    int rc = ids && rk && A && B && wa && wb && Ao && Bo ? GRAFT_OK : nomem(err);
    for (size_t i = 0; !rc && i < ns; i++) {
        const struct src *s = &x->src[i];
        const struct ad *ai = &j->ads[s->ad];
        if (!s->a) continue;
        ids[T] = i, rk[T] = s->a->info->ne[0];
        A[T] = graft__malloc((size_t)s->a->info->n_elem * sizeof **A + 4), B[T] = graft__malloc((size_t)s->b->info->n_elem * sizeof **B + 4);
        if (!A[T] || !B[T]) { rc = nomem(err); T++; break; }
        T++;
        if ((rc = load(ai->m, s->a, A[T - 1], err)) || (rc = load(ai->m, s->b, B[T - 1], err))) break;
        graft_progress_add(j->p->progress, s->a->info->n_bytes + s->b->info->n_bytes);
        // PEFT's factor weights: √|wᵢsᵢ| on both, the sign on A only
        double ws = ai->w * s->s;
        wa[T - 1] = (ws < 0 ? -1 : 1) * sqrt(fabs(ws)), wb[T - 1] = sqrt(fabs(ws));
    }
    if (rc) goto out;
    if (j->s->combination == GRAFT_LORA_COMB_CAT) {
        uint64_t off = 0;
        for (size_t t = 0; t < T; t++) {
            double f = j->ads[x->src[ids[t]].ad].w * x->src[ids[t]].s;
            for (uint64_t e = 0; e < rk[t] * q; e++) Ao[off * q + e] = (float)(f * (double)A[t][e]);
            for (uint64_t r = 0; r < p; r++)
                for (uint64_t c = 0; c < rk[t]; c++) Bo[r * R + off + c] = B[t][r * rk[t] + c];
            off += rk[t];
        }
        x->rel_error = 0;
    } else if (k.factor_space) { // linear, ties, dare_*, magnitude_prune: A and B separately (equal ranks)
        float *keep = graft__malloc((size_t)(p > q ? p : q) * R * sizeof *keep + 4), *scratch = graft__malloc((size_t)(p > q ? p : q) * R * sizeof *scratch + 4);
        if (!keep || !scratch) { graft__free(keep), graft__free(scratch); rc = nomem(err); goto out; }
        for (int f = 0; f < 2; f++) {
            float **X = f ? B : A;
            uint64_t n = f ? p * R : R * q;
            for (size_t t = 0; t < T; t++) {
                size_t ad = x->src[ids[t]].ad;
                struct prune pr = {.how = k.prune, .d = j->ads[ad].d, .key = key_of(j, ad, x->name, f ? ".lora_B" : ".lora_A")};
                if (k.prune == PR_MAG) mag_threshold(&pr, X[t], n, scratch);
                prune_apply(&pr, X[t], (size_t)n, 0, keep);
            }
            combine(X, T, f ? wb : wa, k.ties, j->s->sign_frequency, (size_t)n, f ? Bo : Ao);
        }
        graft__free(keep), graft__free(scratch);
        x->rel_error = 0;
    } else { // *_svd: the top R triplets of the combined ΔW; B = U·S, A = Vᵀ (PEFT's split)
        U = graft__malloc((size_t)(p * R + 1) * sizeof *U), S = graft__malloc((size_t)(R + 1) * sizeof *S), Vt = graft__malloc((size_t)(R * q + 1) * sizeof *Vt);
        if (!U || !S || !Vt) { rc = nomem(err); goto out; }
        double *w = graft__calloc(T ? T : 1, sizeof *w);
        if (!w) { rc = nomem(err); goto out; }
        for (size_t t = 0; t < T; t++) w[t] = j->ads[x->src[ids[t]].ad].w * (j->s->peft_svd_scaling ? x->src[ids[t]].s : 1.0);
        double energy = 0, tail = 0;
        if (!k.dense) { // Σ wₜ·sₜ·Bₜ·Aₜ = [wₜsₜ·Bₜ]·[Aₜ] in factored form
            uint64_t c = x->rtot, off = 0;
            Bd = graft__malloc((size_t)(p * c) * sizeof *Bd), Ad = graft__malloc((size_t)(c * q) * sizeof *Ad);
            if (!Bd || !Ad) { graft__free(w); rc = nomem(err); goto out; }
            for (size_t t = 0; t < T; t++) {
                double f = w[t] * x->src[ids[t]].s;
                for (uint64_t r = 0; r < p; r++)
                    for (uint64_t e = 0; e < rk[t]; e++) Bd[r * c + off + e] = f * (double)B[t][r * rk[t] + e];
                for (uint64_t e = 0; e < rk[t] * q; e++) Ad[off * q + e] = (double)A[t][e];
                off += rk[t];
            }
            rc = graft__svd_product(Bd, (size_t)p, (size_t)c, Ad, (size_t)q, (size_t)R, U, S, Vt, &energy, &tail, err);
        } else {
            D = graft__malloc((size_t)(p * q) * sizeof *D);
            if (!D) rc = nomem(err);
            if (!rc) rc = dense_delta(j, x, A, B, ids, rk, T, w, D, err);
            if (!rc) rc = graft__svd_gram(D, (size_t)p, (size_t)q, (size_t)R, &sv, err);
            if (!rc) rc = graft__svd_factors(&sv, D, (size_t)R, U, S, Vt, err);
            if (!rc) energy = sv.energy, tail = graft__svd_tail(&sv, (size_t)R);
        }
        graft__free(w);
        if (rc) goto out;
        x->rel_error = energy > 0 ? sqrt(tail / energy) : 0.0;
        for (uint64_t r = 0; r < p; r++)
            for (uint64_t c = 0; c < R; c++) Bo[r * R + c] = (float)(U[r * R + c] * S[c]);
        for (uint64_t e = 0; e < R * q; e++) Ao[e] = (float)Vt[e];
        if (j->s->svd_clamp > 0 && (rc = clamp_factors(Bo, (size_t)(p * R), Ao, (size_t)(R * q), j->s->svd_clamp, err))) goto out;
    }
    if (x->bias) { // Σ wᵢ·sᵢ·biasᵢ (the output's scale is 1)
        bias = graft__calloc((size_t)p, sizeof *bias), tmp = graft__malloc((size_t)p * sizeof *tmp);
        if (!bias || !tmp) { rc = nomem(err); goto out; }
        for (size_t i = 0; i < ns; i++) {
            const struct src *sr = &x->src[i];
            if (!sr->bias) continue;
            if ((rc = load(j->ads[sr->ad].m, sr->bias, tmp, err))) goto out;
            for (uint64_t e = 0; e < p; e++) bias[e] += (float)(j->ads[sr->ad].w * sr->s * (double)tmp[e]);
        }
        if ((rc = write_f32(j, x->id_bias, x->bias_dt, bias, p, err))) goto out;
    }
    if ((rc = write_f32(j, x->id_a, x->dt, Ao, R * q, err))) goto out;
    rc = write_f32(j, x->id_b, x->dt, Bo, p * R, err);
out:
    for (size_t t = 0; A && B && t < T; t++) graft__free(A[t]), graft__free(B[t]);
    graft__svd_free(&sv);
    graft__free(ids), graft__free(rk), graft__free(A), graft__free(B), graft__free(wa), graft__free(wb), graft__free(Ao), graft__free(Bo);
    graft__free(bias), graft__free(tmp), graft__free(D), graft__free(U), graft__free(S), graft__free(Vt), graft__free(Bd), graft__free(Ad);
    if (rc && !strstr(err->msg, x->name)) graft__err_prefix(err, NULL, x->name, strlen(x->name));
    return rc;
}

// ---- plan -------------------------------------------------------------------------------------------

static int cfail(const struct job *j, size_t ad, const char *module, struct graft_err *err, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int cfail(const struct job *j, size_t ad, const char *module, struct graft_err *err, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return graft_err_set(err, GRAFT_E_CONFIG, j->ads[ad].dir, NULL, 0, "module '%s': %s", module, msg);
}

// Dimensions an adapter may declare: every buffer below is a product of two of them (or of one and a
// rank), so bounding each by 2³¹ and the products we allocate keeps size_t arithmetic exact.
#define DIM_MAX (((uint64_t)1 << 31) - 1)

static int plan_module(struct job *j, struct mod *x, const struct ent *e, size_t ne, struct graft_err *err) {
    // the module's sources, one per adapter (entries are sorted by adapter, then kind)
    for (size_t i = 0; i < ne; i++) {
        if (!x->n_src || x->src[x->n_src - 1].ad != e[i].ad) x->src[x->n_src++] = (struct src){.ad = e[i].ad};
        struct src *s = &x->src[x->n_src - 1];
        const struct graft_model_tensor **slot = e[i].kind == K_A || e[i].kind == K_EA ? &s->a : e[i].kind == K_B || e[i].kind == K_EB ? &s->b
                                               : e[i].kind == K_BIAS ? &s->bias : &s->w;
        if (*slot) return graft_err_set(err, GRAFT_E_FORMAT, j->ads[e[i].ad].file, e[i].t->info->name, e[i].t->info->name_len, "module given twice");
        *slot = e[i].t;
        if (e[i].kind == K_EA || e[i].kind == K_EB) x->embedding = true;
        if (e[i].kind == K_WHOLE) x->whole = true;
    }
    for (size_t i = 0; i < x->n_src; i++) {
        struct src *s = &x->src[i];
        const struct ad *a = &j->ads[s->ad];
        if (x->whole) {
            const struct graft_tensor_info *t = s->w->info;
            if (s->a || s->b || s->bias) return graft_err_set(err, GRAFT_E_FORMAT, a->file, t->name, t->name_len, "both whole and LoRA factors");
            if (!graft_dtype_is_float_target(t->dtype))
                return graft_err_set(err, GRAFT_E_FORMAT, a->file, t->name, t->name_len, "saved whole as %s: only float16, bfloat16 and float32 tensors are merged",
                                     graft_dtype_traits(t->dtype) ? graft_dtype_traits(t->dtype)->name : "?");
            if (i == 0) {
                x->dt = t->dtype, x->p = t->n_dims ? t->ne[0] : 1, x->q = t->n_dims && t->ne[0] ? t->n_elem / t->ne[0] : 1, x->same = true;
                continue;
            }
            const struct graft_tensor_info *t0 = x->src[0].w->info;
            bool shape = t->n_dims == t0->n_dims;
            for (int d = 0; shape && d < t->n_dims; d++) shape = t->ne[d] == t0->ne[d];
            if (!shape) return cfail(j, s->ad, x->name, err, "this adapter saves it whole with another shape than an earlier adapter: adapters of different models?");
            x->same = x->same && t->dtype == t0->dtype &&
                      !memcmp(graft_model_data(a->m, s->w), graft_model_data(j->ads[x->src[0].ad].m, x->src[0].w), (size_t)t->n_bytes);
            continue;
        }
        const struct graft_model_tensor *any = s->a ? s->a : s->b ? s->b : s->bias;
        if (!s->a || !s->b)
            return graft_err_set(err, GRAFT_E_FORMAT, a->file, any->info->name, any->info->name_len,
                                 s->bias && !s->a && !s->b ? "lora_B.bias without lora_A / lora_B" : "the adapter has only one of lora_A / lora_B for this module");
        const struct graft_tensor_info *A = s->a->info, *B = s->b->info;
        if (A->n_dims != 2 || B->n_dims != 2 || B->ne[1] != A->ne[0] || A->ne[0] == 0 || A->ne[1] == 0 || B->ne[0] == 0)
            return graft_err_set(err, GRAFT_E_FORMAT, a->file, A->name, A->name_len,
                                 "lora_A and lora_B must be 2-D and non-empty, [r, in] and [out, r] (convolution LoRA is not merged in adapter space)");
        if (A->ne[0] > DIM_MAX || A->ne[1] > DIM_MAX || B->ne[0] > DIM_MAX)
            return graft_err_set(err, GRAFT_E_LIMIT, a->file, A->name, A->name_len, "factor dimensions beyond 2³¹");
        if (!graft_dtype_is_float_target(A->dtype) || !graft_dtype_is_float_target(B->dtype) || (s->bias && !graft_dtype_is_float_target(s->bias->info->dtype)))
            return graft_err_set(err, GRAFT_E_FORMAT, a->file, A->name, A->name_len, "LoRA factors and biases must be float16, bfloat16 or float32");
        if (s->bias && s->bias->info->n_elem != B->ne[0])
            return graft_err_set(err, GRAFT_E_FORMAT, a->file, s->bias->info->name, s->bias->info->name_len, "lora_B.bias length differs from lora_B's rows");
        uint64_t r = A->ne[0];
        int rc = graft__lora_scale(&a->cfg, x->name, r, &s->s, a->file, A->name, A->name_len, err);
        if (rc) return rc;
        if (i == 0) {
            x->p = B->ne[0], x->q = A->ne[1], x->dt = A->dtype, x->r0 = r;
        } else if (B->ne[0] != x->p || A->ne[1] != x->q) {
            return cfail(j, s->ad, x->name, err, "its factors make a %llu × %llu update where an earlier adapter's make %llu × %llu: adapters of different models?",
                         (unsigned long long)B->ne[0], (unsigned long long)A->ne[1], (unsigned long long)x->p, (unsigned long long)x->q);
        } else if (r != x->r0) {
            x->r0 = 0;
        }
        if (s->bias && !x->bias) x->bias = true, x->bias_dt = s->bias->info->dtype; // the first adapter's dtype
        x->rtot += r;
    }
    if (!x->whole && x->rtot > DIM_MAX) return cfail(j, x->src[0].ad, x->name, err, "the ranks sum past 2³¹");
    if (!x->whole && j->k.factor_space && !x->r0) {
        size_t a1 = 1;
        while (x->src[a1].a->info->ne[0] == x->src[0].a->info->ne[0]) a1++;
        return cfail(j, x->src[a1].ad, x->name, err, "rank %llu here but %llu in %s: %s needs equal ranks (cat or svd merge different ranks)",
                     (unsigned long long)x->src[a1].a->info->ne[0], (unsigned long long)x->src[0].a->info->ne[0], j->ads[x->src[0].ad].dir,
                     graft_lora_combination_name(j->s->combination));
    }
    // the dense types hold p × q floats three times and a Gram matrix of min(p, q)²
    uint64_t pq;
    if (!x->whole && j->k.dense && (__builtin_mul_overflow(x->p, x->q, &pq) || pq > ((uint64_t)1 << 36) || (x->p < x->q ? x->p : x->q) > ((uint64_t)1 << 20)))
        return cfail(j, x->src[0].ad, x->name, err, "a %llu × %llu update is too large for %s (it needs the dense matrix)", (unsigned long long)x->p,
                     (unsigned long long)x->q, graft_lora_combination_name(j->s->combination));
    // the base, when given, must have the module with this shape
    if (j->base) {
        char name[1200];
        snprintf(name, sizeof name, x->whole ? "%s" : "%s.weight", x->name);
        const struct graft_model_tensor *bt = graft__lora_find_or_tied(j->base, name);
        size_t a0 = x->src[0].ad;
        if (!bt) return cfail(j, a0, x->name, err, "the base model has no tensor '%s': is this adapter for another model?", name);
        const struct graft_tensor_info *t = bt->info;
        bool fits;
        if (x->whole) fits = t->n_elem == x->p * x->q && (t->n_dims ? t->ne[0] : 1) == x->p && graft_dtype_is_float_target(t->dtype);
        else if (x->embedding || j->ads[a0].cfg.fan_in_fan_out) fits = t->n_dims == 2 && t->ne[0] == x->q && t->ne[1] == x->p;
        else fits = t->n_dims >= 2 && t->ne[0] == x->p && t->n_elem == x->p * x->q;
        if (!fits) return cfail(j, a0, x->name, err, "does not fit the base's '%s' (%d-D, %llu rows, %s): is this adapter for another model?", name, t->n_dims,
                                (unsigned long long)(t->n_dims ? t->ne[0] : 1), graft_dtype_traits(t->dtype) ? graft_dtype_traits(t->dtype)->name : "?");
        x->bt = bt;
    }
    if (x->whole && !x->same && !x->bt)
        return cfail(j, x->src[0].ad, x->name, err, "several adapters replace this tensor whole (modules_to_save) with different values: give base_model so that "
                                                   "graft can combine them as base + Σ wᵢ·(Wᵢ − base)");
    return GRAFT_OK;
}

static int mod_cmp(const void *k, const void *m) { return strcmp(k, ((const struct mod *)m)->name); }

static int plan(struct job *j, struct graft_err *err) {
    size_t total = 0;
    for (size_t i = 0; i < j->n_ad; i++) total += graft_model_n_tensors(j->ads[i].m);
    struct ent *e = graft__calloc(total ? total : 1, sizeof *e);
    if (!e) return nomem(err);
    size_t ne = 0;
    for (size_t i = 0; i < j->n_ad; i++) {
        const struct graft_model *m = j->ads[i].m;
        for (size_t k = 0; k < graft_model_n_tensors(m); k++) {
            const struct graft_model_tensor *t = graft_model_tensor(m, k);
            const char *s = t->info->name;
            size_t n = t->info->name_len;
            if (n > strlen(PFX) && !memcmp(s, PFX, strlen(PFX))) s += strlen(PFX), n -= strlen(PFX);
            static const char *const sufs[] = {".lora_A.weight", ".lora_B.weight", ".lora_B.bias", ".lora_embedding_A", ".lora_embedding_B"};
            int kind = K_WHOLE;
            for (int q = 0; q < 5 && kind == K_WHOLE; q++)
                if (graft__ends_with(s, n, sufs[q]) && n > strlen(sufs[q])) kind = q, n -= strlen(sufs[q]);
            if (n > 1000) { graft__free(e); return graft_err_set(err, GRAFT_E_LIMIT, j->ads[i].file, t->info->name, t->info->name_len, "tensor name too long"); }
            if (kind == K_WHOLE && memmem(s, n, ".base_layer.", 12)) {
                graft__free(e);
                return graft_err_set(err, GRAFT_E_FORMAT, j->ads[i].file, t->info->name, t->info->name_len,
                                     "PEFT's base_layer tensors (bias=\"all\" or \"lora_only\", saved embedding layers) are not combined in adapter "
                                     "space: apply the adapters (graft apply-lora) and merge the models");
            }
            e[ne++] = (struct ent){s, n, kind, i, t};
        }
    }
    qsort(e, ne, sizeof *e, ent_cmp);
    size_t groups = 0;
    for (size_t i = 0; i < ne; i++) groups += i == 0 || e[i].len != e[i - 1].len || memcmp(e[i].name, e[i - 1].name, e[i].len);
    j->mods = graft__calloc(groups ? groups : 1, sizeof *j->mods);
    j->srcs = graft__calloc(ne + 1, sizeof *j->srcs); // at most one source per entry
    int rc = j->mods && j->srcs ? GRAFT_OK : nomem(err);
    for (size_t i = 0, used = 0; !rc && i < ne;) {
        size_t k = i + 1;
        while (k < ne && e[k].len == e[i].len && !memcmp(e[k].name, e[i].name, e[i].len)) k++;
        struct mod *x = &j->mods[j->n++];
        *x = (struct mod){.src = j->srcs + used, .id_a = -1, .id_b = -1, .id_bias = -1, .id_w = -1, .rel_error = -1};
        if (!(x->name = graft__strndup(e[i].name, e[i].len))) rc = nomem(err);
        if (!rc) rc = plan_module(j, x, e + i, k - i, err);
        used += x->n_src;
        i = k;
    }
    // a whole "<m>.weight" and LoRA factors on module <m> would both change the same tensor (modules
    // are sorted by name: a binary search each)
    for (size_t i = 0; !rc && i < j->n; i++) {
        const struct mod *x = &j->mods[i];
        size_t l = strlen(x->name);
        if (!x->whole || !graft__ends_with(x->name, l, ".weight")) continue;
        char key[1010];
        snprintf(key, sizeof key, "%.*s", (int)(l - 7), x->name);
        const struct mod *hit = bsearch(key, j->mods, j->n, sizeof *j->mods, mod_cmp);
        if (hit && !hit->whole)
            rc = graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "module '%s': one adapter replaces it whole (modules_to_save) and another "
                                                                "gives it LoRA factors: they cannot be merged in adapter space", key);
    }
    graft__free(e);
    return rc;
}

// Output ranks: the common rank (factor types), Σ rᵢ (cat), or the requested rank (default: the
// largest input rank, PEFT's) capped by what the update can hold.
static void choose_ranks(struct job *j) {
    uint64_t maxr = 0;
    for (size_t i = 0; i < j->n; i++)
        for (size_t a = 0; !j->mods[i].whole && a < j->mods[i].n_src; a++)
            if (j->mods[i].src[a].a->info->ne[0] > maxr) maxr = j->mods[i].src[a].a->info->ne[0];
    for (size_t i = 0; i < j->n; i++) {
        struct mod *x = &j->mods[i];
        if (x->whole) continue;
        uint64_t r;
        if (j->s->combination == GRAFT_LORA_COMB_CAT) r = x->rtot;
        else if (j->k.factor_space) r = x->r0;
        else {
            r = j->s->rank > 0 ? (uint64_t)j->s->rank : maxr;
            uint64_t cap = x->p < x->q ? x->p : x->q;
            if (!j->k.dense && x->rtot < cap) cap = x->rtot; // the product's rank is at most Σ rᵢ
            if (r > cap) r = cap;
        }
        x->rank = (int)r;
    }
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

// Sorted unique last name components of the LoRA (whole = false) or whole modules (not the `X.bias`
// tensors of LoRA modules: PEFT's bias="all" / "lora_only" saves those, they are no modules_to_save);
// NULL for lack of memory.
static json_t *last_components(const struct job *j, bool whole) {
    json_t *arr = json_array();
    char **last = graft__calloc(j->n ? j->n : 1, sizeof *last);
    size_t nl = 0;
    bool ok = arr && last;
    for (size_t i = 0; ok && i < j->n; i++) {
        const struct mod *x = &j->mods[i];
        if (x->whole != whole) continue;
        char tmp[1200];
        snprintf(tmp, sizeof tmp, "%s", x->name);
        if (whole && graft__ends_with(tmp, strlen(tmp), ".bias")) continue;
        if (whole && graft__ends_with(tmp, strlen(tmp), ".weight")) tmp[strlen(tmp) - 7] = 0;
        const char *l = strrchr(tmp, '.');
        ok = (last[nl++] = graft__strdup(l ? l + 1 : tmp)) != NULL;
    }
    if (ok) qsort(last, nl, sizeof *last, str_cmp);
    for (size_t k = 0; ok && k < nl; k++)
        if (!k || strcmp(last[k - 1], last[k])) ok = json_array_append_new(arr, json_string(last[k])) == 0;
    for (size_t k = 0; last && k < nl; k++) graft__free(last[k]);
    graft__free(last);
    if (!ok) json_decref(arr), arr = NULL;
    return arr;
}

// The first adapter's adapter_config.json with what describes the merged adapter: r = the largest rank,
// lora_alpha = r and patterns for the others (every scale 1), target_modules / modules_to_save of the
// result, use_rslora off (the scales are folded into the factors), lora_bias when a bias was merged;
// selections that would hide modules of the other adapters (layers_* when they differ,
// exclude_modules, target_parameters) dropped.
static int write_config(struct job *j, struct graft_err *err) {
    json_t *root = json_deep_copy(j->ads[0].cfg.root), *rp = json_object(), *ap = json_object(), *tm = last_components(j, false),
           *ms = last_components(j, true);
    struct graft__buf b;
    graft__buf_init(&b, SIZE_MAX / 2);
    int r = 0, rc = GRAFT_OK, bad = 0;
    bool bias = false;
    if (!root || !rp || !ap || !tm || !ms) { rc = nomem(err); goto out; }
    for (size_t i = 0; i < j->n; i++)
        if (!j->mods[i].whole && j->mods[i].rank > r) r = j->mods[i].rank;
    for (size_t i = 0; i < j->n; i++) {
        const struct mod *x = &j->mods[i];
        if (x->whole) continue;
        bias |= x->bias;
        if (x->rank != r) bad |= json_object_set_new(rp, x->name, json_integer(x->rank)) | json_object_set_new(ap, x->name, json_integer(x->rank));
    }
    static const char *const sel[] = {"layers_to_transform", "layers_pattern"};
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 1; i < j->n_ad; i++)
            if (!json_equal(json_object_get(root, sel[k]), json_object_get(j->ads[i].cfg.root, sel[k])) &&
                (json_object_get(root, sel[k]) || json_object_get(j->ads[i].cfg.root, sel[k])))
                bad |= json_object_set_new(root, sel[k], json_null());
    json_object_del(root, "exclude_modules"), json_object_del(root, "target_parameters");
    const char *bm = json_string_value(json_object_get(root, "base_model_name_or_path"));
    if ((!bm || !*bm) && j->s->base_ref) bad |= json_object_set_new(root, "base_model_name_or_path", json_string(j->s->base_ref));
    bm = json_string_value(json_object_get(root, "base_model_name_or_path"));
    bad |= json_object_set_new(root, "r", json_integer(r ? r : 1));
    bad |= json_object_set_new(root, "lora_alpha", json_integer(r ? r : 1));
    bad |= json_object_set_new(root, "rank_pattern", rp);
    bad |= json_object_set_new(root, "alpha_pattern", ap);
    bad |= json_object_set_new(root, "target_modules", tm);
    if (json_array_size(ms)) bad |= json_object_set_new(root, "modules_to_save", ms);
    else bad |= json_object_set_new(root, "modules_to_save", json_null()), json_decref(ms);
    bad |= json_object_set_new(root, "use_rslora", json_false());
    if (bias) bad |= json_object_set_new(root, "lora_bias", json_true());
    rp = ap = tm = ms = NULL;
    if (bad) { rc = nomem(err); goto out; }
    graft__json_dump_pretty(&b, root);
    if (b.failed) { rc = nomem(err); goto out; }
    rc = graft_writer_add_file(j->w, "adapter_config.json", b.data, b.len, err);
    graft__buf_free(&b);
    if (rc) goto out;
    graft__buf_init(&b, 1u << 20);
    graft__buf_printf(&b, "---\nbase_model: %s\nlibrary_name: peft\ntags:\n- graft\n- lora\n---\n# LoRA adapter\n\nMerged with `graft merge-lora` "
                          "(combination %s) from %zu adapters:\n\n", bm ? bm : "", graft_lora_combination_name(j->s->combination), j->n_ad);
    for (size_t i = 0; i < j->n_ad; i++) {
        const char *slash = strrchr(j->ads[i].dir, '/');
        graft__buf_printf(&b, "- `%s`, weight %g\n", slash && slash[1] ? slash + 1 : j->ads[i].dir, j->ads[i].w);
    }
    rc = b.failed ? nomem(err) : graft_writer_add_file(j->w, "README.md", b.data, b.len, err);
out:
    graft__buf_free(&b);
    json_decref(root), json_decref(rp), json_decref(ap), json_decref(tm), json_decref(ms);
    return rc;
}

static int declare(struct graft_writer *w, const char *module, const char *suffix, enum graft_dtype dt, int nd, const uint64_t *ne, long *id,
                   struct graft_err *err) {
    char name[1200];
    int len = snprintf(name, sizeof name, PFX "%s%s", module, suffix);
    if (len < 0 || (size_t)len >= sizeof name) return graft_err_set(err, GRAFT_E_LIMIT, NULL, module, strlen(module), "module name too long");
    *id = graft_writer_add_tensor(w, name, (size_t)len, dt, nd, ne, err);
    return *id < 0 ? (int)*id : GRAFT_OK;
}

int graft_lora_merge(const struct graft_lora_merge_spec *s, const char *target, const struct graft_lora_merge_params *p, struct graft_lora_report *rep,
                     struct graft_err *err) {
    if (!s->n_inputs) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "no adapter to merge");
    if ((unsigned)s->combination >= GRAFT_LORA_COMB_COUNT) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "unknown combination");
    if (!(s->svd_clamp >= 0 && s->svd_clamp <= 1)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "svd_clamp must be a quantile in (0, 1] (0: off)");
    if (s->rank < 0) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "rank must be ≥ 1 (0: the largest input rank)");
    graft__blas_single_thread();
    struct job j = {.s = s, .p = p, .k = kind_of(s->combination), .n_ad = s->n_inputs};
    int rc = GRAFT_OK;
    if (!(j.ads = graft__calloc(j.n_ad, sizeof *j.ads))) return nomem(err);
    for (size_t i = 0; !rc && i < j.n_ad; i++) {
        struct ad *a = &j.ads[i];
        a->w = s->inputs[i].weight, a->d = s->inputs[i].density >= 0 ? s->inputs[i].density : s->density;
        if (!isfinite(a->w)) rc = graft_err_set(err, GRAFT_E_CONFIG, s->inputs[i].adapter, NULL, 0, "weight must be a finite number");
        else if (j.k.prune != PR_NONE && !(a->d > 0 && a->d <= 1))
            rc = graft_err_set(err, GRAFT_E_CONFIG, s->inputs[i].adapter, NULL, 0, "%s needs a density in (0, 1] (the fraction of entries kept): "
                                                                                 "give density at the top of the config or for this adapter",
                               graft_lora_combination_name(s->combination));
        if (!rc) rc = graft__lora_locate(s->inputs[i].adapter, &a->dir, &a->file, err);
        if (!rc) rc = graft__lora_read_config(a->dir, &a->cfg, err);
        if (!rc && json_is_true(json_object_get(a->cfg.root, "use_dora")))
            rc = graft_err_set(err, GRAFT_E_CONFIG, a->dir, NULL, 0, "a DoRA adapter (use_dora): its magnitude vectors cannot be merged in adapter space");
        if (!rc) rc = graft_model_open(a->file, &a->m, err);
        if (!rc && i && a->cfg.fan_in_fan_out != j.ads[0].cfg.fan_in_fan_out)
            rc = graft_err_set(err, GRAFT_E_CONFIG, a->dir, NULL, 0, "fan_in_fan_out differs from the first adapter's: adapters of different models?");
    }
    if (!rc && s->base) rc = graft_model_open(s->base, &j.base, err);
    if (!rc) rc = plan(&j, err);
    if (!rc && j.n == 0) rc = graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "the adapters hold no module");
    if (!rc) choose_ranks(&j);
    if (!rc && rep && !(rep->mods = graft__calloc(j.n, sizeof *rep->mods))) rc = nomem(err);
    if (!rc && !p->dry_run) {
        size_t np = 0;
        const char **protect = graft__calloc(2 * j.n_ad + (size_t)(j.base ? graft_model_n_shards(j.base) + 1 : 0) + 1, sizeof *protect);
        if (!protect) rc = nomem(err);
        for (size_t i = 0; !rc && i < j.n_ad; i++) protect[np++] = j.ads[i].file, protect[np++] = j.ads[i].dir;
        for (int i = 0; !rc && j.base && i < graft_model_n_shards(j.base); i++) protect[np++] = graft_st_path(graft_model_shard(j.base, i));
        if (!rc && j.base && graft_model_is_dir(j.base)) protect[np++] = graft_model_dir(j.base);
        struct graft_writer_params wp = graft_writer_default_params();
        wp.max_shard_bytes = UINT64_MAX; // one unsplit adapter file, as PEFT writes it
        wp.flags = p->writer_flags & ~(unsigned)GRAFT_WRITER_SINGLE_FILE, wp.protect = protect, wp.n_protect = np, wp.stem = "adapter_model";
        if (!rc) rc = graft_writer_open(target, &wp, &j.w, err);
        graft__free(protect);
        for (size_t i = 0; !rc && i < j.n; i++) {
            struct mod *x = &j.mods[i];
            if (x->whole) {
                const struct graft_tensor_info *t = x->src[0].w->info;
                rc = declare(j.w, x->name, "", t->dtype, t->n_dims, t->ne, &x->id_w, err);
                continue;
            }
            uint64_t a[2] = {(uint64_t)x->rank, x->q}, b[2] = {x->p, (uint64_t)x->rank};
            rc = declare(j.w, x->name, x->embedding ? ".lora_embedding_A" : ".lora_A.weight", x->dt, 2, a, &x->id_a, err);
            if (!rc) rc = declare(j.w, x->name, x->embedding ? ".lora_embedding_B" : ".lora_B.weight", x->dt, 2, b, &x->id_b, err);
            if (!rc && x->bias) rc = declare(j.w, x->name, ".lora_B.bias", x->bias_dt, 1, &x->p, &x->id_bias, err);
        }
        if (!rc) rc = graft_writer_layout(j.w, err);
        if (!rc)
            rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, j.n, merge_module, &j, p->progress && p->progress->enabled ? graft_progress_draw : NULL,
                                p->progress, err);
        if (!rc) rc = write_config(&j, err);
        if (!rc) rc = graft_writer_commit(j.w, err);
    }
    if (!rc && rep) {
        for (size_t i = 0; i < j.n; i++) {
            struct mod *x = &j.mods[i];
            rep->mods[i] = (struct graft_lora_module){.name = x->name, .kind = x->whole ? GRAFT_LORA_WHOLE : x->embedding ? GRAFT_LORA_EMBEDDING : GRAFT_LORA_LOW_RANK,
                                                       .rows = x->embedding ? x->q : x->p, .cols = x->embedding ? x->p : x->q,
                                                       .rank = x->whole ? 0 : x->rank, .rel_error = x->whole ? 0 : x->rel_error};
            x->name = NULL;
        }
        rep->n = j.n;
    }
    if (rc && rep) graft__free(rep->mods), rep->mods = NULL;
    graft_writer_free(j.w);
    graft__free(j.srcs);
    for (size_t i = 0; i < j.n; i++) graft__free(j.mods[i].name);
    graft__free(j.mods);
    for (size_t i = 0; i < j.n_ad; i++) {
        graft_model_close(j.ads[i].m);
        graft__lora_cfg_free(&j.ads[i].cfg);
        graft__free(j.ads[i].dir), graft__free(j.ads[i].file);
    }
    graft__free(j.ads);
    graft_model_close(j.base);
    return rc;
}

int graft_lora_merge_file(const char *config_path, const char *target, const struct graft_lora_merge_params *p, struct graft_lora_report *rep,
                          struct graft_err *err) {
    struct graft_lora_merge_config *c;
    int rc = graft_lora_merge_config_load(config_path, &c, err);
    if (rc) return rc;
    rc = graft_lora_merge(&c->spec, target, p, rep, err);
    graft_lora_merge_config_free(c);
    return rc;
}

// ---- `graft merge --lora-space`: a MergeKit linear / task_arithmetic config over BASE+ADAPTER models --

// A number-valued parameter for source `s` (its own, the module's, then the config's), or `dflt`.
static int num_param(const struct graft_merge_config *c, const struct graft_source *s, const char *name, double dflt, double *out,
                     struct graft_err *err) {
    const struct graft_pv *v = s ? graft_params_get(&s->params, name) : NULL;
    if (!v) v = graft_params_get(&c->modules[0].params, name);
    if (!v) v = graft_params_get(&c->params, name);
    if (!v) { *out = dflt; return GRAFT_OK; }
    if (v->kind != GRAFT_PV_NUMBER && v->kind != GRAFT_PV_BOOL)
        return graft_err_set(err, GRAFT_E_CONFIG, c->path, NULL, 0, "line %d: --lora-space needs '%s' to be one number (not a gradient or a filtered list): "
                                                                  "one update per adapter", v->line, name);
    *out = v->num;
    return GRAFT_OK;
}

// `ref` relative to the config's folder, made real (NULL with an error when it does not exist).
static char *real_ref(const char *cfg, const char *ref, size_t len, struct graft_err *err) {
    const char *slash = strrchr(cfg, '/');
    char *p = ref[0] == '/' || !slash ? graft__strndup(ref, len) : graft__asprintf("%.*s/%.*s", (int)(slash - cfg), cfg, (int)len, ref);
    char *real = p ? realpath(p, NULL) : NULL;
    if (!p) nomem(err);
    else if (!real) graft_err_set(err, GRAFT_E_CONFIG, cfg, NULL, 0, "model '%.*s' not found (looked in %s)", (int)len, ref, p);
    graft__free(p);
    return real;
}

int graft_lora_merge_merge_config(const char *config_path, const char *target, const struct graft_lora_merge_params *p, struct graft_lora_report *rep,
                                  struct graft_err *err) {
    struct graft_merge_config *c = NULL;
    int rc = graft_config_load(config_path, &c, err);
    if (rc) return rc;
    struct graft_lora_merge_input *in = NULL;
    char **keep = NULL, *base = NULL, *base_ref = NULL;
    size_t n_in = 0, n_keep = 0;
    bool ta = !strcmp(c->merge_method, "task_arithmetic");
    if (!ta && strcmp(c->merge_method, "linear")) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "line %d: --lora-space merges linear and task_arithmetic configs (a weighted sum "
                                                                    "of the adapters' updates); %s needs full weights: drop --lora-space", c->method_line, c->merge_method);
        goto out;
    }
    if (c->n_modules != 1 || c->modules[0].name || !c->modules[0].from_models || c->modules[0].n_slices != 1) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "--lora-space takes a `models:` list (no slices or modules)");
        goto out;
    }
    if (c->tokenizer_source || c->n_tokens) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "--lora-space writes an adapter for the base's vocabulary: drop tokenizer settings");
        goto out;
    }
    const struct graft_slice *sl = &c->modules[0].slices[0];
    double normalize = 0, lambda = 1, sum = 0;
    if ((rc = num_param(c, NULL, "normalize", ta ? 0 : 1, &normalize, err)) || (rc = num_param(c, NULL, "lambda", 1, &lambda, err))) goto out;
    in = graft__calloc(sl->n_src + 1, sizeof *in), keep = graft__calloc(2 * sl->n_src + 2, sizeof *keep);
    if (!in || !keep) { rc = nomem(err); goto out; }
    if (ta) {
        if (!c->base_model || strchr(c->base_model, '+')) {
            rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "task_arithmetic needs base_model: the adapters' base model");
            goto out;
        }
        if (!(base = real_ref(config_path, c->base_model, strlen(c->base_model), err))) { rc = err->code; goto out; }
        base_ref = c->base_model;
    }
    for (size_t i = 0; i < sl->n_src; i++) {
        const struct graft_source *s = &sl->src[i];
        const char *plus = strchr(s->model, '+');
        size_t bl = plus ? (size_t)(plus - s->model) : strlen(s->model);
        char *b = real_ref(config_path, s->model, bl, err);
        if (!b) { rc = err->code; goto out; }
        keep[n_keep++] = b;
        if (!base) base = graft__strdup(b), base_ref = s->model; // linear: the first model's base
        if (!base) { rc = nomem(err); goto out; }
        if (strcmp(b, base)) {
            rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "line %d: '%.*s' is not the base of the other models: --lora-space merges "
                                                                        "adapters of one base (BASE+ADAPTER)", s->line, (int)bl, s->model);
            goto out;
        }
        double w = NAN, d = 1;
        if ((rc = num_param(c, s, "weight", NAN, &w, err)) || (rc = num_param(c, s, "density", 1, &d, err))) goto out;
        if (isnan(w) && !(ta && !plus)) { // as the dense merge: linear and task_arithmetic need each model's weight
            rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "line %d: model '%s' has no weight (%s needs one per model)", s->line, s->model,
                               c->merge_method);
            goto out;
        }
        if (d != 1) {
            rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "line %d: density %g prunes full weights: --lora-space merges whole updates "
                                                                        "(graft merge-lora has ties/dare in adapter space)", s->line, d);
            goto out;
        }
        if (ta && !plus) continue; // the base itself: no task vector
        sum += w;
        if (!plus) continue;       // linear: the base counts in the normalisation, with no update
        in[n_in++] = (struct graft_lora_merge_input){.adapter = plus + 1, .weight = w, .density = -1};
        if (!(keep[n_keep] = real_ref(config_path, plus + 1, strlen(plus + 1), err))) { rc = err->code; goto out; }
        in[n_in - 1].adapter = keep[n_keep++];
    }
    if (!n_in) { rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "no BASE+ADAPTER model: nothing to merge in adapter space"); goto out; }
    // linear: Σ wᵢ·(BASE + ΔWᵢ) / Σ w = BASE + Σ (wᵢ/Σw)·ΔWᵢ; without normalize only Σ w = 1 is BASE + an adapter
    // task_arithmetic: BASE + λ·Σ wᵢ·ΔWᵢ (÷ Σ w with normalize)
    if (normalize != 0 && sum == 0) { rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "the weights sum to 0 and normalize is on"); goto out; }
    if (!ta && normalize == 0 && fabs(sum - 1) > 1e-6) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, config_path, NULL, 0, "linear with normalize: false and weights summing to %g scales the base too: "
                                                                    "not an adapter of it", sum);
        goto out;
    }
    for (size_t i = 0; i < n_in; i++) in[i].weight *= (ta ? lambda : 1.0) / (normalize != 0 ? sum : 1.0);
    struct graft_lora_merge_spec s = graft_lora_merge_default_spec();
    s.combination = GRAFT_LORA_COMB_CAT, s.base = base, s.base_ref = base_ref, s.inputs = in, s.n_inputs = n_in;
    rc = graft_lora_merge(&s, target, p, rep, err);
out:
    for (size_t i = 0; i < n_keep; i++) free(keep[i]);
    free(base);
    graft__free(keep), graft__free(in);
    graft_config_free(c);
    return rc;
}
