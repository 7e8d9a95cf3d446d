// Output writer: the whole layout is fixed before any tensor data exists; data arrives by pwrite at
// known offsets from any thread; the output appears by rename only after every byte is written and
// synced. See include/graft/writer.h for the life cycle.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "graft/writer.h"
#include "graft/util.h"
#include "graft/safetensors.h"
#include "graft/dist.h"
#include "io-impl.h"

struct out_tensor {
    char            *name;
    size_t           name_len;
    enum graft_dtype dtype;
    int              n_dims;
    uint64_t         ne[GRAFT_MAX_DIMS];
    uint64_t         n_bytes;
    int              shard;
    uint64_t         data_off;  // within the shard's data section
    uint64_t         file_off;  // absolute, valid after layout
    _Atomic uint64_t written;   // bytes received
};

struct shard {
    char    *name;       // final file name
    char    *path;       // path inside the temp folder (or the temp file)
    int      fd;
    uint64_t data_bytes;
    uint64_t data_start; // 8 + header length
    _Atomic uint64_t written; // tensor bytes written so far, to pace write-back kicks
};

struct graft_writer {
    char              *target, *parent, *base, *tmp;
    char               stem[64]; // shard file names: <stem>.safetensors, <stem>-0000i-of-0000N.safetensors
    unsigned           flags;
    uint64_t           max_shard;
    struct out_tensor *t;
    size_t             n, cap;
    uint32_t          *slots;   // name hash → index + 1 (uniqueness)
    size_t             n_slots;
    uint64_t           hkey;     // their hash key (graft__name_hash)
    char             **meta;    // key, value pairs
    size_t             n_meta;
    struct shard      *shards;
    int                n_shards;
    char             **files;   // extra files added
    size_t             n_files;
    uint8_t           *mem;     // GRAFT_WRITER_MEMORY: all tensor data, in declaration order
    char             **fdata;   // GRAFT_WRITER_MEMORY: the added files' contents (NUL-terminated)
    size_t            *flen;
    bool               laid_out, committed, target_nonempty;
    const struct graft_dist *dist; // several ranks write this output (NULL or size 1: one process)
    int               *owner;      // per shard: the rank that writes it (dist)
};

static bool dist_on(const struct graft_writer *w) { return w->dist && w->dist->size > 1; }
static bool rank0(const struct graft_writer *w) { return !dist_on(w) || w->dist->rank == 0; }
static bool mine(const struct graft_writer *w, int shard) { return !dist_on(w) || w->owner[shard] == w->dist->rank; }

struct graft_writer_params graft_writer_default_params(void) {
    return (struct graft_writer_params){.max_shard_bytes = GRAFT_DEFAULT_SHARD_BYTES};
}

#define OOM(w) graft_err_set(err, GRAFT_E_NOMEM, (w)->target, NULL, 0, "out of memory")

// True when `inner` (an existing path) lies strictly inside folder `outer`.
static bool path_inside(const char *inner, const char *outer) {
    char a[PATH_MAX], b[PATH_MAX];
    if (!realpath(inner, a) || !realpath(outer, b)) return false;
    size_t n = strlen(b);
    return strncmp(a, b, n) == 0 && (a[n] == '/' || (n == 1 && b[0] == '/'));
}

int graft__output_check(const char *target, const char *const *protect, size_t n, struct graft_err *err) {
    struct stat ts, is, ps;
    bool exists = lstat(target, &ts) == 0;
    char *parent = graft__parent_of(target);
    bool have_parent = parent && stat(parent, &ps) == 0;
    int rc = GRAFT_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        if (!protect[i] || stat(protect[i], &is) != 0) continue;
        if (exists && is.st_dev == ts.st_dev && is.st_ino == ts.st_ino)
            rc = graft_err_set(err, GRAFT_E_USAGE, target, NULL, 0, "output is the input '%s'; choose another output path", protect[i]);
        else if (exists && S_ISDIR(ts.st_mode) && path_inside(protect[i], target))
            rc = graft_err_set(err, GRAFT_E_USAGE, target, NULL, 0, "output folder contains the input '%s'; choose another output path", protect[i]);
        else if (S_ISDIR(is.st_mode) && have_parent && ((ps.st_dev == is.st_dev && ps.st_ino == is.st_ino) || path_inside(parent, protect[i])))
            rc = graft_err_set(err, GRAFT_E_USAGE, target, NULL, 0, "output would be inside the input folder '%s' (inputs are read-only); choose a path outside it",
                               protect[i]);
    }
    graft__free(parent);
    return rc;
}

static bool dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return false;
    struct dirent *de;
    bool empty = true;
    while (empty && (de = readdir(d))) empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
    closedir(d);
    return empty;
}

// A process that has exited but is not yet reaped (its parent died first, e.g. an MPI rank whose
// mpirun was killed, and PID 1 has not collected it): as gone as a missing one.
static bool zombie(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *r = strrchr(buf, ')'); // "pid (comm) S …": comm may hold spaces and parentheses
    return r && r[1] == ' ' && r[2] == 'Z';
}

