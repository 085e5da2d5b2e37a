// tools/export/archive_out.h: an export written as one archive (libarchive):
// .tar (pax), .tar.zst (zstd-compressed tar) or .zip (stored, zip64 when
// needed).  Every entry lies under one folder named after the archive
// ("merged.tar.zst" -> "merged/config.json"); the archive itself appears
// whole or not at all (lib/atomic_out.h).
#ifndef LORAPIPE_ARCHIVE_OUT_H
#define LORAPIPE_ARCHIVE_OUT_H
#include <stddef.h>
#include <stdint.h>
#include "atomic_out.h"

typedef enum { ARC_NONE, ARC_TAR, ARC_TAR_ZST, ARC_ZIP } arc_kind;

typedef struct {
    struct archive *a;
    aout o;
    char *folder;        // entry prefix
    uint64_t left;       // bytes still due for the open entry
    const char *entry;   // its name, for messages
} arc_out;

// ARC_NONE when path names a folder.
arc_kind arc_kind_of(const char *path);
void arc_open(arc_out *x, const char *path, arc_kind kind);
// An entry of known size, then its bytes in any number of pieces.
void arc_begin(arc_out *x, const char *name, uint64_t size);
void arc_data(arc_out *x, const void *p, size_t n);
void arc_add_mem(arc_out *x, const char *name, const void *p, size_t n);
// Stream a file from disk into an entry.
void arc_add_file(arc_out *x, const char *name, const char *src);
void arc_commit(arc_out *x);

#endif
