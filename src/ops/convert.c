// Whole-model dtype conversion. Plan: one output tensor per input tensor, laid out before any data
// moves. Execute: fixed-size chunks (tensor, chunk) pulled by worker threads; each chunk is decoded,
// re-encoded into the thread's scratch buffer and written at its planned offset. Unchanged tensors
// are written straight from the input mapping. Consumed input pages are released, so resident memory
// stays at threads × chunk whatever the model size.
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include "graft/convert.h"
#include "chunks.h"

struct graft_convert_params graft_convert_default_params(void) {
    return (struct graft_convert_params){
        .dtype = GRAFT_DTYPE_F16, .n_threads = 1, .chunk_elems = 1u << 20, .copy_side_files = true,
    };
}

enum graft_dtype graft_convert_out_dtype(enum graft_dtype in, enum graft_dtype to) {
    const struct graft_dtype_traits *t = graft_dtype_traits(in);
    return t && t->is_float && to != GRAFT_DTYPE_COUNT ? to : in;
}

struct job {
    const struct graft_model *m;
    struct graft_writer      *w;
    const struct graft_convert_params *p;
    struct graft__chunks c;
    uint8_t **scratch;     // per thread: chunk × 8 bytes
    _Atomic uint64_t n_new;   // values finite in the input, NaN/±Inf in the output type
    _Atomic uint64_t first;   // the first of them: tensor index << 40 | element (UINT64_MAX: none)
};

static int convert_chunk(void *ctx, size_t item, int ith, struct graft_err *err) {
    struct job *j = ctx;
    if (j->p->cancel && __atomic_load_n(j->p->cancel, __ATOMIC_RELAXED)) return graft_err_set(err, GRAFT_E_CANCELLED, NULL, NULL, 0, "cancelled");
    uint64_t e0;
    size_t lo = graft__chunks_locate(&j->c, item, &e0);
    const struct graft_model_tensor *mt = graft_model_tensor(j->m, lo);
    const struct graft_tensor_info *t = mt->info;
    const struct graft_st *st = graft_model_shard(j->m, mt->shard);
    uint64_t ne = graft__chunks_len(&j->c, e0, t->n_elem);
    enum graft_dtype out = graft_convert_out_dtype(t->dtype, j->p->dtype);
    uint64_t in_off, in_len, out_off, out_len;
    graft_dtype_nbytes(t->dtype, e0, &in_off);
    graft_dtype_nbytes(t->dtype, ne, &in_len);
    graft_dtype_nbytes(out, e0, &out_off);
    graft_dtype_nbytes(out, ne, &out_len);
    if (!out_len) return GRAFT_OK;
    const uint8_t *src = graft_st_data(st, t) + in_off;
    int rc;
    if (out == t->dtype) {
        rc = graft_writer_write(j->w, (long)lo, out_off, src, (size_t)out_len, err);
    } else {
        if (!graft_row_convert(t->dtype, src, out, j->scratch[ith], (size_t)ne))
            return graft_err_set(err, GRAFT_E_INTERNAL, graft_st_path(st), t->name, t->name_len, "cannot convert %s to %s",
                                 graft_dtype_traits(t->dtype)->name, graft_dtype_traits(out)->name);
        // overflow in the conversion (float16 beyond ±65504, …): counted here, refused after the pass
        uint64_t bad = graft_count_nonfinite(out, j->scratch[ith], (size_t)ne, NULL);
        if (bad && (bad -= graft_count_nonfinite(t->dtype, src, (size_t)ne, NULL))) {
            atomic_fetch_add(&j->n_new, bad);
            uint64_t ies, oes, at = 0; // the first element that is finite in the input and not in the output
            graft_dtype_nbytes(t->dtype, 1, &ies), graft_dtype_nbytes(out, 1, &oes);
            while (at < ne && !(graft_count_nonfinite(out, j->scratch[ith] + at * oes, 1, NULL) && !graft_count_nonfinite(t->dtype, src + at * ies, 1, NULL)))
                at++;
            graft__atomic_min_u64(&j->first, (uint64_t)lo << 40 | (e0 + at));
        }
        rc = graft_writer_write(j->w, (long)lo, out_off, j->scratch[ith], (size_t)out_len, err);
    }
    graft_st_release(st, t->begin + in_off, in_len);
    graft_progress_add(j->p->progress, in_len);
    return rc;
}

