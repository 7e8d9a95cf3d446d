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

int graft__vocab_fits(const struct graft_model *m, long rows, bool config, struct graft_err *err) {
    static const char *const embeds[] = {"model.embed_tokens.weight", "transformer.wte.weight", "gpt_neox.embed_in.weight", "model.embed_in.weight"};
    const struct graft_model_tensor *e = NULL;
    for (size_t k = 0; k < sizeof embeds / sizeof *embeds && !e; k++) e = graft_model_find(m, embeds[k], strlen(embeds[k]));
    if (rows < 0) {
        if (!e || e->info->n_dims != 2) return GRAFT_OK;
        rows = (long)e->info->ne[0];
    }
    const char *what = e ? e->info->name : "the embedding";
    json_t *c = graft_model_config_json(m) ? json_loads(graft_model_config_json(m), 0, NULL) : NULL;
    json_t *vs = json_object_get(c, "vocab_size"); // top level only: a VLM's text vocab_size may leave out image tokens
    long cv = json_is_integer(vs) ? (long)json_integer_value(vs) : -1;
    json_decref(c);
    if (config && e && cv > 0 && cv != rows)
        return graft_err_set(err, GRAFT_E_FORMAT, graft_model_dir(m), NULL, 0, "config.json says vocab_size %ld but %s has %ld rows", cv, what, rows);
    if (!graft_model_is_dir(m)) return GRAFT_OK;
    struct graft__vocab *v = NULL;
    struct graft_err e2;
    graft_err_clear(&e2);
    if (graft__vocab_load(m, &v, &e2)) return GRAFT_OK; // no (readable) tokenizer.json: nothing to compare
    uint64_t n = v->n_ids;
    graft__vocab_free(v);
    if (n > (uint64_t)rows)
        return graft_err_set(err, GRAFT_E_FORMAT, graft_model_dir(m), NULL, 0, "tokenizer.json has token ids up to %llu but %s has %ld rows: "
                             "those tokens have no embedding", (unsigned long long)(n - 1), what, rows);
    return GRAFT_OK;
}
