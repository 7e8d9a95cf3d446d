// Tokenizer transplant (graft tokensurgeon; include/graft/tokensurgeon.h has the method).
//
// Plan: both vocabularies normalised into keys ("T" + token, "W" + token without its word-start
// marker, "S" + special-token role), the model's sorted for binary search; every donor row is then
// exact (the model's row id), approximated, or unused. Execute: the approximated tokens in chunks of
// 64, one work item each (OMP: one GEMM of the chunk's residuals against all candidate rows per atom;
// the basis is kept orthonormal in double), written into f32 output matrices; then the writer gets the
// model's tensors with embed_tokens (and an untied lm_head) replaced.
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "graft/convert.h"
#include "graft/model.h"
#include "graft/tokenizer.h"
#include "graft/tokensurgeon.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

#define CHUNK 64

struct graft_tokensurgeon_params graft_tokensurgeon_default_params(void) {
    return (struct graft_tokensurgeon_params){.approach = GRAFT_TOK_OMP, .k = 64, .n_threads = 1};
}

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

struct key { char *s; size_t n; int32_t id; };

static int key_cmp(const void *x, const void *y) {
    const struct key *a = x, *b = y;
    size_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->s, b->s, n);
    return c ? c : a->n != b->n ? (a->n < b->n ? -1 : 1) : (a->id > b->id) - (a->id < b->id);
}

// One side: its model, tokenizer, special-token strings by role, word-start marker, keys.
struct side {
    const char *dir;
    struct graft_model *m;
    struct graft_tokenizer *tok;
    char *special[4];          // bos, eos, unk, pad strings (NULL when none)
    const char *ws;            // "Ġ" or "▁"
    struct key *keys;          // one per token: its string (model: sorted, with the role keys)
    size_t n_keys;
    struct key rkeys[4];       // the special tokens' role keys ("bos_token" …)
    size_t n_rkeys;
    const struct graft_model_tensor *embed, *head; // head NULL when tied
    uint64_t rows, dim;
};

static const char *const roles[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};

// The special tokens by role (a string, or {"content": ...}), as transformers reads them: from
// tokenizer_config.json, else special_tokens_map.json.
static int read_specials(struct side *s, struct graft_err *err) {
    static const char *const files[] = {"tokenizer_config.json", "special_tokens_map.json"};
    int rc = GRAFT_OK;
    for (int f = 0; f < 2 && !rc; f++) {
        char *path = graft__asprintf("%s/%s", s->dir, files[f]);
        if (!path) return nomem(err);
        json_t *root = NULL;
        struct graft_err e2;
        graft_err_clear(&e2);
        rc = graft__load_json_file(path, 64u << 20, &root, &e2);
        graft__free(path);
        if (rc == GRAFT_E_NOMEM) return nomem(err);
        if (rc) { rc = GRAFT_OK; continue; } // no (readable) file: no roles from it
        for (int r = 0; r < 4 && !rc; r++) {
            json_t *v = json_object_get(root, roles[r]);
            if (json_is_object(v)) v = json_object_get(v, "content");
            if (!s->special[r] && json_is_string(v) && json_string_length(v) &&
                !(s->special[r] = graft__strndup(json_string_value(v), json_string_length(v))))
                rc = nomem(err);
        }
        json_decref(root);
    }
    return rc;
}

// The normalised key of token `t` (n bytes) of side s, into *k (its string malloc'd); with `role`, the
// key of the special token's role instead (MergeKit's normalize_token: Llama 2's <s> is Llama 3's
// <|begin_of_text|>).
static int make_key(const struct side *s, const char *t, size_t n, int32_t id, int role, struct key *k, struct graft_err *err) {
    char tag = 'T';
    size_t skip = 0, wl = strlen(s->ws);
    if (role >= 0) tag = 'S', t = roles[role], n = strlen(roles[role]);
    else if (n >= wl && !memcmp(t, s->ws, wl)) tag = 'W', skip = wl; // the word-start marker first, as MergeKit's normalize_token
    k->n = n - skip + 1, k->id = id;
    if (!(k->s = graft__malloc(k->n))) return nomem(err);
    k->s[0] = tag;
    memcpy(k->s + 1, t + skip, n - skip);
    return GRAFT_OK;
}

