// Fuzz target: the GGUF reader (src/io/gguf.c) on arbitrary bytes. A file that opens must allow every
// accessor: typed reads of each key, every string-array element, and decoding of every tensor whose
// type graft decodes (bounded in size) — all inside the buffer; and the Hugging Face views built from
// the metadata (config.json, tokenizer.json rebuilt from tokenizer.ggml.*), which must fail cleanly or
// give a tokenizer that loads.
#include <stdint.h>
#include <stdlib.h>
#include "graft/gguf.h"
#include "graft/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct graft_gguf *g;
    struct graft_err err = {0};
    if (graft_gguf_open_mem(data, size, "fuzz.gguf", &g, &err)) return 0;
    for (size_t i = 0; i < graft_gguf_n_kv(g); i++) {
        const struct graft_gguf_kv *kv = graft_gguf_kv(g, i);
        uint64_t u;
        double f;
        const char *s;
        size_t n;
        graft_gguf_get_u64(g, kv->key, &u), graft_gguf_get_f64(g, kv->key, &f), graft_gguf_get_str(g, kv->key, &s, &n);
        for (uint64_t e = 0; e < kv->n && e < 64; e++) graft_gguf_arr_str(kv, e, &s, &n);
    }
    for (size_t i = 0; i < graft_gguf_n_tensors(g); i++) {
        const struct graft_gguf_tensor *t = graft_gguf_tensor(g, i);
        if (t->n_elem > (1u << 20)) continue;
        float *out = malloc((size_t)t->n_elem * sizeof *out + 4);
        if (out) graft_ggml_to_f32(t->type, graft_gguf_data(g, t), out, t->n_elem);
        free(out);
    }
    char *cfg = NULL;
    if (!graft_gguf_hf_config(g, &cfg, NULL, &err)) free(cfg);
    graft_err_clear(&err);
    struct graft_tokenizer *t = NULL;
    if (!graft_tokenizer_load_gguf(g, "fuzz.gguf", &t, &err)) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (!graft_tokenizer_encode(t, "ab a\nb", 6, &ids, &n, &err)) free(ids);
        graft_tokenizer_free(t);
    }
    graft_gguf_close(g);
    return 0;
}
