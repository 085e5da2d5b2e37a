// tools/train/metrics.c: metrics.jsonl and progress.
#include "metrics.h"
#include "atomic_out.h"
#include "check.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Rewrite metrics.jsonl keeping the records of steps <= keep (a resumed run
// continues the file as an uninterrupted run would have written it).
static void truncate_after(const char *path, size_t keep) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t cap = 0, n = 0;
    char *out = NULL, *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        json_int_t step = j ? json_integer_value(json_object_get(j, "step")) : 0;
        json_decref(j);
        if (!j || (size_t)step > keep) continue;
        out = xgrow(out, &cap, n + (size_t)len, 1);
        memcpy(out + n, line, (size_t)len);
        n += (size_t)len;
    }
    free(line);
    fclose(f);
    // Through a temporary file: a run killed here keeps the old log whole.
    aout w;
    aout_open(&w, path);
    aout_write(&w, out, n);
    aout_commit(&w);
    free(out);
}

void metrics_open(metrics *m, const char *out_dir, size_t start, size_t total, int quiet) {
    memset(m, 0, sizeof *m);
    size_t n = strlen(out_dir) + 32;
    m->path = xmalloc(n);
    snprintf(m->path, n, "%s/metrics.jsonl", out_dir);
    if (start) truncate_after(m->path, start);
    m->f = xfopen(m->path, start ? "a" : "w");
    m->start = start;
    m->total = total;
    m->tty = isatty(2);
    m->quiet = quiet;
}

// Each line is flushed as it is written (a log to follow with tail -f); a
// failed write (a full disk) stops the run instead of losing lines silently.
static void flush_or_die(metrics *m) {
    if (fflush(m->f) != 0 || ferror(m->f)) die("cannot write %s: %s", m->path, strerror(errno));
}

static void fmt_eta(double s, char *buf, size_t n) {
    if (!isfinite(s) || s < 0) { snprintf(buf, n, "?"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    else snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

void metrics_step(metrics *m, size_t step, double epoch, double loss, double lr, double grad_norm,
                  size_t tokens, size_t targets, double now) {
    double elapsed = now - m->t0;
    double dt = now - (m->t_last ? m->t_last : m->t0);
    m->t_last = now;
    m->tokens_since += tokens;
    double tps = dt > 0 ? tokens / dt : 0;
    fprintf(m->f, "{\"step\":%zu,\"epoch\":%.6g,\"loss\":%.9g,\"lr\":%.17g,\"grad_norm\":%.9g,\"tokens\":%zu,"
            "\"target_tokens\":%zu,\"tokens_per_s\":%.1f,\"elapsed_s\":%.3f}\n",
            step, epoch, loss, lr, grad_norm, tokens, targets, tps, elapsed);
    flush_or_die(m);
    if (m->quiet) return;
    double avg = elapsed > 0 ? m->tokens_since / elapsed : 0;
    double eta = (double)(m->total - step) * (elapsed / (double)(step - m->start));
    char e[32];
    fmt_eta(eta, e, sizeof e);
    if (m->tty) {
        int width = 24, done = (int)(width * (double)step / (double)m->total);
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < done ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r[%s] %zu/%zu loss %.4f lr %.3g %.0f tok/s ETA %s   ", bar, step, m->total, loss, lr, avg, e);
        if (step == m->total) fputc('\n', stderr);
    } else if (now - m->last_print >= 10.0 || step == m->total || step == m->start + 1) {
        fprintf(stderr, "train: step %zu/%zu loss %.4f lr %.3g grad_norm %.3f %.0f tok/s ETA %s\n", step, m->total,
                loss, lr, grad_norm, avg, e);
        m->last_print = now;
    }
}

void metrics_eval(metrics *m, size_t step, double loss, size_t targets) {
    fprintf(m->f, "{\"step\":%zu,\"eval_loss\":%.9g,\"eval_target_tokens\":%zu}\n", step, loss, targets);
    flush_or_die(m);
    if (!m->quiet) fprintf(stderr, "%strain: step %zu eval_loss %.4f (%zu target tokens)\n", m->tty ? "\n" : "", step,
                           loss, targets);
}

void metrics_close(metrics *m) {
    if (m->f && fclose(m->f) != 0) { m->f = NULL; die("cannot write %s: %s", m->path, strerror(errno)); }
    m->f = NULL;
    free(m->path);
    m->path = NULL;
}