// The model's first (lowest-id) entry with key k, or mo->n_keys.
static size_t find_key(const struct side *mo, const struct key *k) {
    size_t lo = 0, hi = mo->n_keys;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2, n = mo->keys[mid].n < k->n ? mo->keys[mid].n : k->n;
        int c = memcmp(mo->keys[mid].s, k->s, n);
        if (!c) c = mo->keys[mid].n < k->n ? -1 : mo->keys[mid].n > k->n;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < mo->n_keys && mo->keys[lo].n == k->n && !memcmp(mo->keys[lo].s, k->s, k->n) ? lo : mo->n_keys;
}

static int open_side(struct side *s, struct graft_err *err) {
    int rc = graft_model_open(s->dir, &s->m, err);
    if (!rc) rc = graft_tokenizer_load(s->dir, &s->tok, err);
    if (!rc) rc = read_specials(s, err);
    if (rc) return rc;
    s->embed = graft_model_find(s->m, "model.embed_tokens.weight", 25), s->head = graft_model_find(s->m, "lm_head.weight", 14);
    if (!s->embed || s->embed->info->n_dims != 2 || !graft_dtype_is_float_target(s->embed->info->dtype))
        return graft_err_set(err, GRAFT_E_CONFIG, s->dir, "model.embed_tokens.weight", 25, "missing, not 2-D or not a float16/bfloat16/float32 tensor: "
                                                                                         "tokensurgeon needs a Llama-style model.embed_tokens");
    s->rows = s->embed->info->ne[0], s->dim = s->embed->info->ne[1];
    if (s->head && (s->head->info->n_dims != 2 || s->head->info->ne[0] != s->rows || s->head->info->ne[1] != s->dim ||
                    !graft_dtype_is_float_target(s->head->info->dtype)))
        return graft_err_set(err, GRAFT_E_CONFIG, s->dir, "lm_head.weight", 14, "does not have the embedding's shape, or is not a float tensor");
    // word-start marker: whichever of "Ġ" (byte-level) and "▁" (SentencePiece) more tokens begin with
    int32_t n = graft_tokenizer_n_ids(s->tok);
    size_t g = 0, u = 0;
    for (int32_t id = 0; id < n; id++) {
        size_t len;
        const char *t = graft_tokenizer_token(s->tok, id, &len);
        if (t && len >= 2 && !memcmp(t, "\xC4\xA0", 2)) g++;
        if (t && len >= 3 && !memcmp(t, "\xE2\x96\x81", 3)) u++;
    }
    s->ws = u > g ? "\xE2\x96\x81" : "\xC4\xA0";
    if (!(s->keys = graft__calloc((size_t)n + 5, sizeof *s->keys))) return nomem(err); // (+ the model's role keys)
    for (int32_t id = 0; id < n && (uint64_t)id < s->rows; id++) { // ids beyond the embedding have no row
        size_t len;
        const char *t = graft_tokenizer_token(s->tok, id, &len);
        if (!t) continue;
        if ((rc = make_key(s, t, len, id, -1, &s->keys[s->n_keys], err))) return rc;
        s->n_keys++;
        for (int r = 0; r < 4; r++)
            if (s->special[r] && strlen(s->special[r]) == len && !memcmp(s->special[r], t, len)) {
                if ((rc = make_key(s, t, len, id, r, &s->rkeys[s->n_rkeys], err))) return rc;
                s->n_rkeys++;
            }
    }
    return GRAFT_OK;
}

static void close_side(struct side *s) {
    for (size_t i = 0; i < s->n_keys; i++) graft__free(s->keys[i].s);
    for (size_t i = 0; i < s->n_rkeys; i++) graft__free(s->rkeys[i].s);
    graft__free(s->keys);
    for (int r = 0; r < 4; r++) graft__free(s->special[r]);
    graft_tokenizer_free(s->tok);
    graft_model_close(s->m);
}