// Remove entries of `dir` named PREFIX<pid>… whose process is gone (temporaries of killed runs).
void graft__remove_stale(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return;
    size_t pl = strlen(prefix);
    char tag[GRAFT__OWNER_TAG_MAX];
    graft__owner_tag(tag);
    size_t hl = (size_t)(strchr(tag, '@') - tag);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, prefix, pl)) continue;
        size_t dn = strlen(de->d_name);
        if (dn > 4 && !strcmp(de->d_name + dn - 4, ".old")) continue; // an old output set aside (commit_rank0): never deleted
        uint64_t pid;
        const char *num = de->d_name + pl, *at = strchr(num, '@');
        if (at) { // HOST@PID…: a pid of another host says nothing here
            if ((size_t)(at - num) != hl || memcmp(num, tag, hl)) continue;
            num = at + 1;
        }
        char digits[24] = {0};
        size_t k = 0;
        while (num[k] >= '0' && num[k] <= '9' && k < sizeof digits - 1) digits[k] = num[k], k++;
        if (!graft_parse_u64(digits, INT_MAX, &pid)) continue;
        if ((pid_t)pid == getpid() || ((kill((pid_t)pid, 0) == 0 || errno != ESRCH) && !zombie((pid_t)pid))) continue;
        char *p = graft__asprintf("%s/%s", dir, de->d_name);
        if (p) graft__rm_tree(p);
        graft__free(p);
    }
    closedir(d);
}

static void remove_stale_temps(struct graft_writer *w) {
    char *prefix = graft__asprintf(".%s.graft-tmp-", w->base);
    if (prefix) graft__remove_stale(w->parent, prefix);
    graft__free(prefix);
}

// Whether target can become the output: a name, an existing parent, no input inside or around it,
// not a non-empty folder or a file without --force.
static int open_checks(struct graft_writer *w, const struct graft_writer_params *params, struct graft_err *err) {
    const char *slash = strrchr(w->target, '/');
    w->base   = graft__strdup(slash ? slash + 1 : w->target);
    w->parent = slash ? graft__strndup(w->target, slash == w->target ? 1 : (size_t)(slash - w->target)) : graft__strdup(".");
    if (!w->base || !w->parent) return OOM(w);
    if (!*w->base || !strcmp(w->base, ".") || !strcmp(w->base, ".."))
        return graft_err_set(err, GRAFT_E_USAGE, w->target, NULL, 0, "output must name a file or folder, not '%s'", w->base);
    struct stat ps;
    if (stat(w->parent, &ps) != 0 || !S_ISDIR(ps.st_mode))
        return graft_err_set(err, GRAFT_E_IO, w->target, NULL, 0, "parent folder '%s' does not exist", w->parent);
    // Never overwrite, swallow or write into an input.
    struct stat ts;
    bool exists = lstat(w->target, &ts) == 0;
    int rc = graft__output_check(w->target, params->protect, params->n_protect, err);
    if (rc) return rc;
    if (exists) {
        bool empty_dir = S_ISDIR(ts.st_mode) && dir_is_empty(w->target);
        if (!empty_dir && !(w->flags & GRAFT_WRITER_FORCE))
            return graft_err_set(err, GRAFT_E_EXISTS, w->target, NULL, 0, "%s already exists; use --force to replace it",
                                 S_ISDIR(ts.st_mode) ? "folder" : "file");
        w->target_nonempty = !empty_dir;
    }
    return GRAFT_OK;
}

