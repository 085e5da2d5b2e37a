// lib/records.c: see records.h.  libarchive reads everything: plain inputs go
// through its "raw" format (one entry), so stdin, compressed files and
// archives share one streaming path.  Only the tar and zip formats are
// enabled besides raw: libarchive's text formats (mtree) would claim JSON.
#include "records.h"
#include "check.h"
#include "utf8.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { MODE_NONE, MODE_LINES, MODE_ARRAY };

struct rec_reader {
    char *path;                  // display name
    struct archive *a;
    int is_raw;                  // plain or compressed single file
    char *member;
    int mode;
    json_t *arr; size_t arr_i;
    char *buf; size_t buf_n, buf_off, buf_cap; int eof;
    size_t line, index, total;
};

// "input: [member M: ]what[detail]"
static _Noreturn void die_in(rec_reader *r, const char *what, const char *detail) {
    if (r->member) die("%s: member %s: %s%s", r->path, r->member, what, detail ? detail : "");
    die("%s: %s%s", r->path, what, detail ? detail : "");
}

rec_reader *rec_open(const char *path) {
    rec_reader *r = xcalloc(1, sizeof *r);
    int is_stdin = !path || !strcmp(path, "-");
    r->path = xstrdup(is_stdin ? "<stdin>" : path);
    r->a = archive_read_new();
    CHECK(r->a, "archive_read_new failed");
    archive_read_support_filter_all(r->a);
    archive_read_support_format_tar(r->a);
    archive_read_support_format_zip(r->a);
    archive_read_support_format_empty(r->a);
    archive_read_support_format_raw(r->a);
    if (archive_read_open_filename(r->a, is_stdin ? NULL : path, 1 << 16) != ARCHIVE_OK) {
        // Released before dying so that a caller that survives die() (the
        // fuzz targets) does not leak a reader per refused input.
        char msg[1024];
        snprintf(msg, sizeof msg, "%s: cannot read: %s", r->path, archive_error_string(r->a));
        rec_close(r);
        die("%s", msg);
    }
    return r;
}

void rec_close(rec_reader *r) {
    if (!r) return;
    archive_read_free(r->a);
    if (r->arr) json_decref(r->arr);
    free(r->buf); free(r->member); free(r->path);
    free(r);
}

const char *rec_where(const rec *x, char *buf, size_t n) {
    int k = x->member ? snprintf(buf, n, "%s: member %s: ", x->file, x->member) : snprintf(buf, n, "%s: ", x->file);
    if (k < 0 || (size_t)k >= n) return buf;
    if (x->line) snprintf(buf + k, n - (size_t)k, "line %zu", x->line);
    else snprintf(buf + k, n - (size_t)k, "record %zu", x->index);
    return buf;
}

// Append up to 1 MiB more of the current entry to buf; 0 at its end.
static size_t fill(rec_reader *r) {
    if (r->eof) return 0;
    if (r->buf_off > 0 && r->buf_off == r->buf_n) r->buf_off = r->buf_n = 0;
    if (r->buf_off > (1u << 20)) {           // keep the unread tail at the front
        memmove(r->buf, r->buf + r->buf_off, r->buf_n - r->buf_off);
        r->buf_n -= r->buf_off; r->buf_off = 0;
    }
    r->buf = xgrow(r->buf, &r->buf_cap, r->buf_n + (1u << 20) + 1, 1);
    la_ssize_t got = archive_read_data(r->a, r->buf + r->buf_n, r->buf_cap - r->buf_n - 1);
    if (got < 0) die_in(r, "cannot read: ", archive_error_string(r->a));
    if (got == 0) { r->eof = 1; return 0; }
    r->buf_n += (size_t)got;
    return (size_t)got;
}

static int wanted_member(const char *name) {
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (!strncmp(base, "._", 2) || strstr(name, "__MACOSX/")) return 0;   // macOS resource forks
    const char *dot = strrchr(base, '.');
    return dot && (!strcasecmp(dot, ".json") || !strcasecmp(dot, ".jsonl") || !strcasecmp(dot, ".ndjson"));
}

