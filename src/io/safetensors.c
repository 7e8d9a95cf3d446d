// safetensors reader: hostile-input validation in a fixed order (see include/graft/safetensors.h),
// then zero-copy access to tensor bytes through a read-only mapping.
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "graft/safetensors.h"
#include "graft/util.h"
#include "../core/impl.h"
#include "io-impl.h"


#define FAIL(code, tensor, tlen, ...) \
    (graft_err_set(err, (code), label, (tensor), (tlen), __VA_ARGS__))

// Lexical pass before the JSON parser: bounds nesting depth (the parser recurses), counts top-level
// keys (to cap the tensor count before building a tree), and rejects "-0", which the JSON parser would
// read as 0 but the reference reader refuses as a non-usize.
static int prescan(const uint8_t *h, size_t n, const char *label, size_t *n_keys, struct graft_err *err) {
    int depth = 0;
    bool in_str = false;
    size_t keys = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = h[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
            continue;
        }
        switch (c) {
        case '"': in_str = true; break;
        case '{': case '[':
            if (++depth > GRAFT_ST_MAX_DEPTH)
                return FAIL(GRAFT_E_LIMIT, NULL, 0, "header JSON nests deeper than %d levels", GRAFT_ST_MAX_DEPTH);
            break;
        case '}': case ']': depth--; break;
        case ':':
            if (depth == 1 && ++keys > GRAFT_ST_MAX_TENSORS + 1)
                return FAIL(GRAFT_E_LIMIT, NULL, 0, "header lists more than %d tensors", GRAFT_ST_MAX_TENSORS);
            break;
        case '-':
            if (i + 1 < n && h[i + 1] == '0' &&
                !(i + 2 < n && (h[i + 2] == '.' || h[i + 2] == 'e' || h[i + 2] == 'E' || (h[i + 2] >= '0' && h[i + 2] <= '9'))))
                return FAIL(GRAFT_E_FORMAT, NULL, 0, "invalid JSON in header: '-0' at byte %zu is not a non-negative integer", i);
            break;
        default: break;
        }
    }
    *n_keys = keys;
    return GRAFT_OK;
}

// A JSON value that must be a non-negative integer.
static bool get_u64(json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < 0) return false;
    *out = (uint64_t)x;
    return true;
}

static int cmp_offsets(const void *a, const void *b) {
    const struct graft_tensor_info *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    uint64_t xe = x->begin + x->n_bytes, ye = y->begin + y->n_bytes; // n_bytes holds END−BEGIN here
    if (xe != ye) return xe < ye ? -1 : 1;
    // Stable order for equal ranges: the JSON position was stashed in n_elem before validation.
    return x->n_elem < y->n_elem ? -1 : x->n_elem > y->n_elem;
}

static void shape_str(char *buf, size_t cap, const struct graft_tensor_info *t) {
    size_t pos = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->n_dims && pos < cap; d++)
        pos += (size_t)snprintf(buf + pos, cap - pos, d ? ", %llu" : "%llu", (unsigned long long)t->ne[d]);
    if (pos < cap) snprintf(buf + pos, cap - pos, "]");
}

