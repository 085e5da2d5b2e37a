// lib/check.h: the one family of checked calls every tool uses.
//
// Exit codes are the same everywhere: 0 ok, 1 runtime or data error, 2 usage.
// die() prints "prog: message" on stderr, removes every temporary output that
// was registered with cleanup_add() (so no partial file is ever left behind),
// and exits 1.  The *_CHECK macros add the source file:line, for failures of
// calls (I/O, CUDA, cuBLAS, NCCL) rather than for bad user data, whose message
// names the user's file and record instead.
#ifndef LORAPIPE_CHECK_H
#define LORAPIPE_CHECK_H

#include <stddef.h>
#include <stdio.h>

enum { EXIT_OK = 0, EXIT_DATA = 1, EXIT_USAGE = 2 };

// _Noreturn is C11; CUDA sources include this header as C++.
#ifdef __cplusplus
#define LP_NORETURN [[noreturn]]
extern "C" {
#else
#define LP_NORETURN _Noreturn
#ifdef __cplusplus
}
#endif
#endif

// Name used as the message prefix; set once from argv[0] in main().
extern const char *prog_name;
void check_init(const char *argv0);

LP_NORETURN void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Fuzzing harnesses (fuzz/) run parsers that die() on bad input inside one
// process: when set, die() and die_usage() call this hook (which must not
// return, e.g. longjmp back into the harness) instead of exit().
extern void (*check_die_hook)(int exit_code);
// When set, die() and warn() print nothing (a fuzzer runs millions of inputs).
extern int check_quiet;
LP_NORETURN void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
LP_NORETURN void die_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Abort with file:line when cond is false (internal invariants, failed calls).
#define CHECK(cond, ...) \
    do { if (!(cond)) die_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)
// I/O: call must return true/non-NULL; the message names the path and errno.
#define IO_CHECK(ok, path) \
    do { if (!(ok)) die_at(__FILE__, __LINE__, "I/O error on %s: %s", (path), io_errstr()); } while (0)
const char *io_errstr(void);

// Allocation that never returns NULL.
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
// Grow a dynamic array: ensure capacity for need elements of elem bytes.
void *xgrow(void *p, size_t *cap, size_t need, size_t elem);

// Checked stdio wrappers (die with the path on failure).
FILE *xfopen(const char *path, const char *mode);
void xfwrite(const void *p, size_t size, size_t n, FILE *f, const char *path);
void xfclose(FILE *f, const char *path);
// Read a whole file (or "-" for stdin) into memory; *len gets its size.
// The buffer is NUL-terminated one byte past *len.
char *read_file(const char *path, size_t *len);

// Cleanup registry: paths to unlink (files) or remove recursively (dirs) when
// the program dies or is interrupted by SIGINT/SIGTERM/SIGHUP/SIGPIPE.
// cleanup_add returns a handle for cleanup_forget once the output is final.
int cleanup_add(const char *path, int is_dir);
void cleanup_forget(int handle);
void cleanup_run(void);
// Install signal handlers that run cleanup_run() and re-raise (exit 128+sig).
void cleanup_install_signals(void);

// Human-readable byte size ("1.5 GiB") into buf.
const char *fmt_bytes(double bytes, char *buf, size_t n);
// Parse "5GB", "512MiB", "1000" into bytes; returns 0 on success.
int parse_size(const char *s, unsigned long long *out);

#ifdef __cplusplus
}
#endif
#endif
