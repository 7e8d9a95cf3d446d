// Round-to-nearest symmetric group-wise quantization (int8 / int4), binary-coded quantization (BCQ,
// 2–4 bits) and dequantization, streaming:
// work items are blocks of whole rows of one tensor (rows × cols ≈ 1 Mi elements), so a block's
// values, scales and error sums are written at fixed offsets and summed in item order — the bytes
// and the reported errors do not depend on the thread count. See include/graft/quantize.h.
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include "graft/convert.h"
#include "graft/quantize.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

#define BLOCK_ELEMS (1u << 16) // a block's values and integers stay in L2

struct graft_quantize_params graft_quantize_default_params(void) {
    return (struct graft_quantize_params){.bits = 8, .group = 128, .rounds = 15, .n_threads = 1};
}

void graft_quant_report_free(struct graft_quant_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) graft__free(r->names[i]);
    graft__free(r->names), graft__free(r->rel_error), graft__free(r->rtn_error);
    memset(r, 0, sizeof *r);
}

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

// One output item of either direction: rows [r0, r0 + nr) of tensor t.
struct qt {
    const struct graft_model_tensor *t, *scale; // input (dequantize: the integers and their scales)
    bool     quant;                             // converted (else copied)
    uint64_t rows, cols, groups, rpi;           // rows per item
    size_t   first;                             // first item
    long     id, id_scale;
    double  *err2, *norm2, *rtn2;               // per item: Σ(w − ŵ)², Σ w², bcq: RTN's Σ(w − ŵ)² (quantize)
    _Atomic uint64_t nf_in;                     // NaN / ±Inf in the source (dequantize: values under such a scale)
    _Atomic uint64_t nf_out, nf_out32, nf_first; // dequantize: NaN / ±Inf written, … of them in float32, the first's index
};

struct qjob {
    const struct graft_model *m;
    struct qt *ts;
    size_t n, items;
    int bits, group;
    bool bcq, shift;         // binary-coded (quantize and dequantize)
    int rounds;
    enum graft_dtype out_dt; // dequantize
    struct graft_writer *w;
    struct graft_progress *progress;
};

static size_t locate(const struct qjob *j, size_t item) {
    size_t lo = 0, hi = j->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (j->ts[mid].first <= item) lo = mid; else hi = mid;
    }
    return lo;
}

typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

// One row: per group s = max|w| / qmax, q = clamp(rint(w / s)) (round half to even: the default
// mode), packed into out (int8, or int4 two per byte, low nibble first); Σ(w − q·s)² and Σw² added
// into 8 double lanes (element c of the row into lane c mod 8: a fixed order, thread-independent).
// qf: 2 × cols floats of scratch. Every loop is a plain one the compiler vectorizes.
GRAFT_KERNEL static void quant_row(const float *restrict row, uint64_t cols, uint64_t group, float qmax, float *restrict sc, float *restrict qf,
                                   uint8_t *restrict out, int bits, double *lanes_e, double *lanes_n) {
    float *restrict e = qf + cols;
    for (uint64_t c0 = 0, g = 0; c0 < cols; c0 += group, g++) {
        uint64_t c1 = c0 + group < cols ? c0 + group : cols;
        float amax = 0;
        for (uint64_t c = c0; c < c1; c++) {
            float a = fabsf(row[c]);
            amax = a > amax ? a : amax;
        }
        float s = amax / qmax;
        sc[g] = s;
        if (s > 0)
            for (uint64_t c = c0; c < c1; c++) {
                float v = nearbyintf(row[c] / s);
                v = v > qmax ? qmax : v;
                qf[c] = v < -qmax ? -qmax : v;
            }
        else
            for (uint64_t c = c0; c < c1; c++) qf[c] = 0.0f;
        for (uint64_t c = c0; c < c1; c++) {
            float d = row[c] - qf[c] * s;
            e[c] = d * d;
        }
    }
    v8d se, sn;
    memcpy(&se, lanes_e, sizeof se), memcpy(&sn, lanes_n, sizeof sn);
    uint64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        v8f ev, wv;
        memcpy(&ev, e + c, sizeof ev), memcpy(&wv, row + c, sizeof wv);
        se += __builtin_convertvector(ev, v8d);
        sn += __builtin_convertvector(wv * wv, v8d);
    }
    memcpy(lanes_e, &se, sizeof se), memcpy(lanes_n, &sn, sizeof sn);
    for (int l = 0; c < cols; c++, l++) lanes_e[l] += (double)e[c], lanes_n[l] += (double)(row[c] * row[c]);
    if (bits == 8)
        for (uint64_t i = 0; i < cols; i++) out[i] = (uint8_t)(int8_t)(int)qf[i];
    else
        for (uint64_t i = 0; i < cols / 2; i++) out[i] = (uint8_t)(((int)qf[2 * i] & 0xF) | (((int)qf[2 * i + 1] & 0xF) << 4));
}

// ---- binary-coded quantization (ShiftAddLLM's BCQ) ----------------------------------------------------