// Parse and validate header bytes `h` (n bytes, already bounded and inside the file).
static int parse_header(struct graft_st *st, const uint8_t *h, size_t n, const char *label, struct graft_err *err) {
    size_t bad = graft__utf8_check(h, n);
    if (bad != n) return FAIL(GRAFT_E_FORMAT, NULL, 0, "header is not valid UTF-8 (byte %zu)", bad);
    size_t n_keys = 0;
    int rc = prescan(h, n, label, &n_keys, err);
    if (rc) return rc;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)h, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return FAIL(GRAFT_E_FORMAT, NULL, 0, "invalid JSON in header at byte %d: %s", jerr.position, jerr.text);
    if (!json_is_object(root)) {
        rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "header is JSON but not an object");
        json_decref(root); // after the message: it may point into the tree
        return rc;
    }

    // First pass: sizes for the name arena and the metadata table.
    const char *key;
    size_t klen, names_bytes = 0, n_tensors = 0;
    json_t *val;
    json_t *meta = NULL;
    json_object_keylen_foreach(root, key, klen, val) {
        if (klen == 12 && !memcmp(key, "__metadata__", 12)) { meta = val; continue; }
        if (klen > GRAFT_ST_MAX_NAME) {
            rc = FAIL(GRAFT_E_LIMIT, key, klen, "tensor name is %zu bytes long (limit %d)", klen, GRAFT_ST_MAX_NAME);
            json_decref(root); // after the message: it may point into the tree
            return rc;
        }
        names_bytes += klen + 1;
        n_tensors++;
    }
    if (meta && !json_is_null(meta)) {
        if (!json_is_object(meta)) {
            rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "__metadata__ must be an object of strings");
            json_decref(root); // after the message: it may point into the tree
            return rc;
        }
        const char *mk;
        json_t *mv;
        json_object_foreach(meta, mk, mv) {
            if (!json_is_string(mv)) {
                rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "__metadata__ value of '%s' is not a string", mk);
                json_decref(root); // after the message: it may point into the tree
                return rc;
            }
        }
        st->meta = graft__calloc(2 * json_object_size(meta), sizeof(char *));
        if (!st->meta) goto nomem;
        json_object_foreach(meta, mk, mv) {
            st->meta[2 * st->n_meta] = graft__strdup(mk);
            st->meta[2 * st->n_meta + 1] = graft__strdup(json_string_value(mv));
            st->n_meta++;
            if (!st->meta[2 * st->n_meta - 2] || !st->meta[2 * st->n_meta - 1]) goto nomem;
        }
    }

    st->tensors = graft__calloc(n_tensors, sizeof *st->tensors);
    st->names   = graft__malloc(names_bytes);
    if (!st->tensors || !st->names) goto nomem;

    // Second pass: each tensor entry, field by field.
    size_t name_pos = 0, i = 0;
    json_object_keylen_foreach(root, key, klen, val) {
        if (klen == 12 && !memcmp(key, "__metadata__", 12)) continue;
        struct graft_tensor_info *t = &st->tensors[i];
        memcpy(st->names + name_pos, key, klen);
        st->names[name_pos + klen] = 0;
        t->name = st->names + name_pos, t->name_len = klen;
        name_pos += klen + 1;
        if (!json_is_object(val)) { rc = FAIL(GRAFT_E_FORMAT, key, klen, "entry is not an object"); goto fail; }
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"),
               *jo = json_object_get(val, "data_offsets");
        if (!jd) { rc = FAIL(GRAFT_E_FORMAT, key, klen, "missing 'dtype'"); goto fail; }
        if (!js) { rc = FAIL(GRAFT_E_FORMAT, key, klen, "missing 'shape'"); goto fail; }
        if (!jo) { rc = FAIL(GRAFT_E_FORMAT, key, klen, "missing 'data_offsets'"); goto fail; }
        if (!json_is_string(jd)) { rc = FAIL(GRAFT_E_FORMAT, key, klen, "'dtype' is not a string"); goto fail; }
        int dt = graft_dtype_from_name(json_string_value(jd), json_string_length(jd));
        if (dt < 0) {
            rc = FAIL(GRAFT_E_FORMAT, key, klen, "unknown dtype '%.40s' (expected one of F64 F32 F16 BF16 "
                      "F8_E4M3 F8_E5M2 I64 I32 I16 I8 U8 BOOL …)", json_string_value(jd));
            goto fail;
        }
        t->dtype = (enum graft_dtype)dt;
        if (!json_is_array(js)) { rc = FAIL(GRAFT_E_FORMAT, key, klen, "'shape' is not an array"); goto fail; }
        if (json_array_size(js) > GRAFT_MAX_DIMS) {
            rc = FAIL(GRAFT_E_LIMIT, key, klen, "shape has %zu dimensions (limit %d)", json_array_size(js), GRAFT_MAX_DIMS);
            goto fail;
        }
        t->n_dims = (int)json_array_size(js);
        for (int d = 0; d < t->n_dims; d++)
            if (!get_u64(json_array_get(js, (size_t)d), &t->ne[d])) {
                rc = FAIL(GRAFT_E_FORMAT, key, klen, "shape[%d] is not a non-negative integer", d);
                goto fail;
            }
        uint64_t b, e;
        if (!json_is_array(jo) || json_array_size(jo) != 2 || !get_u64(json_array_get(jo, 0), &b) ||
            !get_u64(json_array_get(jo, 1), &e)) {
            rc = FAIL(GRAFT_E_FORMAT, key, klen, "'data_offsets' must be [BEGIN, END] with non-negative integers");
            goto fail;
        }
        if (e < b) { rc = FAIL(GRAFT_E_FORMAT, key, klen, "data_offsets [%llu, %llu] end before they begin",
                               (unsigned long long)b, (unsigned long long)e); goto fail; }
        t->begin = b, t->n_bytes = e - b;
        t->n_elem = i; // JSON position, for a stable sort
        i++;
    }
    json_decref(root);
    root = NULL;
    st->n = n_tensors;

    // Offsets: sorted, contiguous from 0; sizes: overflow-checked, equal to the declared span.
    qsort(st->tensors, st->n, sizeof *st->tensors, cmp_offsets);
    uint64_t start = 0;
    for (i = 0; i < st->n; i++) {
        struct graft_tensor_info *t = &st->tensors[i];
        if (t->begin != start) {
            if (t->begin < start)
                rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "data_offsets [%llu, %llu] overlap the previous tensor (which ends at %llu)",
                          (unsigned long long)t->begin, (unsigned long long)(t->begin + t->n_bytes), (unsigned long long)start);
            else
                rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "data_offsets [%llu, %llu] leave a gap of %llu bytes before the tensor",
                          (unsigned long long)t->begin, (unsigned long long)(t->begin + t->n_bytes), (unsigned long long)(t->begin - start));
            goto fail;
        }
        start = t->begin + t->n_bytes;
        uint64_t ne = 1, nb;
        for (int d = 0; d < t->n_dims; d++)
            if (!graft__mul_u64(ne, t->ne[d], &ne)) {
                rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "element count of the shape overflows 64 bits");
                goto fail;
            }
        t->n_elem = ne;
        const struct graft_dtype_traits *tr = graft_dtype_traits(t->dtype);
        uint64_t bits;
        if (!graft__mul_u64(ne, (uint64_t)tr->bits, &bits)) {
            rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "byte size of %llu %s elements overflows 64 bits",
                      (unsigned long long)ne, tr->name);
            goto fail;
        }
        if (bits % 8) {
            rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "%llu %s elements are not a whole number of bytes",
                      (unsigned long long)ne, tr->name);
            goto fail;
        }
        nb = bits / 8;
        if (nb != t->n_bytes) {
            char sh[160];
            shape_str(sh, sizeof sh, t);
            rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "data_offsets span %llu bytes but shape %s of %s needs %llu",
                      (unsigned long long)t->n_bytes, sh, tr->name, (unsigned long long)nb);
            goto fail;
        }
    }
    uint64_t need;
    if (!graft__add_u64(st->data_start, start, &need) || need > st->file_size) {
        rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "file is truncated: the tensors need %llu data bytes but only %llu follow the header",
                  (unsigned long long)start, (unsigned long long)(st->file_size - st->data_start));
        goto fail;
    }
    if (need < st->file_size) {
        rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "%llu unexpected bytes after the last tensor (file not fully covered by the header)",
                  (unsigned long long)(st->file_size - need));
        goto fail;
    }

    // Name lookup table.
    st->n_slots = 16, st->hkey = graft__hash_key();
    while (st->n_slots < 2 * st->n) st->n_slots *= 2;
    st->slots = graft__calloc(st->n_slots, sizeof *st->slots);
    if (!st->slots) goto nomem;
    for (i = 0; i < st->n; i++) {
        size_t s = graft__name_hash(st->hkey, st->tensors[i].name, st->tensors[i].name_len) & (st->n_slots - 1);
        while (st->slots[s]) s = (s + 1) & (st->n_slots - 1);
        st->slots[s] = (uint32_t)(i + 1);
    }
    return GRAFT_OK;

