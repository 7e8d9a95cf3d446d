// Checked file operations. Every write is completed or reported; test builds can make the Nth
// write/fsync/rename fail (GRAFT_FAULT_IO=op:N:ERRNO) to prove failures leave no partial output.
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "io-impl.h"

int graft__pwrite_full(int fd, const void *buf, size_t n, uint64_t off) {
    const char *p = buf;
    while (n > 0) {
        int inj = graft__fault_io("write");
        if (inj) { errno = inj; return -1; }
        ssize_t w = pwrite(fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) { errno = EIO; return -1; }
        p += w, n -= (size_t)w, off += (uint64_t)w;
    }
    return 0;
}

int graft__check_space(const char *path, const char *target, uint64_t need, const char *what, struct graft_err *err) {
    struct statvfs sv;
    uint64_t avail;
#ifdef GRAFT_FAULT_INJECTION
    const char *fake = getenv("GRAFT_FAULT_FREE_BYTES");
    if (fake) avail = strtoull(fake, NULL, 10);
    else
#endif
    {
        if (statvfs(path, &sv)) return GRAFT_OK; // unknown: the reservation or the writes will tell
        avail = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
    }
    if (avail >= need) return GRAFT_OK;
    char a[32], b[32];
    graft__human_bytes(a, sizeof a, (double)need), graft__human_bytes(b, sizeof b, (double)avail);
    return graft_err_set(err, GRAFT_E_IO, target, NULL, 0, "not enough free space: %s needs %s, the file system has %s free (%llu < %llu bytes); "
                         "free some or write elsewhere", what, a, b, (unsigned long long)avail, (unsigned long long)need);
}

int graft__fsync(int fd) {
    int inj = graft__fault_io("fsync");
    if (inj) { errno = inj; return -1; }
    return fsync(fd);
}

int graft__rename(const char *from, const char *to) {
    int inj = graft__fault_io("rename");
    if (inj) { errno = inj; return -1; }
    return rename(from, to);
}

int graft__fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = graft__fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb, (void)ftw;
    return (type == FTW_DP ? rmdir(path) : unlink(path)) == 0 || errno == ENOENT ? 0 : 0; // best effort
}

void graft__rm_tree(const char *path) {
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// Where `target`'s folder part ends: the length of "<dir>" in "<dir>/<name>" (trailing '/' ignored),
// with *name_at / *name_len the name; -1 when target has no folder part.
static long split_target(const char *target, size_t *name_at, size_t *name_len) {
    size_t ol = strlen(target);
    while (ol > 1 && target[ol - 1] == '/') ol--;
    const char *sl = memrchr(target, '/', ol);
    *name_at = sl ? (size_t)(sl - target) + 1 : 0, *name_len = ol - *name_at;
    return sl ? (long)(sl - target) : -1;
}

void graft__owner_tag(char *buf) {
    char host[64];
    if (gethostname(host, sizeof host) != 0) host[0] = 0;
    host[sizeof host - 1] = 0;
    for (char *c = host; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' || *c == '-')) *c = '_';
    snprintf(buf, GRAFT__OWNER_TAG_MAX, "%s@%ld", host, (long)getpid());
}

char *graft__temp_beside(const char *target, const char *suffix) {
    size_t at, nl;
    long dl = split_target(target, &at, &nl);
    char tag[GRAFT__OWNER_TAG_MAX];
    graft__owner_tag(tag);
    if (dl < 0) return graft__asprintf(".%.*s.graft-tmp-%s%s", (int)nl, target, tag, suffix);
    return graft__asprintf("%.*s/.%.*s.graft-tmp-%s%s", (int)dl, target, (int)nl, target + at, tag, suffix);
}

char *graft__parent_of(const char *target) {
    size_t at, nl;
    long dl = split_target(target, &at, &nl);
    return dl < 0 ? graft__strdup(".") : graft__strndup(target, dl ? (size_t)dl : 1);
}

void graft__remove_stale_beside(const char *target) {
    size_t at, nl;
    split_target(target, &at, &nl);
    char *dir = graft__parent_of(target), *prefix = graft__asprintf(".%.*s.graft-tmp-", (int)nl, target + at);
    if (dir && prefix) graft__remove_stale(dir, prefix);
    // a merge to GGUF writes a folder beside the file first, and that folder's writer its own temporary
    // beside it: "." + ".NAME.graft-tmp-HOST@PID-hf" + ".graft-tmp-HOST@PID"
    graft__free(prefix);
    prefix = graft__asprintf("..%.*s.graft-tmp-", (int)nl, target + at);
    if (dir && prefix) graft__remove_stale(dir, prefix);
    graft__free(dir), graft__free(prefix);
}