// ŵ of one element: Σ_k ±α_k summed in float, k ascending — the same sum in quantization, in the
// reported error and in dequantization.
static inline float bcq_value(const float *alpha, int b, unsigned pattern) {
    float v = 0.0f;
    for (int k = 0; k < b; k++) v += (pattern >> k) & 1 ? alpha[k] : -alpha[k];
    return v;
}

// The code of each element: the nearest of the 2^b levels (binary search over the sorted levels'
// midpoints, an element on a midpoint going up, as ShiftAddLLM's find_B). pat[i]: bit k = b_k[i] > 0.
static void bcq_assign(const float *w, size_t n, const float *alpha, int b, uint8_t *pat) {
    unsigned L = 1u << b, order[16];
    float lev[16];
    for (unsigned s = 0; s < L; s++) {
        float v = bcq_value(alpha, b, s);
        unsigned i = s;
        for (; i > 0 && lev[i - 1] > v; i--) lev[i] = lev[i - 1], order[i] = order[i - 1];
        lev[i] = v, order[i] = s;
    }
    for (size_t e = 0; e < n; e++) {
        unsigned lo = 0, hi = L - 1;
        while (lo < hi) {
            unsigned mid = (lo + hi - 1) / 2;
            if (w[e] < (lev[mid] + lev[mid + 1]) / 2) hi = mid;
            else lo = mid + 1;
        }
        pat[e] = (uint8_t)order[lo];
    }
}

// The power of two nearest to a ≥ 0 in the log domain (0 stays 0; at most 2¹²⁷, the largest float one).
static float pow2(float a) {
    if (!(a > 0)) return 0.0f;
    double e = nearbyint(log2((double)a));
    return ldexpf(1.0f, e > 127 ? 127 : e < -149 ? -149 : (int)e);
}

// α ← the least-squares α for the codes (normal equations in double: BᵀB is exact), then |α| sorted
// descending (a negative α_k is the same level set with b_k flipped, which the next assignment finds);
// a singular BᵀB (codes of two bits equal or opposite everywhere) keeps the previous α.
static void bcq_refit(const float *w, size_t n, const uint8_t *pat, int b, float *alpha, bool shift) {
    double M[4][5] = {{0}};
    for (size_t e = 0; e < n; e++)
        for (int k = 0; k < b; k++) {
            double sk = (pat[e] >> k) & 1 ? 1.0 : -1.0;
            M[k][b] += sk * (double)w[e];
            for (int l = 0; l < b; l++) M[k][l] += sk * ((pat[e] >> l) & 1 ? 1.0 : -1.0);
        }
    bool ok = true;
    for (int c = 0; c < b && ok; c++) { // Gaussian elimination, partial pivoting
        int piv = c;
        for (int r = c + 1; r < b; r++)
            if (fabs(M[r][c]) > fabs(M[piv][c])) piv = r;
        if (fabs(M[piv][c]) < 1e-9 * (double)n) { ok = false; break; }
        for (int l = 0; l <= b; l++) { double t = M[c][l]; M[c][l] = M[piv][l], M[piv][l] = t; }
        for (int r = 0; r < b; r++)
            if (r != c) {
                double f = M[r][c] / M[c][c];
                for (int l = c; l <= b; l++) M[r][l] -= f * M[c][l];
            }
    }
    if (ok)
        for (int k = 0; k < b; k++) alpha[k] = (float)fabs(M[k][b] / M[k][k]);
    for (int k = 1; k < b; k++) // descending
        for (int i = k; i > 0 && alpha[i - 1] < alpha[i]; i--) { float t = alpha[i]; alpha[i] = alpha[i - 1], alpha[i - 1] = t; }
    if (shift)
        for (int k = 0; k < b; k++) alpha[k] = pow2(alpha[k]);
}

// One group: greedy init, then up to `rounds` refits and assignments (stopping early at a fixed point:
// unchanged codes give the same α again). alpha[b] out, pat[n] (bit k = b_k > 0). Returns Σ(w − ŵ)².
static double bcq_group(const float *w, size_t n, int b, int rounds, bool shift, float *alpha, uint8_t *pat, uint8_t *prev, float *r) {
    memcpy(r, w, n * sizeof *r);
    memset(pat, 0, n);
    for (int k = 0; k < b; k++) {
        double m = 0;
        for (size_t e = 0; e < n; e++) m += fabs((double)r[e]);
        alpha[k] = (float)(m / (double)n);
        for (size_t e = 0; e < n; e++) {
            bool pos = r[e] >= 0;
            pat[e] |= (uint8_t)(pos << k);
            r[e] -= pos ? alpha[k] : -alpha[k];
        }
    }
    if (shift) // the greedy α rounded too, so that even rounds = 0 stores powers of two
        for (int k = 0; k < b; k++) alpha[k] = pow2(alpha[k]);
    { // the greedy α need not come out descending (a later residual can have a larger mean): sort them,
      // moving each code plane with its α, as the stored format promises
        int ord[4] = {0, 1, 2, 3};
        for (int k = 1; k < b; k++)
            for (int i = k; i > 0 && alpha[ord[i - 1]] < alpha[ord[i]]; i--) { int t = ord[i]; ord[i] = ord[i - 1], ord[i - 1] = t; }
        float sa[4];
        for (int k = 0; k < b; k++) sa[k] = alpha[ord[k]];
        memcpy(alpha, sa, (size_t)b * sizeof *alpha);
        for (size_t e = 0; e < n; e++) {
            uint8_t q = 0;
            for (int k = 0; k < b; k++) q |= (uint8_t)(((pat[e] >> ord[k]) & 1) << k);
            pat[e] = q;
        }
    }
    if (shift) bcq_assign(w, n, alpha, b, pat);
    for (int it = 0; it < rounds && b > 1; it++) {
        memcpy(prev, pat, n);
        bcq_refit(w, n, pat, b, alpha, shift);
        bcq_assign(w, n, alpha, b, pat);
        if (!memcmp(prev, pat, n)) break;
    }
    double e2 = 0;
    for (size_t e = 0; e < n; e++) {
        double d = (double)w[e] - (double)bcq_value(alpha, b, pat[e]);
        e2 += d * d;
    }
    return e2;
}