nomem:
    rc = FAIL(GRAFT_E_NOMEM, NULL, 0, "out of memory while reading the header");
fail:
    json_decref(root);
    return rc;
}

static int finish_open(struct graft_st *st, const char *label, struct graft_err *err) {
    if (st->file_size < 8) return FAIL(GRAFT_E_FORMAT, NULL, 0, "file is %llu bytes, too small for a safetensors header",
                                       (unsigned long long)st->file_size);
    uint64_t n = graft__load_u64le(st->map);
    if (n > GRAFT_ST_MAX_HEADER)
        return FAIL(GRAFT_E_LIMIT, NULL, 0, "header length %llu exceeds the %llu-byte limit",
                    (unsigned long long)n, GRAFT_ST_MAX_HEADER);
    if (n > st->file_size - 8)
        return FAIL(GRAFT_E_FORMAT, NULL, 0, "header length %llu runs past the end of the file (%llu bytes)",
                    (unsigned long long)n, (unsigned long long)st->file_size);
    st->header_len = n;
    st->data_start = 8 + n;
    return parse_header(st, st->map + 8, (size_t)n, label, err);
}

// A safetensors file, or a PyTorch zip checkpoint (torchbin.c) by its first bytes.
static int open_kind(struct graft_st *st, const char *label, int threads, struct graft_err *err) {
    if (st->map && graft__torchbin_sniff(st->map, st->file_size)) return graft__torchbin_parse(st, label, threads, err);
    if (st->map && graft__torchbin_legacy(st->map, st->file_size))
        return FAIL(GRAFT_E_FORMAT, NULL, 0, "a PyTorch checkpoint in the legacy (pre-1.6) format, which only torch's unpickler reads: "
                                             "re-save it with a current PyTorch (torch.save(torch.load(f, weights_only=True), f2))");
    return finish_open(st, label, err);
}

