// Opened models shared between merges (include/graft/model.h, graft_model_cache_*): a list searched
// by path — a merge names a handful of models.
#include <string.h>
#include "graft/model.h"
#include "../core/impl.h"

struct graft_model_cache {
    char **path;
    struct graft_model **m;
    size_t n;
};

int graft_model_cache_new(struct graft_model_cache **out, struct graft_err *err) {
    if (!(*out = graft__calloc(1, sizeof **out))) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    return GRAFT_OK;
}

void graft_model_cache_free(struct graft_model_cache *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) graft_model_close(c->m[i]), graft__free(c->path[i]);
    graft__free(c->path), graft__free(c->m), graft__free(c);
}

int graft_model_cache_open(struct graft_model_cache *c, const char *path, struct graft_model **out, struct graft_err *err) {
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->path[i], path)) { *out = c->m[i]; return GRAFT_OK; }
    char **np = graft__realloc(c->path, (c->n + 1) * sizeof *np);
    if (np) c->path = np;
    struct graft_model **nm = np ? graft__realloc(c->m, (c->n + 1) * sizeof *nm) : NULL;
    if (nm) c->m = nm;
    char *copy = nm ? graft__strdup(path) : NULL;
    if (!copy) return graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
    int rc = graft_model_open(path, out, err);
    if (rc) { graft__free(copy); return rc; }
    c->path[c->n] = copy, c->m[c->n++] = *out;
    return GRAFT_OK;
}