// The baseline at the same bits: asymmetric min-max round-to-nearest, 2^b levels with a zero point.
static double rtn_group_error(const float *w, size_t n, int b) {
    double mn = w[0], mx = w[0];
    for (size_t e = 1; e < n; e++) mn = w[e] < mn ? w[e] : mn, mx = w[e] > mx ? w[e] : mx;
    double L = (double)((1 << b) - 1), s = (mx - mn) / L; // (in double: max − min can overflow float)
    if (!(s > 0)) return 0.0;
    double z = nearbyint(-mn / s), e2 = 0;
    for (size_t e = 0; e < n; e++) {
        double q = nearbyint((double)w[e] / s) + z;
        q = q < 0 ? 0 : q > L ? L : q;
        double d = (double)w[e] - (q - z) * s;
        e2 += d * d;
    }
    return e2;
}

// Rows [r0, r0 + nr) of a BCQ tensor: codes into NAME's planes, α into NAME_alpha, errors into the item's slots.
static int bcq_item(struct qjob *j, struct qt *x, size_t k, uint64_t r0, uint64_t nr, float *w, struct graft_err *err) {
    const int b = j->bits;
    uint64_t cols = x->cols, G = (uint64_t)j->group, cb = cols / 8, gl = G < cols ? G : cols; // a group holds at most a row
    uint8_t *codes = graft__calloc((size_t)(nr * (uint64_t)b * cb) + 1, 1), *pat = graft__malloc((size_t)gl + 1), *prev = graft__malloc((size_t)gl + 1);
    float *alpha = graft__malloc((size_t)(nr * x->groups * (uint64_t)b) * sizeof *alpha + 4), *r = graft__malloc((size_t)gl * sizeof *r + 4);
    int rc = codes && pat && prev && alpha && r ? GRAFT_OK : nomem(err);
    double e2 = 0, n2 = 0, t2 = 0;
    for (uint64_t row = 0; !rc && row < nr; row++) {
        const float *wr = w + row * cols;
        for (uint64_t g = 0; g < x->groups; g++) {
            uint64_t c0 = g * G, len = cols - c0 < G ? cols - c0 : G;
            float *a = alpha + (row * x->groups + g) * (uint64_t)b;
            bool finite = true;
            for (uint64_t c = c0; c < c0 + len && finite; c++) finite = isfinite(wr[c]);
            if (!finite) { // no code holds NaN / ±Inf: a NaN α (dequantizes to NaN), left out of the errors
                uint64_t bad = 0;
                for (uint64_t c = c0; c < c0 + len; c++) bad += !isfinite(wr[c]);
                atomic_fetch_add(&x->nf_in, bad);
                for (int q = 0; q < b; q++) a[q] = NAN;
                continue;
            }
            e2 += bcq_group(wr + c0, (size_t)len, b, j->rounds, j->shift, a, pat, prev, r);
            t2 += rtn_group_error(wr + c0, (size_t)len, b);
            for (uint64_t c = c0; c < c0 + len; c++) n2 += (double)wr[c] * (double)wr[c];
            for (int q = 0; q < b; q++) {
                uint8_t *plane = codes + (row * (uint64_t)b + (uint64_t)q) * cb;
                for (uint64_t c = c0; c < c0 + len; c++)
                    if ((pat[c - c0] >> q) & 1) plane[c / 8] |= (uint8_t)(1u << (c % 8));
            }
        }
    }
    if (!rc) {
        x->err2[k] = e2, x->norm2[k] = n2, x->rtn2[k] = t2;
        rc = graft_writer_write(j->w, x->id, r0 * (uint64_t)b * cb, codes, (size_t)(nr * (uint64_t)b * cb), err);
        if (!rc) rc = graft_writer_write(j->w, x->id_scale, r0 * x->groups * (uint64_t)b * 4, alpha, (size_t)(nr * x->groups * (uint64_t)b * 4), err);
    }
    graft__free(codes), graft__free(pat), graft__free(prev), graft__free(alpha), graft__free(r);
    return rc;
}

