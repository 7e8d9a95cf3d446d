// Text files for the commands that tokenize (eval, evolve, tokenize).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "graft/tokenizer.h"
#include "../core/impl.h"

char *cli_read_file(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    for (size_t r; b && (r = fread(b + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) {
            char *nb = realloc(b, (cap *= 2) + 1);
            if (!nb) free(b);
            b = nb;
        }
    }
    if (f != stdin) fclose(f);
    if (b) b[n] = 0, *len = n;
    return b;
}

int cli_encode_file(const struct graft_tokenizer *t, const char *path, int32_t **ids, size_t *n, struct graft_err *err) {
    size_t len = 0;
    char *text = cli_read_file(path, &len);
    if (!text) return graft_err_set(err, GRAFT_E_IO, path, NULL, 0, "cannot read the file");
    int rc = graft_tokenizer_encode(t, text, len, ids, n, err);
    if (rc) graft__err_prefix(err, path, NULL, 0);
    free(text);
    return rc;
}

int cli_calib_open(const char *model, const char *calib, bool no_bos, struct cli_calib *c, struct graft_err *err) {
    *c = (struct cli_calib){.bos = -1};
    int rc = graft_model_open(model, &c->m, err);
    if (!rc && calib && !(rc = graft_tokenizer_load(model, &c->tok, err))) rc = cli_encode_file(c->tok, calib, &c->ids, &c->n, err);
    if (!rc && c->tok && !no_bos) c->bos = graft_tokenizer_bos(c->tok);
    return rc;
}

void cli_calib_close(struct cli_calib *c) {
    free(c->ids);
    graft_tokenizer_free(c->tok);
    graft_model_close(c->m);
    *c = (struct cli_calib){.bos = -1};
}
