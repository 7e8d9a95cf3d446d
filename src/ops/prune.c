// Pruning, streaming. Prunable tensors (2-D floating weights; not the input embedding and lm_head
// unless asked; never --exclude matches) are cut into chunks of whole rows.
//
// Magnitude: the k = n − ⌊s·n⌋ largest |w| are kept exactly, by the radix selection the merge engine
// uses (src/merge/select.c: a sampled pass, a pass filling the candidate pool, fallbacks), per tensor
// or over all prunable tensors at once (--scope global: one selection whose chunks run across
// tensors). Equal magnitudes at the threshold: the lower element index is kept. Memory: the selection's
// histograms and pool plus one chunk per thread.
// Wanda (statistics supplied): score_ij = |w_ij|·√s_j; per row the ⌊s·in⌋ lowest scores are zeroed
// (ties: the higher index goes first). N:M: per row, in each group of M consecutive elements the
// M − N lowest scores (|w|, or Wanda's) are zeroed, ties likewise.
// Pruned elements are zeroed in the stored bytes; kept ones are copied bit for bit.
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include "graft/convert.h"
#include "graft/prune.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../merge/engine.h"
#include "ops-impl.h"

#define CHUNK_ELEMS (1u << 16) // a block's magnitudes, mask and bytes stay in L2

struct graft_prune_params graft_prune_default_params(void) { return (struct graft_prune_params){.n_threads = 1}; }

void graft_prune_report_free(struct graft_prune_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) graft__free(r->names[i]);
    graft__free(r->names), graft__free(r->zeros), graft__free(r->numel);
    memset(r, 0, sizeof *r);
}

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

struct pt {
    const struct graft_model_tensor *t, *stat;
    bool     prune;
    uint64_t rows, cols, rpc, n_chunks;
    size_t   first_item, unit_first;       // output items; first chunk within its selection unit
    struct graft_select *sel;              // magnitude: the selection this tensor belongs to
    uint64_t *zeros;                       // per chunk
    long     id;
};

struct pjob {
    const struct graft_model *m;
    const struct graft_prune_params *p;
    struct pt *ts;
    size_t n, items;
    struct graft_writer *w;
    float **mag, **keep;                   // per thread: a chunk of magnitudes / scores, and the mask
    uint8_t **buf;                         // per thread: the chunk's output bytes
    // selection passes of one unit: tensors [u0, u1) of the prunable ones
    size_t *unit, n_unit, unit_chunks;
    int pass;
    double *partials;
    size_t plen;
    void **accs;
};

// Tensor and chunk of a unit-relative chunk index.
static struct pt *unit_locate(const struct pjob *j, size_t u, uint64_t *chunk) {
    size_t lo = 0, hi = j->n_unit;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (j->ts[j->unit[mid]].unit_first <= u) lo = mid; else hi = mid;
    }
    struct pt *x = &j->ts[j->unit[lo]];
    *chunk = u - x->unit_first;
    return x;
}

static void load_mag(const struct pjob *j, const struct pt *x, uint64_t chunk, float *mag, uint64_t *n) {
    uint64_t r0 = chunk * x->rpc, nr = x->rows - r0 < x->rpc ? x->rows - r0 : x->rpc, off;
    *n = nr * x->cols;
    graft_dtype_nbytes(x->t->info->dtype, r0 * x->cols, &off);
    graft_row_to_f32(x->t->info->dtype, graft_model_data(j->m, x->t) + off, mag, (size_t)*n);
    for (uint64_t i = 0; i < *n; i++) mag[i] = fabsf(mag[i]);
}

static int stat_item(void *ctx, size_t u, int ith, struct graft_err *err) {
    (void)err;
    struct pjob *j = ctx;
    if (!graft_select_wants_chunk(j->pass, u, j->unit_chunks)) return GRAFT_OK;
    uint64_t chunk, n;
    struct pt *x = unit_locate(j, u, &chunk);
    load_mag(j, x, chunk, j->mag[ith], &n);
    graft_select_stat(x->sel, j->pass, 0, u, j->mag[ith], n, j->partials ? j->partials + u * j->plen : NULL, j->accs ? j->accs[ith] : NULL, 1);
    return GRAFT_OK;
}

