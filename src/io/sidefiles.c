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

int graft_writer_copy_side_files(struct graft_writer *w, const struct graft_model *m, const char *torch_dtype,
                                 struct graft_err *err) {
    if (!graft_model_is_dir(m)) return GRAFT_OK;
    int rc;
    const char *cfg = graft_model_config_json(m);
    if (cfg) {
        json_error_t jerr;
        json_t *j = json_loads(cfg, 0, &jerr);
        if (!j) return graft_err_set(err, GRAFT_E_NOMEM, graft_model_dir(m), NULL, 0, "cannot re-read config.json");
        if (torch_dtype) {
            json_object_set_new(j, "torch_dtype", json_string(torch_dtype));
            if (json_object_get(j, "dtype")) json_object_set_new(j, "dtype", json_string(torch_dtype));
        }
        struct graft__buf b;
        graft__buf_init(&b, GRAFT_CONFIG_MAX_BYTES * 4);
        graft__json_dump_pretty(&b, j);
        json_decref(j);
        rc = b.failed ? graft_err_set(err, GRAFT_E_NOMEM, graft_model_dir(m), NULL, 0, "out of memory")
                      : graft_writer_add_file(w, "config.json", b.data, b.len, err);
        graft__buf_free(&b);
        if (rc) return rc;
    }
    return graft_writer_copy_tokenizer(w, m, err);
}

int graft_writer_copy_tokenizer(struct graft_writer *w, const struct graft_model *m, struct graft_err *err) {
    if (!graft_model_is_dir(m)) return GRAFT_OK;
    for (size_t i = 0; i < sizeof side_files / sizeof side_files[0]; i++) {
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
