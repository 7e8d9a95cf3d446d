// The merge of one output tensor, as methods see it (internal).
#ifndef GRAFT_MERGE_ENGINE_H
#define GRAFT_MERGE_ENGINE_H
#include "method.h"

// Hot loops are compiled twice, for AVX2 and for the baseline, and picked at load time by the CPU.
#if defined(__x86_64__) && !defined(__clang__)
#define GRAFT_KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define GRAFT_KERNEL
#endif

struct graft_mt {
    const struct graft_method *m;
    const char *name;         // output tensor name
    int         n_in;         // inputs present for this tensor
    int         base;         // index of the base input, or -1
    uint64_t    numel;
    uint64_t    row_len;      // last dimension (numel for 1-D and scalars)
    uint64_t    dim0;         // first dimension (1 for scalars)
    uint64_t    chunk;        // elements per chunk (a multiple of row_len when m->rows)
    size_t      n_chunks;
    bool        is_embed;
    double      pm[GRAFT_MAX_INPUTS][GRAFT_MAX_MPARAMS]; // per-model parameters (by method param index)
    double      gp[GRAFT_MAX_MPARAMS];                   // global parameters
    uint64_t    key[GRAFT_MAX_INPUTS];                   // RNG key per input: (seed, model, tensor name)
    int         model_id[GRAFT_MAX_INPUTS];              // config model index of each input
    void       *state;        // method state, zeroed before the first pass, freed after apply
};

// Parameter index by name in the method's table (a programming error if absent).
int graft_mparam_index(const struct graft_method *m, const char *name);
#define GP(mt, name) ((mt)->gp[graft_mparam_index((mt)->m, name)])
#define PM(mt, i, name) ((mt)->pm[i][graft_mparam_index((mt)->m, name)])

// ---- exact top-k by magnitude without sorting (select.c) -------------------------------------------
// For each of up to GRAFT_MAX_INPUTS streams of magnitudes (non-negative floats), find the k largest,
// ties broken by lower element index first. Three passes: a 65,536-bucket histogram of the high 16
// bits of the f32 pattern, one of the low 16 bits inside the chosen bucket (giving the exact k-th
// value), then per-chunk counts of elements equal to it (prefix sums give each chunk its share of the
// ties). O(numel) time, O(65,536) memory per stream and thread.
struct graft_select {
    uint64_t  k;          // how many to keep
    uint32_t  thr;        // bit pattern of the k-th largest magnitude (valid when k > 0)
    uint32_t  hi_bucket;  // after pass 0
    uint64_t  above_hi;   // elements in buckets above hi_bucket
    uint64_t  above;      // elements strictly greater than thr
    uint64_t  ties_kept;  // elements equal to thr that are kept (the first ones in index order)
    uint64_t *tie_prefix; // per chunk: equal-to-thr elements before this chunk (n_chunks + 1)
};
#define GRAFT_SELECT_PASSES 3
size_t graft_select_acc_bytes(int pass, int n_streams);  // per-thread accumulator size
size_t graft_select_partial_len(int pass, int n_streams);
// Accumulate stream s of a chunk (mag[0..n) are magnitudes of elements e0…).
void graft_select_stat(struct graft_select *sel, int pass, int s, const float *mag, uint64_t n,
                       double *partial, void *acc, int n_streams);
int  graft_select_combine(struct graft_select *sel, int n_streams, int pass, const double *partials,
                          size_t n_chunks, size_t partial_len, void *const *accs, int n_accs, struct graft_err *err);
// Mark kept elements of stream sel (chunk c): keep[j] = 1 or 0.
void graft_select_mask(const struct graft_select *sel, size_t chunk_idx, const float *mag, uint64_t n, float *keep);
void graft_select_free(struct graft_select *sel, int n_streams);
#endif
