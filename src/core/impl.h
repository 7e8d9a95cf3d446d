// Internal helpers shared by the library's modules (never installed).
#ifndef GRAFT_CORE_IMPL_H
#define GRAFT_CORE_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "graft/status.h"

// Every allocation goes through these so tests can fail the Nth one (GRAFT_FAULT_ALLOC=N in builds
// with GRAFT_FAULT_INJECTION). They behave like malloc/calloc/realloc/free otherwise.
void *graft__malloc(size_t n);
void *graft__calloc(size_t n, size_t size);
void *graft__realloc(void *p, size_t n);
void  graft__free(void *p);
char *graft__strndup(const char *s, size_t n);
char *graft__strdup(const char *s);
// printf into a fresh allocation; NULL on failure.
char *graft__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Add context to an error already set: "<file>: tensor '<name>': <old message>" (code kept).
void graft__err_prefix(struct graft_err *err, const char *file, const char *tensor, size_t tensor_len);

// I/O fault injection: returns an errno value to fail with, or 0. `op` is one of "open", "write",
// "fsync", "rename", "mkdir". Configured by GRAFT_FAULT_IO=op:N:ERRNO (fail the Nth call of op).
// Always 0 in builds without GRAFT_FAULT_INJECTION.
int graft__fault_io(const char *op);

static inline bool graft__mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool graft__add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

// FNV-1a over a tensor name: the hash of every name table (tensors of a file, of a model, of an output).
static inline uint64_t graft__name_hash(const char *s, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001B3ull;
    return h;
}

// Unaligned little-endian loads and stores (inputs come from mapped files).
static inline uint64_t graft__load_u64le(const void *p) {
    const uint8_t *b = p;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}
static inline void graft__store_u64le(void *p, uint64_t v) {
    uint8_t *b = p;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

// Validate UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF). Returns the byte offset of the first
// invalid sequence, or `len` when valid.
size_t graft__utf8_check(const uint8_t *s, size_t len);

// Growable byte buffer with a ceiling (fails cleanly past `max`).
struct graft__buf {
    char  *data;
    size_t len, cap, max;
    bool   failed; // sticky: an append failed (no memory or past max)
};
void graft__buf_init(struct graft__buf *b, size_t max);
void graft__buf_free(struct graft__buf *b);
void graft__buf_append(struct graft__buf *b, const void *p, size_t n);
void graft__buf_puts(struct graft__buf *b, const char *s);
void graft__buf_printf(struct graft__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Append a JSON string literal (quotes included) escaped as serde_json does: \" \\ \b \f \n \r \t,
// other bytes < 0x20 as \u00XX, everything else raw.
void graft__buf_json_str(struct graft__buf *b, const char *s, size_t n);

#endif