int graft_writer_open(const char *target, const struct graft_writer_params *params, struct graft_writer **out,
                      struct graft_err *err) {
    *out = NULL;
    struct graft_writer_params def = graft_writer_default_params();
    if (!params) params = &def;
    struct graft_writer *w = graft__calloc(1, sizeof *w);
    if (!w) return graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory");
    int rc = GRAFT_OK;
    w->flags     = params->flags;
    w->max_shard = params->max_shard_bytes ? params->max_shard_bytes : GRAFT_DEFAULT_SHARD_BYTES;
    snprintf(w->stem, sizeof w->stem, "%s", params->stem && *params->stem ? params->stem : "model");
    size_t len = strlen(target);
    while (len > 1 && target[len - 1] == '/') len--;
    w->target = graft__strndup(target, len);
    if (!w->target) { rc = OOM(w); goto fail; }
    if (w->flags & GRAFT_WRITER_MEMORY) { // nothing on disk: no folder, no checks against the inputs
        if ((rc = graft_writer_set_meta(w, "format", "pt", err))) goto fail;
        *out = w;
        return GRAFT_OK;
    }
    rc = open_checks(w, params, err);
    w->dist = params->dist;
    // under MPI every rank agrees first: a rank that failed alone would leave the others waiting below
    if (dist_on(w)) rc = graft__dist_status(w->dist, rc, w->target, err);
    if (rc) goto fail;
    if (rank0(w)) {
        remove_stale_temps(w);
        char tag[GRAFT__OWNER_TAG_MAX];
        graft__owner_tag(tag);
        w->tmp = graft__asprintf("%s/.%s.graft-tmp-%s", w->parent, w->base, tag);
        if (!w->tmp) rc = OOM(w);
        if (!rc && !(w->flags & GRAFT_WRITER_SINGLE_FILE)) {
            int inj = graft__fault_io("mkdir");
            if (inj || mkdir(w->tmp, 0755) != 0) {
                rc = graft_err_set(err, GRAFT_E_IO, w->tmp, NULL, 0, "cannot create temporary folder: %s", strerror(inj ? inj : errno));
                graft__free(w->tmp);
                w->tmp = NULL; // not ours: never remove it
            }
        }
    }
    if (dist_on(w)) { // rank 0's temporary folder (named by its pid) is every rank's
        char name[PATH_MAX + 1] = "";
        if (w->dist->rank == 0 && !rc) snprintf(name, sizeof name, "%s", w->tmp);
        if (w->dist->bcast(w->dist->ctx, name, sizeof name, 0)) rc = graft_err_set(err, GRAFT_E_IO, w->target, NULL, 0, "MPI broadcast failed");
        else if (!rc && w->dist->rank && !*name) rc = graft_err_set(err, GRAFT_E_IO, w->target, NULL, 0, "rank 0 could not create the temporary output");
        else if (!rc && w->dist->rank && !(w->tmp = graft__strdup(name))) rc = OOM(w);
    }
    if (rc) goto fail;
    rc = graft_writer_set_meta(w, "format", "pt", err);
    if (rc) goto fail;
    *out = w;
    return GRAFT_OK;
fail:
    graft_writer_free(w);
    return rc;
}

void graft_writer_free(struct graft_writer *w) {
    if (!w) return;
    for (int s = 0; s < w->n_shards; s++) {
        if (w->shards[s].fd >= 0) close(w->shards[s].fd);
        graft__free(w->shards[s].name);
        graft__free(w->shards[s].path);
    }
    if (!w->committed && w->tmp && rank0(w)) graft__rm_tree(w->tmp); // abort: nothing of the output remains (rank 0's folder)
    for (size_t i = 0; i < w->n; i++) graft__free(w->t[i].name);
    for (size_t i = 0; i < 2 * w->n_meta; i++) graft__free(w->meta[i]);
    for (size_t i = 0; i < w->n_files; i++) {
        graft__free(w->files[i]);
        if (w->fdata) graft__free(w->fdata[i]);
    }
    graft__free(w->files), graft__free(w->fdata), graft__free(w->flen), graft__free(w->mem);
    graft__free(w->meta);
    graft__free(w->shards);
    graft__free(w->t);
    graft__free(w->slots);
    graft__free(w->owner);
    graft__free(w->target);
    graft__free(w->parent);
    graft__free(w->base);
    graft__free(w->tmp);
    graft__free(w);
}

int graft_writer_set_meta(struct graft_writer *w, const char *key, const char *value, struct graft_err *err) {
    if (w->laid_out) return graft_err_set(err, GRAFT_E_INTERNAL, w->target, NULL, 0, "metadata set after layout");
    for (size_t i = 0; i < w->n_meta; i++)
        if (!strcmp(w->meta[2 * i], key)) {
            char *v = graft__strdup(value);
            if (!v) return OOM(w);
            graft__free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = v;
            return GRAFT_OK;
        }
    char **m = graft__realloc(w->meta, (w->n_meta + 1) * 2 * sizeof *m);
    if (!m) return OOM(w);
    w->meta = m;
    m[2 * w->n_meta] = graft__strdup(key);
    m[2 * w->n_meta + 1] = graft__strdup(value);
    w->n_meta++;
    if (!m[2 * w->n_meta - 2] || !m[2 * w->n_meta - 1]) return OOM(w);
    return GRAFT_OK;
}

void graft_writer_clear_meta(struct graft_writer *w) {
    if (w->laid_out) return;
    for (size_t i = 0; i < 2 * w->n_meta; i++) graft__free(w->meta[i]);
    w->n_meta = 0;
}

