// graft — small shared services: strict number parsing, a counter-based random generator, a worker
// pool with deterministic work partition, and a progress meter.
#ifndef GRAFT_UTIL_H
#define GRAFT_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- parsing --------------------------------------------------------------------------------------

// Parse a whole decimal number in [0, max]. False on empty input, junk, sign, or overflow.
bool graft_parse_u64(const char *s, uint64_t max, uint64_t *out);
// Parse a byte size: a number with an optional suffix K/M/G/T (powers of 1000, as MergeKit's
// `5B` = 5·10^9 — `B` is accepted as billion like MergeKit), KB/MB/GB/TB (powers of 1000) or
// KiB/MiB/GiB/TiB (powers of 1024). Case-insensitive. False on junk or overflow.
bool graft_parse_size(const char *s, uint64_t *out);
// Parse a finite float (strtod, whole string). False otherwise.
bool graft_parse_double(const char *s, double *out);

// ---- counter-based random numbers -----------------------------------------------------------------
//
// Every random value is a pure function of (key, counter): any element can be drawn by any thread in
// any order and the result never depends on scheduling. Keys are derived from (seed, model index,
// tensor name).

uint64_t graft_rng_key(uint64_t seed, uint64_t model, const char *name, size_t name_len);
// 64 random bits for `counter` under `key` (a strong 64-bit mix of both).
uint64_t graft_rng_u64(uint64_t key, uint64_t counter);
// Uniform in [0, 1) with 24 random bits.
float    graft_rng_uniform(uint64_t key, uint64_t counter);
// Approximately standard normal (sum of four uniforms, rescaled: mean 0, variance 1, |z| ≤ 3.47).
float    graft_rng_normalish(uint64_t key, uint64_t counter);

// ---- worker pool ------------------------------------------------------------------------------------

// Work function: process item `item` on thread `ith` of `nth`. Return GRAFT_OK or an error status
// (with `err` filled). Items are pulled from an atomic counter; results must depend only on the item.
typedef int (*graft_work_fn)(void *ctx, size_t item, int ith, struct graft_err *err);

// Run items [0, n_items) on `n_threads` threads (1 → on the caller). Stops handing out items after the
// first failure; returns the failure of the lowest-numbered failing item (deterministic). When
// `progress` is non-NULL it is called about every 250 ms from the calling thread.
int graft_pool_run(int n_threads, size_t n_items, graft_work_fn fn, void *ctx,
                   void (*progress)(void *pctx), void *pctx, struct graft_err *err);
// Number of online CPUs (≥ 1).
int graft_n_cpus(void);

// ---- progress meter ---------------------------------------------------------------------------------

struct graft_progress {
    const char *label;
    uint64_t    total;   // bytes
    double      t_start; // seconds (graft_now)
    bool        enabled; // only when stderr is a terminal
    _Atomic uint64_t done;
};
double graft_now(void); // monotonic seconds
void   graft_progress_init(struct graft_progress *p, const char *label, uint64_t total_bytes);
void   graft_progress_add(struct graft_progress *p, uint64_t bytes); // thread-safe
void   graft_progress_draw(void *p);   // prints "\rlabel  1.2 GB / 4.0 GB  850 MB/s  ETA 3s" if enabled
void   graft_progress_finish(struct graft_progress *p);

#ifdef __cplusplus
}
#endif
#endif