static int quant_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct qjob *j = ctx;
    size_t ti = locate(j, item);
    struct qt *x = &j->ts[ti];
    if (!x->quant) return item == x->first ? graft__ops_copy_tensor(j->w, x->id, j->m, x->t, j->progress, err) : GRAFT_OK;
    size_t k = item - x->first;
    uint64_t r0 = k * x->rpi, nr = x->rows - r0 < x->rpi ? x->rows - r0 : x->rpi, cols = x->cols, n = nr * cols;
    const int qmax = j->bits == 8 ? 127 : 7;
    float *w = graft__malloc((size_t)n * sizeof *w), *sc = graft__malloc((size_t)(nr * x->groups) * sizeof *sc);
    float *qf = graft__malloc((size_t)(2 * cols) * sizeof *qf);
    uint8_t *q = graft__malloc((size_t)(j->bits == 8 ? n : nr * (cols / 2)));
    int rc = GRAFT_OK;
    if (!w || !sc || !q || !qf) { rc = nomem(err); goto out; }
    uint64_t off;
    graft_dtype_nbytes(x->t->info->dtype, r0 * cols, &off);
    graft_row_to_f32(x->t->info->dtype, graft_model_data(j->m, x->t) + off, w, (size_t)n);
    if (j->bcq) {
        rc = bcq_item(j, x, k, r0, nr, w, err);
        if (!rc) graft_progress_add(j->progress, n * (uint64_t)(graft_dtype_traits(x->t->info->dtype)->bits / 8));
        goto out;
    }
    // NaN / ±Inf: no integer holds them, and they would poison their group's scale. Their groups get a
    // NaN scale (they dequantize to NaN: the value semantics kept as far as the format can), the rest of
    // the group is quantized as if they were 0 (and left out of the error).
    uint64_t nbad = graft_count_nonfinite(GRAFT_DTYPE_F32, w, (size_t)n, NULL);
    uint8_t *gbad = nbad ? graft__calloc((size_t)(nr * x->groups), 1) : NULL;
    if (nbad && !gbad) { rc = nomem(err); goto out; }
    if (nbad) {
        atomic_fetch_add(&x->nf_in, nbad);
        for (uint64_t i = 0; i < n; i++)
            if (!isfinite(w[i])) w[i] = 0, gbad[(i / cols) * x->groups + (i % cols) / (uint64_t)j->group] = 1;
    }
    double lanes[2][8] = {{0}};
    for (uint64_t r = 0; r < nr; r++)
        quant_row(w + r * cols, cols, (uint64_t)j->group, (float)qmax, sc + r * x->groups, qf,
                  j->bits == 8 ? q + r * cols : q + r * (cols / 2), j->bits, lanes[0], lanes[1]);
    for (uint64_t g = 0; gbad && g < nr * x->groups; g++)
        if (gbad[g]) sc[g] = NAN;
    graft__free(gbad);
    double e2 = 0, n2 = 0;
    for (int l = 0; l < 8; l++) e2 += lanes[0][l], n2 += lanes[1][l];
    x->err2[k] = e2, x->norm2[k] = n2;
    uint64_t qoff = j->bits == 8 ? r0 * cols : r0 * (cols / 2), qlen = j->bits == 8 ? n : nr * (cols / 2);
    rc = graft_writer_write(j->w, x->id, qoff, q, (size_t)qlen, err);
    if (!rc) rc = graft_writer_write(j->w, x->id_scale, r0 * x->groups * 4, sc, (size_t)(nr * x->groups * 4), err);
    graft_progress_add(j->progress, n * (uint64_t)(graft_dtype_traits(x->t->info->dtype)->bits / 8));
out:
    graft__free(w), graft__free(sc), graft__free(q), graft__free(qf);
    if (rc && !strstr(err->msg, x->t->info->name)) graft__err_prefix(err, NULL, x->t->info->name, x->t->info->name_len);
    return rc;
}

// Items of one tensor (rows per item so that an item holds about BLOCK_ELEMS elements).
static void set_items(struct qt *x, size_t *items) {
    x->rpi = x->cols ? BLOCK_ELEMS / x->cols : 1;
    if (!x->rpi) x->rpi = 1;
    x->first = *items;
    *items += x->quant ? (size_t)((x->rows + x->rpi - 1) / x->rpi) : 1;
}


// config.json with quantization_config set (q != NULL) or removed, torch_dtype set when given, plus
// the tokenizer files.
static int side_files(struct graft_writer *w, const struct graft_model *m, json_t *q, const char *torch_dtype, bool single, struct graft_err *err) {
    if (single) { json_decref(q); return GRAFT_OK; }
    const char *cfg = graft_model_config_json(m);
    int rc = GRAFT_OK;
    if (cfg) {
        json_t *root = json_loads(cfg, 0, NULL);
        if (!root) { json_decref(q); return graft_err_set(err, GRAFT_E_FORMAT, graft_model_dir(m), NULL, 0, "config.json: cannot be parsed"); }
        if (q) json_object_set_new(root, "quantization_config", q);
        else json_object_del(root, "quantization_config");
        if (torch_dtype) json_object_set_new(root, "torch_dtype", json_string(torch_dtype));
        rc = graft__ops_add_json(w, "config.json", root, err);
        json_decref(root);
    } else {
        json_decref(q);
    }
    return rc ? rc : graft_writer_copy_tokenizer(w, m, err);
}