long graft_writer_add_tensor(struct graft_writer *w, const char *name, size_t name_len, enum graft_dtype dtype,
                             int n_dims, const uint64_t *ne, struct graft_err *err) {
    if (w->laid_out) return graft_err_set(err, GRAFT_E_INTERNAL, w->target, name, name_len, "tensor added after layout");
    if (!graft_dtype_traits(dtype)) return graft_err_set(err, GRAFT_E_INTERNAL, w->target, name, name_len, "bad dtype");
    if (n_dims < 0 || n_dims > GRAFT_MAX_DIMS)
        return graft_err_set(err, GRAFT_E_USAGE, w->target, name, name_len, "%d dimensions (limit %d)", n_dims, GRAFT_MAX_DIMS);
    if (name_len > GRAFT_ST_MAX_NAME || memchr(name, 0, name_len) || graft__utf8_check((const uint8_t *)name, name_len) != name_len)
        return graft_err_set(err, GRAFT_E_USAGE, w->target, name, name_len, "tensor name must be valid UTF-8 without NUL, at most %d bytes", GRAFT_ST_MAX_NAME);
    if (w->n >= GRAFT_ST_MAX_TENSORS)
        return graft_err_set(err, GRAFT_E_LIMIT, w->target, name, name_len, "more than %d tensors", GRAFT_ST_MAX_TENSORS);
    uint64_t n_elem = 1, nb;
    for (int d = 0; d < n_dims; d++)
        if (!graft__mul_u64(n_elem, ne[d], &n_elem))
            return graft_err_set(err, GRAFT_E_USAGE, w->target, name, name_len, "element count overflows");
    if (!graft_dtype_nbytes(dtype, n_elem, &nb))
        return graft_err_set(err, GRAFT_E_USAGE, w->target, name, name_len, "byte size overflows or is not whole");
    // Uniqueness through an open-addressing table, grown at half load.
    if (2 * (w->n + 1) > w->n_slots) {
        size_t ns = w->n_slots ? 2 * w->n_slots : 64;
        uint32_t *slots = graft__calloc(ns, sizeof *slots);
        if (!slots) return OOM(w);
        if (!w->n_slots) w->hkey = graft__hash_key();
        for (size_t i = 0; i < w->n; i++) {
            size_t h = graft__name_hash(w->hkey, w->t[i].name, w->t[i].name_len) & (ns - 1);
            while (slots[h]) h = (h + 1) & (ns - 1);
            slots[h] = (uint32_t)(i + 1);
        }
        graft__free(w->slots);
        w->slots = slots, w->n_slots = ns;
    }
    size_t h = graft__name_hash(w->hkey, name, name_len) & (w->n_slots - 1);
    while (w->slots[h]) {
        const struct out_tensor *o = &w->t[w->slots[h] - 1];
        if (o->name_len == name_len && !memcmp(o->name, name, name_len))
            return graft_err_set(err, GRAFT_E_USAGE, w->target, name, name_len, "duplicate output tensor name");
        h = (h + 1) & (w->n_slots - 1);
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 256;
        struct out_tensor *t = graft__realloc(w->t, cap * sizeof *t);
        if (!t) return OOM(w);
        w->t = t, w->cap = cap;
    }
    struct out_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = graft__strndup(name, name_len);
    if (!t->name) return OOM(w);
    t->name_len = name_len, t->dtype = dtype, t->n_dims = n_dims, t->n_bytes = nb;
    for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d];
    atomic_init(&t->written, 0);
    w->slots[h] = (uint32_t)(w->n + 1);
    return (long)w->n++;
}

// The reference writer's data order: dtype descending (enum order), then name bytes ascending.
static int cmp_ref_order(const void *a, const void *b) {
    const struct out_tensor *x = *(struct out_tensor *const *)a, *y = *(struct out_tensor *const *)b;
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c) return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static int layout_shard(struct graft_writer *w, int s, struct out_tensor **list, size_t n, struct graft_err *err) {
    struct shard *sh = &w->shards[s];
    qsort(list, n, sizeof *list, cmp_ref_order);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) list[i]->data_off = off, off += list[i]->n_bytes;
    sh->data_bytes = off;

    struct graft__buf hb;
    graft__buf_init(&hb, GRAFT_ST_MAX_HEADER);
    graft__buf_puts(&hb, "{");
    if (w->n_meta) { // the reference writer omits the key when there is no metadata
        graft__buf_puts(&hb, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i) graft__buf_puts(&hb, ",");
            graft__buf_json_str(&hb, w->meta[2 * i], strlen(w->meta[2 * i]));
            graft__buf_puts(&hb, ":");
            graft__buf_json_str(&hb, w->meta[2 * i + 1], strlen(w->meta[2 * i + 1]));
        }
        graft__buf_puts(&hb, "}");
    }
    for (size_t i = 0; i < n; i++) {
        const struct out_tensor *t = list[i];
        if (i || w->n_meta) graft__buf_puts(&hb, ",");
        graft__buf_json_str(&hb, t->name, t->name_len);
        graft__buf_printf(&hb, ":{\"dtype\":\"%s\",\"shape\":[", graft_dtype_traits(t->dtype)->name);
        for (int d = 0; d < t->n_dims; d++) graft__buf_printf(&hb, d ? ",%llu" : "%llu", (unsigned long long)t->ne[d]);
        graft__buf_printf(&hb, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->data_off,
                          (unsigned long long)(t->data_off + t->n_bytes));
    }
    graft__buf_puts(&hb, "}");
    while (!hb.failed && hb.len % 8) graft__buf_puts(&hb, " ");
    int rc = GRAFT_OK;
    if (hb.failed) {
        rc = hb.len >= GRAFT_ST_MAX_HEADER - 64
                 ? graft_err_set(err, GRAFT_E_LIMIT, sh->name, NULL, 0, "header would exceed %llu bytes", GRAFT_ST_MAX_HEADER)
                 : OOM(w);
        goto out;
    }
    sh->data_start = 8 + hb.len;
    for (size_t i = 0; i < n; i++) list[i]->file_off = sh->data_start + list[i]->data_off;

    int inj = graft__fault_io("open");
    sh->fd = inj ? (errno = inj, -1) : open(sh->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (sh->fd < 0) { rc = graft_err_set(err, GRAFT_E_IO, sh->path, NULL, 0, "cannot create: %s", strerror(errno)); goto out; }
    uint8_t len8[8];
    graft__store_u64le(len8, hb.len);
    uint64_t total = sh->data_start + sh->data_bytes;
    if (graft__pwrite_full(sh->fd, len8, 8, 0) || graft__pwrite_full(sh->fd, hb.data, hb.len, 8)) {
        rc = graft_err_set(err, GRAFT_E_IO, sh->path, NULL, 0, "write failed: %s", strerror(errno));
        goto out;
    }
    // Reserve the whole file now: a full disk fails here, before any computation.
    int fa = posix_fallocate(sh->fd, 0, (off_t)total);
    if (fa == EOPNOTSUPP || fa == EINVAL) fa = ftruncate(sh->fd, (off_t)total) ? errno : 0;
    if (fa) { rc = graft_err_set(err, GRAFT_E_IO, sh->path, NULL, 0, "cannot reserve %llu bytes: %s", (unsigned long long)total, strerror(fa)); goto out; }
out:
    graft__buf_free(&hb);
    return rc;
}

