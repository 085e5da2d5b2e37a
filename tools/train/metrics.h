// tools/train/metrics.h: metrics.jsonl (one line per optimizer step, one per
// evaluation) and the progress line on stderr (a bar with ETA on a
// terminal, plain lines otherwise).
#ifndef LORAPIPE_METRICS_H
#define LORAPIPE_METRICS_H
#include <stddef.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    char *path;
    size_t start, total;
    int tty, quiet;
    double t0, t_last;
    size_t tokens_since;      // tokens since start, for tokens/s
    double last_print;
} metrics;

// Opens OUT/metrics.jsonl; on resume keeps only the lines of steps <= start.
void metrics_open(metrics *m, const char *out_dir, size_t start, size_t total, int quiet);
void metrics_step(metrics *m, size_t step, double epoch, double loss, double lr, double grad_norm,
                  size_t tokens, size_t targets, double now);
void metrics_eval(metrics *m, size_t step, double loss, size_t targets);
void metrics_close(metrics *m);

#endif
