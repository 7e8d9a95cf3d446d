// Corrupt safetensors files by class (see corrupt.h). Each builder writes a header text and a data
// section, then frames them; the seed varies names, sizes and the variant of the class.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "corrupt.h"
#include "graft/status.h"

enum {
    C_EMPTY, C_SHORT, C_HDR_HUGE, C_HDR_OVER_CAP, C_HDR_PAST_EOF, C_HDR_ZERO, C_NOT_UTF8, C_NOT_OBJECT,
    C_NOT_JSON_VALUE, C_TRAILING_DATA, C_BAD_PADDING, C_GARBAGE_AFTER_JSON, C_TRUNCATED, C_DUP_NAME,
    C_DUP_ESCAPED, C_DUP_META, C_DUP_META_KEY, C_META_BAD, C_MISSING_FIELD, C_BAD_DTYPE, C_BAD_SHAPE_VALUE,
    C_BIG_INT, C_NEG_ZERO, C_BAD_OFFSETS, C_DEEP_NESTING, C_BAD_STRING, C_JSON_EXTENSIONS, C_ENTRY_NOT_OBJECT,
    C_END_BEFORE_BEGIN, C_FRONT_GAP, C_GAP, C_OVERLAP, C_ALIAS, C_SHAPE_OVERFLOW, C_BYTES_OVERFLOW,
    C_WRAP_EXACT, C_SIZE_MISMATCH, C_F4_ODD, C_OFFSETS_NEAR_MAX, C_TOO_MANY_DIMS, C_NAME_NUL,
    C_TOO_MANY_TENSORS, C_COUNT
};

