// Perplexity windows over documents (include/graft/eval.h, graft_eval_ppl).
#include <stdlib.h>
#include <string.h>
#include "graft/eval.h"
#include "graft/util.h"
#include "../core/impl.h"
#include "eval-impl.h"

int graft__ppl_windows(const int32_t *const *docs, const size_t *lens, int n_docs, const struct graft_ppl_opts *o, struct graft__window **out,
                       size_t *n_out, struct graft_err *err) {
    bool bos = o->bos >= 0;
    *out = NULL, *n_out = 0;
    if (o->ctx < 2 + (int)bos || o->batch < 1) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "the window (ctx) must hold BOS and two tokens");
    size_t C = (size_t)o->ctx - bos, step = o->stride > 0 && (size_t)o->stride < C ? (size_t)o->stride : C;
    size_t n_win = 0, cap = 0;
    struct graft__window *win = NULL;
    for (int d = 0; d < n_docs; d++) {
        size_t n = lens[d];
        if (o->max_tokens && n > o->max_tokens) n = o->max_tokens;
        size_t scored_to = 0; // document tokens [0, scored_to) are scored already
        for (size_t b = 0; b < n; b += step) {
            size_t e = b + C < n ? b + C : n;
            if (n_win == cap) {
                struct graft__window *nw = graft__realloc(win, (cap = cap ? 2 * cap : 64) * sizeof *nw);
                if (!nw) { graft__free(win); return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }
                win = nw;
            }
            size_t first = scored_to > b ? scored_to : b;
            if (!bos && first == b) first = b + 1; // without BOS the first token has no context
            win[n_win++] = (struct graft__window){docs[d] + b, e - b, (int)(first - b + bos), d};
            scored_to = e;
            if (e == n) break;
        }
    }
    *out = win, *n_out = n_win;
    return GRAFT_OK;
}

int graft_eval_ppl(struct graft_llama *L, const int32_t *const *docs, const size_t *lens, int n_docs, const struct graft_ppl_opts *o,
                   struct graft_ppl_result *r, struct graft_err *err) {
    memset(r, 0, sizeof *r);
    bool bos = o->bos >= 0;
    size_t n_win = 0;
    struct graft__window *win = NULL;
    int rc = graft__ppl_windows(docs, lens, n_docs, o, &win, &n_win, err);
    if (!rc && !n_win) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "no tokens to evaluate");
    size_t V = (size_t)graft_llama_vocab(L), B = (size_t)o->batch, ctx = (size_t)o->ctx;
    int32_t *buf = rc ? NULL : graft__malloc(B * ctx * sizeof *buf);
    int *sf = rc ? NULL : graft__malloc(B * sizeof *sf);
    float *logits = rc || !o->dump_logits ? NULL : graft__malloc(B * ctx * V * sizeof *logits);
    if (!rc && (!buf || !sf || (o->dump_logits && !logits))) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for a batch of %zu windows", B);
    // under MPI: batch j on rank j mod size; each batch's NLL and count kept apart, then gathered
    bool dist = o->dist && o->dist->size > 1;
    if (dist && (o->dump_logits || o->stats))
        rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "logits and statistics are written by one process: run without mpirun");
    size_t n_batch = 0, cap_b = 0, j = 0;
    double *per = NULL; // per batch: NLL, scored
    for (size_t w = 0; w < n_win && !rc;) {
        size_t len = win[w].n + bos, nb = 0;
        while (w + nb < n_win && nb < B && win[w + nb].n + bos == len) {
            int32_t *p = buf + nb * len;
            if (bos) *p++ = o->bos;
            memcpy(p, win[w + nb].src, win[w + nb].n * sizeof *p);
            sf[nb] = win[w + nb].score_from;
            nb++;
        }
        if (o->cancel && __atomic_load_n(o->cancel, __ATOMIC_RELAXED)) { rc = graft_err_set(err, GRAFT_E_CANCELLED, NULL, NULL, 0, "cancelled"); break; }
        double t0 = graft_now();
        if (!dist) rc = graft_llama_forward(L, buf, (int)nb, (int)len, sf, &r->nll, &r->scored, logits, o->stats, err);
        else {
            if (n_batch == cap_b) {
                double *np = graft__realloc(per, (cap_b = cap_b ? 2 * cap_b : 64) * 2 * sizeof *np);
                if (!np) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); break; }
                per = np;
            }
            double b_nll = 0;
            uint64_t b_scored = 0;
            if (j % (size_t)o->dist->size == (size_t)o->dist->rank) rc = graft_llama_forward(L, buf, (int)nb, (int)len, sf, &b_nll, &b_scored, NULL, NULL, err);
            per[2 * n_batch] = b_nll, per[2 * n_batch + 1] = (double)b_scored, n_batch++, j++;
        }
        r->seconds += graft_now() - t0;
        if (!rc && o->dump_logits && fwrite(logits, sizeof(float), nb * len * V, o->dump_logits) != nb * len * V)
            rc = graft_err_set(err, GRAFT_E_IO, NULL, NULL, 0, "writing the logits failed");
        r->positions += nb * len, r->windows += nb;
        r->flop += graft_llama_flops(L, (int)nb, (int)len);
        w += nb;
    }
    if (dist) { // every rank, also after a failure: agree on the status, then add the batches in order
        rc = graft__dist_status(o->dist, rc, NULL, err);
        if (!rc && o->dist->sum_f64(o->dist->ctx, per, 2 * n_batch)) rc = graft_err_set(err, GRAFT_E_IO, NULL, NULL, 0, "MPI reduction failed");
        for (size_t b = 0; !rc && b < n_batch; b++) r->nll += per[2 * b], r->scored += (uint64_t)per[2 * b + 1];
        int64_t us = -(int64_t)(r->seconds * 1e6); // the slowest rank's forward time: max = −min(−t)
        if (!rc && !o->dist->min_i64(o->dist->ctx, &us, 1)) r->seconds = (double)-us / 1e6;
    }
    graft__free(win), graft__free(buf), graft__free(sf), graft__free(logits), graft__free(per);
    return rc;
}
