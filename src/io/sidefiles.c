// Files that travel with the weights: config.json (dtype updated), tokenizer and generation files.
#include <string.h>
#include <sys/stat.h>
#include "graft/convert.h"
#include "io-impl.h"

// What transformers, tokenizers and chat front ends read besides the weights.
static const char *const side_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt", "spiece.model",
    "generation_config.json", "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
    "video_preprocessor_config.json",
};

const char *graft_dtype_torch_name(enum graft_dtype t) {
    switch (t) {
    case GRAFT_DTYPE_F16: return "float16";
    case GRAFT_DTYPE_BF16: return "bfloat16";
    case GRAFT_DTYPE_F32: return "float32";
    case GRAFT_DTYPE_F64: return "float64";
    default: return NULL;
    }
}

// The integer at dotted path `key` ("text_config.num_hidden_layers") of j: its parent and last key.
static json_t *int_at(json_t *j, const char *key, const char **last) {
    const char *dot;
    while (j && (dot = strchr(key, '.'))) {
        char part[64];
        size_t n = (size_t)(dot - key);
        if (n >= sizeof part) return NULL;
        memcpy(part, key, n), part[n] = 0;
        j = json_object_get(j, part);
        key = dot + 1;
    }
    *last = key;
    return json_is_object(j) && json_is_integer(json_object_get(j, key)) ? j : NULL;
}

int graft__writer_add_config(struct graft_writer *w, const char *config_json, const char *torch_dtype,
                             const struct graft__layer_count *counts, size_t n_counts, long vocab_size, bool untie, struct graft_err *err) {
    json_t *j = json_loads(config_json, 0, NULL);
    if (!j) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "cannot re-read config.json");
    if (torch_dtype) { // transformers v5 writes "dtype"; keep both in step when present (a VLM's text_config too)
        json_object_set_new(j, "torch_dtype", json_string(torch_dtype));
        if (json_object_get(j, "dtype")) json_object_set_new(j, "dtype", json_string(torch_dtype));
        json_t *tc = json_object_get(j, "text_config");
        for (int k = 0; k < 2 && json_is_object(tc); k++)
            if (json_is_string(json_object_get(tc, k ? "dtype" : "torch_dtype"))) json_object_set_new(tc, k ? "dtype" : "torch_dtype", json_string(torch_dtype));
    }
    for (size_t c = 0; c < n_counts; c++)
        for (const char *const *k = counts[c].keys; *k; k++) {
            const char *last;
            json_t *o = int_at(j, *k, &last);
            if (o) json_object_set_new(o, last, json_integer(counts[c].value));
        }
    if (vocab_size >= 0) {
        json_t *tc = json_object_get(j, "text_config");
        if (!json_object_get(j, "vocab_size") && json_is_integer(json_object_get(tc, "vocab_size")))
            json_object_set_new(tc, "vocab_size", json_integer(vocab_size));
        else
            json_object_set_new(j, "vocab_size", json_integer(vocab_size));
    }
    for (int k = 0; untie && k < 2; k++) { // the top level and a multimodal model's text_config
        json_t *o = k ? json_object_get(j, "text_config") : j;
        if (json_is_true(json_object_get(o, "tie_word_embeddings"))) json_object_set_new(o, "tie_word_embeddings", json_false());
    }
    struct graft__buf b;
    graft__buf_init(&b, GRAFT_CONFIG_MAX_BYTES * 4);
    graft__json_dump_pretty(&b, j);
    json_decref(j);
    int rc = b.failed ? graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory")
                      : graft_writer_add_file(w, "config.json", b.data, b.len, err);
    graft__buf_free(&b);
    return rc;
}

int graft_writer_copy_side_files(struct graft_writer *w, const struct graft_model *m, const char *torch_dtype,
                                 struct graft_err *err) {
    if (!graft_model_is_dir(m)) return GRAFT_OK;
    const char *cfg = graft_model_config_json(m);
    int rc = cfg ? graft__writer_add_config(w, cfg, torch_dtype, NULL, 0, -1, false, err) : GRAFT_OK;
    return rc ? rc : graft_writer_copy_tokenizer(w, m, err);
}

int graft_writer_copy_tokenizer(struct graft_writer *w, const struct graft_model *m, struct graft_err *err) {
    return graft__writer_copy_tokenizer_except(w, m, NULL, err);
}

int graft__writer_copy_tokenizer_except(struct graft_writer *w, const struct graft_model *m, const char *const *skip,
                                        struct graft_err *err) {
    if (!graft_model_is_dir(m)) return GRAFT_OK;
    for (size_t i = 0; i < sizeof side_files / sizeof side_files[0]; i++) {
        bool skipped = false;
        for (size_t k = 0; skip && skip[k] && !skipped; k++) skipped = !strcmp(skip[k], side_files[i]);
        if (skipped) continue;
        char *p = graft__asprintf("%s/%s", graft_model_dir(m), side_files[i]);
        if (!p) return graft_err_set(err, GRAFT_E_NOMEM, graft_model_dir(m), NULL, 0, "out of memory");
        struct stat sb;
        int rc = GRAFT_OK;
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
            char *data;
            size_t len;
            rc = graft__read_small_file(p, 1u << 30, &data, &len, err);
            if (!rc) rc = graft_writer_add_file(w, side_files[i], data, len, err);
            graft__free(data);
        }
        graft__free(p);
        if (rc) return rc;
    }
    return GRAFT_OK;
}
