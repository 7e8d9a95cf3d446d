// Baseline for bench/lora.sh: what mergekit-extract-lora does per matrix — the delta of every 2-D
// weight (input embedding and lm_head excluded, as extract-lora's default) and one full thin SVD of
// it (LAPACKE_sgesdd, jobz 'S', single-threaded BLAS), the matrices spread over N threads.
// Usage: sgesdd BASE FT N_THREADS [all]   (prints the seconds the SVDs took; `all`: every 2-D tensor,
// embeddings included, as the SVD-based merges of bench/research.sh decompose them)
#include <lapacke.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graft/graft.h"

void openblas_set_num_threads(int);

struct job { const struct graft_model *b, *f; size_t *ids; size_t n; };

static int one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith, (void)err;
    struct job *j = ctx;
    const struct graft_model_tensor *ft = graft_model_tensor(j->f, j->ids[item]);
    const struct graft_model_tensor *bt = graft_model_find(j->b, ft->info->name, ft->info->name_len);
    size_t m = ft->info->ne[0], n = ft->info->ne[1], k = m < n ? m : n;
    float *d = malloc(m * n * sizeof *d), *t = malloc(m * n * sizeof *t), *s = malloc(k * sizeof *s);
    float *u = malloc(m * k * sizeof *u), *vt = malloc(k * n * sizeof *vt);
    graft_row_to_f32(ft->info->dtype, graft_model_data(j->f, ft), d, m * n);
    graft_row_to_f32(bt->info->dtype, graft_model_data(j->b, bt), t, m * n);
    for (size_t i = 0; i < m * n; i++) d[i] -= t[i];
    int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)n, d, (lapack_int)n, s, u, (lapack_int)k, vt, (lapack_int)n);
    free(d), free(t), free(s), free(u), free(vt);
    return info ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) return 2;
    int all = argc == 5 && !strcmp(argv[4], "all");
    openblas_set_num_threads(1);
    struct graft_err err;
    struct graft_model *b, *f;
    if (graft_model_open(argv[1], &b, &err) || graft_model_open(argv[2], &f, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    struct job j = {b, f, calloc(graft_model_n_tensors(f), sizeof(size_t)), 0};
    for (size_t i = 0; i < graft_model_n_tensors(f); i++) {
        const struct graft_tensor_info *t = graft_model_tensor(f, i)->info;
        if (t->n_dims == 2 && (all || (!strstr(t->name, "embed_tokens") && !strstr(t->name, "lm_head")))) j.ids[j.n++] = i;
    }
    double t0 = graft_now();
    if (graft_pool_run(atoi(argv[3]), j.n, one, &j, NULL, NULL, &err)) { fprintf(stderr, "sgesdd failed\n"); return 1; }
    printf("%.3f\n", graft_now() - t0);
    return 0;
}