static const struct corrupt_class classes[C_COUNT] = {
    [C_EMPTY]             = {"EMPTY", "S01", GRAFT_E_FORMAT, "too small for a safetensors header", false},
    [C_SHORT]             = {"SHORT", "S02", GRAFT_E_FORMAT, "too small for a safetensors header", false},
    [C_HDR_HUGE]          = {"HDR_HUGE", "S03", GRAFT_E_LIMIT, "exceeds the 100000000-byte limit", false},
    [C_HDR_OVER_CAP]      = {"HDR_OVER_CAP", "S04", GRAFT_E_LIMIT, "exceeds the 100000000-byte limit", false},
    [C_HDR_PAST_EOF]      = {"HDR_PAST_EOF", "S05", GRAFT_E_FORMAT, "runs past the end of the file", false},
    [C_HDR_ZERO]          = {"HDR_ZERO", "S06", GRAFT_E_FORMAT, "invalid JSON", false},
    [C_NOT_UTF8]          = {"NOT_UTF8", "S08", GRAFT_E_FORMAT, "not valid UTF-8", false},
    [C_NOT_OBJECT]        = {"NOT_OBJECT", "S09", GRAFT_E_FORMAT, "not an object", false},
    [C_NOT_JSON_VALUE]    = {"NOT_JSON_VALUE", "S09", GRAFT_E_FORMAT, "invalid JSON", false},
    [C_TRAILING_DATA]     = {"TRAILING_DATA", "S10/S14", GRAFT_E_FORMAT, "unexpected bytes after the last tensor", false},
    [C_BAD_PADDING]       = {"BAD_PADDING", "S12", GRAFT_E_FORMAT, "invalid JSON", false},
    [C_GARBAGE_AFTER_JSON]= {"GARBAGE_AFTER_JSON", "S13", GRAFT_E_FORMAT, "invalid JSON", false},
    [C_TRUNCATED]         = {"TRUNCATED", "S15/S54", GRAFT_E_FORMAT, "file is truncated", false},
    [C_DUP_NAME]          = {"DUP_NAME", "S20", GRAFT_E_FORMAT, "duplicate object key", false},
    [C_DUP_ESCAPED]       = {"DUP_ESCAPED", "S21", GRAFT_E_FORMAT, "duplicate object key", false},
    [C_DUP_META]          = {"DUP_META", "S22", GRAFT_E_FORMAT, "duplicate object key", false},
    [C_DUP_META_KEY]      = {"DUP_META_KEY", "S23", GRAFT_E_FORMAT, "duplicate object key", false},
    [C_META_BAD]          = {"META_BAD", "S25", GRAFT_E_FORMAT, "__metadata__", false},
    [C_MISSING_FIELD]     = {"MISSING_FIELD", "S26", GRAFT_E_FORMAT, "missing '", true},
    [C_BAD_DTYPE]         = {"BAD_DTYPE", "S27", GRAFT_E_FORMAT, "dtype", true},
    [C_BAD_SHAPE_VALUE]   = {"BAD_SHAPE_VALUE", "S29", GRAFT_E_FORMAT, "is not a non-negative integer", true},
    [C_BIG_INT]           = {"BIG_INT", "S29", GRAFT_E_FORMAT, "too big integer", false},
    [C_NEG_ZERO]          = {"NEG_ZERO", "S29", GRAFT_E_FORMAT, "'-0'", false},
    [C_BAD_OFFSETS]       = {"BAD_OFFSETS", "S30", GRAFT_E_FORMAT, "'data_offsets' must be [BEGIN, END]", true},
    [C_DEEP_NESTING]      = {"DEEP_NESTING", "S31", GRAFT_E_LIMIT, "nests deeper than", false},
    [C_BAD_STRING]        = {"BAD_STRING", "S32", GRAFT_E_FORMAT, "invalid JSON", false},
    [C_JSON_EXTENSIONS]   = {"JSON_EXTENSIONS", "S35", GRAFT_E_FORMAT, "invalid JSON", false},
    [C_ENTRY_NOT_OBJECT]  = {"ENTRY_NOT_OBJECT", "S26", GRAFT_E_FORMAT, "entry is not an object", true},
    [C_END_BEFORE_BEGIN]  = {"END_BEFORE_BEGIN", "S40", GRAFT_E_FORMAT, "end before they begin", true},
    [C_FRONT_GAP]         = {"FRONT_GAP", "S41", GRAFT_E_FORMAT, "leave a gap", true},
    [C_GAP]               = {"GAP", "S42", GRAFT_E_FORMAT, "leave a gap", true},
    [C_OVERLAP]           = {"OVERLAP", "S43", GRAFT_E_FORMAT, "overlap the previous tensor", true},
    [C_ALIAS]             = {"ALIAS", "S44", GRAFT_E_FORMAT, "overlap the previous tensor", true},
    [C_SHAPE_OVERFLOW]    = {"SHAPE_OVERFLOW", "S47", GRAFT_E_FORMAT, "element count of the shape overflows", true},
    [C_BYTES_OVERFLOW]    = {"BYTES_OVERFLOW", "S48", GRAFT_E_FORMAT, "overflows 64 bits", true},
    [C_WRAP_EXACT]        = {"WRAP_EXACT", "S49", GRAFT_E_FORMAT, "overflows 64 bits", true},
    [C_SIZE_MISMATCH]     = {"SIZE_MISMATCH", "S51", GRAFT_E_FORMAT, "bytes but shape", true},
    [C_F4_ODD]            = {"F4_ODD", "S52", GRAFT_E_FORMAT, "not a whole number of bytes", true},
    [C_OFFSETS_NEAR_MAX]  = {"OFFSETS_NEAR_MAX", "S53", GRAFT_E_FORMAT, "file is truncated", false},
    [C_TOO_MANY_DIMS]     = {"TOO_MANY_DIMS", "-", GRAFT_E_LIMIT, "dimensions (limit", true},
    [C_NAME_NUL]          = {"NAME_NUL", "S33", GRAFT_E_FORMAT, "NUL byte in object key", false},
    [C_TOO_MANY_TENSORS]  = {"TOO_MANY_TENSORS", "S34", GRAFT_E_LIMIT, "more than 1000000 tensors", false},
};