struct tjob {
    const struct graft_tokensurgeon_params *p;
    struct side *mo, *dn;
    int32_t *src;             // per donor row: the model's row, -1 approximated, -2 unused
    int32_t *targets;            // donor rows to approximate
    size_t n_targets;
    int32_t *sh_d, *sh_m;     // shared tokens: donor row, model row (donor order)
    size_t n_sh;
    int k;
    size_t k_eff;             // omp atoms: at most k, the shared tokens and the donor's width
    // one matrix at a time: donor rows (targets), the shared tokens' donor rows (candidates), model rows, f32
    const float *D, *M;
    float *C;
    uint64_t dd, dm;          // their widths
    float *out;               // donor rows × dm
    double *resid;            // per target: OMP relative residual
};

// OMP for targets[c0 .. c0 + b): greedy atoms by largest |⟨residual, candidate⟩| (lowest index on
// ties), an orthonormal basis of the chosen atoms in double (Gram–Schmidt twice), the residual updated
// atom by atom, least-squares coefficients by back substitution, applied to the model's rows of the
// chosen atoms. An atom that adds nothing to the basis (its remainder ≤ 10⁻¹⁰ of its norm: dependent on
// the ones before, relative so that scaling the donor changes nothing) is used up with coefficient 0.
static int omp_chunk(struct tjob *j, size_t c0, size_t b, struct graft_err *err) {
    const size_t N = j->n_sh, d = (size_t)j->dd, k = (size_t)j->k_eff;
    const float *C = j->C;
    float *R = graft__malloc(b * d * sizeof *R), *corr = graft__malloc(b * N * sizeof *corr);
    double *y = graft__malloc(b * d * sizeof *y),
           *res = graft__malloc(b * d * sizeof *res), *qy = graft__malloc(k * sizeof *qy), *c = graft__malloc(k * sizeof *c);
    size_t *sel = graft__malloc(b * k * sizeof *sel), *nb = graft__calloc(b, sizeof *nb);
    bool *used = graft__calloc(b * N, sizeof *used);
    double **Qt = graft__calloc(b, sizeof *Qt), **Rtt = graft__calloc(b, sizeof *Rtt);
    int rc = R && corr && y && res && qy && c && sel && nb && used && Qt && Rtt ? GRAFT_OK : nomem(err);
    for (size_t t = 0; !rc && t < b; t++)
        if (!(Qt[t] = graft__malloc(k * d * sizeof **Qt)) || !(Rtt[t] = graft__calloc(k * k, sizeof **Rtt))) rc = nomem(err);
    if (rc) goto out;
    for (size_t t = 0; t < b; t++)
        for (size_t e = 0; e < d; e++) y[t * d + e] = res[t * d + e] = j->D[(size_t)j->targets[c0 + t] * d + e], R[t * d + e] = (float)y[t * d + e];
    for (size_t it = 0; it < k; it++) {
        memset(corr, 0, b * N * sizeof *corr);
        graft__sgemm_acc(false, true, b, N, d, 1.0f, R, d, C, d, corr, N);
        for (size_t t = 0; t < b; t++) {
            size_t best = N;
            float bv = -1;
            for (size_t i = 0; i < N; i++)
                if (!used[t * N + i] && fabsf(corr[t * N + i]) > bv) bv = fabsf(corr[t * N + i]), best = i;
            if (best == N) continue; // (inputs are finite and k ≤ N: not reached)
            used[t * N + best] = true;
            double *q = Qt[t] + nb[t] * d, *rt = Rtt[t], an = 0;
            for (size_t e = 0; e < d; e++) q[e] = C[best * d + e], an += q[e] * q[e];
            for (size_t m = 0; m < nb[t]; m++) rt[m * k + nb[t]] = 0;
            for (int pass = 0; pass < 2; pass++)
                for (size_t m = 0; m < nb[t]; m++) {
                    const double *qm = Qt[t] + m * d;
                    double pr = 0;
                    for (size_t e = 0; e < d; e++) pr += qm[e] * q[e];
                    for (size_t e = 0; e < d; e++) q[e] -= pr * qm[e];
                    rt[m * k + nb[t]] += pr;
                }
            double nrm = 0;
            for (size_t e = 0; e < d; e++) nrm += q[e] * q[e];
            nrm = sqrt(nrm);
            if (!(nrm > 1e-10 * sqrt(an))) continue; // dependent on the chosen atoms: no new direction
            for (size_t e = 0; e < d; e++) q[e] /= nrm;
            rt[nb[t] * k + nb[t]] = nrm, sel[t * k + nb[t]] = best;
            double pq = 0; // the residual loses its component along the new direction
            for (size_t e = 0; e < d; e++) pq += q[e] * y[t * d + e];
            for (size_t e = 0; e < d; e++) res[t * d + e] -= pq * q[e], R[t * d + e] = (float)res[t * d + e];
            nb[t]++;
        }
    }
    for (size_t t = 0; t < b; t++) { // coefficients: R·c = Qᵀ·y (back substitution), output = Σ c·model rows
        const double *rt = Rtt[t];
        size_t n = nb[t];
        for (size_t m = 0; m < n; m++) {
            const double *qm = Qt[t] + m * d;
            qy[m] = 0;
            for (size_t e = 0; e < d; e++) qy[m] += qm[e] * y[t * d + e];
        }
        for (size_t m = n; m-- > 0;) {
            double v = qy[m];
            for (size_t l = m + 1; l < n; l++) v -= rt[m * k + l] * c[l];
            c[m] = v / rt[m * k + m];
        }
        float *o = j->out + (size_t)j->targets[c0 + t] * j->dm;
        for (uint64_t e = 0; e < j->dm; e++) {
            double v = 0;
            for (size_t m = 0; m < n; m++) v += c[m] * j->M[(size_t)j->sh_m[sel[t * k + m]] * j->dm + e];
            o[e] = (float)v;
        }
        double rn = 0, yn = 0;
        for (size_t e = 0; e < d; e++) rn += res[t * d + e] * res[t * d + e], yn += y[t * d + e] * y[t * d + e];
        j->resid[c0 + t] = yn > 0 ? sqrt(rn / yn) : 0.0;
    }
out:
    for (size_t t = 0; Qt && Rtt && t < b; t++) graft__free(Qt[t]), graft__free(Rtt[t]);
    graft__free(Qt), graft__free(Rtt);
    graft__free(R), graft__free(corr), graft__free(y), graft__free(res), graft__free(qy), graft__free(c);
    graft__free(sel), graft__free(nb), graft__free(used);
    return rc;
}

