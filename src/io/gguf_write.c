// GGUF writer (include/graft/gguf.h): metadata and tensor infos are declared first, then the header is
// written once with every offset fixed (canonical: each tensor at the previous one's end padded to
// the alignment, as ggml requires), tensor data arrives by pwrite from any thread, and the file
// appears atomically (temporary file beside the target, fsync, rename, fsync of the folder).
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "graft/dtype.h"
#include "graft/gguf.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "io-impl.h"

struct wt { char *name; uint32_t n_dims, type; uint64_t ne[4], n_bytes, off; _Atomic uint64_t written; };

struct graft_gguf_writer {
    char    *target, *tmp;
    int      fd;
    unsigned flags;
    struct graft__buf kv;   // serialized key/values
    uint64_t n_kv;
    struct wt *t;
    size_t   n, cap;
    uint32_t alignment;
    uint64_t data_off;
    bool     laid_out, committed;
};

static int oom(const struct graft_gguf_writer *w, struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, w->target, NULL, 0, "out of memory"); }

int graft_gguf_writer_open(const char *target, unsigned flags, struct graft_gguf_writer **out, struct graft_err *err) {
    *out = NULL;
    struct stat sb;
    if (lstat(target, &sb) == 0 && !(flags & GRAFT_WRITER_FORCE))
        return graft_err_set(err, GRAFT_E_EXISTS, target, NULL, 0, "file already exists; use --force to replace it");
    if (lstat(target, &sb) == 0 && S_ISDIR(sb.st_mode)) return graft_err_set(err, GRAFT_E_USAGE, target, NULL, 0, "is a folder; a GGUF output is one file");
    struct graft_gguf_writer *w = graft__calloc(1, sizeof *w);
    if (!w) return graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory");
    w->fd = -1, w->flags = flags, w->alignment = GRAFT_GGUF_DEFAULT_ALIGNMENT;
    graft__buf_init(&w->kv, 1u << 30);
    w->target = graft__strdup(target);
    graft__remove_stale_beside(target); // temporaries of this target left by killed runs
    w->tmp = graft__temp_beside(target, "");
    if (!w->target || !w->tmp) { graft_gguf_writer_free(w); return graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory"); }
    int inj = graft__fault_io("open");
    w->fd = inj ? (errno = inj, -1) : open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int rc = graft_err_set(err, GRAFT_E_IO, w->tmp, NULL, 0, "cannot create: %s", strerror(errno));
        graft__free(w->tmp), w->tmp = NULL; // not ours
        graft_gguf_writer_free(w);
        return rc;
    }
    *out = w;
    return GRAFT_OK;
}

void graft_gguf_writer_free(struct graft_gguf_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (!w->committed && w->tmp) unlink(w->tmp);
    for (size_t i = 0; i < w->n; i++) graft__free(w->t[i].name);
    graft__free(w->t), graft__free(w->target), graft__free(w->tmp);
    graft__buf_free(&w->kv);
    graft__free(w);
}

static void put_u32(struct graft__buf *b, uint32_t v) { uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)}; graft__buf_append(b, x, 4); }
static void put_u64(struct graft__buf *b, uint64_t v) { uint8_t x[8]; graft__store_u64le(x, v); graft__buf_append(b, x, 8); }
static void put_str(struct graft__buf *b, const char *s, size_t n) { put_u64(b, n), graft__buf_append(b, s, n); }

static int kv_head(struct graft_gguf_writer *w, const char *key, uint32_t type, struct graft_err *err) {
    if (w->laid_out) return graft_err_set(err, GRAFT_E_INTERNAL, w->target, NULL, 0, "metadata added after layout");
    put_str(&w->kv, key, strlen(key)), put_u32(&w->kv, type), w->n_kv++;
    return GRAFT_OK;
}
static int kv_done(struct graft_gguf_writer *w, struct graft_err *err) { return w->kv.failed ? oom(w, err) : GRAFT_OK; }