int graft_writer_layout(struct graft_writer *w, struct graft_err *err) {
    if (w->laid_out) return graft_err_set(err, GRAFT_E_INTERNAL, w->target, NULL, 0, "layout called twice");
    w->laid_out = true;
    // Greedy shard assignment in declaration order (as huggingface_hub's splitter).
    int n_shards = 1;
    uint64_t cur = 0;
    size_t in_cur = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (!(w->flags & GRAFT_WRITER_SINGLE_FILE) && in_cur && cur + w->t[i].n_bytes > w->max_shard) n_shards++, cur = 0, in_cur = 0;
        w->t[i].shard = n_shards - 1;
        cur += w->t[i].n_bytes, in_cur++;
    }
    if (n_shards > 99999) return graft_err_set(err, GRAFT_E_USAGE, w->target, NULL, 0, "%d shards: raise --out-shard-size", n_shards);
    w->shards = graft__calloc((size_t)n_shards, sizeof *w->shards);
    struct out_tensor **list = graft__malloc((w->n ? w->n : 1) * sizeof *list);
    if (!w->shards || !list) { graft__free(list); return OOM(w); }
    w->n_shards = n_shards;
    for (int s = 0; s < n_shards; s++) w->shards[s].fd = -1;
    int rc = GRAFT_OK;
    if (w->flags & GRAFT_WRITER_MEMORY) {
        uint64_t total = graft_writer_total_bytes(w), off = 0;
        graft__free(list);
        if (total > SIZE_MAX / 2 || !(w->mem = graft__malloc(total ? (size_t)total : 1)))
            return graft_err_set(err, GRAFT_E_NOMEM, w->target, NULL, 0, "out of memory for a %llu-byte model held in memory", (unsigned long long)total);
        for (size_t i = 0; i < w->n; i++) w->t[i].file_off = off, off += w->t[i].n_bytes;
        for (int s = 0; s < n_shards && !rc; s++)
            if (!(w->shards[s].name = graft__asprintf("%s-%d.safetensors", w->stem, s)) || !(w->shards[s].path = graft__strdup(w->target))) rc = OOM(w);
        return rc;
    }
    // Every byte of the output before any is written: refused now with the numbers, not minutes later
    // (headers bounded by their entries' longest form).
    uint64_t need = 0;
    for (size_t i = 0; i < w->n; i++) need += w->t[i].n_bytes + w->t[i].name_len + 96 + 21 * (uint64_t)w->t[i].n_dims;
    need += (uint64_t)n_shards * 1024;
    if ((rc = graft__check_space(w->parent, w->target, need, "the output", err))) { graft__free(list); return rc; }
    if (dist_on(w)) { // shards to ranks by bytes: largest first, each to the least loaded rank (lowest on ties)
        int R = w->dist->size;
        uint64_t *load = graft__calloc((size_t)R, sizeof *load), *bytes = graft__calloc((size_t)n_shards, sizeof *bytes);
        int *ord = graft__malloc((size_t)n_shards * sizeof *ord);
        if (!(w->owner = graft__malloc((size_t)n_shards * sizeof *w->owner)) || !load || !bytes || !ord) rc = OOM(w);
        for (size_t i = 0; !rc && i < w->n; i++) bytes[w->t[i].shard] += w->t[i].n_bytes;
        for (int i = 0; !rc && i < n_shards; i++) { // insertion sort by bytes descending, index ascending
            int j = i;
            while (j && bytes[ord[j - 1]] < bytes[i]) ord[j] = ord[j - 1], j--;
            ord[j] = i;
        }
        for (int i = 0; !rc && i < n_shards; i++) {
            int best = 0;
            for (int r = 1; r < R; r++)
                if (load[r] < load[best]) best = r;
            w->owner[ord[i]] = best, load[best] += bytes[ord[i]];
        }
        graft__free(load), graft__free(bytes), graft__free(ord);
        if (rc) { graft__free(list); return rc; }
    }
    size_t first = 0;
    for (int s = 0; s < n_shards && !rc; s++) {
        struct shard *sh = &w->shards[s];
        sh->name = n_shards == 1 ? graft__asprintf("%s.safetensors", w->stem)
                                 : graft__asprintf("%s-%05d-of-%05d.safetensors", w->stem, s + 1, n_shards);
        sh->path = (w->flags & GRAFT_WRITER_SINGLE_FILE) ? graft__strdup(w->tmp)
                                                         : (sh->name ? graft__asprintf("%s/%s", w->tmp, sh->name) : NULL);
        if (!sh->name || !sh->path) { rc = OOM(w); break; }
        size_t k = 0;
        while (first + k < w->n && w->t[first + k].shard == s) list[k] = &w->t[first + k], k++;
        if (mine(w, s)) rc = layout_shard(w, s, list, k, err); // another rank's shard: its name only
        first += k;
    }
    graft__free(list);
    return rc;
}

