// fuzz/fuzz_common.h: what every libFuzzer target shares.
//
// The parsers die() on bad input, which is right for a tool and wrong inside
// a fuzzer (exit() would end the run): check_die_hook turns die() into a
// longjmp back to the target, and check_quiet keeps the millions of expected
// error messages off stderr.  A target must free what a refusal leaves behind
// (fuzz_records.inc keeps it in statics for that), or run without leak
// detection (tokenizer_json, whose loader holds a half-built tokenizer:
// fuzz/run.sh) and with memory growing until the rss limit.
//
// Parsers that only take a path read the input through a memfd
// ("/proc/self/fd/N"): no disk I/O and nothing to clean up.
#ifndef LORAPIPE_FUZZ_COMMON_H
#define LORAPIPE_FUZZ_COMMON_H

#include "check.h"

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static jmp_buf fz_jmp;

static void fz_die_hook(int code) {
    (void)code;
    longjmp(fz_jmp, 1);
}

static void fz_init(void) {
    check_die_hook = fz_die_hook;
    check_quiet = 1;
}

// Replace the content of this process's memfd with data; returns its path.
__attribute__((unused)) static const char *fz_memfile(const uint8_t *data, size_t n) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-input", 0);
        if (fd < 0) { perror("memfd_create"); abort(); }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0) { perror("ftruncate"); abort(); }
    for (size_t o = 0; o < n;) {
        ssize_t w = pwrite(fd, data + o, n - o, (off_t)o);
        if (w <= 0) { perror("pwrite"); abort(); }
        o += (size_t)w;
    }
    return path;
}

#endif