int corrupt_n_classes(void) { return C_COUNT; }
const struct corrupt_class *corrupt_class(int i) { return i >= 0 && i < C_COUNT ? &classes[i] : NULL; }
int corrupt_find(const char *name) {
    for (int i = 0; i < C_COUNT; i++)
        if (!strcmp(classes[i].name, name)) return i;
    return -1;
}

// Small deterministic generator for variants.
static uint32_t rnd(uint32_t *s) { // Weyl sequence through a 32-bit integer hash: every bit varies
    uint32_t x = (*s += 0x9E3779B9u);
    x ^= x >> 16, x *= 0x7FEB352Du, x ^= x >> 15, x *= 0x846CA68Bu, x ^= x >> 16;
    return x;
}

struct sb { char *p; size_t n, cap; };
static void sb_add(struct sb *b, const void *d, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_printf(struct sb *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    sb_add(b, s, (size_t)n);
    free(s);
}

// Frame: u64 N (header length, or n_override when not ~0) | header | data (zeros unless given).
static uint8_t *frame(const char *hdr, size_t hlen, uint64_t n_override, const uint8_t *data, size_t dlen, size_t *len) {
    uint64_t n = n_override != ~0ull ? n_override : hlen;
    *len = 8 + hlen + dlen;
    uint8_t *f = calloc(1, *len + 1);
    for (int i = 0; i < 8; i++) f[i] = (uint8_t)(n >> (8 * i));
    memcpy(f + 8, hdr, hlen);
    if (data) memcpy(f + 8 + hlen, data, dlen);
    return f;
}

static uint8_t *frame_str(const char *hdr, size_t dlen, size_t *len) { return frame(hdr, strlen(hdr), ~0ull, NULL, dlen, len); }

uint8_t *corrupt_make_valid(uint32_t seed, size_t *len) {
    uint32_t s = seed;
    struct sb h = {0};
    int nt = 1 + (int)(rnd(&s) % 4);
    static const char *dt[] = {"F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "F64"};
    static const int sz[] = {4, 2, 2, 8, 1, 1, 1, 8};
    size_t off = 0;
    sb_add(&h, "{\"__metadata__\":{\"format\":\"pt\"}", 31);
    for (int i = 0; i < nt; i++) {
        int k = (int)(rnd(&s) % 8), a = 1 + (int)(rnd(&s) % 5), b = 1 + (int)(rnd(&s) % 5);
        size_t nb = (size_t)(a * b * sz[k]);
        sb_printf(&h, ",\"w%u.%d\":{\"dtype\":\"%s\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}", seed, i, dt[k], a, b, off, off + nb);
        off += nb;
    }
    sb_add(&h, "}", 1);
    while (h.n % 8) sb_add(&h, " ", 1);
    uint8_t *data = malloc(off + 1);
    for (size_t i = 0; i < off; i++) data[i] = (uint8_t)rnd(&s);
    uint8_t *f = frame(h.p, h.n, ~0ull, data, off, len);
    free(data);
    free(h.p);
    return f;
}

uint8_t *corrupt_make(int cls, uint32_t seed, size_t *len, char *tensor, size_t cap) {
    uint32_t s = seed * 2654435761u + 1;
    uint32_t v = rnd(&s);
    char name[64];
    snprintf(name, sizeof name, "layers.%u.weight", seed);
    if (tensor && cap) snprintf(tensor, cap, "%s", name);
    struct sb h = {0};
    uint8_t *out = NULL;
    size_t a = 1 + v % 7, b = 1 + (v >> 4) % 5; // an F32 tensor [a, b]
    size_t nb = a * b * 4;
#define ENTRY(dt, shape, b0, b1) sb_printf(&h, "\"%s\":{\"dtype\":%s,\"shape\":%s,\"data_offsets\":[%s,%s]}", name, dt, shape, b0, b1)
    switch (cls) {
    case C_EMPTY: *len = 0; return calloc(1, 1);
    case C_SHORT: *len = 1 + v % 7; out = calloc(1, 8); for (size_t i = 0; i < *len; i++) out[i] = (uint8_t)rnd(&s); return out;
    case C_HDR_HUGE: return frame("{}", 2, ~0ull - 1 - v % 3, NULL, 16, len);
    case C_HDR_OVER_CAP: return frame("{}", 2, 100000001ull + v % 1000, NULL, 8, len);
    case C_HDR_PAST_EOF: return frame("{}      ", 8, 9 + v % 1000, NULL, 0, len);
    case C_HDR_ZERO: return frame("", 0, 0, NULL, v % 2 ? 0 : 16, len);
    case C_NOT_UTF8: {
        static const char *bad[] = {"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82"};
        sb_printf(&h, "{\"x%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", bad[v % 4]);
        out = frame_str(h.p, 4, len);
        break;
    }
    case C_NOT_OBJECT: out = frame_str(v % 2 ? "[]" : "[1,2]", 0, len); break;
    case C_NOT_JSON_VALUE: { static const char *x[] = {"null", "\"x\"", "1", "true"}; out = frame_str(x[v % 4], 0, len); break; }
    case C_TRAILING_DATA:
        sb_add(&h, "{", 1), ENTRY("\"F32\"", "[1]", "0", "4"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 4 + 1 + v % 100, len);
        break;
    case C_BAD_PADDING: {
        static const char *pad[] = {"{}\x00\x00", "{}\x0c", "{}\x0b", "\xef\xbb\xbf{}"};
        static const size_t pl[] = {4, 3, 3, 5};
        out = frame(pad[v % 4], pl[v % 4], ~0ull, NULL, 0, len);
        break;
    }
    case C_GARBAGE_AFTER_JSON: out = frame_str(v % 2 ? "{}x" : "{}{}", 0, len); break;
    case C_TRUNCATED: {
        sb_add(&h, "{", 1), ENTRY("\"F32\"", "[1]", "0", "4");
        sb_printf(&h, ",\"z\":{\"dtype\":\"U8\",\"shape\":[%zu],\"data_offsets\":[4,%zu]}}", nb, 4 + nb);
        out = frame_str(h.p, 4 + nb - 1 - v % nb, len);
        break;
    }
    case C_DUP_NAME:
        sb_add(&h, "{", 1), ENTRY("\"F32\"", "[1]", "0", "4"), sb_add(&h, ",", 1), ENTRY("\"F32\"", "[1]", "0", "4"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 4, len);
        break;
    case C_DUP_ESCAPED:
        out = frame_str("{\"ab\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"\\u0061b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, len);
        break;
    case C_DUP_META: out = frame_str(v % 2 ? "{\"__metadata__\":{},\"__metadata__\":{}}" : "{\"__metadata__\":{},\"\\u005f_metadata__\":null}", 0, len); break;
    case C_DUP_META_KEY: out = frame_str("{\"__metadata__\":{\"format\":\"pt\",\"format\":\"tf\"}}", 0, len); break;
    case C_META_BAD: {
        static const char *m[] = {"\"x\"", "{\"a\":1}", "{\"a\":null}", "[]", "{\"a\":{}}"};
        sb_printf(&h, "{\"__metadata__\":%s}", m[v % 5]);
        out = frame_str(h.p, 0, len);
        break;
    }
    case C_MISSING_FIELD: {
        static const char *e[] = {"{\"shape\":[1],\"data_offsets\":[0,4]}", "{\"dtype\":\"F32\",\"data_offsets\":[0,4]}",
                                  "{\"dtype\":\"F32\",\"shape\":[1]}"};
        sb_printf(&h, "{\"%s\":%s}", name, e[v % 3]);
        out = frame_str(h.p, 4, len);
        break;
    }
    case C_BAD_DTYPE: {
        static const char *d[] = {"\"F128\"", "\"f32\"", "\"F8_E4M3FN\"", "7", "null", "\"\""};
        sb_add(&h, "{", 1), ENTRY(d[v % 6], "[1]", "0", "4"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 4, len);
        break;
    }
    case C_BAD_SHAPE_VALUE: {
        static const char *sh[] = {"[-1]", "[1.5]", "[1e0]", "[\"2\"]", "[[2]]", "[1.0]", "[null]"};
        sb_add(&h, "{", 1), ENTRY("\"F32\"", sh[v % 7], "0", "4"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 4, len);
        break;
    }
    case C_BIG_INT: {
        static const char *sh[] = {"[18446744073709551615]", "[9223372036854775808]", "[0,18446744073709551615,18446744073709551615]"};
        sb_add(&h, "{", 1), ENTRY("\"F32\"", sh[v % 3], "0", "4"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 4, len);
        break;
    }
    case C_NEG_ZERO:
        sb_add(&h, "{", 1), ENTRY("\"F32\"", v % 2 ? "[-0]" : "[1]", v % 2 ? "0" : "-0", "4"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 4, len);
        break;
    case C_BAD_OFFSETS: {
        static const char *o[] = {"[0]", "[0,4,8]", "{\"a\":0}", "[0.0,4]", "[]", "\"0,4\"", "[0,-4]"};
        sb_printf(&h, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":%s}}", name, o[v % 7]);
        out = frame_str(h.p, 4, len);
        break;
    }
    case C_DEEP_NESTING: {
        size_t depth = 40 + v % 10000;
        sb_printf(&h, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":", name);
        for (size_t i = 0; i < depth; i++) sb_add(&h, v % 2 ? "[" : "{\"a\":", v % 2 ? 1 : 5);
        for (size_t i = 0; i < depth; i++) sb_add(&h, v % 2 ? "]" : "}", 1);
        sb_add(&h, "}}", 2);
        out = frame_str(h.p, 4, len);
        break;
    }
    case C_BAD_STRING: {
        static const char *st[] = {"{\"\\ud800\":1}", "{\"\\x41\":1}", "{\"a\tb\":1}", "{\"\\udc00x\":1}"};
        out = frame_str(st[v % 4], 0, len);
        break;
    }
    case C_JSON_EXTENSIONS: {
        static const char *x[] = {"{/*c*/}", "{\"a\":NaN}", "{\"__metadata__\":{},}", "{'a':1}", "{\"a\":Infinity}", "{\"a\":01}", "{\"a\":+1}"};
        out = frame_str(x[v % 7], 0, len);
        break;
    }
    case C_ENTRY_NOT_OBJECT: sb_printf(&h, "{\"%s\":%s}", name, v % 2 ? "null" : "[1,2]"); out = frame_str(h.p, 0, len); break;
    case C_END_BEFORE_BEGIN: sb_add(&h, "{", 1), ENTRY("\"F32\"", "[1]", "8", "4"), sb_add(&h, "}", 1); out = frame_str(h.p, 8, len); break;
    case C_FRONT_GAP: {
        char b0[32], b1[32];
        size_t g = 1 + v % 64;
        snprintf(b0, sizeof b0, "%zu", g), snprintf(b1, sizeof b1, "%zu", g + 4);
        sb_add(&h, "{", 1), ENTRY("\"F32\"", "[1]", b0, b1), sb_add(&h, "}", 1);
        out = frame_str(h.p, g + 4, len);
        break;
    }
    case C_GAP: {
        size_t g = 1 + v % 64;
        sb_printf(&h, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},");
        char b0[32], b1[32];
        snprintf(b0, sizeof b0, "%zu", 4 + g), snprintf(b1, sizeof b1, "%zu", 8 + g);
        ENTRY("\"F32\"", "[1]", b0, b1), sb_add(&h, "}", 1);
        out = frame_str(h.p, 8 + g, len);
        break;
    }
    case C_OVERLAP:
        sb_printf(&h, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},");
        ENTRY("\"F32\"", "[2]", "4", "12"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 12, len);
        break;
    case C_ALIAS: {
        size_t k = 10 + (v % 2 ? 100000 : v % 100);
        sb_add(&h, "{", 1);
        for (size_t i = 0; i < k; i++)
            sb_printf(&h, "%s\"%s%s%zu\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}", i ? "," : "", name, i ? "." : "", i);
        sb_add(&h, "}", 1);
        // every alias name begins with `name`; the error names one of them
        out = frame_str(h.p, 16, len);
        if (tensor && cap) snprintf(tensor, cap, "%s", name);
        break;
    }
    case C_SHAPE_OVERFLOW: {
        static const char *sh[] = {"[4294967296,4294967296]", "[4611686018427387904,4]", "[3037000500,3037000500,3]"};
        sb_add(&h, "{", 1), ENTRY("\"U8\"", sh[v % 3], "0", "4"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 4, len);
        break;
    }
    case C_BYTES_OVERFLOW: {
        static const char *sh[] = {"[2,9223372036854775807]", "[4611686018427387904]", "[2305843009213693952]"};
        sb_add(&h, "{", 1), ENTRY(v % 2 ? "\"I32\"" : "\"F64\"", sh[v % 3], "0", "16"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 16, len);
        break;
    }
    case C_WRAP_EXACT: // (2^62 + 1) × 32 bits wraps to 32 bits = exactly the 4 declared bytes
        sb_add(&h, "{", 1), ENTRY("\"F32\"", "[4611686018427387905]", "0", "4"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 4, len);
        break;
    case C_SIZE_MISMATCH: {
        char b1[32];
        size_t wrong = nb + (v % 2 ? 4 : (size_t)-4);
        snprintf(b1, sizeof b1, "%zu", wrong);
        char shape[32];
        snprintf(shape, sizeof shape, "[%zu,%zu]", a, b);
        sb_add(&h, "{", 1), ENTRY("\"F32\"", shape, "0", b1), sb_add(&h, "}", 1);
        out = frame_str(h.p, wrong, len);
        break;
    }
    case C_F4_ODD: {
        static const char *x[] = {"\"F4\"", "\"F6_E2M3\"", "\"F6_E3M2\""};
        sb_add(&h, "{", 1), ENTRY(x[v % 3], v % 3 ? "[3]" : "[1,3]", "0", "2"), sb_add(&h, "}", 1);
        out = frame_str(h.p, 2, len);
        break;
    }
    case C_OFFSETS_NEAR_MAX: {
        const unsigned long long step = (1ull << 61) - 1;
        sb_add(&h, "{", 1);
        // offsets are JSON integers < 2^63 here (larger ones are rejected as "too big integer"), so the
        // closest to the top is 4 × (2^61 − 1): the end check must not overflow when adding the header
        for (int i = 0; i < 4; i++)
            sb_printf(&h, "%s\"t%d\":{\"dtype\":\"U8\",\"shape\":[%llu],\"data_offsets\":[%llu,%llu]}", i ? "," : "", i, step, step * (unsigned long long)i, step * (unsigned long long)(i + 1));
        sb_add(&h, "}", 1);
        out = frame_str(h.p, 16, len);
        break;
    }
    case C_TOO_MANY_DIMS: sb_add(&h, "{", 1), ENTRY("\"U8\"", "[1,1,1,1,1,1,1,1,1]", "0", "1"), sb_add(&h, "}", 1); out = frame_str(h.p, 1, len); break;
    case C_NAME_NUL: out = frame_str("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, len); break;
    case C_TOO_MANY_TENSORS:
        sb_add(&h, "{", 1);
        for (int i = 0; i <= 1000001; i++) sb_printf(&h, "%s\"%d\":0", i ? "," : "", i);
        sb_add(&h, "}", 1);
        out = frame_str(h.p, 0, len);
        break;
    default: return NULL;
    }
#undef ENTRY
    free(h.p);
    return out;
}
