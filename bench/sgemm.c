// Baseline for bench/eval.sh: OpenBLAS's own sgemm throughput on the products one forward pass of the
// model makes — C[M × N] = X[M × K] · Wᵀ for every linear weight shape of the model (f32 weights,
// OpenBLAS threaded over N_THREADS), M = tokens per pass. Prints GFLOP/s over all of them.
// Usage: sgemm MODEL M N_THREADS
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graft/graft.h"

void openblas_set_num_threads(int);

int main(int argc, char **argv) {
    if (argc != 4) return fprintf(stderr, "usage: sgemm MODEL M N_THREADS\n"), 2;
    struct graft_err err = {0};
    struct graft_model *m;
    if (graft_model_open(argv[1], &m, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    size_t M = (size_t)atol(argv[2]);
    openblas_set_num_threads(atoi(argv[3]));
    double flops = 0, secs = 0;
    for (int rep = 0; rep < 2; rep++) { // the first round warms up
        flops = secs = 0;
        for (size_t i = 0; i < graft_model_n_tensors(m); i++) {
            const struct graft_tensor_info *t = graft_model_tensor(m, i)->info;
            if (t->n_dims != 2 || strstr(t->name, "embed_tokens")) continue;
            size_t N = t->ne[0], K = t->ne[1];
            float *X = calloc(M * K, 4), *W = calloc(N * K, 4), *C = malloc(M * N * 4);
            for (size_t j = 0; j < M * K; j++) X[j] = (float)(j % 7) * 0.1f;
            for (size_t j = 0; j < N * K; j++) W[j] = (float)(j % 5) * 0.1f;
            double t0 = graft_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, X, (int)K, W, (int)K, 0.0f, C, (int)N);
            secs += graft_now() - t0;
            flops += 2.0 * M * N * K;
            free(X), free(W), free(C);
        }
    }
    printf("%.2f\n", flops / secs / 1e9);
    graft_model_close(m);
    return 0;
}
