// lib/check.c: die/warn, checked allocation and stdio, temporary-output cleanup.
#include "check.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

const char *prog_name = "lorapipe";
void (*check_die_hook)(int exit_code);
int check_quiet;

void check_init(const char *argv0) {
    const char *s = strrchr(argv0, '/');
    prog_name = s ? s + 1 : argv0;
    cleanup_install_signals();
}

const char *io_errstr(void) { return errno ? strerror(errno) : "unexpected end of file or short transfer"; }

static void vmsg(const char *fmt, va_list ap) {
    if (check_quiet) {
        // Still format the message: its arguments come from the input.
        char buf[4096];
        vsnprintf(buf, sizeof buf, fmt, ap);
        return;
    }
    // One line: build it first so that concurrent threads do not interleave.
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "%s: ", prog_name);
    vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    size_t len = strlen(buf);
    if (len + 1 < sizeof buf && (len == 0 || buf[len - 1] != '\n')) buf[len++] = '\n';
    fwrite(buf, 1, len, stderr);
    fflush(stderr);
}

// exit() from a second thread (host_comm's senders) runs the atexit handlers
// and library destructors while the main thread is still computing: a crash
// instead of exit 1. There the process ends with _exit, after the cleanup.
LP_NORETURN static void leave(int code) {
    if ((pid_t)syscall(SYS_gettid) != getpid()) _exit(code);
    exit(code);
}

void die(const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vmsg(fmt, ap); va_end(ap);
    cleanup_run();
    if (check_die_hook) check_die_hook(EXIT_DATA);
    leave(EXIT_DATA);
}

void die_usage(const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vmsg(fmt, ap); va_end(ap);
    if (!check_quiet) fprintf(stderr, "Try '%s --help' for more information.\n", prog_name);
    cleanup_run();
    if (check_die_hook) check_die_hook(EXIT_USAGE);
    leave(EXIT_USAGE);
}

void warn(const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vmsg(fmt, ap); va_end(ap);
}

void die_at(const char *file, int line, const char *fmt, ...) {
    char msg[3000];
    va_list ap; va_start(ap, fmt); vsnprintf(msg, sizeof msg, fmt, ap); va_end(ap);
    die("%s (%s:%d)", msg, file, line);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory allocating %zu bytes", n);
    return p;
}
void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}
void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) die("out of memory allocating %zu bytes", n);
    return p;
}
char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}
void *xgrow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 16;
    while (c < need) c += c / 2 + 16;
    *cap = c;
    return xrealloc(p, c * elem);
}

FILE *xfopen(const char *path, const char *mode) {
    FILE *f = fopen(path, mode);
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    return f;
}
void xfwrite(const void *p, size_t size, size_t n, FILE *f, const char *path) {
    if (n && fwrite(p, size, n, f) != n) die("cannot write %s: %s", path, strerror(errno));
}
void xfclose(FILE *f, const char *path) {
    if (fclose(f) != 0) die("cannot write %s: %s", path, strerror(errno));
}

char *read_file(const char *path, size_t *len) {
    int is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) { cap *= 2; buf = xrealloc(buf, cap); }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) die("cannot read %s: %s", is_stdin ? "<stdin>" : path, strerror(errno));
    if (!is_stdin) fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

// ---- cleanup registry ---------------------------------------------------
// A fixed table so that the signal handler touches no allocator.
#define CLEANUP_MAX 64
static struct { char path[4096]; int is_dir; volatile sig_atomic_t used; } cleanup_tab[CLEANUP_MAX];

int cleanup_add(const char *path, int is_dir) {
    for (int i = 0; i < CLEANUP_MAX; i++) {
        if (!cleanup_tab[i].used) {
            size_t n = strlen(path);
            CHECK(n < sizeof cleanup_tab[i].path, "path too long: %s", path);
            memcpy(cleanup_tab[i].path, path, n + 1);
            cleanup_tab[i].is_dir = is_dir;
            cleanup_tab[i].used = 1;
            return i;
        }
    }
    die("too many temporary outputs registered");
}

void cleanup_forget(int h) {
    if (h >= 0 && h < CLEANUP_MAX) cleanup_tab[h].used = 0;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

void cleanup_run(void) {
    for (int i = CLEANUP_MAX - 1; i >= 0; i--) {
        if (!cleanup_tab[i].used) continue;
        cleanup_tab[i].used = 0;
        if (cleanup_tab[i].is_dir) nftw(cleanup_tab[i].path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        else unlink(cleanup_tab[i].path);
    }
}

static void on_signal(int sig) {
    // Only files are removed here (unlink is async-signal-safe); directories
    // are removed with nftw, which is not, but a half-built export folder left
    // behind is worse than the small risk of re-entering the allocator.
    cleanup_run();
    signal(sig, SIG_DFL);
    raise(sig);
}

void cleanup_install_signals(void) {
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

const char *fmt_bytes(double b, char *buf, size_t n) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) { b /= 1024; i++; }
    snprintf(buf, n, i ? "%.2f %s" : "%.0f %s", b, u[i]);
    return buf;
}

int parse_size(const char *s, unsigned long long *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0) return -1;
    while (*end == ' ') end++;
    double m = 1;
    if (!*end || !strcasecmp(end, "B")) m = 1;
    else if (!strcasecmp(end, "KB") || !strcasecmp(end, "K")) m = 1e3;
    else if (!strcasecmp(end, "MB") || !strcasecmp(end, "M")) m = 1e6;
    else if (!strcasecmp(end, "GB") || !strcasecmp(end, "G")) m = 1e9;
    else if (!strcasecmp(end, "TB") || !strcasecmp(end, "T")) m = 1e12;
    else if (!strcasecmp(end, "KiB")) m = 1024.0;
    else if (!strcasecmp(end, "MiB")) m = 1048576.0;
    else if (!strcasecmp(end, "GiB")) m = 1073741824.0;
    else if (!strcasecmp(end, "TiB")) m = 1099511627776.0;
    else return -1;
    *out = (unsigned long long)(v * m + 0.5);
    return 0;
}
