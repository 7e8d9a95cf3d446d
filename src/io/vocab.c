// A model's vocabulary, read from its Hugging Face tokenizer.json: token → id for the model's regular
// vocabulary (BPE / WordPiece / WordLevel maps, Unigram lists) and its added tokens, plus the
// config.json vocab_size that bounds the rows actually used. This is what MergeKit's tokenizer merge
// needs (tokens are matched by their string), not a tokenizer.
#include <string.h>
#include "graft/model.h"
#include "io-impl.h"

#define TOKENIZER_MAX_BYTES (512u << 20)
#define MAX_TOKEN_ID (1L << 28)

void graft__vocab_free(struct graft__vocab *v) {
    if (!v) return;
    json_decref(v->root), json_decref(v->ids), json_decref(v->added);
    graft__free(v->path);
    graft__free(v);
}

static int vfail(struct graft__vocab *v, struct graft_err *err, const char *what) {
    return graft_err_set(err, GRAFT_E_FORMAT, v->path, NULL, 0, "%s", what);
}

static int put_id(struct graft__vocab *v, const char *tok, json_int_t id, struct graft_err *err) {
    if (id < 0 || id >= MAX_TOKEN_ID)
        return graft_err_set(err, GRAFT_E_FORMAT, v->path, NULL, 0, "token id %lld out of range [0, %ld)", (long long)id, MAX_TOKEN_ID);
    if (json_object_set_new(v->ids, tok, json_integer(id))) return graft_err_set(err, GRAFT_E_NOMEM, v->path, NULL, 0, "out of memory");
    if ((uint64_t)id + 1 > v->n_ids) v->n_ids = (uint64_t)id + 1;
    return GRAFT_OK;
}

long graft__config_vocab_size(const char *config_json) {
    json_t *c = config_json ? json_loads(config_json, 0, NULL) : NULL;
    json_t *vs = json_object_get(c, "vocab_size");
    if (!json_is_integer(vs)) vs = json_object_get(json_object_get(c, "text_config"), "vocab_size");
    long r = json_is_integer(vs) && json_integer_value(vs) > 0 ? (long)json_integer_value(vs) : -1;
    json_decref(c);
    return r;
}

int graft__vocab_load(const struct graft_model *m, struct graft__vocab **out, struct graft_err *err) {
    *out = NULL;
    struct graft__vocab *v = graft__calloc(1, sizeof *v);
    if (!v || !(v->path = graft__asprintf("%s/tokenizer.json", graft_model_dir(m))) || !(v->ids = json_object()) ||
        !(v->added = json_object())) {
        graft__vocab_free(v);
        return graft_err_set(err, GRAFT_E_NOMEM, graft_model_dir(m), NULL, 0, "out of memory");
    }
    int rc = graft__load_json_file(v->path, TOKENIZER_MAX_BYTES, &v->root, err);
    if (rc == GRAFT_E_NOTFOUND)
        rc = graft_err_set(err, GRAFT_E_CONFIG, v->path, NULL, 0,
                           "missing: a tokenizer merge needs each model's tokenizer.json (a fast Hugging Face tokenizer)");
    if (rc) goto fail;
    json_t *model = json_object_get(v->root, "model"), *vocab = json_object_get(model, "vocab");
    if (json_is_object(vocab)) { // BPE, WordPiece, WordLevel
        const char *tok;
        json_t *id;
        json_object_foreach(vocab, tok, id) {
            if (!json_is_integer(id)) { rc = vfail(v, err, "model.vocab: a token id is not an integer"); goto fail; }
            if ((rc = put_id(v, tok, json_integer_value(id), err))) goto fail;
        }
    } else if (json_is_array(vocab)) { // Unigram: [[piece, score], …], id = position
        for (size_t i = 0; i < json_array_size(vocab); i++) {
            const char *tok = json_string_value(json_array_get(json_array_get(vocab, i), 0));
            if (!tok) { rc = vfail(v, err, "model.vocab: a Unigram entry is not [piece, score]"); goto fail; }
            if ((rc = put_id(v, tok, (json_int_t)i, err))) goto fail;
        }
    } else {
        rc = vfail(v, err, "no model.vocab mapping or list (unsupported tokenizer model)");
        goto fail;
    }
    json_t *added = json_object_get(v->root, "added_tokens");
    if (added && !json_is_array(added)) { rc = vfail(v, err, "added_tokens is not a list"); goto fail; }
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *e = json_array_get(added, i);
        const char *tok = json_string_value(json_object_get(e, "content"));
        json_t *id = json_object_get(e, "id");
        if (!tok || !json_is_integer(id)) { rc = vfail(v, err, "added_tokens: an entry lacks 'content' or an integer 'id'"); goto fail; }
        if ((rc = put_id(v, tok, json_integer_value(id), err))) goto fail;
        if (json_object_set(v->added, tok, e)) { rc = graft_err_set(err, GRAFT_E_NOMEM, v->path, NULL, 0, "out of memory"); goto fail; }
    }
    v->config_vocab = graft__config_vocab_size(graft_model_config_json(m));
    *out = v;
    return GRAFT_OK;
fail:
    graft__vocab_free(v);
    return rc;
}