int graft_quantize(const struct graft_model *m, const char *target, const struct graft_quantize_params *p, struct graft_quant_report *rep,
                   struct graft_err *err) {
    if (!p->bcq && p->bits != 8 && p->bits != 4) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "the scheme must be int8 or int4");
    if (p->bcq && (p->bits < 2 || p->bits > 4)) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "bcq takes --bits 2, 3 or 4");
    if (p->bcq && p->rounds < 0) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--rounds must be ≥ 0");
    if (p->group < 1) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "the group size must be at least 1");
    const char *cfg = graft_model_config_json(m);
    if (cfg && strstr(cfg, "\"quantization_config\""))
        return graft_err_set(err, GRAFT_E_USAGE, graft_model_path(m), NULL, 0, "the model is quantized already (config.json has quantization_config)");
    struct qjob j = {.m = m, .bits = p->bits, .group = p->group, .bcq = p->bcq, .shift = p->shift, .rounds = p->rounds, .progress = p->progress};
    j.n = graft_model_n_tensors(m);
    regex_t *rx = graft__calloc(p->n_exclude + 1, sizeof *rx);
    size_t n_rx = 0;
    int rc = (j.ts = graft__calloc(j.n ? j.n : 1, sizeof *j.ts)) && rx ? GRAFT_OK : nomem(err);
    for (; !rc && n_rx < p->n_exclude; n_rx++)
        if (regcomp(&rx[n_rx], p->exclude[n_rx], REG_EXTENDED | REG_NOSUB)) {
            rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--exclude '%s' is not a valid regular expression", p->exclude[n_rx]);
            break;
        }
    const char *first_dt = NULL;
    size_t nq = 0;
    for (size_t i = 0; !rc && i < j.n; i++) {
        struct qt *x = &j.ts[i];
        x->t = graft_model_tensor(m, i), x->id = x->id_scale = -1;
        const struct graft_tensor_info *t = x->t->info;
        const struct graft_dtype_traits *dt = graft_dtype_traits(t->dtype);
        bool excluded = false;
        for (size_t k = 0; k < n_rx && !excluded; k++) excluded = regexec(&rx[k], t->name, 0, NULL, 0) == 0;
        x->quant = t->n_dims == 2 && dt && dt->is_float && dt->to_f32 && t->n_elem > 0 && !excluded && (p->embeddings || !graft__ops_is_embedding_or_head(t->name));
        x->rows = t->n_dims ? t->ne[0] : 1, x->cols = t->n_dims == 2 ? t->ne[1] : t->n_elem;
        if (x->quant && !p->bcq && p->bits == 4 && x->cols % 2)
            rc = graft_err_set(err, GRAFT_E_USAGE, graft_model_path(m), t->name, t->name_len, "int4 packs two values per byte: %llu columns is odd (--exclude it)",
                               (unsigned long long)x->cols);
        if (x->quant && p->bcq && x->cols % 8)
            rc = graft_err_set(err, GRAFT_E_USAGE, graft_model_path(m), t->name, t->name_len,
                               "bcq packs 8 codes per byte: %llu columns is not a multiple of 8 (--exclude it)", (unsigned long long)x->cols);
        x->groups = (x->cols + (uint64_t)p->group - 1) / (uint64_t)p->group;
        set_items(x, &j.items);
        if (x->quant) {
            nq++;
            if (!first_dt) first_dt = graft_dtype_torch_name(t->dtype);
            size_t ni = j.items - x->first;
            x->err2 = graft__calloc(ni, sizeof *x->err2), x->norm2 = graft__calloc(ni, sizeof *x->norm2), x->rtn2 = graft__calloc(ni, sizeof *x->rtn2);
            if (!x->err2 || !x->norm2 || !x->rtn2) rc = nomem(err);
        }
    }
    if (!rc && nq == 0) rc = graft_err_set(err, GRAFT_E_USAGE, graft_model_path(m), NULL, 0, "no 2-D floating tensor to quantize");
    if (!rc && rep) { // allocated now: nothing may fail once the output exists
        memset(rep, 0, sizeof *rep);
        rep->names = graft__calloc(nq + 1, sizeof *rep->names), rep->rel_error = graft__calloc(nq + 1, sizeof *rep->rel_error);
        if (p->bcq) rep->rtn_error = graft__calloc(nq + 1, sizeof *rep->rtn_error);
        if (!rep->names || !rep->rel_error || (p->bcq && !rep->rtn_error)) rc = nomem(err);
        for (size_t i = 0; !rc && i < j.n; i++)
            if (j.ts[i].quant && !(rep->names[rep->n++] = graft__strndup(j.ts[i].t->info->name, j.ts[i].t->info->name_len))) rc = nomem(err);
    }
    struct graft_writer *w = NULL;
    if (!rc && !p->dry_run) rc = graft__ops_writer_open(m, target, p->max_shard_bytes, p->writer_flags, &w, err);
    j.w = w;
    for (size_t i = 0; !rc && w && i < j.n; i++) {
        struct qt *x = &j.ts[i];
        const struct graft_tensor_info *t = x->t->info;
        if (!x->quant) {
            x->id = graft_writer_add_tensor(w, t->name, t->name_len, t->dtype, t->n_dims, t->ne, err);
            if (x->id < 0) rc = (int)x->id;
            continue;
        }
        uint64_t qne[3] = {x->rows, p->bits == 8 ? x->cols : x->cols / 2}, sne[3] = {x->rows, x->groups};
        if (p->bcq) qne[1] = (uint64_t)p->bits, qne[2] = x->cols / 8, sne[2] = (uint64_t)p->bits;
        x->id = graft_writer_add_tensor(w, t->name, t->name_len, p->bits == 8 ? GRAFT_DTYPE_I8 : GRAFT_DTYPE_U8, p->bcq ? 3 : 2, qne, err);
        char *sn = graft__asprintf("%.*s_%s", (int)t->name_len, t->name, p->bcq ? "alpha" : "scale");
        if (!sn) rc = nomem(err);
        if (!rc && x->id < 0) rc = (int)x->id;
        if (!rc && graft_model_find(m, sn, strlen(sn)))
            rc = graft_err_set(err, GRAFT_E_USAGE, graft_model_path(m), sn, strlen(sn), "the model already has this tensor: is it quantized already?");
        if (!rc) x->id_scale = graft_writer_add_tensor(w, sn, strlen(sn), GRAFT_DTYPE_F32, p->bcq ? 3 : 2, sne, err);
        if (!rc && x->id_scale < 0) rc = (int)x->id_scale;
        graft__free(sn);
    }
    if (!rc && w) rc = graft_writer_layout(w, err);
    if (!rc && w) rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, j.items, quant_item, &j,
                                      p->progress && p->progress->enabled ? graft_progress_draw : NULL, p->progress, err);
    for (size_t i = 0; !rc && w && i < j.n; i++)
        if (atomic_load(&j.ts[i].nf_in))
            fprintf(stderr, "graft: warning: tensor '%.*s': holds %llu NaN or infinite values; their groups get a NaN scale (they dequantize to NaN)\n",
                    (int)j.ts[i].t->info->name_len, j.ts[i].t->info->name, (unsigned long long)atomic_load(&j.ts[i].nf_in));
    if (!rc && w) {
        json_t *q = p->bcq ? json_pack("{s:s, s:i, s:i, s:b, s:i, s:s, s:s}", "quant_method", "graft_bcq", "bits", p->bits, "group_size", p->group,
                                       "shift", p->shift, "rounds", p->rounds, "alpha_dtype", "float32", "dequantized_dtype", first_dt ? first_dt : "bfloat16")
                           : json_pack("{s:s, s:i, s:i, s:b, s:s, s:s}", "quant_method", "graft_rtn", "bits", p->bits, "group_size", p->group, "symmetric", 1,
                                       "scale_dtype", "float32", "dequantized_dtype", first_dt ? first_dt : "bfloat16");
        rc = q ? side_files(w, m, q, NULL, graft__ops_single_file(target), err) : nomem(err);
    }
    if (!rc && w) rc = graft_writer_commit(w, err);
    if (!rc && rep) {
        size_t q = 0;
        for (size_t i = 0; i < j.n; i++) {
            struct qt *x = &j.ts[i];
            if (!x->quant) { rep->n_kept++; continue; }
            double e2 = 0, n2 = 0, t2 = 0;
            size_t ni = (size_t)((x->rows + x->rpi - 1) / x->rpi);
            for (size_t k = 0; k < ni; k++) e2 += x->err2[k], n2 += x->norm2[k], t2 += x->rtn2[k];
            if (p->bcq) rep->rtn_error[q] = p->dry_run ? -1 : n2 > 0 ? sqrt(t2 / n2) : 0;
            rep->rel_error[q++] = p->dry_run ? -1 : n2 > 0 ? sqrt(e2 / n2) : 0;
        }
    }
    if (rc && rep) graft_quant_report_free(rep);
    graft_writer_free(w);
    for (size_t i = 0; j.ts && i < j.n; i++) graft__free(j.ts[i].err2), graft__free(j.ts[i].norm2), graft__free(j.ts[i].rtn2);
    graft__free(j.ts);
    for (size_t k = 0; k < n_rx; k++) regfree(&rx[k]);
    graft__free(rx);
    return rc;
}