// Record number (1-based) of the array element holding byte off: count the
// commas at depth 1 outside strings.
static size_t array_record_at(const char *s, size_t off) {
    size_t rec = 1; int depth = 0, in_str = 0, esc = 0;
    for (size_t i = 0; i < off; i++) {
        char c = s[i];
        if (in_str) {
            if (esc) esc = 0;
            else if (c == '\\') esc = 1;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        else if (c == '[' || c == '{') depth++;
        else if (c == ']' || c == '}') depth--;
        else if (c == ',' && depth == 1) rec++;
    }
    return rec;
}

static size_t line_at(const char *s, size_t off) {
    size_t l = 1;
    for (size_t i = 0; i < off; i++) l += s[i] == '\n';
    return l;
}

// Start the next entry with JSON in it; 0 when the input is exhausted.
static int next_entry(rec_reader *r) {
    for (;;) {
        struct archive_entry *e;
        int rc = archive_read_next_header(r->a, &e);
        if (rc == ARCHIVE_EOF) return 0;
        if (rc < ARCHIVE_WARN) {
            free(r->member); r->member = NULL;
            die("%s: cannot read archive: %s", r->path, archive_error_string(r->a));
        }
        r->is_raw = archive_format(r->a) == ARCHIVE_FORMAT_RAW;
        free(r->member);
        r->member = NULL;
        if (!r->is_raw) {
            const char *name = archive_entry_pathname(e);
            if (archive_entry_filetype(e) != AE_IFREG || !name) continue;
            if (!wanted_member(name)) {
                warn("%s: skipping member %s (not .json, .jsonl or .ndjson)", r->path, name);
                continue;
            }
            r->member = xstrdup(name);
        }
        r->buf_n = r->buf_off = 0; r->eof = 0;
        r->line = r->index = 0;
        // Sniff the first non-blank byte (after a byte-order mark); count the
        // blank lines skipped so that line numbers stay right.
        size_t skipped_nl = 0;
        for (;;) {
            while (r->buf_off < r->buf_n && strchr(" \t\r\n", r->buf[r->buf_off])) skipped_nl += r->buf[r->buf_off++] == '\n';
            if (r->buf_off + 3 <= r->buf_n && !memcmp(r->buf + r->buf_off, "\xEF\xBB\xBF", 3)) { r->buf_off += 3; continue; }
            if (r->buf_off < r->buf_n && !(r->buf_n - r->buf_off < 3 && (unsigned char)r->buf[r->buf_off] == 0xEF && !r->eof)) break;
            if (!fill(r)) break;
        }
        if (r->buf_off >= r->buf_n) {
            if (r->member) warn("%s: member %s is empty", r->path, r->member);
            continue;
        }
        char c = r->buf[r->buf_off];
        if (c == '[') {
            while (fill(r)) {}
            const char *s = r->buf + r->buf_off;
            size_t n = r->buf_n - r->buf_off;
            size_t bad = utf8_check(s, n);
            if (bad != n) {
                char msg[160];
                snprintf(msg, sizeof msg, "record %zu: invalid UTF-8 at byte %zu (line %zu)",
                         array_record_at(s, bad), bad + r->buf_off, line_at(r->buf, bad + r->buf_off));
                die_in(r, msg, NULL);
            }
            json_error_t je;
            json_t *arr = json_loadb(s, n, JSON_ALLOW_NUL, &je);
            if (!arr) {
                char msg[400];
                snprintf(msg, sizeof msg, "line %zu: not valid JSON: %s", (size_t)je.line + skipped_nl, je.text);
                die_in(r, msg, NULL);
            }
            if (r->arr) json_decref(r->arr);
            r->arr = arr; r->arr_i = 0;
            r->mode = MODE_ARRAY;
            r->buf_n = r->buf_off = 0;
        } else if (c == '{') {
            r->mode = MODE_LINES;
            r->line = skipped_nl;
        } else {
            die_in(r, "not JSON (expected a JSON array of records or JSON Lines)", NULL);
        }
        return 1;
    }
}

int rec_next(rec_reader *r, rec *out) {
    for (;;) {
        if (r->mode == MODE_NONE) {
            if (!next_entry(r)) {
                if (!r->total) die("%s: empty input (no records)", r->path);
                return 0;
            }
        }
        if (r->mode == MODE_ARRAY) {
            if (r->arr_i < json_array_size(r->arr)) {
                *out = (rec){json_incref(json_array_get(r->arr, r->arr_i)), r->path, r->member, 0, ++r->arr_i};
                r->index = r->arr_i;
                r->total++;
                return 1;
            }
            json_decref(r->arr); r->arr = NULL;
            r->mode = MODE_NONE;
            continue;
        }
        // JSON Lines: one record per non-blank line.
        char *nl;
        while (!(nl = memchr(r->buf + r->buf_off, '\n', r->buf_n - r->buf_off)) && fill(r)) {}
        size_t end = nl ? (size_t)(nl - r->buf) : r->buf_n;
        if (!nl && r->buf_off >= r->buf_n) { r->mode = MODE_NONE; continue; }
        char *s = r->buf + r->buf_off;
        size_t n = end - r->buf_off;
        r->buf_off = nl ? end + 1 : end;
        r->line++;
        size_t k = 0;
        while (k < n && strchr(" \t\r", s[k])) k++;
        if (k == n) continue;                       // blank line
        size_t bad = utf8_check(s, n);
        if (bad != n) {
            char msg[120];
            snprintf(msg, sizeof msg, "line %zu: invalid UTF-8 at byte %zu of the line", r->line, bad + 1);
            die_in(r, msg, NULL);
        }
        json_error_t je;
        json_t *j = json_loadb(s, n, JSON_ALLOW_NUL, &je);
        if (!j) {
            char msg[400];
            snprintf(msg, sizeof msg, "line %zu: not valid JSON: %s (column %d)", r->line, je.text, je.column);
            die_in(r, msg, NULL);
        }
        *out = (rec){j, r->path, r->member, r->line, ++r->index};
        r->total++;
        return 1;
    }
}
