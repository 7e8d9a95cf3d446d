// Status names, exit codes and the one-line error message builder.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "graft/graft.h"
#include "graft/status.h"
#include "impl.h"

const char *graft_version(void) { return GRAFT_VERSION; }

const char *graft_status_name(int status) {
    switch (status) {
#define GRAFT__X(name, value, exit_code, desc) case value: return #name;
        GRAFT_STATUS_MAP(GRAFT__X)
#undef GRAFT__X
    }
    return "GRAFT_E_UNKNOWN";
}

const char *graft_status_str(int status) {
    switch (status) {
#define GRAFT__X(name, value, exit_code, desc) case value: return desc;
        GRAFT_STATUS_MAP(GRAFT__X)
#undef GRAFT__X
    }
    return "unknown error";
}

int graft_status_exit_code(int status) {
    switch (status) {
#define GRAFT__X(name, value, exit_code, desc) case value: return exit_code;
        GRAFT_STATUS_MAP(GRAFT__X)
#undef GRAFT__X
    }
    return GRAFT_EXIT_RUN;
}

void graft_err_clear(struct graft_err *err) {
    if (!err) return;
    err->code   = GRAFT_OK;
    err->msg[0] = 0;
}

// Append `s` (n bytes) to dst, escaping bytes that would break a one-line message.
static size_t put_escaped(char *dst, size_t pos, size_t cap, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const size_t max_shown = 200; // long names are cut: the message must stay one readable line
    for (size_t i = 0; i < n && pos + 5 < cap; i++) {
        if (i == max_shown) {
            pos += (size_t)snprintf(dst + pos, cap - pos, "...");
            break;
        }
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
            dst[pos++] = '\\';
            dst[pos++] = 'x';
            dst[pos++] = hex[c >> 4];
            dst[pos++] = hex[c & 15];
        } else {
            dst[pos++] = (char)c;
        }
    }
    dst[pos < cap ? pos : cap - 1] = 0;
    return pos < cap ? pos : cap - 1;
}

int graft_err_set(struct graft_err *err, int code, const char *file, const char *tensor,
                  size_t tensor_len, const char *fmt, ...) {
    if (!err || err->code != GRAFT_OK) return code;
    err->code  = code;
    size_t cap = sizeof err->msg, pos = 0;
    err->msg[0] = 0;
    if (file) {
        pos = put_escaped(err->msg, 0, cap, file, strlen(file));
        pos += (size_t)snprintf(err->msg + pos, cap - pos, ": ");
        if (pos >= cap) pos = cap - 1;
    }
    if (tensor) {
        pos += (size_t)snprintf(err->msg + pos, cap - pos, "tensor '");
        if (pos >= cap) pos = cap - 1;
        pos = put_escaped(err->msg, pos, cap, tensor, tensor_len);
        pos += (size_t)snprintf(err->msg + pos, cap - pos, "': ");
        if (pos >= cap) pos = cap - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + pos, cap - pos, fmt, ap);
    va_end(ap);
    for (char *p = err->msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return code;
}

void graft__err_prefix(struct graft_err *err, const char *file, const char *tensor, size_t tensor_len) {
    if (!err || err->code == GRAFT_OK) return;
    char msg[GRAFT_ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "%s", err->msg);
    int code = err->code;
    graft_err_clear(err);
    graft_err_set(err, code, file, tensor, tensor_len, "%s", msg);
}
