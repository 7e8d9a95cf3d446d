// Model catalog: a safetensors file or a Hugging Face folder (single file or index + shards), fully
// validated at open, with tensor lookup by name across shards.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "graft/gguf.h"
#include "graft/model.h"
#include "graft/util.h"
#include "../core/impl.h"
#include "io-impl.h"

struct graft_model {
    char                      *path, *dir, *index_path;
    bool                       is_dir;
    struct graft_st          **shards;
    int                        n_shards;
    struct graft_model_tensor *tensors;
    size_t                     n;
    uint32_t                  *slots;   // hash of tensor names → index + 1
    size_t                     n_slots;
    uint64_t                   hkey;    // the name table's hash key (graft__name_hash)
    char                      *config;  // compact config.json text or NULL
    uint64_t                   n_params, n_bytes;
    char                      *tmp;     // a GGUF input's decoded folder, removed at close
    pid_t                      tmp_pid; // by the process that made it
};

static bool is_regular(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

// A shard name from an index must be a plain file name inside the folder.
static const char *bad_shard_name(const char *s, size_t len) {
    if (len == 0) return "is empty";
    if (memchr(s, 0, len)) return "contains a NUL byte";
    if (memchr(s, '/', len) || memchr(s, '\\', len)) return "is not a plain file name (contains a path separator)";
    if (s[0] == '.') return "starts with '.'";
    if (len >= 2 && s[1] == ':') return "looks like a drive path";
    if ((len < 12 || memcmp(s + len - 12, ".safetensors", 12)) && (len < 4 || memcmp(s + len - 4, ".bin", 4)))
        return "does not end in .safetensors or .bin";
    return NULL;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Read a whole small file (≤ max bytes) into a NUL-terminated buffer.
int graft__read_small_file(const char *path, size_t max, char **out, size_t *out_len, struct graft_err *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return graft_err_set(err, errno == ENOENT ? GRAFT_E_NOTFOUND : GRAFT_E_IO, path, NULL, 0, "cannot open: %s", strerror(errno));
    struct stat sb;
    int rc = GRAFT_OK;
    char *buf = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) { rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "not a regular file"); goto out; }
    if ((uint64_t)sb.st_size > max) {
        rc = graft_err_set(err, GRAFT_E_LIMIT, path, NULL, 0, "file is %lld bytes (limit %zu)", (long long)sb.st_size, max);
        goto out;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    buf = graft__malloc(n + 1);
    if (!buf) { rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory"); goto out; }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { rc = graft_err_set(err, GRAFT_E_IO, path, NULL, 0, "read failed: %s", r ? strerror(errno) : "file shrank"); goto out; }
        got += (size_t)r;
    }
    buf[n] = 0;
    *out = buf, buf = NULL;
    if (out_len) *out_len = n;
out:
    graft__free(buf);
    close(fd);
    return rc;
}

int graft__load_json_file(const char *path, size_t max, json_t **out, struct graft_err *err) {
    *out = NULL;
    char *text;
    size_t len;
    int rc = graft__read_small_file(path, max, &text, &len, err);
    if (rc) return rc;
    size_t bad = graft__utf8_check((const uint8_t *)text, len);
    if (bad != len) {
        graft__free(text);
        return graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "not valid UTF-8 (byte %zu)", bad);
    }
    json_error_t jerr;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    graft__free(text);
    if (!j) return graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "top-level JSON value is not an object");
    }
    *out = j;
    return GRAFT_OK;
}

static int add_shard(struct graft_model *m, const char *path, struct graft_err *err) {
    struct graft_st **s = graft__realloc(m->shards, (size_t)(m->n_shards + 1) * sizeof *s);
    if (!s) return graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
    m->shards = s;
    int rc = graft_st_open(path, &m->shards[m->n_shards], err);
    if (rc) return rc;
    m->n_shards++;
    return GRAFT_OK;
}