int graft_gguf_w_u32(struct graft_gguf_writer *w, const char *key, uint32_t v, struct graft_err *err) {
    int rc = kv_head(w, key, GRAFT_GGUF_U32, err);
    if (!rc) put_u32(&w->kv, v), rc = kv_done(w, err);
    if (!rc && !strcmp(key, "general.alignment")) w->alignment = v;
    return rc;
}
int graft_gguf_w_i32(struct graft_gguf_writer *w, const char *key, int32_t v, struct graft_err *err) {
    int rc = kv_head(w, key, GRAFT_GGUF_I32, err);
    if (!rc) put_u32(&w->kv, (uint32_t)v), rc = kv_done(w, err);
    return rc;
}
int graft_gguf_w_f32(struct graft_gguf_writer *w, const char *key, float v, struct graft_err *err) {
    uint32_t b;
    memcpy(&b, &v, 4);
    int rc = kv_head(w, key, GRAFT_GGUF_F32, err);
    if (!rc) put_u32(&w->kv, b), rc = kv_done(w, err);
    return rc;
}
int graft_gguf_w_bool(struct graft_gguf_writer *w, const char *key, bool v, struct graft_err *err) {
    int rc = kv_head(w, key, GRAFT_GGUF_BOOL, err);
    uint8_t c = v ? 1 : 0;
    if (!rc) graft__buf_append(&w->kv, &c, 1), rc = kv_done(w, err);
    return rc;
}
int graft_gguf_w_str(struct graft_gguf_writer *w, const char *key, const char *s, size_t n, struct graft_err *err) {
    int rc = kv_head(w, key, GRAFT_GGUF_STRING, err);
    if (!rc) put_str(&w->kv, s, n), rc = kv_done(w, err);
    return rc;
}
int graft_gguf_w_arr(struct graft_gguf_writer *w, const char *key, uint32_t elem_type, const void *values, const size_t *lens, uint64_t n,
                     struct graft_err *err) {
    int rc = kv_head(w, key, GRAFT_GGUF_ARRAY, err);
    if (rc) return rc;
    put_u32(&w->kv, elem_type), put_u64(&w->kv, n);
    if (elem_type == GRAFT_GGUF_STRING) {
        const char *const *s = values;
        for (uint64_t i = 0; i < n; i++) put_str(&w->kv, s[i], lens ? lens[i] : strlen(s[i]));
    } else {
        static const uint32_t sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        graft__buf_append(&w->kv, values, (size_t)(n * sz[elem_type])); // little-endian hosts only, as graft
    }
    return kv_done(w, err);
}

long graft_gguf_w_tensor(struct graft_gguf_writer *w, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, struct graft_err *err) {
    size_t nl = strlen(name);
    uint32_t blck = graft_ggml_block_size(type);
    if (w->laid_out) return graft_err_set(err, GRAFT_E_INTERNAL, w->target, NULL, 0, "tensor added after layout");
    if (!nl || nl > GRAFT_GGUF_MAX_NAME) return graft_err_set(err, GRAFT_E_USAGE, w->target, name, nl, "GGUF tensor names are 1 to %d bytes", GRAFT_GGUF_MAX_NAME);
    if (n_dims > 4 || !blck || (n_dims && ne[0] % blck))
        return graft_err_set(err, GRAFT_E_USAGE, w->target, name, nl, "cannot be stored as %s (rows must be multiples of %u values)", graft_ggml_type_name(type), blck);
    if (w->n == w->cap) {
        size_t c = w->cap ? 2 * w->cap : 64;
        struct wt *t = graft__realloc(w->t, c * sizeof *t);
        if (!t) return oom(w, err);
        w->t = t, w->cap = c;
    }
    struct wt *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = graft__strdup(name))) return oom(w, err);
    t->n_dims = n_dims, t->type = type;
    uint64_t n = 1;
    for (uint32_t d = 0; d < 4; d++) {
        t->ne[d] = d < n_dims ? ne[d] : 1;
        if (!graft__mul_u64(n, t->ne[d], &n)) { graft__free(t->name); return graft_err_set(err, GRAFT_E_USAGE, w->target, name, nl, "shape overflows"); }
    }
    if (!graft__mul_u64(n / blck, graft_ggml_type_size(type), &t->n_bytes)) { graft__free(t->name); return graft_err_set(err, GRAFT_E_USAGE, w->target, name, nl, "size overflows"); }
    return (long)w->n++;
}

