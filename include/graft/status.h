// graft — status codes and the error slot every fallible call fills.
//
// Every function that can fail returns an `int` status (GRAFT_OK == 0, errors < 0) and, when the
// caller passes a non-NULL `struct graft_err *`, writes one line into it:
//
//     <file>: tensor '<name>': <reason>
//
// (the tensor part only when one is known). The CLI prints it as `graft: error: <msg>` and maps the
// status to an exit code with graft_status_exit_code(). The library never prints and never exits.
#ifndef GRAFT_STATUS_H
#define GRAFT_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// X(name, value, exit code, description)
#define GRAFT_STATUS_MAP(X)                                                        \
    X(GRAFT_OK,         0,  0, "ok")                                               \
    X(GRAFT_E_IO,      -1,  1, "I/O error")                                        \
    X(GRAFT_E_FORMAT,  -2,  3, "malformed input file")                             \
    X(GRAFT_E_NOMEM,   -3,  1, "out of memory")                                    \
    X(GRAFT_E_LIMIT,   -4,  3, "input exceeds a limit")                            \
    X(GRAFT_E_USAGE,   -5,  2, "invalid argument")                                 \
    X(GRAFT_E_CONFIG,  -6,  4, "invalid configuration")                            \
    X(GRAFT_E_EXISTS,  -7,  1, "output exists")                                    \
    X(GRAFT_E_NOTFOUND,-8,  3, "not found")                                        \
    X(GRAFT_E_INTERNAL,-9,  1, "internal error")                                   \
    X(GRAFT_E_NONFINITE,-10, 1, "result holds NaN or infinite values")          \
    X(GRAFT_E_CANCELLED,-11, 1, "cancelled")

enum graft_status {
#define GRAFT__X(name, value, exit_code, desc) name = value,
    GRAFT_STATUS_MAP(GRAFT__X)
#undef GRAFT__X
};

// Documented process exit codes (also in `graft --help`).
enum graft_exit {
    GRAFT_EXIT_OK     = 0, // success
    GRAFT_EXIT_RUN    = 1, // runtime or I/O failure
    GRAFT_EXIT_USAGE  = 2, // bad command line
    GRAFT_EXIT_INPUT  = 3, // a bad input file (model, index, config.json)
    GRAFT_EXIT_CONFIG = 4, // a bad merge/recipe config
};

#define GRAFT_ERR_MSG_MAX 512

struct graft_err {
    int  code;                   // enum graft_status of the first failure, GRAFT_OK if none
    char msg[GRAFT_ERR_MSG_MAX]; // one line, NUL-terminated, no trailing newline
};

// The library's version, GRAFT_VERSION of the build ("0.1.0"): a program linked against libgraft.so
// can tell which one it got.
const char *graft_version(void);
// Name ("GRAFT_E_FORMAT") and description of a status; never NULL.
const char *graft_status_name(int status);
const char *graft_status_str(int status);
// Exit code for a status (see enum graft_exit).
int graft_status_exit_code(int status);

// Fill `err` (if non-NULL) and return `code`. `file` and `tensor` may be NULL; `tensor_len` is the
// byte length of `tensor` (names may hold any bytes; non-printable ones are escaped as \xNN).
// The first error wins: a slot that already holds an error is left unchanged.
int graft_err_set(struct graft_err *err, int code, const char *file, const char *tensor,
                  size_t tensor_len, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

// Clear an error slot.
void graft_err_clear(struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