int graft_st_open_mem(const void *buf, size_t len, const char *label, struct graft_st **out, struct graft_err *err) {
    *out = NULL;
    struct graft_st *st = graft__calloc(1, sizeof *st);
    if (!st) return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
    st->fd = -1;
    st->path = graft__strdup(label ? label : "<memory>");
    if (!st->path) { graft_st_close(st); return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory"); }
    st->map = buf, st->map_len = len, st->file_size = len;
    int rc = open_kind(st, st->path, 1, err);
    if (rc) { graft_st_close(st); return rc; }
    *out = st;
    return GRAFT_OK;
}

int graft_st_open(const char *path, struct graft_st **out, struct graft_err *err) {
    *out = NULL;
    const char *label = path;
    struct graft_st *st = graft__calloc(1, sizeof *st);
    if (!st) return FAIL(GRAFT_E_NOMEM, NULL, 0, "out of memory");
    st->fd = -1;
    int rc = GRAFT_OK;
    st->path = graft__strdup(path);
    if (!st->path) { rc = FAIL(GRAFT_E_NOMEM, NULL, 0, "out of memory"); goto fail; }
    int inj = graft__fault_io("open");
    st->fd = inj ? (errno = inj, -1) : open(path, O_RDONLY | O_CLOEXEC);
    if (st->fd < 0) { rc = FAIL(errno == ENOENT ? GRAFT_E_NOTFOUND : GRAFT_E_IO, NULL, 0, "cannot open: %s", strerror(errno)); goto fail; }
    struct stat sb;
    if (fstat(st->fd, &sb) != 0) { rc = FAIL(GRAFT_E_IO, NULL, 0, "cannot stat: %s", strerror(errno)); goto fail; }
    if (!S_ISREG(sb.st_mode)) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "not a regular file"); goto fail; }
    st->file_size = (uint64_t)sb.st_size;
    if (st->file_size >= 8) {
        void *m = mmap(NULL, (size_t)st->file_size, PROT_READ, MAP_PRIVATE, st->fd, 0);
        if (m == MAP_FAILED) { rc = FAIL(GRAFT_E_IO, NULL, 0, "cannot map: %s", strerror(errno)); goto fail; }
        st->map = m, st->map_len = (size_t)st->file_size, st->owns_map = true;
        // The size may have changed between fstat and mmap: re-check so no access passes EOF.
        if (fstat(st->fd, &sb) != 0 || (uint64_t)sb.st_size != st->file_size) {
            rc = FAIL(GRAFT_E_IO, NULL, 0, "file changed size while being opened");
            goto fail;
        }
        posix_fadvise(st->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    rc = open_kind(st, label, graft_n_cpus(), err);
    if (rc) goto fail;
    *out = st;
    return GRAFT_OK;
fail:
    graft_st_close(st);
    return rc;
}

void graft_st_close(struct graft_st *st) {
    if (!st) return;
    if (st->owns_map && st->map) munmap((void *)st->map, st->map_len);
    if (st->fd >= 0) close(st->fd);
    for (size_t i = 0; i < 2 * st->n_meta; i++) graft__free(st->meta[i]);
    graft__free(st->meta);
    graft__free(st->tensors);
    graft__free(st->names);
    graft__free(st->slots);
    graft__free(st->path);
    graft__free(st);
}

const char *graft_st_path(const struct graft_st *st) { return st->path; }
uint64_t graft_st_data_start(const struct graft_st *st) { return st->data_start; }
bool graft_st_is_torch(const struct graft_st *st) { return st->torch; }
size_t graft_st_n_tensors(const struct graft_st *st) { return st->n; }
const struct graft_tensor_info *graft_st_tensor(const struct graft_st *st, size_t i) {
    return i < st->n ? &st->tensors[i] : NULL;
}
uint64_t graft_st_header_len(const struct graft_st *st) { return st->header_len; }
uint64_t graft_st_file_size(const struct graft_st *st) { return st->file_size; }
size_t graft_st_n_meta(const struct graft_st *st) { return st->n_meta; }

void graft_st_meta(const struct graft_st *st, size_t i, const char **key, const char **value) {
    *key   = i < st->n_meta ? st->meta[2 * i] : NULL;
    *value = i < st->n_meta ? st->meta[2 * i + 1] : NULL;
}

const char *graft_st_meta_get(const struct graft_st *st, const char *key) {
    for (size_t i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta[2 * i], key)) return st->meta[2 * i + 1];
    return NULL;
}

