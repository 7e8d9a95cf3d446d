// JSON output in the shape Python's json.dumps(obj, indent=2) gives (what transformers writes):
// two-space indent, ", "/": " separators, ASCII-only strings, floats in shortest round-trip form.
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/impl.h"
#include "io-impl.h"

static void put_ascii_str(struct graft__buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    graft__buf_append(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        char esc[16];
        if (c == '"' || c == '\\') { esc[0] = '\\', esc[1] = (char)c, esc[2] = 0; i++; }
        else if (c == '\n') { strcpy(esc, "\\n"); i++; }
        else if (c == '\r') { strcpy(esc, "\\r"); i++; }
        else if (c == '\t') { strcpy(esc, "\\t"); i++; }
        else if (c == '\b') { strcpy(esc, "\\b"); i++; }
        else if (c == '\f') { strcpy(esc, "\\f"); i++; }
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); i++; }
        else if (c < 0x80) { esc[0] = (char)c, esc[1] = 0; i++; }
        else { // decode one UTF-8 sequence (input is validated UTF-8) and escape as \uXXXX (pairs above BMP)
            uint32_t cp; size_t k;
            if (c >= 0xF0) cp = c & 7, k = 3; else if (c >= 0xE0) cp = c & 15, k = 2; else cp = c & 31, k = 1;
            for (size_t j = 1; j <= k && i + j < n; j++) cp = (cp << 6) | ((unsigned char)s[i + j] & 0x3F);
            i += k + 1;
            if (cp >= 0x10000) {
                cp -= 0x10000;
                uint32_t hi = 0xD800 + (cp >> 10), lo = 0xDC00 + (cp & 0x3FF);
                snprintf(esc, sizeof esc, "\\u%c%c%c%c\\u%c%c%c%c", hex[hi >> 12], hex[(hi >> 8) & 15], hex[(hi >> 4) & 15], hex[hi & 15],
                         hex[lo >> 12], hex[(lo >> 8) & 15], hex[(lo >> 4) & 15], hex[lo & 15]);
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", cp);
            }
        }
        graft__buf_puts(b, esc);
    }
    graft__buf_append(b, "\"", 1);
}

// Shortest decimal that reads back to the same double, laid out as Python's repr(): fixed notation
// for decimal exponents in [-4, 16), else d.ddde±XX; always with a '.' or an exponent.
void graft__fmt_double(char *out, size_t cap, double v) {
    if (!isfinite(v)) { snprintf(out, cap, "%s", isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity"); return; }
    if (v == 0) { snprintf(out, cap, signbit(v) ? "-0.0" : "0.0"); return; }
    char sci[40];
    int p = 1;
    for (; p <= 17; p++) {
        snprintf(sci, sizeof sci, "%.*e", p - 1, v);
        if (strtod(sci, NULL) == v) break;
    }
    // sci = [-]d[.ddd]e±XX → sign, digits, exponent
    const char *q = sci;
    bool neg = *q == '-';
    if (neg) q++;
    char digits[24];
    int nd = 0;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    size_t pos = 0;
#define PUT(...) (pos += (size_t)snprintf(out + pos, pos < cap ? cap - pos : 0, __VA_ARGS__))
    if (neg) PUT("-");
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            PUT("0.");
            for (int i = 0; i < -exp - 1; i++) PUT("0");
            PUT("%s", digits);
        } else if (nd <= exp + 1) {
            PUT("%s", digits);
            for (int i = nd; i < exp + 1; i++) PUT("0");
            PUT(".0");
        } else {
            PUT("%.*s.%s", exp + 1, digits, digits + exp + 1);
        }
    } else {
        PUT("%c", digits[0]);
        if (nd > 1) PUT(".%s", digits + 1);
        PUT("e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
#undef PUT
}

static void dump(struct graft__buf *b, const json_t *j, int depth) {
    char tmp[64];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        if (!json_object_size(j)) { graft__buf_puts(b, "{}"); return; }
        graft__buf_puts(b, "{");
        const char *k; size_t kl; json_t *v; bool first = true;
        json_object_keylen_foreach((json_t *)j, k, kl, v) {
            graft__buf_puts(b, first ? "\n" : ",\n");
            first = false;
            for (int i = 0; i < depth + 1; i++) graft__buf_puts(b, "  ");
            put_ascii_str(b, k, kl);
            graft__buf_puts(b, ": ");
            dump(b, v, depth + 1);
        }
        graft__buf_puts(b, "\n");
        for (int i = 0; i < depth; i++) graft__buf_puts(b, "  ");
        graft__buf_puts(b, "}");
        return;
    }
    case JSON_ARRAY: {
        if (!json_array_size(j)) { graft__buf_puts(b, "[]"); return; }
        graft__buf_puts(b, "[");
        for (size_t i = 0; i < json_array_size(j); i++) {
            graft__buf_puts(b, i ? ",\n" : "\n");
            for (int d = 0; d < depth + 1; d++) graft__buf_puts(b, "  ");
            dump(b, json_array_get(j, i), depth + 1);
        }
        graft__buf_puts(b, "\n");
        for (int i = 0; i < depth; i++) graft__buf_puts(b, "  ");
        graft__buf_puts(b, "]");
        return;
    }
    case JSON_STRING: put_ascii_str(b, json_string_value(j), json_string_length(j)); return;
    case JSON_INTEGER: graft__buf_printf(b, "%lld", (long long)json_integer_value(j)); return;
    case JSON_REAL: graft__fmt_double(tmp, sizeof tmp, json_real_value(j)); graft__buf_puts(b, tmp); return;
    case JSON_TRUE: graft__buf_puts(b, "true"); return;
    case JSON_FALSE: graft__buf_puts(b, "false"); return;
    case JSON_NULL: graft__buf_puts(b, "null"); return;
    }
}

void graft__json_dump_pretty(struct graft__buf *b, const json_t *j) {
    dump(b, j, 0);
    graft__buf_puts(b, "\n");
}
