// graft — one command over several processes (MPI ranks), without the library linking MPI.
//
// A caller that runs under MPI (the graft-mpi binary: src/cli/dist_mpi.c) fills a struct graft_dist
// with its rank, the number of ranks and three collectives over its communicator, and passes it in
// graft_merge_options (and graft_writer_params). Every rank must make the same collective calls in
// the same order; the library makes them only at points every rank reaches, also after a failure.
// NULL (or size 1) means one process: behaviour is then exactly that of the plain build.
#ifndef GRAFT_DIST_H
#define GRAFT_DIST_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct graft_dist {
    int   rank, size; // this process (0 … size − 1) and how many there are
    void *ctx;        // the transport's own state (an MPI communicator)
    // Copy `len` bytes from rank `root`'s buf into every rank's buf. 0 on success.
    int (*bcast)(void *ctx, void *buf, size_t len, int root);
    // Element-wise minimum of v[0..n) over all ranks, into every rank's v. 0 on success.
    int (*min_i64)(void *ctx, int64_t *v, size_t n);
    // Element-wise sum of v[0..n) over all ranks, into every rank's v (ranks' values added in rank
    // order, so every run gives the same bits). 0 on success.
    int (*sum_f64)(void *ctx, double *v, size_t n);
};

#ifdef __cplusplus
}
#endif
#endif