int graft_convert(const struct graft_model *m, const char *target, const struct graft_convert_params *p,
                  struct graft_err *err) {
    if (p->dtype != GRAFT_DTYPE_COUNT && !graft_dtype_is_float_target(p->dtype))
        return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "cannot convert to %s (use f32, f16, bf16, f8_e4m3 or f8_e5m2)",
                             graft_dtype_traits(p->dtype) ? graft_dtype_traits(p->dtype)->cli_name : "?");
    size_t tl = strlen(target);
    bool single = tl > 12 && !strcmp(target + tl - 12, ".safetensors");
    // The output must not replace or contain any input file.
    size_t n_protect = (size_t)graft_model_n_shards(m) + 1;
    const char **protect = graft__calloc(n_protect, sizeof *protect);
    if (!protect) return graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory");
    for (int i = 0; i < graft_model_n_shards(m); i++) protect[i] = graft_st_path(graft_model_shard(m, i));
    protect[n_protect - 1] = graft_model_dir(m);

    struct graft_writer_params wp = graft_writer_default_params();
    wp.max_shard_bytes = p->max_shard_bytes;
    wp.flags           = p->writer_flags | (single ? GRAFT_WRITER_SINGLE_FILE : 0);
    wp.protect = protect, wp.n_protect = graft_model_is_dir(m) ? n_protect : n_protect - 1;
    struct graft_writer *w = NULL;
    struct job j = {.m = m, .p = p};
    size_t n_tensors = graft_model_n_tensors(m);
    int n_threads = p->n_threads > 0 ? p->n_threads : 1;
    int rc = graft_writer_open(target, &wp, &w, err);
    graft__free(protect);
    if (rc) return rc;
    j.w = w;
    j.scratch = graft__calloc((size_t)n_threads, sizeof *j.scratch);
    if (graft__chunks_init(&j.c, n_tensors, p->chunk_elems) || !j.scratch) { rc = graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory"); goto out; }

    for (size_t i = 0; i < n_tensors; i++) {
        const struct graft_tensor_info *t = graft_model_tensor(m, i)->info;
        long id = graft_writer_add_tensor(w, t->name, t->name_len, graft_convert_out_dtype(t->dtype, p->dtype), t->n_dims, t->ne, err);
        if (id < 0) { rc = (int)id; goto out; }
        graft__chunks_set(&j.c, i, t->n_elem);
    }
    if ((rc = graft_writer_layout(w, err))) goto out;
    for (int i = 0; i < n_threads; i++)
        if (!(j.scratch[i] = graft__malloc((size_t)j.c.chunk * 8))) {
            rc = graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory for %d × %llu-byte chunk buffers",
                               n_threads, (unsigned long long)j.c.chunk * 8);
            goto out;
        }
    atomic_store(&j.first, UINT64_MAX);
    rc = graft_pool_run(n_threads, graft__chunks_items(&j.c), convert_chunk, &j,
                        p->progress && p->progress->enabled ? graft_progress_draw : NULL, p->progress, err);
    if (rc) goto out;
    if (atomic_load(&j.n_new)) {
        uint64_t f = atomic_load(&j.first), n_new = atomic_load(&j.n_new);
        const struct graft_tensor_info *t = graft_model_tensor(m, (size_t)(f >> 40))->info;
        const char *dn = graft_dtype_traits(p->dtype)->cli_name;
        if (!p->allow_nonfinite) {
            rc = graft_err_set(err, GRAFT_E_NONFINITE, target, t->name, t->name_len,
                               "%llu finite values overflow %s and would become infinite or NaN (first: element %llu); convert to bf16 or f32, "
                               "or --allow-nonfinite to write them as PyTorch's tensor.to() does",
                               (unsigned long long)n_new, dn, (unsigned long long)(f & ((1ull << 40) - 1)));
            goto out;
        }
        fprintf(p->log ? p->log : stderr, "graft: warning: %llu finite values overflow %s and were written as infinite or NaN (first: tensor '%.*s', element %llu)\n",
                (unsigned long long)n_new, dn, (int)t->name_len, t->name, (unsigned long long)(f & ((1ull << 40) - 1)));
    }
    if (p->copy_side_files && !single && (rc = graft_writer_copy_side_files(w, m, p->dtype == GRAFT_DTYPE_COUNT ? NULL : graft_dtype_torch_name(p->dtype), err))) goto out;
    rc = graft_writer_commit(w, err);
out:
    if (j.scratch)
        for (int i = 0; i < n_threads; i++) graft__free(j.scratch[i]);
    graft__free(j.scratch);
    graft__chunks_free(&j.c);
    graft_writer_free(w);
    return rc;
}
