// Fuzz target: tokenizer.json parsing and use. The input is split at the first NUL byte: before it,
// the tokenizer.json text; after it, text to encode. A tokenizer that loads must encode any valid
// UTF-8 text and decode its own ids without crashing; invalid files must be rejected cleanly.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "graft/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t jl = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : "Hello, world! 123 ü 🎉  \n";
    size_t tl = nul ? size - jl - 1 : strlen(text);
    struct graft_err err = {0};
    struct graft_tokenizer *t;
    if (graft_tokenizer_load_json((const char *)data, jl, "fuzz", &t, &err)) return 0;
    int32_t *ids;
    size_t n;
    if (!graft_tokenizer_encode(t, text, tl, &ids, &n, &err)) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= graft_tokenizer_n_ids(t)) abort();
        char *out;
        size_t ol;
        if (!graft_tokenizer_decode(t, ids, n, &out, &ol, &err)) free(out);
        free(ids);
    }
    graft_tokenizer_free(t);
    return 0;
}