// The text of donor token `t` for the subword approach (mergekit's unnormalize_token, in bytes): a
// byte-fallback token "<0xNN>" is that byte; a byte-level vocabulary's characters map back to their
// bytes (GPT-2's alphabet: printable Latin-1 stands for itself, the rest is shifted to U+0100…);
// otherwise "▁" is a space. Special tokens are their own text. Returns the byte count written to out.
static size_t token_text(const struct side *s, const char *t, size_t n, char *out) {
    if (n == 6 && !memcmp(t, "<0x", 3) && t[5] == '>') {
        unsigned v;
        if (sscanf(t + 3, "%2x", &v) == 1) { out[0] = (char)v; return 1; }
    }
    size_t o = 0;
    if (!strcmp(s->ws, "\xC4\xA0")) { // byte-level: decode the alphabet (every character must be in it)
        int16_t u2b[324];
        for (int c = 0; c < 324; c++) u2b[c] = -1;
        for (int b = 0, extra = 0; b < 256; b++) {
            bool self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            u2b[self ? b : 256 + extra++] = (int16_t)b;
        }
        for (size_t i = 0; i < n;) {
            unsigned c = (unsigned char)t[i];
            unsigned cp = c < 0x80 ? c : (c & 0xE0) == 0xC0 && i + 1 < n ? ((c & 0x1F) << 6) | ((unsigned char)t[i + 1] & 0x3F) : 0xFFFF;
            if (cp >= 324 || u2b[cp] < 0) { memcpy(out, t, n); return n; } // not byte-level text (a special token): as it is
            out[o++] = (char)u2b[cp];
            i += c < 0x80 ? 1 : 2;
        }
        return o;
    }
    for (size_t i = 0; i < n;) { // Metaspace
        if (i + 3 <= n && !memcmp(t + i, "\xE2\x96\x81", 3)) out[o++] = ' ', i += 3;
        else out[o++] = t[i++];
    }
    return o;
}

