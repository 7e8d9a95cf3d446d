// Tensors carried between in-memory merges (graft_merge_options.reuse): each merged tensor's recipe
// — method, output dtype and shape, inputs (model path, tensor name, dtype), per-model and global
// parameters, RNG keys, statistics — hashed (FNV-1a, 64 bits) when the plan is made; a tensor whose
// hash is the previous merge's for its name is copied from that merge's writer.
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "engine.h"
#include "plan.h"
#include "graft/merge.h"
#include "graft/writer.h"
#include "../core/impl.h"

struct graft_merge_reuse {
    struct graft_writer *w;   // the previous merge's output (owned)
    char    **name;           // its tensors, sorted by name
    uint64_t *key;
    size_t    n;
    _Atomic uint64_t reused, total;
};

int graft_merge_reuse_new(struct graft_merge_reuse **out, struct graft_err *err) {
    if (!(*out = graft__calloc(1, sizeof **out))) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    return GRAFT_OK;
}

static void clear(struct graft_merge_reuse *r) {
    for (size_t i = 0; i < r->n; i++) graft__free(r->name[i]);
    graft__free(r->name), graft__free(r->key);
    r->name = NULL, r->key = NULL, r->n = 0;
}

void graft_merge_reuse_free(struct graft_merge_reuse *r) {
    if (!r) return;
    clear(r);
    graft_writer_free(r->w);
    graft__free(r);
}

void graft_merge_reuse_counts(const struct graft_merge_reuse *r, uint64_t *reused, uint64_t *total) {
    *reused = atomic_load(&r->reused), *total = atomic_load(&r->total);
}

void graft__reuse_key(const struct plan *p, struct otensor *o) {
    const struct graft_mt *mt = &o->mt;
    uint64_t h = GRAFT_FNV64_INIT;
    h = graft__fnv64(h, p->method->name, strlen(p->method->name) + 1);
    h = graft__fnv64(h, &o->dtype, sizeof o->dtype), h = graft__fnv64(h, &o->n_dims, sizeof o->n_dims), h = graft__fnv64(h, o->ne, sizeof o->ne);
    h = graft__fnv64(h, &mt->n_in, sizeof mt->n_in), h = graft__fnv64(h, &mt->base, sizeof mt->base), h = graft__fnv64(h, &o->identity, sizeof o->identity);
    int np = p->method->n_params;
    for (int i = 0; i < o->n_in; i++) {
        const struct graft_tensor_info *t = o->in[i].t->info;
        const char *path = p->models[o->in[i].model].path;
        h = graft__fnv64(h, path, strlen(path) + 1), h = graft__fnv64(h, t->name, t->name_len + 1), h = graft__fnv64(h, &t->dtype, sizeof t->dtype);
        h = graft__fnv64(h, mt->pm[i], (size_t)np * sizeof(double)), h = graft__fnv64(h, &mt->key[i], sizeof mt->key[i]);
        h = graft__fnv64(h, &mt->stat[i], sizeof mt->stat[i]), h = graft__fnv64(h, &mt->stat_scale[i], sizeof mt->stat_scale[i]); // (cached statistics stay mapped)
    }
    h = graft__fnv64(h, mt->gp, (size_t)np * sizeof(double));
    o->rkey = h, o->rkey_ok = true;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
struct entry { char *name; uint64_t key; }; // (the name first: sorted by by_name)

bool graft__reuse_copy(struct graft_merge_reuse *r, struct graft_writer *w, const struct otensor *o, struct graft_err *err, int *rc) {
    atomic_fetch_add(&r->total, 1);
    if (!o->rkey_ok || !r->n) return false;
    const char *key = o->name;
    char **hit = bsearch(&key, r->name, r->n, sizeof *r->name, by_name);
    if (!hit || r->key[hit - r->name] != o->rkey) return false;
    const void *data;
    enum graft_dtype dt;
    int nd;
    const uint64_t *ne;
    uint64_t nb = graft_writer_tensor_bytes(w, o->wid);
    if (!graft_writer_mem_tensor(r->w, o->name, &data, &dt, &nd, &ne) || dt != o->dtype || nd != o->n_dims) return false;
    *rc = nb ? graft_writer_write(w, o->wid, 0, data, (size_t)nb, err) : GRAFT_OK;
    atomic_fetch_add(&r->reused, 1);
    return true;
}

struct graft_writer *graft__reuse_writer(const struct graft_merge_reuse *r) { return r->w; }

int graft__reuse_update(struct graft_merge_reuse *r, struct graft_writer *w, const struct plan *p, struct graft_err *err) {
    clear(r);
    graft_writer_free(r->w);
    r->w = w;
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) n += p->t[i].rkey_ok;
    struct entry *e = graft__malloc((n ? n : 1) * sizeof *e);
    if (!e || !(r->name = graft__calloc(n ? n : 1, sizeof *r->name)) || !(r->key = graft__malloc((n ? n : 1) * sizeof *r->key))) {
        graft__free(e), clear(r);
        return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    }
    for (size_t i = 0, k = 0; i < p->n; i++)
        if (p->t[i].rkey_ok) e[k++] = (struct entry){p->t[i].name, p->t[i].rkey};
    qsort(e, n, sizeof *e, by_name); // (names first in each entry)
    for (size_t i = 0; i < n; i++) {
        if (!(r->name[i] = graft__strdup(e[i].name))) { graft__free(e), clear(r); return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }
        r->key[i] = e[i].key, r->n = i + 1;
    }
    graft__free(e);
    return GRAFT_OK;
}