// The selection passes of one unit.
static int select_unit(struct pjob *j, struct graft_select *sel, struct graft_err *err) {
    int nth = j->p->n_threads > 0 ? j->p->n_threads : 1, rc = GRAFT_OK;
    for (j->pass = 0; !rc && j->pass < graft_select_passes(sel, 1); j->pass++) {
        size_t ab = graft_select_acc_bytes(j->pass, 1);
        j->plen = graft_select_partial_len(j->pass, 1);
        j->partials = j->plen ? graft__calloc(j->unit_chunks * j->plen, sizeof *j->partials) : NULL;
        j->accs = ab ? graft__calloc((size_t)nth, sizeof *j->accs) : NULL;
        bool ok = (!j->plen || j->partials) && (!ab || j->accs);
        for (int t = 0; ok && j->accs && t < nth; t++) ok = (j->accs[t] = graft__calloc(1, ab)) != NULL;
        rc = ok ? graft_pool_run(nth, j->unit_chunks, stat_item, j, NULL, NULL, err) : nomem(err);
        if (!rc) rc = graft_select_combine(sel, 1, j->pass, j->partials, j->unit_chunks, j->plen, j->accs, j->accs ? nth : 0, err);
        graft__free(j->partials);
        for (int t = 0; j->accs && t < nth; t++) graft__free(j->accs[t]);
        graft__free(j->accs);
        j->partials = NULL, j->accs = NULL;
    }
    return rc;
}

struct scored { float s; uint32_t i; };
// Lowest score first; equal scores: the higher index first (so the lower index is kept).
static int cmp_scored(const void *a, const void *b) {
    const struct scored *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return x->i > y->i ? -1 : x->i < y->i;
}

// N:4 over a row (the common 2:4): per group, how many of the other three beat each element (a larger
// score, or an equal one at a lower index); kept when fewer than N do. Straight-line, vectorizable.
GRAFT_KERNEL static void nm4(const float *restrict sc, uint64_t cols, int n, float *restrict keep) {
    for (uint64_t g = 0; g < cols / 4; g++) {
        float s0 = sc[4 * g], s1 = sc[4 * g + 1], s2 = sc[4 * g + 2], s3 = sc[4 * g + 3];
        int b0 = (s1 > s0) + (s2 > s0) + (s3 > s0);
        int b1 = (s0 >= s1) + (s2 > s1) + (s3 > s1);
        int b2 = (s0 >= s2) + (s1 >= s2) + (s3 > s2);
        int b3 = (s0 >= s3) + (s1 >= s3) + (s2 >= s3);
        keep[4 * g] = b0 < n ? 1.0f : 0.0f, keep[4 * g + 1] = b1 < n ? 1.0f : 0.0f;
        keep[4 * g + 2] = b2 < n ? 1.0f : 0.0f, keep[4 * g + 3] = b3 < n ? 1.0f : 0.0f;
    }
}

// keep[] for one row of scores: zero the `drop` lowest (of the whole row, or per group of M).
static void row_mask(const float *score, uint64_t cols, int nm_n, int nm_m, uint64_t drop, struct scored *tmp, float *keep) {
    if (nm_m == 4) { nm4(score, cols, nm_n, keep); return; }
    if (nm_m && nm_m <= 16) { // small groups: an element is kept when fewer than N others beat it
        for (uint64_t c0 = 0; c0 < cols; c0 += (uint64_t)nm_m)
            for (int a = 0; a < nm_m; a++) {
                float sa = score[c0 + (uint64_t)a];
                int beat = 0;
                for (int b = 0; b < nm_m; b++) {
                    float sb = score[c0 + (uint64_t)b];
                    beat += sb > sa || (sb == sa && b < a);
                }
                keep[c0 + (uint64_t)a] = beat < nm_n ? 1.0f : 0.0f;
            }
        return;
    }
    for (uint64_t c = 0; c < cols; c++) keep[c] = 1.0f;
    uint64_t g = nm_m ? (uint64_t)nm_m : cols, d = nm_m ? (uint64_t)(nm_m - nm_n) : drop;
    for (uint64_t c0 = 0; c0 < cols; c0 += g) {
        for (uint64_t c = 0; c < g; c++) tmp[c] = (struct scored){score[c0 + c], (uint32_t)c};
        qsort(tmp, (size_t)g, sizeof *tmp, cmp_scored);
        for (uint64_t c = 0; c < d && c < g; c++) keep[c0 + tmp[c].i] = 0.0f;
    }
}

