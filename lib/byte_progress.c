// lib/byte_progress.c: a byte-count progress line for long transfers.
#include "byte_progress.h"
#include "check.h"

#include <stdio.h>
#include <unistd.h>

void byte_progress_init(byte_progress *p, const char *label, uint64_t total) {
    p->label = label;
    p->tty = isatty(STDERR_FILENO);
    p->done = 0;
    p->total = total;
    p->last = 0;
}

void byte_progress_add(byte_progress *p, uint64_t n) {
    p->done += n;
    if (!p->tty) return;
    time_t now = time(NULL);
    if (now == p->last && p->done < p->total) return;
    p->last = now;
    char a[32], b[32];
    fprintf(stderr, "\r%s: %s of %s (%.0f%%)   ", p->label, fmt_bytes((double)p->done, a, sizeof a),
            fmt_bytes((double)p->total, b, sizeof b), p->total ? 100.0 * (double)p->done / (double)p->total : 100.0);
    if (p->done >= p->total) fputc('\n', stderr);
}
