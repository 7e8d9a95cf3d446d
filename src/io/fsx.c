// Checked file operations. Every write is completed or reported; test builds can make the Nth
// write/fsync/rename fail (GRAFT_FAULT_IO=op:N:ERRNO) to prove failures leave no partial output.
#include <ftw.h>
#include <sys/stat.h>
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
