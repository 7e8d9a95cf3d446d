// Perplexity windows over documents (include/graft/eval.h, graft_eval_ppl).
#include <stdlib.h>
#include <string.h>
#include "graft/eval.h"
#include "graft/util.h"
#include "../core/impl.h"

struct window { const int32_t *src; size_t n; int score_from; }; // tokens after the BOS; first scored position

int graft_eval_ppl(struct graft_llama *L, const int32_t *const *docs, const size_t *lens, int n_docs, const struct graft_ppl_opts *o,
                   struct graft_ppl_result *r, struct graft_err *err) {
    memset(r, 0, sizeof *r);
    bool bos = o->bos >= 0;
    if (o->ctx < 2 + (int)bos || o->batch < 1) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "the window (ctx) must hold BOS and two tokens");
    size_t C = (size_t)o->ctx - bos, step = o->stride > 0 && (size_t)o->stride < C ? (size_t)o->stride : C;
    size_t n_win = 0, cap = 0;
    struct window *win = NULL;
    int rc = GRAFT_OK;
    for (int d = 0; d < n_docs && !rc; d++) {
        size_t n = lens[d];
        if (o->max_tokens && n > o->max_tokens) n = o->max_tokens;
        size_t scored_to = 0; // document tokens [0, scored_to) are scored already
        for (size_t b = 0; b < n; b += step) {
            size_t e = b + C < n ? b + C : n;
            if (n_win == cap) {
                struct window *nw = graft__realloc(win, (cap = cap ? 2 * cap : 64) * sizeof *nw);
                if (!nw) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); break; }
                win = nw;
            }
            size_t first = scored_to > b ? scored_to : b;
            if (!bos && first == b) first = b + 1; // without BOS the first token has no context
            win[n_win++] = (struct window){docs[d] + b, e - b, (int)(first - b + bos)};
            scored_to = e;
            if (e == n) break;
        }
    }
    if (!rc && !n_win) rc = graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "no tokens to evaluate");
    size_t V = (size_t)graft_llama_vocab(L), B = (size_t)o->batch, ctx = (size_t)o->ctx;
    int32_t *buf = rc ? NULL : graft__malloc(B * ctx * sizeof *buf);
    int *sf = rc ? NULL : graft__malloc(B * sizeof *sf);
    float *logits = rc || !o->dump_logits ? NULL : graft__malloc(B * ctx * V * sizeof *logits);
    if (!rc && (!buf || !sf || (o->dump_logits && !logits))) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for a batch of %zu windows", B);
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
        rc = graft_llama_forward(L, buf, (int)nb, (int)len, sf, &r->nll, &r->scored, logits, o->stats, err);
        r->seconds += graft_now() - t0;
        if (!rc && o->dump_logits && fwrite(logits, sizeof(float), nb * len * V, o->dump_logits) != nb * len * V)
            rc = graft_err_set(err, GRAFT_E_IO, NULL, NULL, 0, "writing the logits failed");
        r->positions += nb * len, r->windows += nb;
        r->flop += graft_llama_flops(L, (int)nb, (int)len);
        w += nb;
    }
    graft__free(win), graft__free(buf), graft__free(sf), graft__free(logits);
    return rc;
}
