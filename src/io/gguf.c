// GGUF reader (include/graft/gguf.h): one pass over the header with every read bounded by the bytes
// left, in the order the header documents; then zero-copy tensor access.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "graft/dtype.h"
#include "graft/gguf.h"
#include "../core/impl.h"

struct graft_gguf {
    char    *path;
    int      fd;
    const uint8_t *map;
    size_t   len;
    bool     owns_map;
    uint32_t version, alignment;
    uint64_t data_off;
    struct graft_gguf_kv *kv;
    size_t   n_kv;
    struct graft_gguf_tensor *t;
    size_t   n_t;
    uint32_t *kslots, *tslots; // name hashes → index + 1
    size_t   n_kslots, n_tslots;
    uint64_t hkey;             // their hash key (graft__name_hash)
};

// id → name, values per block, bytes per block (shared/formats.md §4.4); blck 0 = removed / unknown
static const struct { const char *name; uint32_t blck, size; } TYPES[GRAFT_GGML_TYPE_COUNT] = {
    {"F32", 1, 4},        {"F16", 1, 2},        {"Q4_0", 32, 18},    {"Q4_1", 32, 20},    {"Q4_2", 0, 0},
    {"Q4_3", 0, 0},       {"Q5_0", 32, 22},     {"Q5_1", 32, 24},    {"Q8_0", 32, 34},    {"Q8_1", 32, 36},
    {"Q2_K", 256, 84},    {"Q3_K", 256, 110},   {"Q4_K", 256, 144},  {"Q5_K", 256, 176},  {"Q6_K", 256, 210},
    {"Q8_K", 256, 292},   {"IQ2_XXS", 256, 66}, {"IQ2_XS", 256, 74}, {"IQ3_XXS", 256, 98}, {"IQ1_S", 256, 50},
    {"IQ4_NL", 32, 18},   {"IQ3_S", 256, 110},  {"IQ2_S", 256, 82},  {"IQ4_XS", 256, 136}, {"I8", 1, 1},
    {"I16", 1, 2},        {"I32", 1, 4},        {"I64", 1, 8},       {"F64", 1, 8},       {"IQ1_M", 256, 56},
    {"BF16", 1, 2},       {"Q4_0_4_4", 0, 0},   {"Q4_0_4_8", 0, 0},  {"Q4_0_8_8", 0, 0},  {"TQ1_0", 256, 54},
    {"TQ2_0", 256, 66},   {"IQ4_NL_4_4", 0, 0}, {"IQ4_NL_4_8", 0, 0}, {"IQ4_NL_8_8", 0, 0}, {"MXFP4", 32, 17},
    {"NVFP4", 64, 36},    {"Q1_0", 128, 18},    {"Q2_0", 64, 18},
};
static const uint32_t VSIZE[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *const VNAME[13] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};

const char *graft_ggml_type_name(uint32_t t) { return t < GRAFT_GGML_TYPE_COUNT ? TYPES[t].name : "?"; }
uint32_t graft_ggml_block_size(uint32_t t) { return t < GRAFT_GGML_TYPE_COUNT ? TYPES[t].blck : 0; }
uint32_t graft_ggml_type_size(uint32_t t) { return t < GRAFT_GGML_TYPE_COUNT ? TYPES[t].size : 0; }
const char *graft_gguf_vtype_name(uint32_t t) { return t < 13 ? VNAME[t] : "?"; }

struct rd {
    const uint8_t *p;
    uint64_t at, len;
    const char *label;
    struct graft_err *err;
};

static uint32_t u32le(const uint8_t *b) { return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24; }