static int approx_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct tjob *j = ctx;
    size_t c0 = item * CHUNK, b = j->n_targets - c0 < CHUNK ? j->n_targets - c0 : CHUNK;
    if (j->p->approach == GRAFT_TOK_OMP) return omp_chunk(j, c0, b, err);
    int rc = GRAFT_OK;
    for (size_t t = 0; t < b && !rc; t++) {
        float *o = j->out + (size_t)j->targets[c0 + t] * j->dm;
        if (j->p->approach != GRAFT_TOK_SUBWORD) continue; // mean and zero rows are filled once by the caller
        // the model's tokenization of the donor token's text; the mean of those rows (none: zero)
        size_t tl = 0, n = 0, len;
        int32_t *ids = NULL;
        const char *tok = graft_tokenizer_token(j->dn->tok, j->targets[c0 + t], &len);
        char *text = graft__malloc(len + 1);
        if (!text) { rc = nomem(err); break; }
        tl = token_text(j->dn, tok, len, text);
        rc = graft_tokenizer_encode(j->mo->tok, text, tl, &ids, &n, err);
        graft__free(text);
        if (rc) { if (rc != GRAFT_E_NOMEM) rc = GRAFT_OK, graft_err_clear(err), n = 0; else break; } // not UTF-8 (a partial character): a zero row
        size_t used = 0;
        memset(o, 0, (size_t)j->dm * sizeof *o);
        for (size_t i = 0; i < n; i++)
            if (ids[i] >= 0 && (uint64_t)ids[i] < j->mo->rows) {
                for (uint64_t e = 0; e < j->dm; e++) o[e] += j->M[(size_t)ids[i] * j->dm + e];
                used++;
            }
        for (uint64_t e = 0; used && e < j->dm; e++) o[e] /= (float)used;
        free(ids);
    }
    return rc;
}

// One new matrix (embedding or lm_head): donor rows × the model's width, f32.
static int build(struct tjob *j, const struct graft_model_tensor *dt, const struct graft_model_tensor *mt, float *out, double *mean_resid,
                 struct graft_err *err) {
    float *D = graft__ops_load_f32(j->dn->m, dt), *M = graft__ops_load_f32(j->mo->m, mt);
    int rc = D && M ? GRAFT_OK : nomem(err);
    j->D = D, j->M = M, j->dd = dt->info->ne[1], j->dm = mt->info->ne[1], j->out = out, j->C = NULL;
    for (int s = 0; !rc && s < 2; s++) { // NaN / ±Inf would poison every fit they meet
        const struct graft_model_tensor *t = s ? mt : dt;
        uint64_t bad = graft_count_nonfinite(GRAFT_DTYPE_F32, s ? M : D, (size_t)t->info->n_elem, NULL);
        if (bad)
            rc = graft_err_set(err, GRAFT_E_NONFINITE, graft_model_path(s ? j->mo->m : j->dn->m), t->info->name, t->info->name_len,
                               "holds %llu NaN or infinite values: no row can be built from it", (unsigned long long)bad);
    }
    if (!rc && j->p->approach == GRAFT_TOK_OMP && j->n_targets) { // the candidates, once for every chunk
        j->k_eff = (size_t)j->k < j->dd ? (size_t)j->k : (size_t)j->dd;
        if (!(j->C = graft__malloc(j->n_sh * (size_t)j->dd * sizeof *j->C + 4))) rc = nomem(err);
        for (size_t i = 0; !rc && i < j->n_sh; i++) memcpy(j->C + i * j->dd, D + (size_t)j->sh_d[i] * j->dd, (size_t)j->dd * sizeof *j->C);
    }
    for (uint64_t r = 0; !rc && r < j->dn->rows; r++) {
        if (j->src[r] >= 0) memcpy(out + r * j->dm, M + (uint64_t)j->src[r] * j->dm, (size_t)j->dm * sizeof *out);
        else memset(out + r * j->dm, 0, (size_t)j->dm * sizeof *out);
    }
    if (!rc && j->p->approach == GRAFT_TOK_MEAN) {
        double *mean = graft__calloc((size_t)j->dm, sizeof *mean);
        if (!mean) rc = nomem(err);
        for (uint64_t r = 0; !rc && r < j->mo->rows; r++)
            for (uint64_t e = 0; e < j->dm; e++) mean[e] += M[r * j->dm + e];
        for (size_t t = 0; !rc && t < j->n_targets; t++)
            for (uint64_t e = 0; e < j->dm; e++) out[(size_t)j->targets[t] * j->dm + e] = (float)(mean[e] / (double)j->mo->rows);
        graft__free(mean);
    }
    if (!rc && (j->p->approach == GRAFT_TOK_OMP || j->p->approach == GRAFT_TOK_SUBWORD))
        rc = graft_pool_run(j->p->n_threads > 0 ? j->p->n_threads : 1, (j->n_targets + CHUNK - 1) / CHUNK, approx_item, j, NULL, NULL, err);
    if (!rc && mean_resid && j->p->approach == GRAFT_TOK_OMP && j->n_targets) {
        double s = 0;
        for (size_t t = 0; t < j->n_targets; t++) s += j->resid[t];
        *mean_resid = s / (double)j->n_targets;
    }
    graft__free(D), graft__free(M), graft__free(j->C);
    j->C = NULL;
    return rc;
}

