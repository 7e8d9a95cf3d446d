// Allocation wrappers (with test-build fault injection), bounded buffers and UTF-8 validation.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "impl.h"

#ifdef GRAFT_FAULT_INJECTION
// Test builds only: process-wide counters that make the Nth allocation or I/O call fail.
#include <stdatomic.h>
static _Atomic long fault_alloc_count;
static _Atomic long fault_io_count;

static long env_long(const char *name) {
    const char *s = getenv(name);
    return s ? strtol(s, NULL, 10) : 0;
}

static bool fault_alloc(void) {
    static _Atomic long target = -1;
    long t = atomic_load(&target);
    if (t < 0) atomic_store(&target, t = env_long("GRAFT_FAULT_ALLOC"));
    if (t <= 0) return false;
    return atomic_fetch_add(&fault_alloc_count, 1) + 1 == t;
}

int graft__fault_io(const char *op) {
    const char *spec = getenv("GRAFT_FAULT_IO"); // op:N:ERRNO, e.g. write:3:ENOSPC
    if (!spec) return 0;
    size_t oplen = strlen(op);
    if (strncmp(spec, op, oplen) != 0 || spec[oplen] != ':') return 0;
    char *end;
    long n = strtol(spec + oplen + 1, &end, 10);
    if (*end != ':') return 0;
    const char *e = end + 1;
    int code = !strcmp(e, "ENOSPC") ? ENOSPC : !strcmp(e, "EIO") ? EIO : !strcmp(e, "EACCES") ? EACCES : EIO;
    return atomic_fetch_add(&fault_io_count, 1) + 1 == n ? code : 0;
}
#else
static inline bool fault_alloc(void) { return false; }
int graft__fault_io(const char *op) { (void)op; return 0; }
#endif

void *graft__malloc(size_t n) { return fault_alloc() ? NULL : malloc(n ? n : 1); }
void *graft__calloc(size_t n, size_t size) { return fault_alloc() ? NULL : calloc(n ? n : 1, size ? size : 1); }
void *graft__realloc(void *p, size_t n) { return fault_alloc() ? NULL : realloc(p, n ? n : 1); }
void  graft__free(void *p) { free(p); }

char *graft__strndup(const char *s, size_t n) {
    char *d = graft__malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *graft__strdup(const char *s) { return graft__strndup(s, strlen(s)); }

char *graft__asprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = graft__malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

size_t graft__utf8_check(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0)      need = 1, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) need = 2, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) need = 3, cp = c & 0x07, min = 0x10000;
        else return i;
        if (len - i <= need) return i;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += need + 1;
    }
    return len;
}

void graft__buf_init(struct graft__buf *b, size_t max) {
    memset(b, 0, sizeof *b);
    b->max = max;
}

void graft__buf_free(struct graft__buf *b) {
    graft__free(b->data);
    memset(b, 0, sizeof *b);
}

void graft__buf_append(struct graft__buf *b, const void *p, size_t n) {
    if (b->failed) return;
    if (n > b->max || b->len > b->max - n) { b->failed = true; return; }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = graft__realloc(b->data, cap);
        if (!d) { b->failed = true; return; }
        b->data = d, b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void graft__buf_puts(struct graft__buf *b, const char *s) { graft__buf_append(b, s, strlen(s)); }

void graft__buf_printf(struct graft__buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) { b->failed = true; return; }
    if ((size_t)n < sizeof tmp) { graft__buf_append(b, tmp, (size_t)n); return; }
    char *big = graft__malloc((size_t)n + 1);
    if (!big) { b->failed = true; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    graft__buf_append(b, big, (size_t)n);
    graft__free(big);
}

void graft__buf_json_str(struct graft__buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    graft__buf_append(b, "\"", 1);
    size_t run = 0; // start of the current run of bytes that need no escape
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20) {
                memcpy(u, "\\u00", 4), u[4] = hex[c >> 4], u[5] = hex[c & 15], u[6] = 0;
                esc = u;
            }
        }
        if (!esc) continue;
        graft__buf_append(b, s + run, i - run);
        graft__buf_puts(b, esc);
        run = i + 1;
    }
    graft__buf_append(b, s + run, n - run);
    graft__buf_append(b, "\"", 1);
}