// dst = src with the elements whose keep is 0 zeroed (es bytes each); returns the zeros after.
// Counts the zeros of the result from its bytes (±0 in the stored dtype; Wanda scores may be 0 for
// kept weights). The mapped input may be unaligned: elements are read with memcpy.
GRAFT_KERNEL static uint64_t zero_pruned(const uint8_t *src, uint8_t *restrict dst, const float *restrict keep, uint64_t n, size_t es) {
    uint64_t z = 0;
    if (es == 2) {
        uint16_t *d = (uint16_t *)(void *)dst;
        for (uint64_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, src + 2 * i, 2);
            d[i] = keep[i] != 0.0f ? v : 0;
            z += (d[i] & 0x7FFF) == 0;
        }
    } else if (es == 4) {
        uint32_t *d = (uint32_t *)(void *)dst;
        for (uint64_t i = 0; i < n; i++) {
            uint32_t v;
            memcpy(&v, src + 4 * i, 4);
            d[i] = keep[i] != 0.0f ? v : 0;
            z += (d[i] & 0x7FFFFFFFu) == 0;
        }
    } else { // F64 (and any other whole-byte float): zero bits apart from the sign
        for (uint64_t i = 0; i < n; i++) {
            if (keep[i] != 0.0f) memcpy(dst + i * es, src + i * es, es);
            else memset(dst + i * es, 0, es);
            bool zero = true;
            for (size_t b = 0; b < es; b++) zero &= (dst[i * es + b] & (b == es - 1 ? 0x7F : 0xFF)) == 0;
            z += zero;
        }
    }
    return z;
}

static int write_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    struct pjob *j = ctx;
    size_t lo = 0, hi = j->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (j->ts[mid].first_item <= item) lo = mid; else hi = mid;
    }
    struct pt *x = &j->ts[lo];
    const struct graft_tensor_info *t = x->t->info;
    if (!x->prune) return graft__ops_copy_tensor(j->w, x->id, j->m, x->t, j->p->progress, err);
    uint64_t chunk = item - x->first_item, n, off, len;
    float *mag = j->mag[ith], *keep = j->keep[ith];
    load_mag(j, x, chunk, mag, &n);
    const struct graft_prune_params *p = j->p;
    if (p->wanda || p->nm_m) {
        uint64_t r0 = chunk * x->rpc, nr = n / x->cols;
        float *sq = NULL;
        struct scored *tmp = graft__malloc((size_t)x->cols * sizeof *tmp);
        if (p->wanda) sq = graft__malloc((size_t)x->cols * sizeof *sq);
        if (!tmp || (p->wanda && !sq)) { graft__free(tmp), graft__free(sq); return nomem(err); }
        if (sq) {
            graft_row_to_f32(x->stat->info->dtype, graft_model_data(p->wanda, x->stat), sq, (size_t)x->cols);
            for (uint64_t c = 0; c < x->cols; c++) sq[c] = sqrtf(fmaxf(sq[c], 0.0f));
        }
        for (uint64_t r = 0; r < nr; r++) {
            float *row = mag + r * x->cols;
            if (sq)
                for (uint64_t c = 0; c < x->cols; c++) row[c] *= sq[c];
            row_mask(row, x->cols, p->nm_n, p->nm_m, (uint64_t)(p->sparsity * (double)x->cols), tmp, keep + r * x->cols);
        }
        (void)r0;
        graft__free(tmp), graft__free(sq);
    } else {
        graft_select_mask(x->sel, x->unit_first + chunk, mag, n, keep);
    }
    graft_dtype_nbytes(t->dtype, chunk * x->rpc * x->cols, &off);
    graft_dtype_nbytes(t->dtype, n, &len);
    uint8_t *b = j->buf[ith];
    x->zeros[chunk] = zero_pruned(graft_model_data(j->m, x->t) + off, b, keep, n, (size_t)(graft_dtype_traits(t->dtype)->bits / 8));
    int rc = graft_writer_write(j->w, x->id, off, b, (size_t)len, err);
    graft_progress_add(p->progress, len);
    return rc;
}


