// The command line under MPI: build/graft-mpi is this front end compiled with -DGRAFT_MPI by Open MPI's
// mpicc (`make mpi`); in build/graft the same functions report one process and never touch MPI. Under `mpirun -np N` with
// N > 1, cli_dist() hands the library a struct graft_dist over MPI_COMM_WORLD (graft/dist.h); ranks
// other than 0 print nothing but their own crashes (the library gives every rank the lowest failing
// rank's error, which rank 0 prints).
#include <stdlib.h>
#include <string.h>
#include "cli.h"

#ifdef GRAFT_MPI
#include <mpi.h>

static int bcast(void *ctx, void *buf, size_t len, int root) {
    (void)ctx;
    return len > (size_t)INT32_MAX || MPI_Bcast(buf, (int)len, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS;
}

static int min_i64(void *ctx, int64_t *v, size_t n) {
    (void)ctx;
    return n > (size_t)INT32_MAX || MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS;
}

// Gathered, then added in rank order on every rank: the same bits for every run and every rank
// (MPI_SUM's order of operations is the implementation's).
static int sum_f64(void *ctx, double *v, size_t n) {
    struct graft_dist *d = ctx;
    if (n > (size_t)INT32_MAX / (size_t)d->size) return 1;
    double *all = malloc((size_t)d->size * n * sizeof *all);
    if (!all) return 1;
    int rc = MPI_Allgather(v, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, MPI_COMM_WORLD) != MPI_SUCCESS;
    for (size_t i = 0; !rc && i < n; i++) {
        double s = 0;
        for (int r = 0; r < d->size; r++) s += all[(size_t)r * n + i];
        v[i] = s;
    }
    free(all);
    return rc;
}

static struct graft_dist dist;
static int mpi_on;

void cli_dist_init(int *argc, char ***argv) {
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return;
    mpi_on = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &dist.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dist.size);
    dist.ctx = &dist, dist.bcast = bcast, dist.min_i64 = min_i64, dist.sum_f64 = sum_f64;
}

void cli_dist_end(int rc) {
    if (!mpi_on) return;
    // every rank ends with the same status (the library agreed on it), so a plain finalize is enough
    (void)rc;
    MPI_Finalize();
}

const struct graft_dist *cli_dist(void) { return mpi_on && dist.size > 1 ? &dist : NULL; }
bool cli_quiet(void) { return mpi_on && dist.rank != 0; }
#else
void cli_dist_init(int *argc, char ***argv) { (void)argc, (void)argv; }
void cli_dist_end(int rc) { (void)rc; }
const struct graft_dist *cli_dist(void) { return NULL; }
bool cli_quiet(void) { return false; }
#endif