// Build the tensor table and the name index over all shards; reject a name present in two shards.
static int build_table(struct graft_model *m, struct graft_err *err) {
    size_t n = 0;
    for (int s = 0; s < m->n_shards; s++) n += graft_st_n_tensors(m->shards[s]);
    m->tensors = graft__calloc(n, sizeof *m->tensors);
    m->n_slots = 16, m->hkey = graft__hash_key();
    while (m->n_slots < 2 * n) m->n_slots *= 2;
    m->slots = graft__calloc(m->n_slots, sizeof *m->slots);
    if (!m->tensors || !m->slots) return graft_err_set(err, GRAFT_E_NOMEM, m->path, NULL, 0, "out of memory");
    for (int s = 0; s < m->n_shards; s++) {
        for (size_t i = 0; i < graft_st_n_tensors(m->shards[s]); i++) {
            const struct graft_tensor_info *t = graft_st_tensor(m->shards[s], i);
            size_t h = graft__name_hash(m->hkey, t->name, t->name_len) & (m->n_slots - 1);
            while (m->slots[h]) {
                const struct graft_model_tensor *o = &m->tensors[m->slots[h] - 1];
                if (o->info->name_len == t->name_len && !memcmp(o->info->name, t->name, t->name_len))
                    return graft_err_set(err, GRAFT_E_FORMAT, graft_st_path(m->shards[s]), t->name, t->name_len,
                                         "also present in %s (a tensor must live in one shard)", graft_st_path(m->shards[o->shard]));
                h = (h + 1) & (m->n_slots - 1);
            }
            m->tensors[m->n] = (struct graft_model_tensor){t, s};
            m->slots[h] = (uint32_t)(++m->n);
            m->n_params += t->n_elem;
            m->n_bytes += t->n_bytes;
        }
    }
    return GRAFT_OK;
}

static int open_index(struct graft_model *m, struct graft_err *err) {
    json_t *idx = NULL;
    char **files = NULL;
    size_t n_files = 0;
    const char *ip = m->index_path;
    int rc = graft__load_json_file(ip, GRAFT_INDEX_MAX_BYTES, &idx, err);
    if (rc) return rc;
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(wm)) { rc = graft_err_set(err, GRAFT_E_FORMAT, ip, NULL, 0, "missing or non-object 'weight_map'"); goto out; }
    files = graft__calloc(json_object_size(wm) + 1, sizeof *files);
    if (!files) { rc = graft_err_set(err, GRAFT_E_NOMEM, ip, NULL, 0, "out of memory"); goto out; }
    const char *key;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(wm, key, klen, v) {
        if (!json_is_string(v)) { rc = graft_err_set(err, GRAFT_E_FORMAT, ip, key, klen, "weight_map value is not a string"); goto out; }
        const char *why = bad_shard_name(json_string_value(v), json_string_length(v));
        if (why) { rc = graft_err_set(err, GRAFT_E_FORMAT, ip, key, klen, "shard name '%.100s' %s", json_string_value(v), why); goto out; }
        files[n_files++] = (char *)json_string_value(v);
    }
    if (n_files == 0) { rc = graft_err_set(err, GRAFT_E_FORMAT, ip, NULL, 0, "weight_map lists no tensors"); goto out; }
    // Distinct shard names, sorted (O(n log n) even for hostile indexes with one name per tensor).
    qsort(files, n_files, sizeof *files, cmp_str);
    size_t u = 1;
    for (size_t i = 1; i < n_files; i++)
        if (strcmp(files[i], files[u - 1])) files[u++] = files[i];
    n_files = u;
    for (size_t i = 0; i < n_files; i++) {
        char *p = graft__asprintf("%s/%s", m->dir, files[i]);
        if (!p) { rc = graft_err_set(err, GRAFT_E_NOMEM, ip, NULL, 0, "out of memory"); goto out; }
        if (!is_regular(p)) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, ip, NULL, 0, "shard '%s' listed in weight_map is missing or not a regular file", files[i]);
            graft__free(p);
            goto out;
        }
        rc = add_shard(m, p, err);
        graft__free(p);
        if (rc) goto out;
    }
    rc = build_table(m, err);
    if (rc) goto out;
    // Index ↔ shards consistency, both ways.
    json_object_keylen_foreach(wm, key, klen, v) {
        const struct graft_model_tensor *t = graft_model_find(m, key, klen);
        if (!t) { rc = graft_err_set(err, GRAFT_E_FORMAT, ip, key, klen, "listed in weight_map but absent from shard '%s'", json_string_value(v)); goto out; }
        const char *sp = graft_st_path(m->shards[t->shard]);
        const char *base = strrchr(sp, '/');
        base = base ? base + 1 : sp;
        if (strcmp(base, json_string_value(v))) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, ip, key, klen, "weight_map says shard '%s' but the tensor is in '%s'", json_string_value(v), base);
            goto out;
        }
    }
    if (m->n != json_object_size(wm)) {
        for (size_t i = 0; i < m->n; i++) {
            const struct graft_tensor_info *t = m->tensors[i].info;
            if (!json_object_getn(wm, t->name, t->name_len)) {
                rc = graft_err_set(err, GRAFT_E_FORMAT, graft_st_path(m->shards[m->tensors[i].shard]), t->name, t->name_len,
                                   "present in the shard but not listed in %s", ip);
                goto out;
            }
        }
    }