struct wjob { const struct graft_model *m; struct graft_writer *w; long *ids; long id_embed, id_head; const float *E, *H; const struct graft_model_tensor *embed, *head;
              uint64_t erows, ecols; unsigned flags; };

static int write_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct wjob *j = ctx;
    size_t nt = graft_model_n_tensors(j->m);
    if (item < nt) {
        const struct graft_model_tensor *t = graft_model_tensor(j->m, item);
        if (t == j->embed || t == j->head) return GRAFT_OK;
        return graft__ops_copy_tensor(j->w, j->ids[item], j->m, t, NULL, err);
    }
    bool head = item > nt;
    const struct graft_model_tensor *src = head ? j->head : j->embed;
    uint64_t n = j->erows * j->ecols, nb;
    graft_dtype_nbytes(src->info->dtype, n, &nb);
    void *enc = graft__malloc((size_t)nb + 8);
    if (!enc) return nomem(err);
    int rc = graft__ops_encode("tokensurgeon", src->info->name, src->info->name_len, src->info->dtype, head ? j->H : j->E, enc, (size_t)n, j->m, src,
                               j->flags, err);
    if (!rc) rc = graft_writer_write(j->w, head ? j->id_head : j->id_embed, 0, enc, (size_t)nb, err);
    graft__free(enc);
    return rc;
}