static int need(struct rd *r, uint64_t n, const char *what) {
    if (n > r->len - r->at)
        return graft_err_set(r->err, GRAFT_E_FORMAT, r->label, NULL, 0, "truncated: %s needs %llu bytes at offset %llu, %llu are left", what,
                             (unsigned long long)n, (unsigned long long)r->at, (unsigned long long)(r->len - r->at));
    return GRAFT_OK;
}
static int rd_u32(struct rd *r, uint32_t *v, const char *what) {
    int rc = need(r, 4, what);
    if (!rc) *v = u32le(r->p + r->at), r->at += 4;
    return rc;
}
static int rd_u64(struct rd *r, uint64_t *v, const char *what) {
    int rc = need(r, 8, what);
    if (!rc) *v = graft__load_u64le(r->p + r->at), r->at += 8;
    return rc;
}
// A gguf string: u64 length + bytes. *s points into the mapping.
static int rd_str(struct rd *r, const uint8_t **s, uint64_t *n, uint64_t max, const char *what) {
    int rc = rd_u64(r, n, what);
    if (rc) return rc;
    if (*n > max) return graft_err_set(r->err, GRAFT_E_LIMIT, r->label, NULL, 0, "%s is %llu bytes long (limit %llu)", what, (unsigned long long)*n, (unsigned long long)max);
    if ((rc = need(r, *n, what))) return rc;
    *s = r->p + r->at, r->at += *n;
    return GRAFT_OK;
}

static bool pow2(uint64_t x) { return x && !(x & (x - 1)); }

// Open addressing on name hashes (slots hold index + 1): the slot holding `name`, or the empty slot
// where it would go. Names hold no NUL (checked when read).
static uint32_t *probe(uint64_t key, uint32_t *slots, size_t n_slots, const char *name, size_t len, const char *(*name_of)(const void *, size_t),
                       const void *arr) {
    for (size_t h = graft__name_hash(key, name, len) & (n_slots - 1);; h = (h + 1) & (n_slots - 1)) {
        if (!slots[h]) return &slots[h];
        const char *o = name_of(arr, slots[h] - 1);
        if (strlen(o) == len && !memcmp(o, name, len)) return &slots[h];
    }
}
// True if `name` is already there, else records index i for it.
static bool seen(uint64_t key, uint32_t *slots, size_t n_slots, const char *name, size_t len, size_t i, const char *(*name_of)(const void *, size_t),
                 const void *arr) {
    uint32_t *s = probe(key, slots, n_slots, name, len, name_of, arr);
    if (*s) return true;
    *s = (uint32_t)i + 1;
    return false;
}
static const char *kv_name(const void *a, size_t i) { return ((const struct graft_gguf_kv *)a)[i].key; }
static const char *t_name(const void *a, size_t i) { return ((const struct graft_gguf_tensor *)a)[i].name; }

