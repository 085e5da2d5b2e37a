// lib/records.h: stream JSON records out of files, stdin and archives.
//
// An input is a file path or "-" (stdin).  It may be plain or compressed
// (gzip, zstd, xz, bzip2: anything libarchive's filters read), or an archive
// (.tar, .tar.gz, .tar.zst, .zip, ...) whose regular members named *.json,
// *.jsonl or *.ndjson are read in archive order.  Each file or member holds a
// JSON array of records (loaded whole) or JSON Lines (streamed line by line;
// blank lines are skipped).  A UTF-8 byte-order mark is skipped.
//
// Every problem dies with one line naming the input, the member and the line
// or record: "data.tar.gz: member train/a.json: record 3: invalid UTF-8 ...".
#ifndef LORAPIPE_RECORDS_H
#define LORAPIPE_RECORDS_H

#include <jansson.h>
#include <stddef.h>

typedef struct rec_reader rec_reader;

typedef struct {
    json_t *json;        // the record; the caller owns it (json_decref)
    const char *file;    // input as named by the user ("<stdin>" for "-")
    const char *member;  // archive member, NULL for a plain input
    size_t line;         // JSON Lines: 1-based line; 0 for arrays
    size_t index;        // 1-based record number within the file or member
} rec;

rec_reader *rec_open(const char *path);
// 1 and *out filled, or 0 at the end of the input.  An input with no record
// at all dies with "empty input".
int rec_next(rec_reader *r, rec *out);
void rec_close(rec_reader *r);
// "data.jsonl: line 17" / "a.tar.gz: member x/a.json: record 3"
const char *rec_where(const rec *r, char *buf, size_t n);

#endif