// config.json with the donor's vocabulary size and special-token ids; generation_config.json likewise.
static int side_files(struct graft_writer *w, const struct side *mo, const struct side *dn, struct graft_err *err) {
    json_t *c = json_loads(graft_model_config_json(mo->m) ? graft_model_config_json(mo->m) : "{}", 0, NULL),
           *dc = json_loads(graft_model_config_json(dn->m) ? graft_model_config_json(dn->m) : "{}", 0, NULL);
    static const char *const ids[] = {"bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"};
    int rc = c && dc ? GRAFT_OK : graft_err_set(err, GRAFT_E_FORMAT, mo->dir, NULL, 0, "config.json cannot be parsed");
    if (!rc) {
        json_object_set_new(c, "vocab_size", json_integer((json_int_t)dn->rows));
        for (size_t k = 0; k < 4; k++) {
            json_t *v = json_object_get(dc, ids[k]);
            if (v) json_object_set(c, ids[k], v);
            else json_object_del(c, ids[k]);
        }
        rc = graft__ops_add_json(w, "config.json", c, err);
    }
    static const char *const skip[] = {"generation_config.json", NULL};
    if (!rc) rc = graft__writer_copy_tokenizer_except(w, dn->m, skip, err);
    char *gp = rc ? NULL : graft__asprintf("%s/generation_config.json", mo->dir);
    json_t *g = NULL;
    if (!rc && !gp) rc = nomem(err);
    if (!rc) {
        struct graft_err e2;
        graft_err_clear(&e2);
        int grc = graft__load_json_file(gp, 16u << 20, &g, &e2);
        if (grc == GRAFT_E_NOMEM) rc = nomem(err);
        if (!grc && json_is_object(g)) {
            // the donor's ids: its generation_config.json first (instruct models keep their extra stop ids
            // there), else its config.json; ids of the model's vocabulary that have no donor value go
            json_t *dg = NULL;
            char *dp = graft__asprintf("%s/generation_config.json", dn->dir);
            struct graft_err e3;
            graft_err_clear(&e3);
            if (!dp) rc = nomem(err);
            else if (graft__load_json_file(dp, 16u << 20, &dg, &e3) == GRAFT_E_NOMEM) rc = nomem(err);
            graft__free(dp);
            static const char *const gids[] = {"bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "forced_bos_token_id",
                                               "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens"};
            for (size_t k = 0; !rc && k < sizeof gids / sizeof gids[0]; k++) {
                json_t *v = json_is_object(dg) ? json_object_get(dg, gids[k]) : NULL;
                if (!v) v = json_object_get(dc, gids[k]);
                if (v) json_object_set(g, gids[k], v);
                else json_object_del(g, gids[k]);
            }
            json_decref(dg);
            if (!rc) rc = graft__ops_add_json(w, "generation_config.json", g, err);
        }
    }
    graft__free(gp);
    json_decref(g), json_decref(c), json_decref(dc);
    return rc;
}

