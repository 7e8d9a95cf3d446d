// Worker pool with a deterministic failure rule, and the stderr progress meter.
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "graft/util.h"
#include "impl.h"

struct pool {
    graft_work_fn    fn;
    void            *ctx;
    size_t           n_items;
    int              nth;
    _Atomic size_t   next;
    _Atomic bool     failed;
    pthread_mutex_t  mu;
    pthread_cond_t   cv;
    int              running;   // workers still running (under mu)
    size_t           err_item;  // lowest failing item (under mu)
    struct graft_err err;       // its error
    int              status;
};

struct worker { struct pool *p; int ith; };

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct pool *p = w->p;
    for (;;) {
        if (atomic_load(&p->failed)) break;
        size_t item = atomic_fetch_add(&p->next, 1);
        if (item >= p->n_items) break;
        struct graft_err e;
        graft_err_clear(&e);
        int rc = p->fn(p->ctx, item, w->ith, &e);
        if (rc != GRAFT_OK) {
            pthread_mutex_lock(&p->mu);
            if (p->status == GRAFT_OK || item < p->err_item) {
                p->status = rc, p->err_item = item, p->err = e;
                if (p->err.code == GRAFT_OK) graft_err_set(&p->err, rc, NULL, NULL, 0, "%s", graft_status_str(rc));
            }
            pthread_mutex_unlock(&p->mu);
            atomic_store(&p->failed, true);
        }
    }
    pthread_mutex_lock(&p->mu);
    p->running--;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int graft_pool_run(int n_threads, size_t n_items, graft_work_fn fn, void *ctx,
                   void (*progress)(void *pctx), void *pctx, struct graft_err *err) {
    if (n_threads < 1) n_threads = 1;
    if ((size_t)n_threads > n_items) n_threads = n_items ? (int)n_items : 1;
    struct pool p = {.fn = fn, .ctx = ctx, .n_items = n_items, .nth = n_threads, .status = GRAFT_OK};
    atomic_init(&p.next, 0);
    atomic_init(&p.failed, false);
    if (n_threads == 1 && !progress) { // no threads needed: run on the caller
        for (size_t i = 0; i < n_items; i++) {
            int rc = fn(ctx, i, 0, err);
            if (rc != GRAFT_OK) {
                if (err && err->code == GRAFT_OK) graft_err_set(err, rc, NULL, NULL, 0, "%s", graft_status_str(rc));
                return rc;
            }
        }
        return GRAFT_OK;
    }
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    struct worker *ws = graft__calloc((size_t)n_threads, sizeof *ws);
    pthread_t *tids = graft__calloc((size_t)n_threads, sizeof *tids);
    int started = 0, rc = GRAFT_OK;
    if (!ws || !tids) {
        rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "cannot allocate %d worker threads", n_threads);
        goto out;
    }
    for (int i = 0; i < n_threads; i++) {
        ws[i] = (struct worker){&p, i};
        pthread_mutex_lock(&p.mu);
        p.running++;
        pthread_mutex_unlock(&p.mu);
        if (pthread_create(&tids[i], NULL, worker_main, &ws[i]) != 0) {
            pthread_mutex_lock(&p.mu);
            p.running--;
            pthread_mutex_unlock(&p.mu);
            atomic_store(&p.failed, true);
            rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "cannot start worker thread %d", i);
            break;
        }
        started++;
    }
    pthread_mutex_lock(&p.mu);
    while (p.running > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        int w = pthread_cond_timedwait(&p.cv, &p.mu, &ts);
        if (w == ETIMEDOUT && progress) {
            pthread_mutex_unlock(&p.mu);
            progress(pctx);
            pthread_mutex_lock(&p.mu);
        }
    }
    pthread_mutex_unlock(&p.mu);
    for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
    if (rc == GRAFT_OK && p.status != GRAFT_OK) {
        rc = p.status;
        if (err && err->code == GRAFT_OK) *err = p.err;
    }
out:
    graft__free(ws);
    graft__free(tids);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
    return rc;
}

int graft_n_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

double graft_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void graft_progress_init(struct graft_progress *p, const char *label, uint64_t total_bytes) {
    p->label   = label;
    p->total   = total_bytes;
    p->t_start = graft_now();
    p->enabled = isatty(STDERR_FILENO);
    atomic_init(&p->done, 0);
}

void graft_progress_add(struct graft_progress *p, uint64_t bytes) {
    if (p) atomic_fetch_add_explicit(&p->done, bytes, memory_order_relaxed);
}

void graft__human_bytes(char *buf, size_t n, double bytes) {
    const char *u[] = {"B", "kB", "MB", "GB", "TB"};
    int i = 0;
    while (bytes >= 1000.0 && i < 4) bytes /= 1000.0, i++;
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", bytes, u[i]);
}

void graft_progress_draw(void *arg) {
    struct graft_progress *p = arg;
    if (!p || !p->enabled) return;
    double   t    = graft_now() - p->t_start;
    uint64_t done = atomic_load_explicit(&p->done, memory_order_relaxed);
    double   rate = t > 0 ? (double)done / t : 0;
    char a[32], b[32], r[32], eta[32] = "--";
    graft__human_bytes(a, sizeof a, (double)done);
    graft__human_bytes(b, sizeof b, (double)p->total);
    graft__human_bytes(r, sizeof r, rate);
    if (rate > 0 && p->total > done) snprintf(eta, sizeof eta, "%.0fs", (double)(p->total - done) / rate);
    fprintf(stderr, "\r%s  %s / %s  %s/s  ETA %s   ", p->label, a, b, r, eta);
    fflush(stderr);
}

void graft_progress_finish(struct graft_progress *p) {
    if (!p || !p->enabled) return;
    graft_progress_draw(p);
    fputc('\n', stderr);
}
