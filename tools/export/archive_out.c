// tools/export/archive_out.c: archive outputs through libarchive.
#include "archive_out.h"
#include "check.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

arc_kind arc_kind_of(const char *path) {
    if (ends_with(path, ".tar.zst") || ends_with(path, ".tzst")) return ARC_TAR_ZST;
    if (ends_with(path, ".tar")) return ARC_TAR;
    if (ends_with(path, ".zip")) return ARC_ZIP;
    return ARC_NONE;
}

static void arc_check(arc_out *x, int rc, const char *what) {
    if (rc < ARCHIVE_WARN)
        die("cannot write %s (%s%s%s): %s", aout_name(&x->o), what, x->entry ? " " : "", x->entry ? x->entry : "",
            archive_error_string(x->a) ? archive_error_string(x->a) : "libarchive error");
}

void arc_open(arc_out *x, const char *path, arc_kind kind) {
    memset(x, 0, sizeof *x);
    char *b = xstrdup(path), *base = basename(b);
    const char *sufs[] = {".tar.zst", ".tzst", ".tar", ".zip"};
    for (size_t i = 0; i < 4; i++)
        if (ends_with(base, sufs[i])) { base[strlen(base) - strlen(sufs[i])] = 0; break; }
    if (!*base) die_usage("--out %s: the archive needs a name before its suffix", path);
    x->folder = xstrdup(base);
    free(b);
    aout_open(&x->o, path);
    x->a = archive_write_new();
    CHECK(x->a, "archive_write_new failed");
    if (kind == ARC_ZIP) {
        arc_check(x, archive_write_set_format_zip(x->a), "format");
        // Weights do not compress; storing keeps export at disk speed.
        arc_check(x, archive_write_set_format_option(x->a, "zip", "compression", "store"), "option");
    } else {
        arc_check(x, archive_write_set_format_pax_restricted(x->a), "format");
        if (kind == ARC_TAR_ZST) {
            arc_check(x, archive_write_add_filter_zstd(x->a), "zstd filter");
            char threads[24];
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            snprintf(threads, sizeof threads, "%ld", n > 0 ? n : 1);
            archive_write_set_filter_option(x->a, "zstd", "threads", threads);   // older libarchive: ignored
        }
    }
    archive_write_set_bytes_in_last_block(x->a, 1);   // no padding beyond the format's own
    arc_check(x, archive_write_open_fd(x->a, fileno(x->o.f)), "open");
    // The folder entry.
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, x->folder);
    archive_entry_set_filetype(e, AE_IFDIR);
    archive_entry_set_perm(e, 0755);
    archive_entry_set_mtime(e, time(NULL), 0);
    arc_check(x, archive_write_header(x->a, e), "folder entry");
    archive_entry_free(e);
}

void arc_begin(arc_out *x, const char *name, uint64_t size) {
    CHECK(x->left == 0, "archive entry %s left unfinished", x->entry ? x->entry : "?");
    size_t n = strlen(x->folder) + strlen(name) + 2;
    char *path = xmalloc(n);
    snprintf(path, n, "%s/%s", x->folder, name);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_mtime(e, time(NULL), 0);
    x->entry = name;
    arc_check(x, archive_write_header(x->a, e), "entry header");
    archive_entry_free(e);
    free(path);
    x->left = size;
}

void arc_data(arc_out *x, const void *p, size_t n) {
    CHECK(n <= x->left, "archive entry %s: more bytes than announced", x->entry);
    const char *c = p;
    while (n) {
        la_ssize_t w = archive_write_data(x->a, c, n);
        if (w < 0) arc_check(x, (int)w, "data");
        if (w == 0) die("cannot write %s: libarchive accepted no data", aout_name(&x->o));
        c += w;
        n -= (size_t)w;
        x->left -= (uint64_t)w;
    }
}

void arc_add_mem(arc_out *x, const char *name, const void *p, size_t n) {
    arc_begin(x, name, n);
    arc_data(x, p, n);
}

void arc_add_file(arc_out *x, const char *name, const char *src) {
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open %s: %s", src, strerror(errno));
    struct stat sb;
    IO_CHECK(fstat(fd, &sb) == 0, src);
    arc_begin(x, name, (uint64_t)sb.st_size);
    size_t cap = 8u << 20;
    char *buf = xmalloc(cap);
    for (;;) {
        ssize_t r = read(fd, buf, cap);
        if (r < 0 && errno == EINTR) continue;
        IO_CHECK(r >= 0, src);
        if (r == 0) break;
        if ((uint64_t)r > x->left) die("%s grew while being archived", src);
        arc_data(x, buf, (size_t)r);
    }
    if (x->left) die("%s shrank while being archived", src);
    free(buf);
    close(fd);
}

void arc_commit(arc_out *x) {
    CHECK(x->left == 0, "archive entry %s left unfinished", x->entry ? x->entry : "?");
    x->entry = NULL;
    arc_check(x, archive_write_close(x->a), "close");
    archive_write_free(x->a);
    x->a = NULL;
    aout_commit(&x->o);
    free(x->folder);
}