static int parse(struct graft_gguf *g, const char *label, struct graft_err *err) {
    struct rd r = {g->map, 0, g->len, label, err};
    uint32_t magic = 0, version;
    uint64_t n_t, n_kv;
    int rc;
    if (g->len < 4 || (magic = u32le(g->map)) != 0x46554747u)
        return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "not a GGUF file (no 'GGUF' magic)");
    r.at = 4;
    if ((rc = rd_u32(&r, &version, "the version"))) return rc;
    if (version && !(version & 0xFFFF))
        return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "version field 0x%08x: a big-endian GGUF file, which graft does not read", version);
    if (version != 2 && version != 3)
        return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "GGUF version %u (graft reads versions 2 and 3)", version);
    g->version = version;
    if ((rc = rd_u64(&r, &n_t, "the tensor count")) || (rc = rd_u64(&r, &n_kv, "the key/value count"))) return rc;
    // every tensor info takes ≥ 8 + 4 + 4 + 8 bytes, every key/value ≥ 8 + 4 + 1
    if (n_t > GRAFT_GGUF_MAX_TENSORS || n_t > (g->len - r.at) / 24)
        return graft_err_set(err, n_t > GRAFT_GGUF_MAX_TENSORS ? GRAFT_E_LIMIT : GRAFT_E_FORMAT, label, NULL, 0, "tensor count %llu is impossible (limit %u, or more than the file holds)",
                             (unsigned long long)n_t, GRAFT_GGUF_MAX_TENSORS);
    if (n_kv > GRAFT_GGUF_MAX_KV || n_kv > (g->len - r.at) / 13)
        return graft_err_set(err, n_kv > GRAFT_GGUF_MAX_KV ? GRAFT_E_LIMIT : GRAFT_E_FORMAT, label, NULL, 0, "key/value count %llu is impossible (limit %u, or more than the file holds)",
                             (unsigned long long)n_kv, GRAFT_GGUF_MAX_KV);
    g->n_kslots = 16, g->n_tslots = 16, g->hkey = graft__hash_key();
    while (g->n_kslots < 2 * n_kv) g->n_kslots <<= 1;
    while (g->n_tslots < 2 * n_t) g->n_tslots <<= 1;
    g->kv = graft__calloc(n_kv ? n_kv : 1, sizeof *g->kv), g->t = graft__calloc(n_t ? n_t : 1, sizeof *g->t);
    g->kslots = graft__calloc(g->n_kslots, sizeof *g->kslots), g->tslots = graft__calloc(g->n_tslots, sizeof *g->tslots);
    if (!g->kv || !g->t || !g->kslots || !g->tslots) return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
    g->alignment = GRAFT_GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        const uint8_t *k;
        uint64_t kl;
        struct graft_gguf_kv *kv = &g->kv[i];
        if ((rc = rd_str(&r, &k, &kl, 65535, "a metadata key"))) return rc;
        if (!kl) return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "metadata key %llu is empty", (unsigned long long)i);
        if (graft__utf8_check(k, kl) != kl) return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "metadata key %llu is not valid UTF-8", (unsigned long long)i);
        if (memchr(k, 0, kl)) return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "metadata key %llu holds a NUL byte", (unsigned long long)i);
        if (!(kv->key = graft__strndup((const char *)k, kl))) return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
        kv->key_len = kl, g->n_kv = i + 1;
        if (seen(g->hkey, g->kslots, g->n_kslots, kv->key, kl, i, kv_name, g->kv))
            return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "metadata key '%.100s' appears twice", kv->key);
        if ((rc = rd_u32(&r, &kv->type, "a value type"))) return rc;
        if (kv->type > GRAFT_GGUF_F64) return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "key '%.100s': unknown value type %u", kv->key, kv->type);
        uint32_t et = kv->type;
        kv->n = 1;
        if (kv->type == GRAFT_GGUF_ARRAY) {
            if ((rc = rd_u32(&r, &kv->arr_type, "an array type")) || (rc = rd_u64(&r, &kv->n, "an array length"))) return rc;
            if (kv->arr_type > GRAFT_GGUF_F64 || kv->arr_type == GRAFT_GGUF_ARRAY)
                return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "key '%.100s': array of %s (nested or unknown element types are refused)", kv->key,
                                     kv->arr_type == GRAFT_GGUF_ARRAY ? "arrays" : "an unknown type");
            if (kv->n > (1u << 30)) return graft_err_set(err, GRAFT_E_LIMIT, label, NULL, 0, "key '%.100s': %llu array elements (limit 2^30)", kv->key, (unsigned long long)kv->n);
            et = kv->arr_type;
        }
        kv->value = g->map + r.at;
        if (et == GRAFT_GGUF_STRING) {
            if (kv->n > (g->len - r.at) / 8) return need(&r, kv->n * 8, "a string array");
            for (uint64_t e = 0; e < kv->n; e++) {
                const uint8_t *s;
                uint64_t sl;
                if ((rc = rd_str(&r, &s, &sl, 1ull << 30, "a string value"))) return rc;
            }
        } else {
            if ((rc = need(&r, kv->n * VSIZE[et], "a value"))) return rc; // n ≤ 2^30, size ≤ 8: no overflow
            r.at += kv->n * VSIZE[et];
        }
        if (!strcmp(kv->key, "general.alignment")) {
            if (kv->type != GRAFT_GGUF_U32) return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "general.alignment must be a u32, not %s", graft_gguf_vtype_name(kv->type));
            uint32_t a = u32le(kv->value);
            if (!pow2(a) || a > (1u << 20)) return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "general.alignment %u is not a power of two up to 1 MiB", a);
            g->alignment = a;
        }
    }
    uint64_t expect_off = 0;
    for (uint64_t i = 0; i < n_t; i++) {
        const uint8_t *nm;
        uint64_t nl;
        struct graft_gguf_tensor *t = &g->t[i];
        if ((rc = rd_str(&r, &nm, &nl, 1ull << 20, "a tensor name"))) return rc;
        if (!nl || nl > GRAFT_GGUF_MAX_NAME)
            return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "tensor %llu: name of %llu bytes (1 to %d allowed, as ggml)", (unsigned long long)i, (unsigned long long)nl,
                                 GRAFT_GGUF_MAX_NAME);
        if (graft__utf8_check(nm, nl) != nl || memchr(nm, 0, nl))
            return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "tensor %llu: name is not valid UTF-8 without NUL bytes", (unsigned long long)i);
        if (!(t->name = graft__strndup((const char *)nm, nl))) return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
        t->name_len = nl, g->n_t = i + 1;
