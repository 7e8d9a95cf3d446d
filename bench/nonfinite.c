// The cost of the merge engine's non-finite check: graft_count_nonfinite over every output tensor of a
// merged model, chunk by chunk as the engine runs it (256 Ki elements), single-threaded (the engine
// spreads it over its threads). bench/merge.sh compares the time with the linear merge's.
//   nonfinite MODEL.safetensors...   → "bytes seconds" on stdout
#include <stdio.h>
#include <time.h>
#include "graft/dtype.h"
#include "graft/safetensors.h"
#include "graft/status.h"

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
            for (int pass = 0; pass < 2; pass++) { // the first pass faults the pages in; the second is timed
                double t0 = now();
                for (uint64_t e = 0; es && e < t->n_elem; e += 256 * 1024) {
                    size_t n = t->n_elem - e < 256 * 1024 ? (size_t)(t->n_elem - e) : 256 * 1024;
                    sink += graft_count_nonfinite(t->dtype, d + e * es, n, NULL);
                }
                if (pass) secs += now() - t0, bytes += t->n_bytes, bad += sink;
            }
        }
        graft_st_close(st);
    }
    printf("%llu %.6f %llu\n", bytes, secs, bad);
    return 0;
}
