// lib/atomic_out.c: temp-file-then-rename outputs.
#include "atomic_out.h"
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP_MID ".tmp."
#define TMP_RAND "XXXXXX"   // mkstemp/mkdtemp fill these in

static char *tmp_name_for(const char *path) {
    char *d = xstrdup(path), *b = xstrdup(path);
    const char *dir = dirname(d), *base = basename(b);
    size_t n = strlen(dir) + strlen(base) + 32;
    char *t = xmalloc(n);
    snprintf(t, n, "%s/.%s" TMP_MID TMP_RAND, dir, base);
    free(d); free(b);
    return t;
}

int aout_tmp_target(const char *entry, char *target, size_t n) {
    size_t len = strlen(entry), tail = strlen(TMP_MID) + strlen(TMP_RAND);
    if (entry[0] != '.' || len < 1 + 1 + tail || strncmp(entry + len - tail, TMP_MID, strlen(TMP_MID))) return 0;
    size_t tn = len - 1 - tail;
    if (tn + 1 > n) return 0;
    memcpy(target, entry + 1, tn);
    target[tn] = 0;
    return 1;
}

void aout_open(aout *o, const char *path) {
    memset(o, 0, sizeof *o);
    o->cleanup = -1;
    if (!path || !strcmp(path, "-")) { o->f = stdout; return; }
    // An existing device or FIFO (-o /dev/null, -o /dev/stdout, a named pipe)
    // is written in place: renaming a temporary over it would replace it.
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
        o->f = fopen(path, "wb");
        if (!o->f) die("cannot open %s: %s", path, strerror(errno));
        o->path = xstrdup(path);
        return;
    }
    o->path = xstrdup(path);
    o->tmp = tmp_name_for(path);
    int fd = mkstemp(o->tmp);
    if (fd < 0) die("cannot create %s: %s", path, strerror(errno));
    o->cleanup = cleanup_add(o->tmp, 0);
    fchmod(fd, 0644 & ~0);  // mkstemp makes 0600; outputs are ordinary files
    o->f = fdopen(fd, "wb");
    if (!o->f) die("cannot open %s: %s", o->tmp, strerror(errno));
    setvbuf(o->f, NULL, _IOFBF, 1 << 20);
}

const char *aout_name(const aout *o) { return o->path ? o->path : "<stdout>"; }

void aout_write(aout *o, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, o->f) != n) die("cannot write %s: %s", aout_name(o), strerror(errno));
}

void aout_commit(aout *o) {
    if (fflush(o->f) != 0) die("cannot write %s: %s", aout_name(o), strerror(errno));
    if (!o->path) return;
    if (!o->tmp) {                      // a device or FIFO, written in place
        if (fclose(o->f) != 0) die("cannot write %s: %s", o->path, strerror(errno));
        free(o->path);
        memset(o, 0, sizeof *o);
        return;
    }
    if (fsync(fileno(o->f)) != 0 && errno != EINVAL)
        die("cannot write %s: %s", o->path, strerror(errno));
    if (fclose(o->f) != 0) die("cannot write %s: %s", o->path, strerror(errno));
    o->f = NULL;
    if (rename(o->tmp, o->path) != 0) die("cannot rename %s to %s: %s", o->tmp, o->path, strerror(errno));
    cleanup_forget(o->cleanup);
    char *d = xstrdup(o->path);
    fsync_dir(dirname(d));
    free(d);
    free(o->tmp); free(o->path);
    o->tmp = o->path = NULL;
}

void aout_abort(aout *o) {
    if (!o->path) return;
    if (!o->tmp) { fclose(o->f); free(o->path); memset(o, 0, sizeof *o); return; }
    if (o->f) fclose(o->f);
    unlink(o->tmp);
    cleanup_forget(o->cleanup);
    free(o->tmp); free(o->path);
    memset(o, 0, sizeof *o);
}

void aout_dir_open(aout_dir *d, const char *path) {
    memset(d, 0, sizeof *d);
    d->path = xstrdup(path);
    d->tmp = tmp_name_for(path);
    if (!mkdtemp(d->tmp)) die("cannot create a temporary folder beside %s: %s", path, strerror(errno));
    chmod(d->tmp, 0755);
    d->cleanup = cleanup_add(d->tmp, 1);
}

void aout_dir_commit(aout_dir *d, int replace) {
    struct stat st;
    if (stat(d->path, &st) == 0) {
        if (!replace) die("%s already exists (remove it or choose another --out)", d->path);
        // Move the old one aside first so that a failure leaves one whole copy.
        size_t n = strlen(d->path) + 16;
        char *old = xmalloc(n);
        snprintf(old, n, "%s.old.%d", d->path, (int)getpid());
        if (rename(d->path, old) != 0) die("cannot replace %s: %s", d->path, strerror(errno));
        if (rename(d->tmp, d->path) != 0) die("cannot rename %s to %s: %s", d->tmp, d->path, strerror(errno));
        rm_rf(old);
        free(old);
    } else if (rename(d->tmp, d->path) != 0) {
        die("cannot rename %s to %s: %s", d->tmp, d->path, strerror(errno));
    }
    cleanup_forget(d->cleanup);
    char *c = xstrdup(d->path);
    fsync_dir(dirname(c));
    free(c); free(d->tmp); free(d->path);
    memset(d, 0, sizeof *d);
}

void mkdir_p(const char *path) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) die("cannot create %s: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) die("cannot create %s: %s", p, strerror(errno));
    free(p);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}
int rm_rf(const char *path) { return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) { fsync(fd); close(fd); }
}
