// Shared pieces of the checkpoint operations (see ops-impl.h).
#include <stdio.h>
#include <string.h>
#include "graft/dtype.h"
#include "ops-impl.h"
#include "../io/io-impl.h"

bool graft__ops_single_file(const char *target) {
    size_t tl = strlen(target);
    return tl > 12 && !strcmp(target + tl - 12, ".safetensors");
}

int graft__ops_writer_open(const struct graft_model *m, const char *target, uint64_t max_shard, unsigned flags, struct graft_writer **w,
                           struct graft_err *err) {
    return graft__ops_writer_open2(m, NULL, target, max_shard, flags, w, err);
}

int graft__ops_writer_open2(const struct graft_model *m, const struct graft_model *m2, const char *target, uint64_t max_shard, unsigned flags,
                            struct graft_writer **w, struct graft_err *err) {
    size_t n = (size_t)graft_model_n_shards(m) + (m2 ? (size_t)graft_model_n_shards(m2) : 0) + 2, np = 0;
    const char **protect = graft__calloc(n, sizeof *protect);
    if (!protect) return graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory");
    for (const struct graft_model *x = m; x; x = x == m ? m2 : NULL) {
        for (int i = 0; i < graft_model_n_shards(x); i++) protect[np++] = graft_st_path(graft_model_shard(x, i));
        if (graft_model_is_dir(x)) protect[np++] = graft_model_dir(x);
    }
    struct graft_writer_params wp = graft_writer_default_params();
    wp.max_shard_bytes = max_shard, wp.flags = flags | (graft__ops_single_file(target) ? GRAFT_WRITER_SINGLE_FILE : 0);
    wp.protect = protect, wp.n_protect = np;
    int rc = graft_writer_open(target, &wp, w, err);
    graft__free(protect);
    return rc;
}

float *graft__ops_load_f32(const struct graft_model *m, const struct graft_model_tensor *t) {
    float *f = graft__malloc((size_t)t->info->n_elem * sizeof *f + 4);
    if (!f) return NULL;
    graft_st_populate(graft_model_shard(m, t->shard), t->info->begin, t->info->n_bytes);
    graft_row_to_f32(t->info->dtype, graft_model_data(m, t), f, (size_t)t->info->n_elem);
    return f;
}

bool graft__ops_is_embedding_or_head(const char *name) {
    return strstr(name, "embed_tokens") || strstr(name, "lm_head") || strstr(name, "wte.") || strstr(name, "word_embeddings") ||
           strstr(name, "tok_embeddings") || strstr(name, "embed_in") || strstr(name, "embed_out");
}

int graft__ops_copy_tensor(struct graft_writer *w, long id, const struct graft_model *m, const struct graft_model_tensor *t,
                           struct graft_progress *progress, struct graft_err *err) {
    uint64_t nb = t->info->n_bytes;
    int rc = nb ? graft_writer_write(w, id, 0, graft_model_data(m, t), (size_t)nb, err) : GRAFT_OK;
    graft_progress_add(progress, nb);
    return rc;
}

int graft__ops_add_mixtral_config(struct graft_writer *w, json_t *root, int experts, int per_token, struct graft_err *err) {
    json_object_set_new(root, "architectures", json_pack("[s]", "MixtralForCausalLM"));
    json_object_set_new(root, "model_type", json_string("mixtral"));
    json_object_set_new(root, "num_local_experts", json_integer(experts));
    json_object_set_new(root, "num_experts_per_tok", json_integer(per_token));
    json_object_set_new(root, "sliding_window", json_null());
    json_object_del(root, "attention_bias"), json_object_del(root, "mlp_bias"); // head_dim stays: Mixtral honours it
    return graft__ops_add_json(w, "config.json", root, err);
}

int graft__ops_add_json(struct graft_writer *w, const char *name, const json_t *root, struct graft_err *err) {
    struct graft__buf b;
    graft__buf_init(&b, 64u << 20);
    graft__json_dump_pretty(&b, root);
    int rc = b.failed ? graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory") : graft_writer_add_file(w, name, b.data, b.len, err);
    graft__buf_free(&b);
    return rc;
}

int graft__ops_encode(const char *op, const char *tensor, size_t tlen, enum graft_dtype dt, const float *f, void *enc, size_t n,
                      const struct graft_model *m, const struct graft_model_tensor *src, unsigned flags, struct graft_err *err) {
    graft_row_from_f32(dt, f, enc, n);
    size_t first;
    uint64_t bad = graft_count_nonfinite(dt, enc, n, &first); // one pass over bytes just written, in cache
    if (!bad) return GRAFT_OK;
    uint64_t bad32 = graft_count_nonfinite(GRAFT_DTYPE_F32, f, n, NULL);
    uint64_t held = src ? graft_count_nonfinite(src->info->dtype, graft_model_data(m, src), (size_t)src->info->n_elem, NULL) : 0;
    return graft__nonfinite_rule(op, tensor, tlen, dt, bad, bad32, first, held, flags & GRAFT_WRITER_ALLOW_NONFINITE, err);
}
