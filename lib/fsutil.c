// lib/fsutil.c: paths and whole transfers on file descriptors.
#include "fsutil.h"
#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int is_regular_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

ssize_t read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

void pread_full(int fd, void *buf, size_t n, off_t off, const char *path) {
    char *c = buf;
    while (n) {
        ssize_t r = pread(fd, c, n, off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("cannot read %s: %s", path, strerror(errno));
        if (r == 0) die("%s: file shrank while being read (offset %lld)", path, (long long)off);
        c += r; n -= (size_t)r; off += r;
    }
}

void pwrite_full(int fd, const void *buf, size_t n, off_t off, const char *path) {
    const char *c = buf;
    while (n) {
        ssize_t w = pwrite(fd, c, n, off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) die("cannot write %s: %s", path, strerror(errno));
        c += w; n -= (size_t)w; off += w;
    }
}