#define TFAIL(code, ...) graft_err_set(err, code, label, t->name, t->name_len, __VA_ARGS__)
        if (seen(g->hkey, g->tslots, g->n_tslots, t->name, nl, i, t_name, g->t)) return TFAIL(GRAFT_E_FORMAT, "appears twice");
        if ((rc = rd_u32(&r, &t->n_dims, "a dimension count"))) return rc;
        if (t->n_dims > 4) return TFAIL(GRAFT_E_FORMAT, "%u dimensions (at most 4)", t->n_dims);
        t->n_elem = 1;
        for (uint32_t d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            if ((rc = rd_u64(&r, &t->ne[d], "a dimension"))) return rc;
            if (t->ne[d] > (uint64_t)INT64_MAX) return TFAIL(GRAFT_E_FORMAT, "dimension %u is negative as ggml reads it", d);
        }
        for (uint32_t d = 0; d < 4; d++)
            if (!graft__mul_u64(t->n_elem, t->ne[d], &t->n_elem) || t->n_elem > (uint64_t)INT64_MAX) return TFAIL(GRAFT_E_FORMAT, "element count overflows");
        if ((rc = rd_u32(&r, &t->type, "a tensor type")) || (rc = rd_u64(&r, &t->offset, "a tensor offset"))) return rc;
        uint32_t blck = graft_ggml_block_size(t->type);
        if (!blck) return TFAIL(GRAFT_E_FORMAT, "ggml type %u is unknown or removed", t->type);
        if (t->ne[0] % blck) return TFAIL(GRAFT_E_FORMAT, "ne[0] = %llu is not a multiple of %s's block of %u", (unsigned long long)t->ne[0], TYPES[t->type].name, blck);
        if (!graft__mul_u64(t->n_elem / blck, TYPES[t->type].size, &t->n_bytes)) return TFAIL(GRAFT_E_FORMAT, "byte size overflows");
        if (t->offset != expect_off)
            return TFAIL(GRAFT_E_FORMAT, "data offset %llu, expected %llu (each tensor must follow the previous one's padded end, as ggml requires)",
                         (unsigned long long)t->offset, (unsigned long long)expect_off);
        uint64_t padded;
        if (!graft__add_u64(t->n_bytes, g->alignment - 1, &padded) || !graft__add_u64(expect_off, padded & ~(uint64_t)(g->alignment - 1), &expect_off))
            return TFAIL(GRAFT_E_FORMAT, "data offsets overflow");
#undef TFAIL
    }
    g->data_off = r.at;
    if (n_t) { // ggml pads to the alignment only when there are tensors
        g->data_off = (r.at + g->alignment - 1) & ~(uint64_t)(g->alignment - 1);
        if (g->data_off > g->len || expect_off > g->len - g->data_off)
            return graft_err_set(err, GRAFT_E_FORMAT, label, NULL, 0, "truncated: the tensor data needs %llu bytes after offset %llu, the file has %llu",
                                 (unsigned long long)expect_off, (unsigned long long)g->data_off, (unsigned long long)g->len);
    }
    return GRAFT_OK;
}