int graft_prune(const struct graft_model *m, const char *target, const struct graft_prune_params *p, struct graft_prune_report *rep,
                struct graft_err *err) {
    if (!(p->sparsity >= 0 && p->sparsity < 1) && !p->nm_m) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--sparsity must be in [0, 1)");
    if (p->nm_m && !(p->nm_n >= 1 && p->nm_n < p->nm_m)) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "N:M needs 1 ≤ N < M");
    if (p->global && (p->wanda || p->nm_m)) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--scope global is for magnitude pruning (Wanda and N:M work per row)");
    int nth = p->n_threads > 0 ? p->n_threads : 1, rc = GRAFT_OK;
    struct pjob j = {.m = m, .p = p, .n = graft_model_n_tensors(m)};
    regex_t *rx = graft__calloc(p->n_exclude + 1, sizeof *rx);
    size_t n_rx = 0, n_prune = 0;
    struct graft_select *sels = NULL;
    struct graft_writer *w = NULL;
    if (!rx || !(j.ts = graft__calloc(j.n ? j.n : 1, sizeof *j.ts)) || !(j.unit = graft__calloc(j.n ? j.n : 1, sizeof *j.unit))) { rc = nomem(err); goto out; }
    for (; n_rx < p->n_exclude; n_rx++)
        if (regcomp(&rx[n_rx], p->exclude[n_rx], REG_EXTENDED | REG_NOSUB)) {
            rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--exclude '%s' is not a valid regular expression", p->exclude[n_rx]);
            goto out;
        }
    uint64_t max_chunk = 1;
    for (size_t i = 0; i < j.n; i++) {
        struct pt *x = &j.ts[i];
        x->t = graft_model_tensor(m, i), x->id = -1;
        const struct graft_tensor_info *t = x->t->info;
        const struct graft_dtype_traits *dt = graft_dtype_traits(t->dtype);
        bool excluded = false;
        for (size_t k = 0; k < n_rx && !excluded; k++) excluded = regexec(&rx[k], t->name, 0, NULL, 0) == 0;
        x->prune = t->n_dims == 2 && dt && dt->is_float && dt->bits % 8 == 0 && t->n_elem > 0 && !excluded && (p->embeddings || !graft__ops_is_embedding_or_head(t->name));
        x->first_item = j.items;
        if (!x->prune) { j.items++; continue; }
        x->rows = t->ne[0], x->cols = t->ne[1];
        if (p->nm_m && x->cols % (uint64_t)p->nm_m)
            { rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), t->name, t->name_len, "%llu columns are not a multiple of M = %d for N:M sparsity (--exclude it)", (unsigned long long)x->cols, p->nm_m); goto out; }
        if (p->wanda) {
            x->stat = graft_model_find(p->wanda, t->name, t->name_len);
            const struct graft_dtype_traits *sd = x->stat ? graft_dtype_traits(x->stat->info->dtype) : NULL;
            if (!x->stat || x->stat->info->n_elem != x->cols || !sd || !sd->is_float || !sd->to_f32)
                { rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(p->wanda), t->name, t->name_len, "Wanda statistics need a floating tensor of this name with %llu values (one per input column)", (unsigned long long)x->cols); goto out; }
        }
        x->rpc = CHUNK_ELEMS / x->cols ? CHUNK_ELEMS / x->cols : 1;
        x->n_chunks = (x->rows + x->rpc - 1) / x->rpc;
        if (x->rpc * x->cols > max_chunk) max_chunk = x->rpc * x->cols;
        if (!(x->zeros = graft__calloc((size_t)x->n_chunks, sizeof *x->zeros))) { rc = nomem(err); goto out; }
        j.items += (size_t)x->n_chunks;
        j.unit[n_prune++] = i;
    }
    if (!n_prune) { rc = graft_err_set(err, GRAFT_E_USAGE, graft_model_path(m), NULL, 0, "no 2-D floating tensor to prune"); goto out; }
    if (rep) { // allocated now: nothing may fail once the output exists
        memset(rep, 0, sizeof *rep);
        rep->names = graft__calloc(n_prune, sizeof *rep->names), rep->zeros = graft__calloc(n_prune, sizeof *rep->zeros);
        rep->numel = graft__calloc(n_prune, sizeof *rep->numel);
        if (!rep->names || !rep->zeros || !rep->numel) { rc = nomem(err); goto out; }
        rep->n = n_prune;
        for (size_t u = 0; u < n_prune; u++)
            if (!(rep->names[u] = graft__strndup(j.ts[j.unit[u]].t->info->name, j.ts[j.unit[u]].t->info->name_len))) { rc = nomem(err); goto out; }
    }
    if (p->dry_run) goto report;
    // magnitude: the selections (one per tensor, or one over all)
    if (!p->wanda && !p->nm_m) {
        size_t n_sel = p->global ? 1 : n_prune;
        if (!(sels = graft__calloc(n_sel, sizeof *sels))) { rc = nomem(err); goto out; }
        uint64_t total = 0;
        for (size_t u = 0; u < n_prune; u++) total += j.ts[j.unit[u]].t->info->n_elem;
        for (size_t s = 0; s < n_sel; s++) {
            uint64_t n = p->global ? total : j.ts[j.unit[s]].t->info->n_elem;
            graft_select_init(&sels[s], n - (uint64_t)(p->sparsity * (double)n), n);
        }
    }
    j.mag = graft__calloc((size_t)nth, sizeof *j.mag), j.keep = graft__calloc((size_t)nth, sizeof *j.keep), j.buf = graft__calloc((size_t)nth, sizeof *j.buf);
    if (!j.mag || !j.keep || !j.buf) { rc = nomem(err); goto out; }
    for (int t = 0; t < nth; t++)
        if (!(j.mag[t] = graft__malloc((size_t)max_chunk * sizeof(float))) || !(j.keep[t] = graft__malloc((size_t)max_chunk * sizeof(float))) ||
            !(j.buf[t] = graft__malloc((size_t)max_chunk * 8))) { rc = nomem(err); goto out; }
    if (sels) {
        size_t *all = j.unit, n_all = n_prune;
        for (size_t s = 0; !rc && s < (p->global ? 1 : n_all); s++) {
            j.unit = p->global ? all : all + s, j.n_unit = p->global ? n_all : 1, j.unit_chunks = 0;
            for (size_t u = 0; u < j.n_unit; u++) {
                struct pt *x = &j.ts[j.unit[u]];
                x->sel = &sels[s], x->unit_first = j.unit_chunks;
                j.unit_chunks += (size_t)x->n_chunks;
            }
            rc = select_unit(&j, &sels[s], err);
        }
        j.unit = all, j.n_unit = 0;
        if (rc) goto out;
    }
    {
        bool single = graft__ops_single_file(target);
        if ((rc = graft__ops_writer_open(m, target, p->max_shard_bytes, p->writer_flags, &w, err))) goto out;
        j.w = w;
        for (size_t i = 0; !rc && i < j.n; i++) {
            const struct graft_tensor_info *t = j.ts[i].t->info;
            if ((j.ts[i].id = graft_writer_add_tensor(w, t->name, t->name_len, t->dtype, t->n_dims, t->ne, err)) < 0) rc = (int)j.ts[i].id;
        }
        if (!rc) rc = graft_writer_layout(w, err);
        if (!rc) rc = graft_pool_run(nth, j.items, write_item, &j, p->progress && p->progress->enabled ? graft_progress_draw : NULL, p->progress, err);
        if (!rc && !single) rc = graft_writer_copy_side_files(w, m, NULL, err);
        if (!rc) rc = graft_writer_commit(w, err);
    }
report:
    if (!rc && rep) {
        for (size_t u = 0; u < n_prune; u++) {
            struct pt *x = &j.ts[j.unit[u]];
            rep->numel[u] = x->t->info->n_elem;
            for (uint64_t c = 0; c < x->n_chunks; c++) rep->zeros[u] += x->zeros[c];
        }
        rep->n_kept = j.n - n_prune;
    }
out:
    if (rc && rep) graft_prune_report_free(rep);
    graft_writer_free(w);
    for (int t = 0; t < nth; t++) {
        if (j.mag) graft__free(j.mag[t]);
        if (j.keep) graft__free(j.keep[t]);
        if (j.buf) graft__free(j.buf[t]);
    }
    graft__free(j.mag), graft__free(j.keep), graft__free(j.buf);
    if (sels) graft_select_free(sels, p->global ? 1 : (int)n_prune);
    graft__free(sels);
    for (size_t i = 0; j.ts && i < j.n; i++) graft__free(j.ts[i].zeros);
    graft__free(j.ts), graft__free(j.unit);
    for (size_t k = 0; k < n_rx; k++) regfree(&rx[k]);
    graft__free(rx);
    return rc;
}
