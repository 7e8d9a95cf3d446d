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

size_t graft__ops_next_window(const int32_t *ids, size_t n_ids, int32_t bos, size_t ctx, size_t *at, int32_t *win) {
    size_t body = bos >= 0 ? ctx - 1 : ctx, w0 = *at;
    if (w0 >= n_ids) return 0;
    size_t n = n_ids - w0 < body ? n_ids - w0 : body, T = n + (bos >= 0);
    if (T < 2) return 0;
    if (bos >= 0) win[0] = bos;
    memcpy(win + (bos >= 0), ids + w0, n * sizeof *win);
    *at = w0 + body;
    return T;
}

bool graft__ops_slice_shape(const struct graft__slice *s, uint64_t ne[2]) {
    const struct graft_tensor_info *t = s->src->info;
    unsigned bits = graft_dtype_traits(t->dtype)->bits;
    if (bits % 8 || (s->scale != 1.0 && !graft_dtype_traits(t->dtype)->is_float) || t->n_dims < 1 || t->n_dims > 2 || (t->n_dims == 1 && s->cols)) return false;
    ne[0] = s->rows ? s->n_rows : t->ne[0];
    ne[1] = t->n_dims == 1 ? 1 : s->cols ? s->n_cols : t->ne[1];
    return true;
}

int graft__ops_write_slice(struct graft_writer *w, long id, const struct graft_model *m, const struct graft__slice *s, size_t chunk,
                           unsigned flags, struct graft_err *err) {
    const struct graft_tensor_info *t = s->src->info;
    uint64_t ne[2];
    if (!graft__ops_slice_shape(s, ne)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, t->name, t->name_len, "cannot slice a %s tensor of %d dimensions",
                                                             graft_dtype_traits(t->dtype)->name, t->n_dims);
    size_t es = graft_dtype_traits(t->dtype)->bits / 8, C = t->n_dims == 1 ? 1 : (size_t)t->ne[1], oc = (size_t)ne[1], orow = oc * es;
    size_t per = chunk / orow ? chunk / orow : 1;
    if (per > ne[0]) per = (size_t)ne[0];
    bool scaled = s->scale != 1.0;
    uint8_t *buf = graft__malloc(per * orow + 8);
    float *f = scaled ? graft__malloc(per * oc * sizeof *f + 8) : NULL;
    void *enc = scaled ? graft__malloc(per * oc * 8 + 8) : NULL;
    int rc = buf && (!scaled || (f && enc)) ? GRAFT_OK : graft_err_set(err, GRAFT_E_NOMEM, NULL, t->name, t->name_len, "out of memory");
    const uint8_t *src = graft_model_data(m, s->src);
    for (size_t r0 = 0; !rc && r0 < ne[0]; r0 += per) {
        size_t n = ne[0] - r0 < per ? (size_t)ne[0] - r0 : per;
        for (size_t i = 0; i < n; i++) {
            const uint8_t *row = src + (size_t)(s->rows ? s->rows[r0 + i] : r0 + i) * C * es;
            uint8_t *o = buf + i * orow;
            if (!s->cols) memcpy(o, row, orow);
            else
                for (size_t j = 0; j < oc; j++) memcpy(o + j * es, row + (size_t)s->cols[j] * es, es);
        }
        const void *out = buf;
        if (scaled) {
            graft_row_to_f32(t->dtype, buf, f, n * oc);
            for (size_t i = 0; i < n * oc; i++) f[i] = (float)(f[i] * s->scale);
            rc = graft__ops_encode("the rescaled slice", t->name, t->name_len, t->dtype, f, enc, n * oc, m, s->src, flags, err);
            out = enc;
        }
        if (!rc) rc = graft_writer_write(w, id, (uint64_t)r0 * orow, out, n * orow, err);
    }
    graft__free(buf), graft__free(f), graft__free(enc);
    return rc;
}

