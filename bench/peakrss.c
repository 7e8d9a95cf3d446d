// peakrss CMD ARGS…: run a command and print on stderr its peak resident set size (KiB, from
// getrusage: includes mapped file pages), its peak RssAnon (KiB, sampled from /proc every 2 ms:
// anonymous memory only, i.e. what the process allocated rather than the input pages it mapped) and
// its wall time. Used by the benchmarks so they need no GNU time.
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long rss_anon_kib(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "RssAnon:", 8)) { sscanf(line + 8, "%ld", &v); break; }
    fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: peakrss CMD [ARGS...]\n"); return 2; }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid == 0) { execvp(argv[1], argv + 1); perror(argv[1]); _exit(127); }
    int st;
    struct rusage ru;
    long anon = 0;
    for (;;) {
        pid_t r = wait4(pid, &st, WNOHANG, &ru);
        if (r < 0) { perror("wait4"); return 1; }
        if (r == pid) break;
        long a = rss_anon_kib(pid);
        if (a > anon) anon = a;
        usleep(2000);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "peakrss_kib=%ld rssanon_kib=%ld wall_s=%.3f\n", ru.ru_maxrss, anon,
            (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
