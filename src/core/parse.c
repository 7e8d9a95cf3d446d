// Strict number parsing for command-line values and configs: whole string, no sign, no overflow.
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <strings.h>
#include "graft/util.h"

bool graft_parse_u64(const char *s, uint64_t max, uint64_t *out) {
    if (!s || !*s) return false;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v)) return false;
    }
    if (v > max) return false;
    *out = v;
    return true;
}

bool graft_parse_double(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(v)) return false;
    *out = v;
    return true;
}

bool graft_parse_size(const char *s, uint64_t *out) {
    if (!s || !*s) return false;
    // Split the number (digits, optional fraction) from the unit suffix.
    const char *p = s;
    while ((*p >= '0' && *p <= '9') || *p == '.') p++;
    if (p == s) return false;
    char num[64];
    size_t nl = (size_t)(p - s);
    if (nl >= sizeof num) return false;
    for (size_t i = 0; i < nl; i++) num[i] = s[i];
    num[nl] = 0;
    double v;
    if (!graft_parse_double(num, &v) || v < 0) return false;
    static const struct { const char *suffix; double mul; } units[] = {
        {"", 1}, {"b", 1e9}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
        {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
        {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(p, units[i].suffix)) continue;
        double r = v * units[i].mul;
        if (r >= 18446744073709551616.0 || r != floor(r)) return false;
        *out = (uint64_t)r;
        return true;
    }
    return false;
}
