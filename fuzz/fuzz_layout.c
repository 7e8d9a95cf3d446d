// Fuzz target: config.json → real checkpoint layout (src/ops/layout.c, `graft synth --like-config`) on
// arbitrary bytes. A layout that loads must have tensors with positive dimensions and a rewritten
// config.json that parses again to the same layout.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../src/core/impl.h"
#include "../src/ops/layout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size), text[size] = 0;
    struct graft_synth_params p = graft_synth_default_params();
    p.n_layers = p.hidden = p.intermediate = p.n_heads = p.n_kv_heads = p.vocab = 0, p.dtype = GRAFT_DTYPE_COUNT;
    struct graft_err err = {0};
    struct graft__spec *s = NULL, *s2 = NULL;
    size_t n = 0, n2 = 0;
    char *cfg = NULL, *cfg2 = NULL;
    enum graft_dtype dt, dt2;
    if (!graft__layout_from_config(text, "fuzz.json", &p, &s, &n, &cfg, &dt, &err)) {
        for (size_t i = 0; i < n; i++)
            for (int d = 0; d < s[i].n_dims; d++)
                if (!s[i].ne[d]) abort();
        // the written config describes the same layout
        if (graft__layout_from_config(cfg, "fuzz2.json", &p, &s2, &n2, &cfg2, &dt2, &err) || n2 != n || dt2 != dt) abort();
        for (size_t i = 0; i < n; i++)
            if (strcmp(s[i].name, s2[i].name) || memcmp(s[i].ne, s2[i].ne, sizeof s[i].ne)) abort();
    }
    graft__free(s), graft__free(s2), graft__free(cfg), graft__free(cfg2);
    free(text);
    return 0;
}
