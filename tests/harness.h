// Minimal test harness: TEST(name) registers a case; each case runs in a child process with a timeout
// and its own temporary folder; CHECK* print the expression and both values on failure.
#ifndef GRAFT_TEST_HARNESS_H
#define GRAFT_TEST_HARNESS_H
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void harness_register(const char *name, void (*fn)(void));
void harness_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
bool harness_failed(void);
// The current test's private temporary folder, and a path inside it (returned strings live until the
// test ends).
const char *tdir(void);
const char *tpath(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Write / read whole files (test helpers; abort the test on I/O failure).
void  twrite(const char *path, const void *data, size_t len);
char *tread(const char *path, size_t *len); // caller frees
bool  texists(const char *path);
// Run a shell command, return its exit status.
int   tsh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define TEST(name)                                                                  \
    static void name(void);                                                         \
    __attribute__((constructor)) static void reg_##name(void) { harness_register(#name, name); } \
    static void name(void)

#define CHECK(c) do { if (!(c)) { harness_fail(__FILE__, __LINE__, "CHECK(%s)", #c); return; } } while (0)
#define CHECK_EQ(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); if (a_ != b_) { \
    harness_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, a_, b_); return; } } while (0)
#define CHECK_EQ_U64(a, b) do { uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b); if (a_ != b_) { \
    harness_fail(__FILE__, __LINE__, "%s == %s: 0x%" PRIx64 " != 0x%" PRIx64, #a, #b, a_, b_); return; } } while (0)
#define CHECK_STR(a, b) do { const char *a_ = (a), *b_ = (b); if (!a_ || !b_ || strcmp(a_, b_)) { \
    harness_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); return; } } while (0)
#define CHECK_CONTAINS(hay, needle) do { const char *h_ = (hay), *n_ = (needle); if (!h_ || !strstr(h_, n_)) { \
    harness_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_); return; } } while (0)
// Stop the test if a helper already failed.
#define CHECK_OK() do { if (harness_failed()) return; } while (0)
#endif