long graft_st_find(const struct graft_st *st, const char *name, size_t len) {
    if (!st->n_slots) return -1;
    size_t s = graft__name_hash(st->hkey, name, len) & (st->n_slots - 1);
    while (st->slots[s]) {
        const struct graft_tensor_info *t = &st->tensors[st->slots[s] - 1];
        if (t->name_len == len && !memcmp(t->name, name, len)) return (long)st->slots[s] - 1;
        s = (s + 1) & (st->n_slots - 1);
    }
    return -1;
}

const uint8_t *graft_st_data(const struct graft_st *st, const struct graft_tensor_info *t) {
    return t->n_bytes ? st->map + st->data_start + t->begin : NULL;
}

// Page-aligned interior of [data_start+begin, +len) inside the mapping.
static bool page_range(const struct graft_st *st, uint64_t begin, uint64_t len, uint8_t **p, size_t *n) {
    if (!st->owns_map || !len) return false;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)(st->map + st->data_start + begin), b = a + len;
    a = (a + page - 1) & ~(page - 1);
    b &= ~(page - 1);
    if (b <= a) return false;
    *p = (uint8_t *)a, *n = b - a;
    return true;
}

void graft_st_release(const struct graft_st *st, uint64_t begin, uint64_t len) {
    uint8_t *p;
    size_t n;
    if (page_range(st, begin, len, &p, &n)) madvise(p, n, MADV_DONTNEED);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 // Linux 5.14
#endif
void graft_st_populate(const struct graft_st *st, uint64_t begin, uint64_t len) {
    uint8_t *p;
    size_t n;
    if (page_range(st, begin, len, &p, &n)) madvise(p, n, MADV_POPULATE_READ); // older kernels: EINVAL, faults as before
}

void graft_st_will_need(const struct graft_st *st, uint64_t begin, uint64_t len) {
    uint8_t *p;
    size_t n;
    if (page_range(st, begin, len, &p, &n)) madvise(p, n, MADV_WILLNEED);
}