void graft__ops_fill_config_defaults(json_t *root) {
    // A key the source config leaves out means its class's default; under another model_type it would
    // mean that class's (Mixtral: rope_theta 1e6, rms_norm_eps 1e-5, 8 KV heads), so the source's are
    // written out, as MergeKit's Config(**base.to_dict()) does. transformers 4.4x defaults:
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    if (!mt) return;
    bool llama = !strcmp(mt, "llama"), mistral = !strcmp(mt, "mistral"), qwen2 = !strcmp(mt, "qwen2");
    if (!llama && !mistral && !qwen2) return;
    json_t *heads = json_object_get(root, "num_attention_heads");
    struct { const char *key; json_t *val; } d[] = {
        {"rope_theta", json_real(10000.0)},
        {"rms_norm_eps", json_real(1e-6)},
        {"num_key_value_heads", llama ? json_incref(heads) : json_integer(mistral ? 8 : 32)},
        {"max_position_embeddings", json_integer(llama ? 2048 : mistral ? 131072 : 32768)},
        {"tie_word_embeddings", json_false()},
        {"hidden_act", json_string("silu")},
        {"sliding_window", mistral ? json_integer(4096) : NULL}, // (Qwen2's default window is off: use_sliding_window false)
    };
    for (size_t i = 0; i < sizeof d / sizeof *d; i++) {
        bool in_rp = !strcmp(d[i].key, "rope_theta") && json_is_object(json_object_get(root, "rope_parameters")); // (transformers 5 keeps θ there)
        if (d[i].val && !in_rp && !json_object_get(root, d[i].key)) json_object_set(root, d[i].key, d[i].val);
        json_decref(d[i].val);
    }
}

int graft__ops_add_mixtral_config(struct graft_writer *w, json_t *root, int experts, int per_token, struct graft_err *err) {
    graft__ops_fill_config_defaults(root);
    // Mistral's sliding window carries over (Mixtral honours it); a Llama model has none
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    bool keep_window = mt && !strcmp(mt, "mistral") && json_object_get(root, "sliding_window");
    json_object_set_new(root, "architectures", json_pack("[s]", "MixtralForCausalLM"));
    json_object_set_new(root, "model_type", json_string("mixtral"));
    json_object_set_new(root, "num_local_experts", json_integer(experts));
    json_object_set_new(root, "num_experts_per_tok", json_integer(per_token));
    if (!keep_window) json_object_set_new(root, "sliding_window", json_null());
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

int graft__ops_layer_keys_check(const json_t *c, int L, const char *path, const char *what, struct graft_err *err) {
    const char *arch = json_string_value(json_array_get(json_object_get(c, "architectures"), 0));
    json_t *types = json_object_get(c, "layer_types");
    if (arch && (!strncmp(arch, "Gemma2", 6) || !strncmp(arch, "Gemma3", 6)) && !json_is_array(types))
        return graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "%s places sliding-window layers by position and config.json has no layer_types list "
                                                                 "to keep them: not %s", arch, what);
    if (json_is_true(json_object_get(c, "use_sliding_window")) && json_object_get(c, "max_window_layers") && !json_is_array(types))
        return graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "sliding windows chosen by max_window_layers: not %s", what);
    static const char *const positional[] = {"mlp_only_layers", "no_rope_layers", "moe_layers", "block_configs", "first_k_dense_replace", "decoder_sparse_step",
                                             "attn_layer_period", "attn_layer_offset", "interleave_moe_layer_step", "full_attention_interval",
                                             "num_query_heads", "num_kv_heads", "ffn_multipliers", "cross_attention_layers", "global_attn_every_n_layers",
                                             "sliding_window_pattern"};
    for (size_t k = 0; k < sizeof positional / sizeof positional[0]; k++)
        if (json_object_get(c, positional[k]) && !json_is_null(json_object_get(c, positional[k])) &&
            !(json_is_array(types) && !strcmp(positional[k], "sliding_window_pattern"))) // (layer_types, when there, is what transformers reads)
            return graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "config.json: %s describes layers by position; graft does not rewrite it: not %s",
                                 positional[k], what);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)c, key, val) { // any other per-layer list would go stale
        size_t kl = strlen(key);
        bool is_id = (kl > 3 && !strcmp(key + kl - 3, "_id")) || (kl > 4 && !strcmp(key + kl - 4, "_ids")); // token ids, not layers
        if (json_is_array(val) && json_array_size(val) == (size_t)L && L > 1 && strcmp(key, "layer_types") && strcmp(key, "architectures") && !is_id)
            return graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "config.json: %s has one entry per layer; graft only rewrites layer_types: not %s", key, what);
    }
    if (json_is_array(types) && json_array_size(types) != (size_t)L)
        return graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "config.json: layer_types has %zu entries for %d layers", json_array_size(types), L);
    return GRAFT_OK;
}
