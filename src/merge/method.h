// Merge methods behind one small interface. A method is a table entry: name, parameters with
// defaults, what it needs (base model, model counts, whole rows), and kernels:
//
//   stat(pass)    — optional statistic passes over chunks: per-chunk partial sums (combined in chunk
//                   order, so float results never depend on threads) and per-thread integer
//                   accumulators (histograms: integer sums commute);
//   combine(pass) — on one thread, turns partials into per-tensor state;
//   apply         — computes one output chunk from the input chunks and the state.
//
// Kernels see float32 copies of each input chunk (inputs converted through the dtype table); they
// never allocate. Adding a method is one file (m_<name>.c) and one line in registry.c.
#ifndef GRAFT_MERGE_METHOD_H
#define GRAFT_MERGE_METHOD_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "graft/dtype.h"
#include "graft/status.h"

#define GRAFT_MAX_INPUTS 64
#define GRAFT_MAX_MPARAMS 8

enum graft_base_need {
    GRAFT_BASE_IGNORED,  // base_model (if given) is just another input (linear, karcher)
    GRAFT_BASE_OPTIONAL, // used when given (nuslerp, multislerp)
    GRAFT_BASE_REQUIRED, // task-vector methods, slerp, …
};

struct graft_mparam {
    const char *name;
    bool        per_model; // resolved per input model, else once per tensor
    bool        required;  // no default: the config must give it (not required for the base model)
    double      def;       // default (booleans as 0/1)
};

// One chunk of one output tensor, as a kernel sees it.
struct graft_chunk {
    size_t              idx;      // chunk index within the tensor
    uint64_t            e0, n;    // first element, element count
    const float *const *in;       // in[i][0..n): input i (f32), i < mt->n_in
    float              *tmp;      // kernel scratch: (n_in + 2) × chunk floats
};

struct graft_mt; // a merge of one output tensor (see engine.h)
struct graft_writer;

enum { GRAFT_STATS_SAME = 1, GRAFT_STATS_GRAM = 2 };

struct graft_method {
    const char *name;
    const char *pretty;                     // for the model card
    enum graft_base_need base;
    int         min_models, max_models;     // non-base inputs allowed (max -1 = any)
    const struct graft_mparam *params;
    int         n_params;
    bool        rows;                       // chunks must hold whole rows (last dimension)
    // Per-model statistics file named by this per-model parameter (a path, e.g. "gram", "fisher"), or
    // NULL. Every input other than a required/optional base needs one; each tensor's statistics are
    // found by the input tensor's name: GRAFT_STATS_SAME — a tensor of the same shape (Fisher);
    // GRAFT_STATS_GRAM — for 2-D weights [out × in], an [in × in] Gram matrix (other tensors have none).
    // A tensor with statistics in some models but not all, or of the wrong shape, is a config error.
    const char *stats;
    int         stats_kind;
    bool        random;                     // uses the counter-based generator (--seed)
    // Its combine is long single-threaded work (SVDs): the engine merges --threads whole tensors side by
    // side, largest first, each with single-threaded chunk passes and BLAS (the bits do not change;
    // memory: that many tensors' state at once) instead of one tensor at a time on every thread.
    bool        heavy_combine;
    // Build per-tensor state before anything else runs for a tensor (optional).
    int    (*init)(struct graft_mt *mt, struct graft_err *err);
    // Number of statistic passes for this tensor (0 when NULL); called after init and again after each
    // pass's combine (a combine may add passes).
    int    (*n_passes)(const struct graft_mt *mt);
    // Does `pass` need chunk `chunk`? (optional; a sampling pass skips most chunks, which are then
    // neither loaded nor given to stat)
    bool   (*wants_chunk)(const struct graft_mt *mt, int pass, size_t chunk);
    // Doubles of per-chunk partial results in `pass`, and bytes of per-thread accumulator.
    size_t (*partial_len)(const struct graft_mt *mt, int pass);
    size_t (*acc_bytes)(const struct graft_mt *mt, int pass);
    void   (*stat)(const struct graft_mt *mt, int pass, const struct graft_chunk *c, double *partial, void *acc);
    // Optional stat on the stored inputs (raw and c as for apply_raw); returns false when it does not
    // handle this chunk (then the inputs are staged and stat runs). Must give exactly stat's result.
    bool   (*stat_raw)(const struct graft_mt *mt, int pass, const struct graft_chunk *c, const void *const *raw,
                       const enum graft_dtype *dt, double *partial, void *acc);
    // partials: n_chunks × partial_len doubles in chunk order, zeroed; accs: the accumulators of the
    // n_accs threads that ran a chunk in this pass (each zeroed before its first chunk; idle threads'
    // are left out, so n_accs may be 0). combine may overwrite them: they are not kept.
    int    (*combine)(struct graft_mt *mt, int pass, const double *partials, void *const *accs, int n_accs,
                      struct graft_err *err);
    void   (*apply)(const struct graft_mt *mt, const struct graft_chunk *c, float *out);
    // Optional fast path on the stored inputs (raw[i] points at element c->e0 of input i, stored as
    // dt[i]; c->in is NULL, c->tmp is the usual scratch), skipping the f32 staging copies; returns
    // false when it does not handle this chunk (then apply runs). Must give exactly apply's result.
    bool   (*apply_raw)(const struct graft_mt *mt, const struct graft_chunk *c, const void *const *raw, const enum graft_dtype *dt,
                        float *out);
    // Check the resolved parameters of a tensor before anything runs (ranges, counts); optional.
    int    (*validate)(const struct graft_mt *mt, struct graft_err *err);
    void   (*free_state)(struct graft_mt *mt); // optional
    // Methods that need passes over the whole model between tensors (opcm) replace the per-tensor run:
    // given the plan (struct plan, src/merge/plan.h) and the laid-out writer, write every output tensor
    // (or return 1 without writing anything to have the tensors merged one by one as usual).
    int    (*whole)(void *plan, struct graft_writer *w, const char *out_dir, struct graft_err *err);
};

const struct graft_method *graft_method_find(const char *name);
// Comma-separated list of all method names (for error messages).
const char *graft_method_names(void);
#endif