static int dequant_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct qjob *j = ctx;
    size_t ti = locate(j, item);
    struct qt *x = &j->ts[ti];
    if (!x->quant) return item == x->first ? graft__ops_copy_tensor(j->w, x->id, j->m, x->t, j->progress, err) : GRAFT_OK;
    uint64_t r0 = (item - x->first) * x->rpi, nr = x->rows - r0 < x->rpi ? x->rows - r0 : x->rpi, cols = x->cols, n = nr * cols;
    bool int8 = x->t->info->dtype == GRAFT_DTYPE_I8;
    const uint64_t nbits = (uint64_t)j->bits, na = j->bcq ? nr * x->groups * nbits : nr * x->groups; // scales / α of these rows
    float *w = graft__malloc((size_t)n * sizeof *w), *sc = graft__malloc((size_t)na * sizeof *sc + 4);
    void *enc = graft__malloc((size_t)n * 8); // up to F64
    int rc = GRAFT_OK;
    if (!w || !sc || !enc) { rc = nomem(err); goto out; }
    graft_row_to_f32(x->scale->info->dtype, graft_model_data(j->m, x->scale) + (na / nr) * r0 * (graft_dtype_traits(x->scale->info->dtype)->bits / 8), sc,
                     (size_t)na);
    if (j->bcq) { // ŵ = Σ_k ±α_k, the sum bcq_value computes
        const uint8_t *codes = graft_model_data(j->m, x->t) + r0 * nbits * (cols / 8);
        for (uint64_t r = 0; r < nr; r++)
            for (uint64_t c = 0; c < cols; c++) {
                const float *a = sc + (r * x->groups + c / (uint64_t)j->group) * nbits;
                float v = 0.0f;
                for (uint64_t k = 0; k < nbits; k++) v += (codes[(r * nbits + k) * (cols / 8) + c / 8] >> (c % 8)) & 1 ? a[k] : -a[k];
                w[r * cols + c] = v;
            }
    }
    const uint8_t *q = graft_model_data(j->m, x->t) + (int8 ? r0 * cols : r0 * (cols / 2));
    for (uint64_t r = 0; r < nr && !j->bcq; r++)
        for (uint64_t c = 0; c < cols; c++) {
            int v;
            if (int8) v = (int8_t)q[r * cols + c];
            else {
                uint8_t b = q[r * (cols / 2) + c / 2], nib = c % 2 ? b >> 4 : b & 0xF;
                v = nib & 8 ? (int)nib - 16 : (int)nib;
            }
            w[r * cols + c] = (float)v * sc[r * x->groups + c / (uint64_t)j->group];
        }
    uint64_t off, len;
    graft_dtype_nbytes(j->out_dt, r0 * cols, &off);
    graft_dtype_nbytes(j->out_dt, n, &len);
    graft_row_from_f32(j->out_dt, w, enc, (size_t)n);
    size_t first;
    uint64_t bad = graft_count_nonfinite(j->out_dt, enc, (size_t)n, &first);
    if (bad) { // counted per tensor, judged once it is done (a NaN / ±Inf scale: inherited)
        uint64_t held = 0;
        for (uint64_t g = 0; g < nr * x->groups; g++) {
            bool nf = !isfinite(sc[j->bcq ? g * nbits : g]);
            for (uint64_t q2 = 1; j->bcq && q2 < nbits; q2++) nf |= !isfinite(sc[g * nbits + q2]);
            if (nf) { // values under this scale (the last group of a row may be shorter)
                uint64_t c0 = (g % x->groups) * (uint64_t)j->group;
                held += cols - c0 < (uint64_t)j->group ? cols - c0 : (uint64_t)j->group;
            }
        }
        atomic_fetch_add(&x->nf_in, held), atomic_fetch_add(&x->nf_out, bad);
        atomic_fetch_add(&x->nf_out32, graft_count_nonfinite(GRAFT_DTYPE_F32, w, (size_t)n, NULL));
        graft__atomic_min_u64(&x->nf_first, r0 * cols + first);
    }
    rc = graft_writer_write(j->w, x->id, off, enc, (size_t)len, err);
    graft_progress_add(j->progress, x->t->info->n_bytes);
