// lib/atomic_out.h: outputs that appear whole or not at all.
//
// aout_open(path) creates "<dir>/.<name>.tmp.XXXXXX" beside the target and
// registers it for removal if the program dies or is interrupted; aout_commit
// flushes, fsyncs and renames it over the target.  A NULL path or "-" means
// stdout (nothing to rename; a consumer downstream sees the stream end early
// if we die, which is what a pipe can do).
#ifndef LORAPIPE_ATOMIC_OUT_H
#define LORAPIPE_ATOMIC_OUT_H

#include <stdio.h>

typedef struct {
    FILE *f;
    char *path;      // final path, NULL for stdout
    char *tmp;       // temporary path, NULL for stdout
    int cleanup;     // cleanup handle
} aout;

void aout_open(aout *o, const char *path);
// Write n bytes (dies with the target's name on error).
void aout_write(aout *o, const void *p, size_t n);
void aout_commit(aout *o);
// Drop the temporary file (for error paths that do not die).
void aout_abort(aout *o);
// Name to show in messages.
const char *aout_name(const aout *o);
// Whether a directory entry is the temporary of an aout file or directory left
// by a killed run; if so, its target's name goes to target (n bytes) and 1 returns.
int aout_tmp_target(const char *entry, char *target, size_t n);

// Directories: build "<dir>/.<name>.tmp.XXXXXX", then rename over target.
// The target must not exist unless replace is set (then it is removed first).
typedef struct { char *path; char *tmp; int cleanup; } aout_dir;
void aout_dir_open(aout_dir *d, const char *path);
void aout_dir_commit(aout_dir *d, int replace);

// Create a directory and its parents (mkdir -p); dies on failure.
void mkdir_p(const char *path);
// Remove a directory tree (rm -rf); returns 0 on success.
int rm_rf(const char *path);
// fsync a directory so that a rename inside it is durable.
void fsync_dir(const char *dir);

#endif