bool graft_writer_tensor_local(const struct graft_writer *w, long i) { return mine(w, w->t[i].shard); }
size_t graft_writer_n_tensors(const struct graft_writer *w) { return w->n; }
int graft_writer_n_shards(const struct graft_writer *w) { return w->n_shards; }
uint64_t graft_writer_tensor_bytes(const struct graft_writer *w, long i) { return w->t[i].n_bytes; }
int graft_writer_tensor_shard(const struct graft_writer *w, long i) { return w->t[i].shard; }
const char *graft_writer_shard_name(const struct graft_writer *w, int s) {
    return s >= 0 && s < w->n_shards ? w->shards[s].name : NULL;
}
uint64_t graft_writer_total_bytes(const struct graft_writer *w) {
    uint64_t n = 0;
    for (size_t i = 0; i < w->n; i++) n += w->t[i].n_bytes;
    return n;
}

int graft_writer_write(struct graft_writer *w, long tensor, uint64_t off, const void *buf, size_t n, struct graft_err *err) {
    if (!w->laid_out || tensor < 0 || (size_t)tensor >= w->n)
        return graft_err_set(err, GRAFT_E_INTERNAL, w->target, NULL, 0, "write to an unknown tensor");
    struct out_tensor *t = &w->t[tensor];
    uint64_t end;
    if (!graft__add_u64(off, n, &end) || end > t->n_bytes)
        return graft_err_set(err, GRAFT_E_INTERNAL, w->target, t->name, t->name_len, "write past the tensor's end");
    struct shard *sh = &w->shards[t->shard];
    if (!mine(w, t->shard)) return GRAFT_OK; // another rank writes it (methods that compute the whole model on every rank)
    if (w->mem) {
        memcpy(w->mem + t->file_off + off, buf, n);
        atomic_fetch_add(&t->written, (uint64_t)n);
        return GRAFT_OK;
    }
    if (graft__pwrite_full(sh->fd, buf, n, t->file_off + off))
        return graft_err_set(err, GRAFT_E_IO, sh->path, t->name, t->name_len, "write failed: %s", strerror(errno));
    // Every KICK bytes, start write-back of the whole file's dirty pages (asynchronously) so the
    // disk works while we compute and the final fsync has little left to do. One call per KICK, not
    // per write: each call costs tens of microseconds. Advisory: errors surface at fsync.
    enum { KICK = 16u << 20 };
    uint64_t before = atomic_fetch_add(&sh->written, (uint64_t)n);
    if ((before + n) / KICK != before / KICK) sync_file_range(sh->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    atomic_fetch_add(&t->written, n);
    return GRAFT_OK;
}

static bool plain_name(const char *s) {
    return *s && *s != '.' && !strchr(s, '/') && !strchr(s, '\\');
}

int graft_writer_add_file(struct graft_writer *w, const char *name, const void *data, size_t len, struct graft_err *err) {
    if (w->flags & GRAFT_WRITER_SINGLE_FILE)
        return graft_err_set(err, GRAFT_E_USAGE, w->target, NULL, 0, "cannot add '%s' to a single-file output", name);
    if (!plain_name(name)) return graft_err_set(err, GRAFT_E_INTERNAL, w->target, NULL, 0, "bad file name '%s'", name);
    if (!rank0(w)) return GRAFT_OK; // rank 0 writes the output's other files
    char **f = graft__realloc(w->files, (w->n_files + 1) * sizeof *f);
    if (!f) return OOM(w);
    w->files = f;
    if (!(f[w->n_files] = graft__strdup(name))) return OOM(w);
    if (w->flags & GRAFT_WRITER_MEMORY) {
        char **nd = graft__realloc(w->fdata, (w->n_files + 1) * sizeof *nd);
        if (nd) w->fdata = nd;
        size_t *nl = nd ? graft__realloc(w->flen, (w->n_files + 1) * sizeof *nl) : NULL;
        if (nl) w->flen = nl;
        char *copy = nl ? graft__malloc(len + 1) : NULL;
        if (!copy) { graft__free(f[w->n_files]); return OOM(w); }
        memcpy(copy, data, len), copy[len] = 0;
        w->fdata[w->n_files] = copy, w->flen[w->n_files] = len;
        w->n_files++;
        return GRAFT_OK;
    }
    w->n_files++;
    char *p = graft__asprintf("%s/%s", w->tmp, name);
    if (!p) return OOM(w);
    int rc = GRAFT_OK, inj = graft__fault_io("open");
    int fd = inj ? (errno = inj, -1) : open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) rc = graft_err_set(err, GRAFT_E_IO, p, NULL, 0, "cannot create: %s", strerror(errno));
    else if (graft__pwrite_full(fd, data, len, 0) || graft__fsync(fd))
        rc = graft_err_set(err, GRAFT_E_IO, p, NULL, 0, "write failed: %s", strerror(errno));
    if (fd >= 0 && close(fd) && !rc) rc = graft_err_set(err, GRAFT_E_IO, p, NULL, 0, "close failed: %s", strerror(errno));
    graft__free(p);
    return rc;
}