out:
    graft__free(files);
    json_decref(idx);
    return rc;
}

// A folder without an index: model.safetensors, or its only *.safetensors file; else (older
// checkpoints) pytorch_model.bin, or its only *.bin file. safetensors first, as transformers loads them.
static int open_folder_single(struct graft_model *m, struct graft_err *err) {
    static const char *const kinds[2][2] = {{"model.safetensors", ".safetensors"}, {"pytorch_model.bin", ".bin"}};
    for (int k = 0; k < 2; k++) {
        char *p = graft__asprintf("%s/%s", m->dir, kinds[k][0]);
        if (!p) return graft_err_set(err, GRAFT_E_NOMEM, m->path, NULL, 0, "out of memory");
        if (is_regular(p)) {
            int rc = add_shard(m, p, err);
            graft__free(p);
            return rc ? rc : build_table(m, err);
        }
        graft__free(p);
        DIR *d = opendir(m->dir);
        if (!d) return graft_err_set(err, GRAFT_E_IO, m->dir, NULL, 0, "cannot list folder: %s", strerror(errno));
        char *only = NULL;
        int count = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.' || !ends_with(de->d_name, kinds[k][1])) continue;
            if (++count == 1) only = graft__strdup(de->d_name);
        }
        closedir(d);
        int rc = GRAFT_OK;
        if (count > 1)
            rc = graft_err_set(err, GRAFT_E_FORMAT, m->dir, NULL, 0, "%d %s files but no %s.index.json saying which belong to the model", count, kinds[k][1],
                               kinds[k][0]);
        else if (count == 1 && !only)
            rc = graft_err_set(err, GRAFT_E_NOMEM, m->dir, NULL, 0, "out of memory");
        else if (count == 1) {
            char *q = graft__asprintf("%s/%s", m->dir, only);
            rc = q ? add_shard(m, q, err) : graft_err_set(err, GRAFT_E_NOMEM, m->dir, NULL, 0, "out of memory");
            graft__free(q);
            if (!rc) rc = build_table(m, err);
        }
        graft__free(only);
        if (rc || count) return rc;
    }
    return graft_err_set(err, GRAFT_E_NOTFOUND, m->dir, NULL, 0,
                         "no model.safetensors, model.safetensors.index.json, pytorch_model.bin(.index.json) or other .safetensors / .bin file in this folder");
}

// A GGUF file: decoded once into a Hugging Face folder in a private temporary directory
// ($GRAFT_TMPDIR, else $TMPDIR, else /var/tmp), which lives as long as the model.
static int open_gguf(const char *path, struct graft_model **out, struct graft_err *err) {
    const char *base = getenv("GRAFT_TMPDIR");
    if (!base || !*base) base = getenv("TMPDIR");
    if (!base || !*base) base = "/var/tmp";
    graft__remove_stale(base, "graft-gguf-"); // folders of killed runs
    char tag[GRAFT__OWNER_TAG_MAX];
    graft__owner_tag(tag);
    char *tmp = graft__asprintf("%s/graft-gguf-%s-XXXXXX", base, tag), *dir = NULL;
    struct graft_gguf *g = NULL;
    if (!tmp) return graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
    int rc = graft_gguf_open(path, &g, err);
    if (!rc && !mkdtemp(tmp)) {
        rc = graft_err_set(err, GRAFT_E_IO, path, NULL, 0, "cannot create a temporary folder in %s to decode the GGUF file: %s (set GRAFT_TMPDIR)", base, strerror(errno));
        graft__free(tmp), tmp = NULL;
    }
    if (!rc && !(dir = graft__asprintf("%s/model", tmp))) rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
    if (!rc) rc = graft_gguf_to_hf(g, path, dir, -1, graft_n_cpus(), 0, NULL, err);
    graft_gguf_close(g);
    if (!rc) rc = graft_model_open(dir, out, err);
    if (!rc) {
        char *p = graft__strdup(path);
        if (!p) rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
        else graft__free((*out)->path), (*out)->path = p, (*out)->tmp = tmp, (*out)->tmp_pid = getpid(), tmp = NULL;
        if (rc) graft_model_close(*out), *out = NULL;
    }
    if (tmp) graft__rm_tree(tmp);
    graft__free(tmp), graft__free(dir);
    return rc;
}

