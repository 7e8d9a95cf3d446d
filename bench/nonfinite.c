// The cost of the merge engine's non-finite checks: graft_count_nonfinite over every chunk (64 Ki
// elements, the engine's default) of the merged model's output tensors and of its inputs, each chunk
// counted right after it was read (as the engine counts the chunk its kernel has just read: in cache),
// single-threaded (the engine spreads it over its threads). bench/merge.sh compares the time with the
// linear merge's.
//   nonfinite MODEL.safetensors...   → "bytes seconds non-finite-values" on stdout
#include <stdio.h>
#include <time.h>
#include "graft/dtype.h"
#include "graft/safetensors.h"
#include "graft/status.h"

#define CHUNK (64 * 1024)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    double secs = 0;
    unsigned long long bytes = 0, bad = 0;
    for (int a = 1; a < argc; a++) {
        struct graft_err err;
        struct graft_st *st;
        if (graft_st_open(argv[a], &st, &err)) { fprintf(stderr, "%s: %s\n", argv[a], err.msg); return 1; }
        for (size_t i = 0; i < graft_st_n_tensors(st); i++) {
            const struct graft_tensor_info *t = graft_st_tensor(st, i);
            const unsigned char *d = graft_st_data(st, t);
            size_t es = t->n_elem ? t->n_bytes / t->n_elem : 0;
            volatile unsigned long long sink = 0;
            for (uint64_t e = 0; es && e < t->n_elem; e += CHUNK) {
                size_t n = t->n_elem - e < CHUNK ? (size_t)(t->n_elem - e) : CHUNK;
                unsigned char x = 0;
                for (size_t k = 0; k < n * es; k += 64) x ^= d[e * es + k]; // read into cache, untimed
                sink += x;
                double t0 = now();
                bad += graft_count_nonfinite(t->dtype, d + e * es, n, NULL);
                secs += now() - t0;
            }
            bytes += t->n_bytes;
        }
        graft_st_close(st);
    }
    printf("%llu %.6f %llu\n", bytes, secs, bad);
    return 0;
}
