// lib/errmsg.h: error messages for library functions that report instead of
// dying (they return -1 and leave one line in a caller's buffer, so that a
// tool can die() with it and a test can inspect it).
#ifndef LORAPIPE_ERRMSG_H
#define LORAPIPE_ERRMSG_H
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

// Format into err (when given) and return -1.
static inline int err_set(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline int err_set(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && n) vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

#endif