uint64_t graft_gguf_w_tensor_bytes(const struct graft_gguf_writer *w, long id) { return w->t[id].n_bytes; }

int graft_gguf_w_layout(struct graft_gguf_writer *w, struct graft_err *err) {
    struct graft__buf h;
    graft__buf_init(&h, SIZE_MAX / 2);
    graft__buf_append(&h, "GGUF", 4), put_u32(&h, 3), put_u64(&h, w->n), put_u64(&h, w->n_kv);
    graft__buf_append(&h, w->kv.data, w->kv.len);
    uint64_t off = 0, A = w->alignment;
    for (size_t i = 0; i < w->n; i++) {
        struct wt *t = &w->t[i];
        put_str(&h, t->name, strlen(t->name)), put_u32(&h, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(&h, t->ne[d]);
        put_u32(&h, t->type), put_u64(&h, off);
        t->off = off;
        off += (t->n_bytes + A - 1) / A * A;
    }
    while (w->n && h.len % A) graft__buf_append(&h, "", 1);
    int rc = h.failed ? oom(w, err) : GRAFT_OK;
    w->data_off = h.len, w->laid_out = true;
    if (!rc) rc = graft__check_space(w->tmp, w->target, w->data_off + off, "the GGUF file", err); // before any byte, with the numbers
    if (!rc && graft__pwrite_full(w->fd, h.data, h.len, 0)) rc = graft_err_set(err, GRAFT_E_IO, w->tmp, NULL, 0, "write failed: %s", strerror(errno));
    // the whole file now (padding after the last tensor included, as ggml's loader reads it): a full
    // disk fails here, and padding reads as zeros
    if (!rc && ftruncate(w->fd, (off_t)(w->data_off + off))) rc = graft_err_set(err, GRAFT_E_IO, w->tmp, NULL, 0, "cannot size the file: %s", strerror(errno));
    if (!rc) {
        int fa = posix_fallocate(w->fd, 0, (off_t)(w->data_off + off));
        if (fa && fa != EOPNOTSUPP && fa != EINVAL) rc = graft_err_set(err, GRAFT_E_IO, w->tmp, NULL, 0, "cannot reserve the file: %s", strerror(fa));
    }
    graft__buf_free(&h);
    return rc;
}

int graft_gguf_w_write(struct graft_gguf_writer *w, long id, uint64_t off, const void *buf, size_t n, struct graft_err *err) {
    if (!w->laid_out || id < 0 || (size_t)id >= w->n || off + n > w->t[id].n_bytes)
        return graft_err_set(err, GRAFT_E_INTERNAL, w->target, NULL, 0, "write outside a tensor");
    if (graft__pwrite_full(w->fd, buf, n, w->data_off + w->t[id].off + off))
        return graft_err_set(err, GRAFT_E_IO, w->tmp, w->t[id].name, strlen(w->t[id].name), "write failed: %s", strerror(errno));
    atomic_fetch_add(&w->t[id].written, (uint64_t)n);
    return GRAFT_OK;
}

int graft_gguf_w_commit(struct graft_gguf_writer *w, struct graft_err *err) {
    for (size_t i = 0; i < w->n; i++)
        if (atomic_load(&w->t[i].written) != w->t[i].n_bytes)
            return graft_err_set(err, GRAFT_E_INTERNAL, w->target, w->t[i].name, strlen(w->t[i].name), "not every byte was written");
    if (graft__fsync(w->fd)) return graft_err_set(err, GRAFT_E_IO, w->tmp, NULL, 0, "fsync failed: %s", strerror(errno));
    int c = close(w->fd);
    w->fd = -1;
    if (c) return graft_err_set(err, GRAFT_E_IO, w->tmp, NULL, 0, "close failed: %s", strerror(errno));
    if (graft__rename(w->tmp, w->target)) return graft_err_set(err, GRAFT_E_IO, w->target, NULL, 0, "cannot move the finished file into place: %s", strerror(errno));
    w->committed = true;
    const char *slash = strrchr(w->target, '/');
    char *dir = slash ? graft__strndup(w->target, slash == w->target ? 1 : (size_t)(slash - w->target)) : graft__strdup(".");
    int rc = dir && graft__fsync_dir(dir) ? graft_err_set(err, GRAFT_E_IO, dir, NULL, 0, "fsync failed: %s", strerror(errno)) : GRAFT_OK;
    graft__free(dir);
    return rc;
}

// ---- quantization (shared/formats.md §4.5, the reference formulas) -----------------------------------

static bool finite_block(const float *x) {
    float s = 0;
    for (int j = 0; j < 32; j++) s += x[j] * 0.0f; // 0 unless some x is NaN or ±Inf
    return s == 0;
}

// A block of a quantized type whose values are not all finite: f16 NaN scale, `nq` bytes of quants `zero`.
static void nan_block(uint8_t *o, int nq, uint8_t zero) {
    o[0] = 0x00, o[1] = 0x7E; // f16 quiet NaN, little-endian
    memset(o + 2, zero, (size_t)nq);
}

uint64_t graft_ggml_count_nonfinite(uint32_t type, const void *data, uint64_t n) {
    const uint8_t *p = data;
    switch (type) {
    case GRAFT_GGML_F32: return graft_count_nonfinite(GRAFT_DTYPE_F32, data, (size_t)n, NULL);
    case GRAFT_GGML_F16: return graft_count_nonfinite(GRAFT_DTYPE_F16, data, (size_t)n, NULL);
    case GRAFT_GGML_BF16: return graft_count_nonfinite(GRAFT_DTYPE_BF16, data, (size_t)n, NULL);
    default: break;
    }
    uint64_t bs = graft_ggml_block_size(type), ts = graft_ggml_type_size(type), c = 0;
    if (type != GRAFT_GGML_Q8_0 && type != GRAFT_GGML_Q4_0) return 0;
    for (uint64_t k = 0; k < n / bs; k++) c += graft_count_nonfinite(GRAFT_DTYPE_F16, p + k * ts, 1, NULL) ? bs : 0;
    return c;
}

bool graft_ggml_from_f32(uint32_t type, const float *src, void *dst, uint64_t n) {
    uint8_t *o = dst;
    switch (type) {
    case GRAFT_GGML_F32: return graft_row_from_f32(GRAFT_DTYPE_F32, src, dst, (size_t)n);
    case GRAFT_GGML_F16: return graft_row_from_f32(GRAFT_DTYPE_F16, src, dst, (size_t)n);
    case GRAFT_GGML_BF16: return graft_row_from_f32(GRAFT_DTYPE_BF16, src, dst, (size_t)n);
    case GRAFT_GGML_Q8_0: // d = amax / 127, q = round(x / d) (ties away from zero), d stored as f16
        for (uint64_t k = 0; k < n / 32; k++, o += 34) {
            const float *x = src + k * 32;
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
            if (!finite_block(x)) { // NaN / ±Inf: no int8 holds them; a NaN scale (the block reads as NaN), zero quants
                nan_block(o, 32, 0);
                continue;
            }
            float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
            graft_row_from_f32(GRAFT_DTYPE_F16, &d, o, 1);
            for (int j = 0; j < 32; j++) o[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
        }
        return true;
    case GRAFT_GGML_Q4_0: // max = the value of largest |x| (first wins), d = max / −8, q = min(15, (int8)(x/d + 8.5))
        for (uint64_t k = 0; k < n / 32; k++, o += 18) {
            const float *x = src + k * 32;
            float amax = 0, max = 0;
            if (!finite_block(x)) { nan_block(o, 16, 0x88); continue; } // as q8_0; 8 is q4_0's zero
            for (int j = 0; j < 32; j++)
                if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
            float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
            graft_row_from_f32(GRAFT_DTYPE_F16, &d, o, 1);
            for (int j = 0; j < 16; j++) {
                int a = (int8_t)(x[j] * id + 8.5f), b = (int8_t)(x[j + 16] * id + 8.5f);
                a = a < 15 ? a : 15, b = b < 15 ? b : 15;
                o[2 + j] = (uint8_t)(a | (b << 4));
            }
        }
        return true;
    default: return false;
    }
}