int graft_gguf_open_mem(const void *buf, size_t len, const char *label, struct graft_gguf **out, struct graft_err *err) {
    *out = NULL;
    struct graft_gguf *g = graft__calloc(1, sizeof *g);
    if (!g || !(g->path = graft__strdup(label ? label : "<memory>"))) {
        graft__free(g);
        return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
    }
    g->fd = -1, g->map = buf, g->len = len;
    int rc = parse(g, g->path, err);
    if (rc) graft_gguf_close(g);
    else *out = g;
    return rc;
}

int graft_gguf_open(const char *path, struct graft_gguf **out, struct graft_err *err) {
    *out = NULL;
    struct graft_gguf *g = graft__calloc(1, sizeof *g);
    if (!g) return graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
    g->fd = -1;
    int rc = GRAFT_OK;
    if (!(g->path = graft__strdup(path))) { rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory"); goto fail; }
    int inj = graft__fault_io("open");
    g->fd = inj ? (errno = inj, -1) : open(path, O_RDONLY | O_CLOEXEC);
    if (g->fd < 0) { rc = graft_err_set(err, errno == ENOENT ? GRAFT_E_NOTFOUND : GRAFT_E_IO, path, NULL, 0, "cannot open: %s", strerror(errno)); goto fail; }
    struct stat sb;
    if (fstat(g->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) { rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "not a regular file"); goto fail; }
    g->len = (size_t)sb.st_size;
    if (g->len) {
        void *m = mmap(NULL, g->len, PROT_READ, MAP_PRIVATE, g->fd, 0);
        if (m == MAP_FAILED) { rc = graft_err_set(err, GRAFT_E_IO, path, NULL, 0, "cannot map: %s", strerror(errno)); goto fail; }
        g->map = m, g->owns_map = true;
        if (fstat(g->fd, &sb) != 0 || (size_t)sb.st_size != g->len) { rc = graft_err_set(err, GRAFT_E_IO, path, NULL, 0, "file changed size while being opened"); goto fail; }
    }
    if ((rc = parse(g, path, err))) goto fail;
    *out = g;
    return GRAFT_OK;
fail:
    graft_gguf_close(g);
    return rc;
}

void graft_gguf_close(struct graft_gguf *g) {
    if (!g) return;
    if (g->owns_map && g->map) munmap((void *)g->map, g->len);
    if (g->fd >= 0) close(g->fd);
    for (size_t i = 0; i < g->n_kv; i++) graft__free((char *)g->kv[i].key);
    for (size_t i = 0; i < g->n_t; i++) graft__free((char *)g->t[i].name);
    graft__free(g->kv), graft__free(g->t), graft__free(g->kslots), graft__free(g->tslots), graft__free(g->path);
    graft__free(g);
}

bool graft_gguf_sniff(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    uint8_t b[4];
    bool ok = read(fd, b, 4) == 4 && !memcmp(b, "GGUF", 4);
    close(fd);
    return ok;
}

uint32_t graft_gguf_version(const struct graft_gguf *g) { return g->version; }
uint32_t graft_gguf_alignment(const struct graft_gguf *g) { return g->alignment; }
uint64_t graft_gguf_data_offset(const struct graft_gguf *g) { return g->data_off; }
size_t graft_gguf_n_kv(const struct graft_gguf *g) { return g->n_kv; }
const struct graft_gguf_kv *graft_gguf_kv(const struct graft_gguf *g, size_t i) { return i < g->n_kv ? &g->kv[i] : NULL; }
size_t graft_gguf_n_tensors(const struct graft_gguf *g) { return g->n_t; }
const struct graft_gguf_tensor *graft_gguf_tensor(const struct graft_gguf *g, size_t i) { return i < g->n_t ? &g->t[i] : NULL; }
const uint8_t *graft_gguf_data(const struct graft_gguf *g, const struct graft_gguf_tensor *t) { return g->map + g->data_off + t->offset; }

const struct graft_gguf_kv *graft_gguf_find_kv(const struct graft_gguf *g, const char *key) {
    uint32_t s = *probe(g->hkey, g->kslots, g->n_kslots, key, strlen(key), kv_name, g->kv);
    return s ? &g->kv[s - 1] : NULL;
}

const struct graft_gguf_tensor *graft_gguf_find(const struct graft_gguf *g, const char *name) {
    uint32_t s = *probe(g->hkey, g->tslots, g->n_tslots, name, strlen(name), t_name, g->t);
    return s ? &g->t[s - 1] : NULL;
}

bool graft_gguf_get_u64(const struct graft_gguf *g, const char *key, uint64_t *v) {
    const struct graft_gguf_kv *kv = graft_gguf_find_kv(g, key);
    if (!kv) return false;
    const uint8_t *p = kv->value;
    int64_t s;
    switch (kv->type) {
    case GRAFT_GGUF_U8: *v = p[0]; return true;
    case GRAFT_GGUF_U16: *v = (uint64_t)p[0] | (uint64_t)p[1] << 8; return true;
    case GRAFT_GGUF_U32: *v = u32le(p); return true;
    case GRAFT_GGUF_U64: *v = graft__load_u64le(p); return true;
    case GRAFT_GGUF_I8: s = (int8_t)p[0]; break;
    case GRAFT_GGUF_I16: s = (int16_t)((uint16_t)p[0] | (uint16_t)p[1] << 8); break;
    case GRAFT_GGUF_I32: s = (int32_t)u32le(p); break;
    case GRAFT_GGUF_I64: s = (int64_t)graft__load_u64le(p); break;
    default: return false;
    }
    if (s < 0) return false;
    *v = (uint64_t)s;
    return true;
}

bool graft_gguf_get_f64(const struct graft_gguf *g, const char *key, double *v) {
    const struct graft_gguf_kv *kv = graft_gguf_find_kv(g, key);
    uint64_t u;
    if (!kv) return false;
    if (kv->type == GRAFT_GGUF_F32) { uint32_t b = u32le(kv->value); float f; memcpy(&f, &b, 4); *v = f; return true; }
    if (kv->type == GRAFT_GGUF_F64) { uint64_t b = graft__load_u64le(kv->value); memcpy(v, &b, 8); return true; }
    if (graft_gguf_get_u64(g, key, &u)) { *v = (double)u; return true; }
    return false;
}

bool graft_gguf_get_str(const struct graft_gguf *g, const char *key, const char **s, size_t *len) {
    const struct graft_gguf_kv *kv = graft_gguf_find_kv(g, key);
    if (!kv || kv->type != GRAFT_GGUF_STRING) return false;
    *len = (size_t)graft__load_u64le(kv->value), *s = (const char *)kv->value + 8;
    return true;
}

bool graft_gguf_arr_str(const struct graft_gguf_kv *kv, uint64_t i, const char **s, size_t *len) {
    if (kv->type != GRAFT_GGUF_ARRAY || kv->arr_type != GRAFT_GGUF_STRING || i >= kv->n) return false;
    const uint8_t *p = kv->value;
    for (uint64_t e = 0; e < i; e++) p += 8 + graft__load_u64le(p); // lengths were checked at open
    *len = (size_t)graft__load_u64le(p), *s = (const char *)p + 8;
    return true;
}

// ---- decoding ----------------------------------------------------------------------------------------

static float h2f(const uint8_t *p) { return graft_f16_to_f32_ref((uint16_t)(p[0] | p[1] << 8)); }

bool graft_ggml_to_f32(uint32_t type, const void *src, float *dst, uint64_t n) {
    const uint8_t *b = src;
    switch (type) {
    case GRAFT_GGML_F32: return graft_row_to_f32(GRAFT_DTYPE_F32, src, dst, (size_t)n);
    case GRAFT_GGML_F16: return graft_row_to_f32(GRAFT_DTYPE_F16, src, dst, (size_t)n);
    case GRAFT_GGML_BF16: return graft_row_to_f32(GRAFT_DTYPE_BF16, src, dst, (size_t)n);
    case GRAFT_GGML_F64: return graft_row_to_f32(GRAFT_DTYPE_F64, src, dst, (size_t)n);
    case GRAFT_GGML_I8: return graft_row_to_f32(GRAFT_DTYPE_I8, src, dst, (size_t)n);
    case GRAFT_GGML_I16: return graft_row_to_f32(GRAFT_DTYPE_I16, src, dst, (size_t)n);
    case GRAFT_GGML_I32: return graft_row_to_f32(GRAFT_DTYPE_I32, src, dst, (size_t)n);
    case GRAFT_GGML_Q8_0: // {f16 d; i8 qs[32]}: y = q·d
        for (uint64_t k = 0; k < n / 32; k++, b += 34) {
            float d = h2f(b);
            for (int j = 0; j < 32; j++) dst[k * 32 + j] = (float)(int8_t)b[2 + j] * d;
        }
        return true;
    case GRAFT_GGML_Q4_0: // {f16 d; u8 qs[16]}: low nibble j, high nibble j + 16, minus 8, times d
        for (uint64_t k = 0; k < n / 32; k++, b += 18) {
            float d = h2f(b);
            for (int j = 0; j < 16; j++) {
                dst[k * 32 + j] = (float)((b[2 + j] & 0x0F) - 8) * d;
                dst[k * 32 + j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
            }
        }
        return true;
    case GRAFT_GGML_Q4_1: // {f16 d; f16 m; u8 qs[16]}: y = q·d + m
        for (uint64_t k = 0; k < n / 32; k++, b += 20) {
            float d = h2f(b), m = h2f(b + 2);
            for (int j = 0; j < 16; j++) {
                dst[k * 32 + j] = (float)(b[4 + j] & 0x0F) * d + m;
                dst[k * 32 + j + 16] = (float)(b[4 + j] >> 4) * d + m;
            }
        }
        return true;
    case GRAFT_GGML_Q4_K: // {f16 d, dmin; u8 scales[12]; u8 qs[128]}, 8 sub-blocks of 32 with 6-bit scale and min
        for (uint64_t k = 0; k < n / 256; k++, b += 144) {
            float d = h2f(b), dmin = h2f(b + 2);
            const uint8_t *sc = b + 4, *q = b + 16;
            float *y = dst + k * 256;
            for (int c = 0; c < 4; c++, q += 32) {
                int is = 2 * c;
                uint8_t s[2], m[2];
                for (int h = 0; h < 2; h++) {
                    int jj = is + h;
                    if (jj < 4) s[h] = sc[jj] & 63, m[h] = sc[jj + 4] & 63;
                    else s[h] = (uint8_t)((sc[jj + 4] & 0xF) | ((sc[jj - 4] >> 6) << 4)), m[h] = (uint8_t)((sc[jj + 4] >> 4) | ((sc[jj] >> 6) << 4));
                }
                for (int l = 0; l < 32; l++) {
                    y[64 * c + l] = d * s[0] * (float)(q[l] & 0xF) - dmin * m[0];
                    y[64 * c + 32 + l] = d * s[1] * (float)(q[l] >> 4) - dmin * m[1];
                }
            }
        }
        return true;
    case GRAFT_GGML_Q6_K: // {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: 6-bit values, 16 sub-blocks of 16
        for (uint64_t k = 0; k < n / 256; k++, b += 210) {
            const uint8_t *ql = b, *qh = b + 128;
            const int8_t *sc = (const int8_t *)(b + 192);
            float d = h2f(b + 208), *y = dst + k * 256;
            for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128)
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = (int)((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32, q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32, q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * sc[is] * (float)q1, y[l + 32] = d * sc[is + 2] * (float)q2;
                    y[l + 64] = d * sc[is + 4] * (float)q3, y[l + 96] = d * sc[is + 6] * (float)q4;
                }
        }
        return true;
    default: return false;
    }
}
