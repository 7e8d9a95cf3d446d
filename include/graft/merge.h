// graft — merging models from a MergeKit YAML configuration.
//
// graft_merge() reads the config, opens and validates every referenced model, plans every output
// tensor (inputs, method, resolved parameters, dtype, shard) before any computation, then streams
// each tensor through the method's kernels in fixed-size chunks on a worker pool and writes the HF
// folder atomically (shards, index, config.json, tokenizer files, README.md, mergekit_config.yml).
// Compute is float32 whatever `dtype:` says (see docs/merge.md); `dtype`/`out_dtype` choose the
// output precision. Results are bit-identical for any thread count; random methods depend only on
// --seed, the model and the tensor.
#ifndef GRAFT_MERGE_H
#define GRAFT_MERGE_H
#include <stdio.h>
#include "status.h"
#include "util.h"
#include "writer.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_merge_options {
    int       n_threads;         // ≥ 1
    uint64_t  seed;              // for dare_*, della*, (arcee_fusion is exact here and needs none)
    uint64_t  max_shard_bytes;   // 0 → 5e9
    uint64_t  chunk_elems;       // elements per work item (0 → 256 Ki)
    unsigned  writer_flags;      // GRAFT_WRITER_FORCE
    bool      dry_run;           // print the plan to plan_out, write nothing
    bool      copy_tokenizer;    // copy tokenizer/generation files from the donor (default true)
    bool      allow_crimes;      // allow models of different architectures
    bool      allow_nonfinite;   // write NaN / ±Inf the merge produced (with a warning) instead of failing
    bool      write_model_card;  // README.md + mergekit_config.yml (default true)
    FILE     *plan_out;          // where --dry-run prints (stdout if NULL)
    FILE     *log;               // warnings (stderr if NULL)
    struct graft_progress *progress;
    // The config's YAML text (config_path then only names it and anchors relative model paths), or
    // NULL to read config_path.
    const char *config_text;
    // When set, nothing is written to disk: the merged model stays in memory and the committed
    // GRAFT_WRITER_MEMORY writer is handed back here (read it with graft_writer_mem_*, free it).
    struct graft_writer **in_memory;
    // opcm: continue from this state (OUT.opcm-state.safetensors of an earlier merge), or NULL.
    const char *resume;
    // When not NULL: another thread may set *cancel to nonzero; the merge then stops before its next
    // chunk, writes nothing (the temporary folder is removed) and returns GRAFT_E_CANCELLED.
    const volatile int *cancel;
    // Several processes (MPI ranks, graft/dist.h) merge into one output, or NULL: every rank runs
    // graft_merge with the same config and options; each merges the tensors of its output shards
    // (shards go to ranks by bytes) and rank 0 writes the index and other files and renames. Any
    // rank's failure: no output, the lowest failing rank's error ("rank R: …") on every rank.
    const struct graft_dist *dist;
    // When set, models and statistics files (not base+adapter references) are taken from this cache and
    // stay open after the merge (graft evolve: one cache for every candidate).
    struct graft_model_cache *cache;
    // With in_memory: tensors carried from one merge to the next (graft evolve's candidates differ in a
    // few parameters). A tensor whose method, inputs, parameters, seeds and statistics are those of the
    // previous merge's tensor of the same name is copied from it instead of merged again. The writer
    // handed back through in_memory then belongs to `reuse` (valid until its next merge; do not free it).
    struct graft_merge_reuse *reuse;
    // A later output this merge feeds (graft merge to OUT.gguf: the file its temporary folder becomes),
    // checked against the inputs as the merge's own output is; NULL: none.
    const char *check_target;
};

struct graft_merge_reuse;
int  graft_merge_reuse_new(struct graft_merge_reuse **out, struct graft_err *err);
void graft_merge_reuse_free(struct graft_merge_reuse *r); // NULL-safe; frees the last merge's writer
// Tensors copied from an earlier merge, and tensors merged in all, since graft_merge_reuse_new.
void graft_merge_reuse_counts(const struct graft_merge_reuse *r, uint64_t *reused, uint64_t *total);

struct graft_merge_options graft_merge_default_options(void);
int graft_merge(const char *config_path, const char *out_dir, const struct graft_merge_options *o,
                struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