static int cmp_tensor_name(const void *a, const void *b) {
    const struct out_tensor *x = *(struct out_tensor *const *)a, *y = *(struct out_tensor *const *)b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

// model.safetensors.index.json as transformers writes it (indent 2, keys sorted).
static int write_index(struct graft_writer *w, struct graft_err *err) {
    json_t *root = json_object(), *meta = json_object(), *wm = json_object();
    struct out_tensor **list = graft__malloc(w->n * sizeof *list);
    struct graft__buf b;
    graft__buf_init(&b, SIZE_MAX / 2);
    int rc = GRAFT_OK;
    if (!root || !meta || !wm || !list) { rc = OOM(w); goto out; }
    for (size_t i = 0; i < w->n; i++) list[i] = &w->t[i];
    qsort(list, w->n, sizeof *list, cmp_tensor_name);
    json_object_set_new(meta, "total_size", json_integer((json_int_t)graft_writer_total_bytes(w)));
    for (size_t i = 0; i < w->n; i++)
        if (json_object_setn_new(wm, list[i]->name, list[i]->name_len, json_string(w->shards[list[i]->shard].name))) { rc = OOM(w); goto out; }
    json_object_set(root, "metadata", meta);
    json_object_set(root, "weight_map", wm);
    graft__json_dump_pretty(&b, root);
    if (b.failed) { rc = OOM(w); goto out; }
    char name[96];
    snprintf(name, sizeof name, "%s.safetensors.index.json", w->stem);
    rc = graft_writer_add_file(w, name, b.data, b.len, err);
out:
    graft__buf_free(&b);
    graft__free(list);
    json_decref(root), json_decref(meta), json_decref(wm);
    return rc;
}

// This rank's part of the commit: every byte of its tensors written, its shard files synced and closed.
static int commit_local(struct graft_writer *w, struct graft_err *err) {
    for (size_t i = 0; i < w->n; i++)
        if (mine(w, w->t[i].shard) && atomic_load(&w->t[i].written) != w->t[i].n_bytes)
            return graft_err_set(err, GRAFT_E_INTERNAL, w->target, w->t[i].name, w->t[i].name_len,
                                 "only %llu of %llu bytes were written", (unsigned long long)atomic_load(&w->t[i].written),
                                 (unsigned long long)w->t[i].n_bytes);
    for (int s = 0; !(w->flags & GRAFT_WRITER_MEMORY) && s < w->n_shards; s++) {
        struct shard *sh = &w->shards[s];
        if (!mine(w, s)) continue;
        if (graft__fsync(sh->fd)) return graft_err_set(err, GRAFT_E_IO, sh->path, NULL, 0, "fsync failed: %s", strerror(errno));
        int c = close(sh->fd);
        sh->fd = -1;
        if (c) return graft_err_set(err, GRAFT_E_IO, sh->path, NULL, 0, "close failed: %s", strerror(errno));
    }
    return GRAFT_OK;
}

static int commit_rank0(struct graft_writer *w, struct graft_err *err);

int graft_writer_finish(struct graft_writer *w, int rc, struct graft_err *err) {
    if (!dist_on(w)) return rc ? rc : graft_writer_commit(w, err);
    if (!rc && !w->laid_out) rc = graft_err_set(err, GRAFT_E_INTERNAL, w->target, NULL, 0, "commit before layout");
    if (!rc) rc = commit_local(w, err);
    if ((rc = graft__dist_status(w->dist, rc, w->target, err))) return rc; // some rank failed: nothing is committed (rank 0 removes the folder)
    if (w->dist->rank == 0) rc = commit_rank0(w, err);
    // rank 0's result, to every rank
    struct { int32_t code; char msg[GRAFT_ERR_MSG_MAX]; } m = {rc, ""};
    if (rc) snprintf(m.msg, sizeof m.msg, "%s", err->msg);
    if (w->dist->bcast(w->dist->ctx, &m, sizeof m, 0)) return graft_err_set(err, GRAFT_E_IO, w->target, NULL, 0, "MPI broadcast failed");
    if (!m.code) {
        w->committed = true;
        return GRAFT_OK;
    }
    if (w->dist->rank == 0) return rc;
    m.msg[sizeof m.msg - 1] = 0;
    return graft_err_set(err, m.code, NULL, NULL, 0, "rank 0: %s", m.msg);
}

int graft_writer_commit(struct graft_writer *w, struct graft_err *err) {
    if (!w->laid_out) return graft_err_set(err, GRAFT_E_INTERNAL, w->target, NULL, 0, "commit before layout");
    if (dist_on(w)) return graft_writer_finish(w, GRAFT_OK, err);
    int rc = commit_local(w, err);
    if (rc) return rc;
    if (w->flags & GRAFT_WRITER_MEMORY) {
        w->committed = true;
        return GRAFT_OK;
    }
    return commit_rank0(w, err);
}

// Index, fsync of the folder, rename into place (the one process, or rank 0 after every rank's part).
static int commit_rank0(struct graft_writer *w, struct graft_err *err) {
    int rc;
    if (w->n_shards > 1 && (rc = write_index(w, err))) return rc;
    if (!(w->flags & GRAFT_WRITER_SINGLE_FILE) && graft__fsync_dir(w->tmp))
        return graft_err_set(err, GRAFT_E_IO, w->tmp, NULL, 0, "fsync failed: %s", strerror(errno));

    if (w->target_nonempty && !(w->flags & GRAFT_WRITER_SINGLE_FILE)) {
        // Swap the finished output with the old folder in one step, then delete the old one (now at tmp).
        int inj = graft__fault_io("rename");
        if (inj || renameat2(AT_FDCWD, w->tmp, AT_FDCWD, w->target, RENAME_EXCHANGE) != 0) {
            int e = inj ? inj : errno;
            if (inj || (e != EINVAL && e != ENOSYS))
                return graft_err_set(err, GRAFT_E_IO, w->target, NULL, 0, "cannot replace the old output: %s", strerror(e));
            // No atomic exchange on this filesystem: move the old one aside, then rename; if that fails, the
            // old one goes back (and a run killed in between leaves it as *.old, which no sweep removes).
            char *old = graft__asprintf("%s.old", w->tmp);
            if (!old) return OOM(w);
            if (graft__rename(w->target, old)) {
                rc = graft_err_set(err, GRAFT_E_IO, w->target, NULL, 0, "cannot replace the old output: %s", strerror(errno));
                graft__free(old);
                return rc;
            }
            if (graft__rename(w->tmp, w->target)) {
                int e2 = errno;
                bool back = graft__rename(old, w->target) == 0;
                rc = graft_err_set(err, GRAFT_E_IO, w->target, NULL, 0, "cannot replace the old output: %s%s%s", strerror(e2),
                                   back ? "" : "; the old output is kept as ", back ? "" : old);
                graft__free(old);
                return rc;
            }
            graft__rm_tree(old);
            graft__free(old);
        } else {
            graft__rm_tree(w->tmp);
        }
    } else if (graft__rename(w->tmp, w->target)) {
        return graft_err_set(err, GRAFT_E_IO, w->target, NULL, 0, "cannot move the finished output into place: %s", strerror(errno));
    }
    w->committed = true;
    if (graft__fsync_dir(w->parent))
        return graft_err_set(err, GRAFT_E_IO, w->parent, NULL, 0, "fsync of the parent folder failed: %s", strerror(errno));
    return GRAFT_OK;
}

bool graft_writer_mem_tensor(const struct graft_writer *w, const char *name, const void **data, enum graft_dtype *dtype, int *n_dims,
                             const uint64_t **ne) {
    if (!w->mem) return false;
    size_t len = strlen(name);
    for (size_t i = 0; i < w->n; i++)
        if (w->t[i].name_len == len && !memcmp(w->t[i].name, name, len)) {
            *data = w->mem + w->t[i].file_off, *dtype = w->t[i].dtype, *n_dims = w->t[i].n_dims, *ne = w->t[i].ne;
            return true;
        }
    return false;
}

const char *graft_writer_mem_file(const struct graft_writer *w, const char *name, size_t *len) {
    for (size_t i = 0; w->fdata && i < w->n_files; i++)
        if (!strcmp(w->files[i], name)) {
            if (len) *len = w->flen[i];
            return w->fdata[i];
        }
    return NULL;
}
