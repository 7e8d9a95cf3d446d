// The merge of one output tensor, as methods see it (internal).
#ifndef GRAFT_MERGE_ENGINE_H
#define GRAFT_MERGE_ENGINE_H
#include "method.h"
#include "../core/impl.h"

struct graft_mt {
    const struct graft_method *m;
    const char *name;         // output tensor name
    int         n_in;         // inputs present for this tensor
    int         base;         // index of the base input, or -1
    uint64_t    numel;
    uint64_t    row_len;      // last dimension (numel for 1-D and scalars)
    uint64_t    dim0;         // first dimension (1 for scalars)
    int         n_dims;
    uint64_t    chunk;        // elements per chunk (a multiple of row_len when m->rows)
    size_t      n_chunks;
    bool        is_embed;
    double      pm[GRAFT_MAX_INPUTS][GRAFT_MAX_MPARAMS]; // per-model parameters (by method param index)
    double      gp[GRAFT_MAX_MPARAMS];                   // global parameters
    uint64_t    key[GRAFT_MAX_INPUTS];                   // RNG key per input: (seed, model, tensor name)
    int         model_id[GRAFT_MAX_INPUTS];              // config model index of each input
    void       *state;        // method state, zeroed before the first pass, freed after apply
    // statistics (methods with m->stats): input i's tensor in its statistics file (NULL when this tensor
    // has none), its dtype, and ‖all of that file's values‖² (computed once per file)
    const uint8_t   *stat[GRAFT_MAX_INPUTS];
    enum graft_dtype stat_dt[GRAFT_MAX_INPUTS];
    double           stat_norm2[GRAFT_MAX_INPUTS];
    double           stat_scale[GRAFT_MAX_INPUTS]; // multiply values by this: 1/N for graft's summed Gram files (graft_tokens = N), else 1
};

// graft_merge_options.reuse (reuse.c): a tensor's recipe hash; copy it from the previous merge when
// the hash matches (true: handled, *rc its status); after a merge, keep its writer and hashes.
struct plan;
struct otensor;
struct graft_merge_reuse;
struct graft_writer;
void graft__reuse_key(const struct plan *p, struct otensor *o);
bool graft__reuse_copy(struct graft_merge_reuse *r, struct graft_writer *w, const struct otensor *o, struct graft_err *err, int *rc);
int  graft__reuse_update(struct graft_merge_reuse *r, struct graft_writer *w, const struct plan *p, struct graft_err *err);
struct graft_writer *graft__reuse_writer(const struct graft_merge_reuse *r);

// Parameter index by name in the method's table (a programming error if absent).
int graft_mparam_index(const struct graft_method *m, const char *name);
#define GP(mt, name) ((mt)->gp[graft_mparam_index((mt)->m, name)])
#define PM(mt, i, name) ((mt)->pm[i][graft_mparam_index((mt)->m, name)])

// ---- exact top-k by magnitude without sorting (select.c) -------------------------------------------
// For each of up to 2·GRAFT_MAX_INPUTS streams of magnitudes (non-negative floats, which order like
// their f32 bit patterns), find the k largest, ties broken by lower element index first.
// Two statistic passes in the usual case:
//   pass 0 — a 65,536-bucket histogram of the high 16 bits over a fixed sample of chunks (every chunk
//            of small tensors, making it exact) brackets the k-th value between two buckets;
//   pass 1 — every chunk counts its elements above the bracket and appends those inside it (value,
//            chunk) to a shared pool; the exact k-th value is then selected within the pool, and the
//            pool's per-chunk counts of elements equal to it give each chunk its share of the ties.
// Pass 1 counts every bracket bucket exactly but pools only a narrower store window around the
// sample's estimate; when the k-th value's bucket is outside it (or the pool overflowed), pass 2
// repeats pass 1 on that one bucket. When the k-th value is outside the bracket (or its bucket is too
// big to pool), three exact passes follow (2: full high-bits histogram, 3: low-bits histogram inside
// the chosen bucket, 4: per-chunk tie counts). Either way the result is the same exact selection; only
// the pass count differs.
// Memory: 65,536 counters per stream and thread, and a pool of (value, chunk) pairs sized from the
// sample (a few % of the tensor at most; capped, beyond which the exact passes run instead).
struct graft_select_pool;
struct graft_select {
    uint64_t  k;          // how many to keep
    uint64_t  n;          // elements in the stream (the tensor's)
    int       passes;     // statistic passes this stream needs (2, or 5 after a fallback); 0 = none
    uint32_t  thr;        // bit pattern of the k-th largest magnitude (valid when k > 0)
    uint32_t  lo_b, hi_b; // pass 1 bracket (high-16-bit buckets, inclusive); hi_b also the fallback bucket
    uint32_t  st_lo, st_hi; // pass 1 store window (inside the bracket): entries the pool keeps
    bool      collect;    // pass 2 repeats pass 1 on the one bucket that holds the k-th value
    uint64_t  above_hi;   // fallback: elements in buckets above hi_b
    uint64_t  above;      // elements strictly greater than thr
    uint64_t  ties_kept;  // elements equal to thr that are kept (the first ones in index order)
    uint64_t *tie_prefix; // per chunk: equal-to-thr elements before this chunk (n_chunks + 1)
    struct graft_select_pool *pool;
};
// Set k and n of a stream before pass 0 (k ≥ n keeps everything, k = 0 nothing; neither needs passes).
void   graft_select_init(struct graft_select *sel, uint64_t k, uint64_t n);
int    graft_select_passes(const struct graft_select *sel, int n_streams); // most passes any stream needs
bool   graft_select_wants_chunk(int pass, size_t chunk, size_t n_chunks);  // pass 0 samples chunks
size_t graft_select_acc_bytes(int pass, int n_streams);  // per-thread accumulator size
size_t graft_select_partial_len(int pass, int n_streams);
// Accumulate stream s of chunk `chunk` (mag[0..n) are the magnitudes of its elements).
void graft_select_stat(struct graft_select *sel, int pass, int s, size_t chunk, const float *mag, uint64_t n,
                       double *partial, void *acc, int n_streams);
// The same from bf16 inputs, the magnitudes being |x − b| (scratch: n floats, used when not fused).
void graft_select_stat_bf16(struct graft_select *sel, int pass, int s, size_t chunk, const uint16_t *x, const uint16_t *b, uint64_t n,
                            double *partial, void *acc, float *scratch);
int  graft_select_combine(struct graft_select *sel, int n_streams, int pass, const double *partials,
                          size_t n_chunks, size_t partial_len, void *const *accs, int n_accs, struct graft_err *err);
// How chunk c decides (after the passes): 1 keep magnitudes ≥ *thr, 0 keep those > *thr, −1 walk
// the ties element by element (graft_select_mask does it) — lets kernels fuse the test.
int  graft_select_rule(const struct graft_select *sel, size_t chunk_idx, uint32_t *thr);
// Mark kept elements of stream sel (chunk c): keep[j] = 1 or 0.
void graft_select_mask(const struct graft_select *sel, size_t chunk_idx, const float *mag, uint64_t n, float *keep);
void graft_select_free(struct graft_select *sel, int n_streams);
#endif
