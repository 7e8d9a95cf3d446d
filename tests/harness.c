// Test runner: runs every registered case (or those whose name contains argv[1]) in a forked child
// with a 120 s alarm and a private temp folder; prints one line per case and "N passed, N failed".
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "harness.h"

#define MAX_TESTS 512
static struct { const char *name; void (*fn)(void); } tests[MAX_TESTS];
static int n_tests;
static bool failed;
static char dir[4096];
static char *paths[256];
static int n_paths;

void harness_register(const char *name, void (*fn)(void)) {
    if (n_tests < MAX_TESTS) tests[n_tests].name = name, tests[n_tests].fn = fn, n_tests++;
}

void harness_fail(const char *file, int line, const char *fmt, ...) {
    failed = true;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

bool harness_failed(void) { return failed; }
const char *tdir(void) { return dir; }

const char *tpath(const char *fmt, ...) {
    char rel[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    char *p = malloc(strlen(dir) + strlen(rel) + 2);
    sprintf(p, "%s/%s", dir, rel);
    if (n_paths == 256) free(paths[0]), memmove(paths, paths + 1, 255 * sizeof *paths), n_paths--;
    paths[n_paths++] = p;
    return p;
}

void twrite(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f)) {
        fprintf(stderr, "harness: cannot write %s\n", path);
        exit(1);
    }
}

char *tread(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(b); return NULL; }
    b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

bool texists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

int tsh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    int pass = 0, fail = 0, num = 0;
    for (int i = 0; i < n_tests; i++) {
        if (filter && !strstr(tests[i].name, filter)) continue;
        num++;
        snprintf(dir, sizeof dir, "%s/graft-test-XXXXXX", tmp);
        if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(120);
            failed = false;
            tests[i].fn();
            fflush(stdout);
            _exit(failed ? 1 : 0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (!ok && WIFSIGNALED(st)) fprintf(stderr, "    killed by signal %d\n", WTERMSIG(st));
        printf("%s %d - %s\n", ok ? "ok" : "not ok", num, tests[i].name);
        ok ? pass++ : fail++;
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "harness: cannot remove %s\n", dir);
    }
    printf("%d passed, %d failed\n", pass, fail);
    return fail ? 1 : 0;
}
