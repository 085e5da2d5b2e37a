// lib/fsutil.h: small file-system helpers: paths, whole transfers on file
// descriptors (pipes hand data over in pieces; pread/pwrite may be short).
#ifndef LORAPIPE_FSUTIL_H
#define LORAPIPE_FSUTIL_H
#include <stddef.h>
#include <sys/types.h>

// "dir/name", malloc'ed.
char *path_join(const char *dir, const char *name);
int is_regular_file(const char *path);
// Read up to n bytes, retrying short reads and EINTR; returns the count
// (short only at end of input) or -1 with errno set.
ssize_t read_full(int fd, void *buf, size_t n);
// Exactly n bytes at off, or die naming path.
void pread_full(int fd, void *buf, size_t n, off_t off, const char *path);
void pwrite_full(int fd, const void *buf, size_t n, off_t off, const char *path);

#endif