int graft_model_open(const char *path, struct graft_model **out, struct graft_err *err) {
    *out = NULL;
    if (graft_gguf_sniff(path)) return open_gguf(path, out, err);
    struct graft_model *m = graft__calloc(1, sizeof *m);
    if (!m) return graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
    int rc = GRAFT_OK;
    struct stat sb;
    m->path = graft__strdup(path);
    if (!m->path) { rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory"); goto fail; }
    if (stat(path, &sb) != 0) {
        rc = graft_err_set(err, errno == ENOENT ? GRAFT_E_NOTFOUND : GRAFT_E_IO, path, NULL, 0, "%s", strerror(errno));
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        m->is_dir = true;
        size_t len = strlen(path);
        while (len > 1 && path[len - 1] == '/') len--;
        m->dir = graft__strndup(path, len);
        m->index_path = m->dir ? graft__asprintf("%s/model.safetensors.index.json", m->dir) : NULL;
        if (!m->index_path) { rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory"); goto fail; }
        if (!is_regular(m->index_path)) { // transformers' older checkpoints: pytorch_model.bin.index.json
            char *bi = graft__asprintf("%s/pytorch_model.bin.index.json", m->dir);
            if (bi && is_regular(bi)) graft__free(m->index_path), m->index_path = bi, bi = NULL;
            graft__free(bi);
        }
        if (is_regular(m->index_path)) {
            rc = open_index(m, err);
        } else {
            graft__free(m->index_path);
            m->index_path = NULL;
            rc = open_folder_single(m, err);
        }
        if (rc) goto fail;
        char *cp = graft__asprintf("%s/config.json", m->dir);
        if (!cp) { rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory"); goto fail; }
        if (is_regular(cp)) {
            json_t *cfg;
            rc = graft__load_json_file(cp, GRAFT_CONFIG_MAX_BYTES, &cfg, err);
            if (!rc) {
                m->config = json_dumps(cfg, JSON_COMPACT | JSON_PRESERVE_ORDER);
                json_decref(cfg);
                if (!m->config) rc = graft_err_set(err, GRAFT_E_NOMEM, cp, NULL, 0, "out of memory");
            }
        }
        graft__free(cp);
        if (rc) goto fail;
    } else {
        const char *slash = strrchr(path, '/');
        m->dir = slash ? graft__strndup(path, slash == path ? 1 : (size_t)(slash - path)) : graft__strdup(".");
        if (!m->dir) { rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory"); goto fail; }
        rc = add_shard(m, path, err);
        if (!rc) rc = build_table(m, err);
        if (rc) goto fail;
    }
    *out = m;
    return GRAFT_OK;
fail:
    graft_model_close(m);
    return rc;
}

void graft_model_close(struct graft_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_shards; i++) graft_st_close(m->shards[i]);
    graft__free(m->shards);
    graft__free(m->tensors);
    graft__free(m->slots);
    free(m->config); // allocated by jansson
    graft__free(m->path);
    graft__free(m->dir);
    graft__free(m->index_path);
    if (m->tmp && m->tmp_pid == getpid()) graft__rm_tree(m->tmp); // (a forked child's copy is not its to remove)
    graft__free(m->tmp);
    graft__free(m);
}

const char *graft_model_path(const struct graft_model *m) { return m->path; }
const char *graft_model_dir(const struct graft_model *m) { return m->dir; }
int graft_model_is_dir(const struct graft_model *m) { return m->is_dir; }
const char *graft_model_index_path(const struct graft_model *m) { return m->index_path; }
int graft_model_n_shards(const struct graft_model *m) { return m->n_shards; }
const struct graft_st *graft_model_shard(const struct graft_model *m, int i) {
    return i >= 0 && i < m->n_shards ? m->shards[i] : NULL;
}
size_t graft_model_n_tensors(const struct graft_model *m) { return m->n; }
const struct graft_model_tensor *graft_model_tensor(const struct graft_model *m, size_t i) {
    return i < m->n ? &m->tensors[i] : NULL;
}
uint64_t graft_model_n_params(const struct graft_model *m) { return m->n_params; }
uint64_t graft_model_n_bytes(const struct graft_model *m) { return m->n_bytes; }
const char *graft_model_config_json(const struct graft_model *m) { return m->config; }

const struct graft_model_tensor *graft_model_find(const struct graft_model *m, const char *name, size_t len) {
    if (!m->n_slots) return NULL;
    size_t h = graft__name_hash(m->hkey, name, len) & (m->n_slots - 1);
    while (m->slots[h]) {
        const struct graft_model_tensor *t = &m->tensors[m->slots[h] - 1];
        if (t->info->name_len == len && !memcmp(t->info->name, name, len)) return t;
        h = (h + 1) & (m->n_slots - 1);
    }
    return NULL;
}

const uint8_t *graft_model_data(const struct graft_model *m, const struct graft_model_tensor *t) {
    return graft_st_data(m->shards[t->shard], t->info);
}