int graft_tokensurgeon(const char *model_dir, const char *donor_dir, const char *target, const struct graft_tokensurgeon_params *p,
                       struct graft_tokensurgeon_report *rep, struct graft_err *err) {
    if (p->approach == GRAFT_TOK_OMP && (p->k < 1 || p->k > 1024)) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--k must be in 1…1024");
    graft__blas_single_thread();
    struct side mo = {.dir = model_dir}, dn = {.dir = donor_dir};
    struct tjob j = {.p = p, .mo = &mo, .dn = &dn};
    struct graft_writer *w = NULL;
    float *E = NULL, *Hd = NULL;
    long *ids = NULL;
    struct graft_tokensurgeon_report r = {0};
    int rc = open_side(&mo, err);
    if (!rc) rc = open_side(&dn, err);
    if (!rc) {
        // the model's role keys join its token keys: a donor token is found by its string first, then by its role
        for (size_t i = 0; i < mo.n_rkeys; i++) mo.keys[mo.n_keys++] = mo.rkeys[i], mo.rkeys[i].s = NULL;
        mo.n_rkeys = 0;
        qsort(mo.keys, mo.n_keys, sizeof *mo.keys, key_cmp);
        r.vocab = dn.rows;
        j.src = graft__malloc((size_t)dn.rows * sizeof *j.src), j.targets = graft__malloc((size_t)dn.rows * sizeof *j.targets);
        j.sh_d = graft__malloc((size_t)dn.rows * sizeof *j.sh_d), j.sh_m = graft__malloc((size_t)dn.rows * sizeof *j.sh_m);
        j.resid = graft__calloc((size_t)dn.rows + 1, sizeof *j.resid);
        if (!j.src || !j.targets || !j.sh_d || !j.sh_m || !j.resid) rc = nomem(err);
    }
    for (uint64_t i = 0; !rc && i < dn.rows; i++) j.src[i] = -2;
    for (size_t i = 0; !rc && i < dn.n_keys; i++) { // donor keys are in id order: the shared list is too
        const struct key *dk = &dn.keys[i];
        size_t lo = find_key(&mo, dk);
        bool hit = lo < mo.n_keys;
        for (size_t q = 0; !hit && q < dn.n_rkeys; q++) // no token of that string: a special token of the same role
            if (dn.rkeys[q].id == dk->id) hit = (lo = find_key(&mo, &dn.rkeys[q])) < mo.n_keys;
        if (hit) {
            j.src[dk->id] = mo.keys[lo].id, r.exact++;
            j.sh_d[j.n_sh] = dk->id, j.sh_m[j.n_sh++] = mo.keys[lo].id;
        } else {
            j.src[dk->id] = -1, j.targets[j.n_targets++] = dk->id, r.approximated++;
        }
    }
    r.unused = r.vocab - r.exact - r.approximated, r.shared = j.n_sh;
    j.k = p->k < (int)j.n_sh ? p->k : (int)j.n_sh;
    if (!rc && p->approach == GRAFT_TOK_OMP && j.n_targets && !j.n_sh)
        rc = graft_err_set(err, GRAFT_E_CONFIG, donor_dir, NULL, 0, "the two vocabularies share no token: omp has nothing to build from "
                                                                 "(--approach mean, zero or subword work without shared tokens)");
    uint64_t cells;
    if (!rc && (__builtin_mul_overflow(dn.rows, mo.dim, &cells) || cells > ((uint64_t)1 << 40)))
        rc = graft_err_set(err, GRAFT_E_LIMIT, donor_dir, NULL, 0, "a %llu × %llu embedding is too large", (unsigned long long)dn.rows,
                           (unsigned long long)mo.dim);
    if (!rc && !(E = graft__malloc((size_t)(dn.rows * mo.dim) * sizeof *E + 4))) rc = nomem(err);
    if (!rc) rc = build(&j, dn.embed, mo.embed, E, &r.omp_residual, err);
    if (!rc && mo.head) { // the model's untied lm_head: from the donor's lm_head (or its tied embedding)
        if (!(Hd = graft__malloc((size_t)(dn.rows * mo.dim) * sizeof *Hd + 4))) rc = nomem(err);
        if (!rc) rc = build(&j, dn.head ? dn.head : dn.embed, mo.head, Hd, NULL, err);
    }
    if (!rc && !p->dry_run) {
        size_t nt = graft_model_n_tensors(mo.m);
        rc = graft__ops_writer_open2(mo.m, dn.m, target, p->max_shard_bytes, p->writer_flags, &w, err); // neither input may be overwritten
        struct wjob wj = {.m = mo.m, .w = w, .E = E, .H = Hd, .embed = mo.embed, .head = mo.head, .erows = dn.rows, .ecols = mo.dim, .flags = p->writer_flags};
        if (!rc && !(ids = graft__calloc(nt + 1, sizeof *ids))) rc = nomem(err);
        wj.ids = ids;
        for (size_t i = 0; !rc && i < nt; i++) {
            const struct graft_model_tensor *t = graft_model_tensor(mo.m, i);
            const struct graft_tensor_info *ti = t->info;
            uint64_t ne[2] = {dn.rows, mo.dim};
            if (t == mo.embed) wj.id_embed = ids[i] = graft_writer_add_tensor(w, ti->name, ti->name_len, ti->dtype, 2, ne, err);
            else if (t == mo.head) wj.id_head = ids[i] = graft_writer_add_tensor(w, ti->name, ti->name_len, ti->dtype, 2, ne, err);
            else ids[i] = graft_writer_add_tensor(w, ti->name, ti->name_len, ti->dtype, ti->n_dims, ti->ne, err);
            if (ids[i] < 0) rc = (int)ids[i];
        }
        if (!rc) rc = graft_writer_layout(w, err);
        if (!rc) rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, nt + (mo.head ? 2 : 1), write_item, &wj, NULL, NULL, err);
        if (!rc && !graft__ops_single_file(target)) rc = side_files(w, &mo, &dn, err);
        if (!rc) rc = graft_writer_commit(w, err);
    }
    if (!rc && rep) *rep = r;
    graft_writer_free(w);
    graft__free(E), graft__free(Hd), graft__free(ids);
    graft__free(j.src), graft__free(j.targets), graft__free(j.sh_d), graft__free(j.sh_m), graft__free(j.resid);
    close_side(&mo), close_side(&dn);
    return rc;
}