out:
    graft__free(w), graft__free(sc), graft__free(enc);
    if (rc && !strstr(err->msg, x->t->info->name)) graft__err_prefix(err, NULL, x->t->info->name, x->t->info->name_len);
    return rc;
}

int graft_dequantize(const struct graft_model *m, const char *target, enum graft_dtype dtype, int n_threads, unsigned writer_flags,
                     struct graft_progress *progress, size_t *n_done, struct graft_err *err) {
    const char *cfg = graft_model_config_json(m);
    json_t *root = cfg ? json_loads(cfg, 0, NULL) : NULL, *qc = json_object_get(root, "quantization_config");
    int group = (int)json_integer_value(json_object_get(qc, "group_size")), bits = (int)json_integer_value(json_object_get(qc, "bits"));
    const char *qm = json_string_value(json_object_get(qc, "quant_method")), *dd = json_string_value(json_object_get(qc, "dequantized_dtype"));
    bool bcq = qm && !strcmp(qm, "graft_bcq");
    int rc = GRAFT_OK;
    if (!qc || !qm || (strcmp(qm, "graft_rtn") && !bcq) || group < 1 || (bcq && (bits < 2 || bits > 4)))
        rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0,
                           "config.json has no graft quantization_config (quant_method \"graft_rtn\" or \"graft_bcq\" with group_size; bcq: bits 2–4): "
                           "not made by graft quantize?");
    if (!rc && dtype == GRAFT_DTYPE_COUNT) {
        int t = dd ? graft_dtype_from_cli_name(dd) : -1;
        dtype = t == GRAFT_DTYPE_F32 || t == GRAFT_DTYPE_F16 || t == GRAFT_DTYPE_BF16 || t == GRAFT_DTYPE_F64 ? (enum graft_dtype)t : GRAFT_DTYPE_BF16;
    }
    struct qjob j = {.m = m, .group = group, .bits = bits, .bcq = bcq, .out_dt = dtype, .progress = progress};
    j.n = graft_model_n_tensors(m);
    size_t nd = 0, n_out = 0;
    if (!rc && !(j.ts = graft__calloc(j.n ? j.n : 1, sizeof *j.ts))) rc = nomem(err);
    for (size_t i = 0; !rc && i < j.n; i++) {
        const struct graft_model_tensor *t = graft_model_tensor(m, i);
        const struct graft_tensor_info *ti = t->info;
        const char *suf = bcq ? "_alpha" : "_scale";
        if (ti->name_len > 6 && !memcmp(ti->name + ti->name_len - 6, suf, 6)) { // a scale: used by its tensor
            const struct graft_model_tensor *owner = graft_model_find(m, ti->name, ti->name_len - 6);
            if (owner && (owner->info->dtype == GRAFT_DTYPE_I8 || owner->info->dtype == GRAFT_DTYPE_U8)) continue;
        }
        struct qt *x = &j.ts[n_out++];
        x->t = t, x->id = -1;
        char *sn = graft__asprintf("%.*s%s", (int)ti->name_len, ti->name, suf);
        if (!sn) { rc = nomem(err); break; }
        x->scale = graft_model_find(m, sn, strlen(sn));
        graft__free(sn);
        x->quant = x->scale && (bcq ? ti->dtype == GRAFT_DTYPE_U8 && ti->n_dims == 3 && ti->ne[1] == (uint64_t)bits
                                    : (ti->dtype == GRAFT_DTYPE_I8 || ti->dtype == GRAFT_DTYPE_U8) && ti->n_dims == 2);
        x->rows = ti->n_dims ? ti->ne[0] : 1;
        x->cols = !x->quant ? ti->n_elem : bcq ? 8 * ti->ne[2] : ti->dtype == GRAFT_DTYPE_I8 ? ti->ne[1] : 2 * ti->ne[1];
        if (!x->quant && x->scale && bcq)
            rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), ti->name, ti->name_len, "BCQ codes must be U8 [rows, %d, cols/8]", bits);
        if (x->quant) {
            x->groups = (x->cols + (uint64_t)group - 1) / (uint64_t)group;
            const struct graft_tensor_info *s = x->scale->info;
            const struct graft_dtype_traits *sd = graft_dtype_traits(s->dtype);
            bool shape = bcq ? s->n_dims == 3 && s->ne[0] == x->rows && s->ne[1] == x->groups && s->ne[2] == (uint64_t)bits
                             : s->n_dims == 2 && s->ne[0] == x->rows && s->ne[1] == x->groups;
            if (!shape || !sd || !sd->is_float || sd->bits % 8)
                rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), s->name, s->name_len,
                                   "%s must be floating [%llu, %llu%s] for %llu columns in groups of %d", bcq ? "α" : "scales", (unsigned long long)x->rows,
                                   (unsigned long long)x->groups, bcq ? (bits == 2 ? ", 2" : bits == 3 ? ", 3" : ", 4") : "", (unsigned long long)x->cols, group);
            nd++;
        }
        set_items(x, &j.items);
    }
    j.n = n_out;
    struct graft_writer *w = NULL;
    if (!rc) rc = graft__ops_writer_open(m, target, 0, writer_flags, &w, err);
    j.w = w;
    for (size_t i = 0; !rc && i < j.n; i++) {
        struct qt *x = &j.ts[i];
        const struct graft_tensor_info *t = x->t->info;
        uint64_t ne[2] = {x->rows, x->cols};
        x->id = x->quant ? graft_writer_add_tensor(w, t->name, t->name_len, dtype, 2, ne, err)
                         : graft_writer_add_tensor(w, t->name, t->name_len, t->dtype, t->n_dims, t->ne, err);
        if (x->id < 0) rc = (int)x->id;
    }
    if (!rc) rc = graft_writer_layout(w, err);
    for (size_t i = 0; i < j.n; i++) atomic_store(&j.ts[i].nf_first, UINT64_MAX);
    if (!rc) rc = graft_pool_run(n_threads > 0 ? n_threads : 1, j.items, dequant_item, &j, progress && progress->enabled ? graft_progress_draw : NULL,
                                 progress, err);
    for (size_t i = 0; !rc && i < j.n; i++) {
        struct qt *x = &j.ts[i];
        rc = graft__nonfinite_rule("dequantize", x->t->info->name, x->t->info->name_len, dtype, atomic_load(&x->nf_out), atomic_load(&x->nf_out32),
                                   atomic_load(&x->nf_first), atomic_load(&x->nf_in), writer_flags & GRAFT_WRITER_ALLOW_NONFINITE, err);
    }
    if (!rc) rc = side_files(w, m, NULL, graft_dtype_torch_name(dtype), graft__ops_single_file(target), err);
    if (!rc) rc = graft_writer_commit(w, err);
    if (n_done) *n_done = nd;
    graft_writer_free(w);
    graft__free(j.ts);
    json_decref(root);
    return rc;
}
