// Allocation wrappers (with test-build fault injection), bounded buffers and UTF-8 validation.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include "impl.h"

#ifdef GRAFT_FAULT_INJECTION
// Test builds only: process-wide counters that make the Nth allocation or I/O call fail, or the first
// allocation made from one call site. Sites are return addresses as offsets into their executable or
// library (stable across runs of one build), so a test can record every site of a command once
// (GRAFT_FAULT_SITES=FILE) and then fail each in turn (GRAFT_FAULT_ALLOC_SITE=HEX) — covering each
// site without failing every single allocation.
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
static _Atomic long fault_alloc_count;
static _Atomic long fault_io_count;

static long env_long(const char *name) {
    const char *s = getenv(name);
    return s ? strtol(s, NULL, 10) : 0;
}

static uintptr_t site_offset(const void *site) {
    Dl_info di;
    return dladdr(site, &di) && di.dli_fbase ? (uintptr_t)site - (uintptr_t)di.dli_fbase : (uintptr_t)site;
}

enum { SITES = 8192 };
static _Atomic uintptr_t seen[SITES]; // sites already recorded (open addressing, never removed)

static _Atomic int sites_fd = -2;

static void record_total(void) { // at exit: "total N", N the allocations the process made
    char line[64];
    int n = snprintf(line, sizeof line, "total %ld\n", atomic_load(&fault_alloc_count));
    int f = atomic_load(&sites_fd);
    if (f >= 0 && write(f, line, (size_t)n) != n) { /* coverage only */ }
}

static void record_site(uintptr_t off, long nth) {
    _Atomic int *fd = &sites_fd;
    int f = atomic_load(fd);
    if (f == -2) {
        const char *path = getenv("GRAFT_FAULT_SITES");
        int nf = path ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
        int want = -2;
        if (!atomic_compare_exchange_strong(fd, &want, nf)) { if (nf >= 0) close(nf); }
        else if (nf >= 0) atexit(record_total);
        f = atomic_load(fd);
    }
    if (f < 0) return;
    for (size_t i = (off * 0x9E3779B97F4A7C15ull) >> 51, probes = 0; probes < SITES; i = (i + 1) % SITES, probes++) {
        uintptr_t cur = atomic_load(&seen[i]), zero = 0;
        if (cur == off) return;
        if (cur == 0 && atomic_compare_exchange_strong(&seen[i], &zero, off)) break;
        if (atomic_load(&seen[i]) == off) return;
    }
    char line[64];
    int n = snprintf(line, sizeof line, "%lx %ld\n", (unsigned long)off, nth);
    if (write(f, line, (size_t)n) != n) { /* a test helper: a short record only loses coverage */ }
}

static bool fault_alloc(const void *site) {
    static _Atomic long target = -1;
    static _Atomic int mode = -1; // 0 off, 1 by count, 2 by site, 3 record
    static _Atomic uintptr_t want_site;
    static _Atomic int site_done;
    int md = atomic_load(&mode);
    if (md < 0) {
        const char *s = getenv("GRAFT_FAULT_ALLOC_SITE");
        if (s) atomic_store(&want_site, (uintptr_t)strtoull(s, NULL, 16)), md = 2;
        else if ((atomic_store(&target, env_long("GRAFT_FAULT_ALLOC")), atomic_load(&target) > 0)) md = 1;
        else md = getenv("GRAFT_FAULT_SITES") ? 3 : 0;
        atomic_store(&mode, md);
    }
    if (md == 0) return false;
    long nth = atomic_fetch_add(&fault_alloc_count, 1) + 1;
    if (md == 1) return nth == atomic_load(&target);
    uintptr_t off = site_offset(site);
    if (md == 3) { record_site(off, nth); return false; }
    return off == atomic_load(&want_site) && !atomic_exchange(&site_done, 1);
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
static inline bool fault_alloc(const void *site) { (void)site; return false; }
int graft__fault_io(const char *op) { (void)op; return 0; }
#endif

// The call site (for fault injection) is the caller of the exported wrapper; helpers below pass on
// their own caller's, so a strdup is attributed to the code that asked for it.
#define CALLER __builtin_return_address(0)
static void *malloc_at(size_t n, const void *site) { return fault_alloc(site) ? NULL : malloc(n ? n : 1); }
void *graft__malloc(size_t n) { return malloc_at(n, CALLER); }

void graft__advise_huge(void *p, size_t n) {
    const uintptr_t H = (uintptr_t)2 << 20;
    uintptr_t a = ((uintptr_t)p + H - 1) & ~(H - 1), b = ((uintptr_t)p + n) & ~(H - 1);
    if (p && b > a) madvise((void *)a, b - a, MADV_HUGEPAGE);
}
void *graft__calloc(size_t n, size_t size) { return fault_alloc(CALLER) ? NULL : calloc(n ? n : 1, size ? size : 1); }
void *graft__realloc(void *p, size_t n) { return fault_alloc(CALLER) ? NULL : realloc(p, n ? n : 1); }
void  graft__free(void *p) { free(p); }

static char *strndup_at(const char *s, size_t n, const void *site) {
    char *d = malloc_at(n + 1, site);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *graft__strndup(const char *s, size_t n) { return strndup_at(s, n, CALLER); }

char *graft__strdup(const char *s) { return strndup_at(s, strlen(s), CALLER); }

char *graft__asprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc_at((size_t)n + 1, CALLER);
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
