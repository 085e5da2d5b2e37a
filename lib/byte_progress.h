// lib/byte_progress.h: "tool: 3.2 GiB of 14.4 GiB (22%)" on stderr, at most
// once a second and only when stderr is a terminal.
#ifndef LORAPIPE_BYTE_PROGRESS_H
#define LORAPIPE_BYTE_PROGRESS_H
#include <stdint.h>
#include <time.h>

typedef struct {
    const char *label;
    int tty;
    uint64_t done, total;
    time_t last;
} byte_progress;

void byte_progress_init(byte_progress *p, const char *label, uint64_t total);
void byte_progress_add(byte_progress *p, uint64_t n);

#endif
