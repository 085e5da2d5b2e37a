// lib/safetensors.h: the safetensors format (docs/FORMATS.md), read through
// mmap with every rule of the reference reader enforced, and written in the
// reference writer's layout (byte-identical files).
#ifndef LORAPIPE_SAFETENSORS_H
#define LORAPIPE_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "dtype.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER 100000000ULL

typedef struct {
    char *name;
    dtype dtype;
    int ndim;
    size_t shape[ST_MAX_DIMS];
    size_t numel;
    uint64_t begin, end;      // byte offsets within the data section
    const void *data;         // into the mapping (NULL for headers parsed without data)
} st_tensor;

typedef struct {
    char *path;
    void *map; size_t size;   // whole file, read-only mapping
    uint64_t header_len;      // N
    const uint8_t *data;      // start of the byte buffer (map + 8 + N)
    st_tensor *t; size_t n;   // tensors in header order
    char **meta_key, **meta_val; size_t n_meta;   // __metadata__
} st_file;

// Open and validate (N bound, JSON, dtypes, shapes x sizes, offsets contiguous
// from 0 without overlap, file size exact). On failure: returns -1 with a
// one-line message "PATH: ..." (naming the tensor or offset) in err.
int st_open(st_file *f, const char *path, char *err, size_t errlen);
// Same, dying with the message.
void st_open_or_die(st_file *f, const char *path);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta(const st_file *f, const char *key);

// Parse a header JSON of len bytes describing a data section of data_len
// bytes (pass UINT64_MAX to skip the total-size check). For streams and fuzzing.
int st_parse_header(const char *json, size_t len, uint64_t data_len, const char *what,
                    st_file *out, char *err, size_t errlen);

// Read "N + header" from a file descriptor (a pipe, stdin or a file at offset
// 0) and parse it; data_len as for st_parse_header (UINT64_MAX when unknown,
// as on a pipe).  The tensors get data == NULL; f->header_len is set and
// f->path = what.  Returns -1 with the message in err.
int st_read_header_fd(int fd, const char *what, uint64_t data_len, st_file *f,
                      char *err, size_t errlen);
// Indices of f's tensors in increasing data offset (the order of the bytes).
size_t *st_data_order(const st_file *f);
// Bytes of a tensor (end - begin).
static inline uint64_t st_nbytes(const st_tensor *t) { return t->end - t->begin; }

// ---- writing --------------------------------------------------------------
// Describe the tensors first (name, dtype, shape); st_plan orders them as the
// reference writer does (dtype descending, then name ascending), assigns
// offsets and builds the padded header; then write each tensor's bytes in
// plan order. Works on a pipe: nothing is seeked.
typedef struct {
    st_tensor *t; size_t n, cap;
    char **meta_key, **meta_val; size_t n_meta;
    char *header; size_t header_len;   // padded JSON (N bytes)
    size_t *order;                      // write order (indices into t)
    uint64_t data_len;
} st_writer;
void st_writer_init(st_writer *w);
void st_writer_meta(st_writer *w, const char *key, const char *val);
void st_writer_add(st_writer *w, const char *name, dtype dt, int ndim, const size_t *shape);
void st_writer_plan(st_writer *w);
// Total file size once planned: 8 + N + data.
uint64_t st_writer_file_size(const st_writer *w);
// The 8-byte length followed by the padded header (8 + N bytes, malloc'ed).
uint8_t *st_writer_prefix(const st_writer *w, size_t *len);
void st_writer_free(st_writer *w);

// Write a whole small file atomically (lib/atomic_out.h): data[i] holds the
// bytes of the i-th tensor added (any order of adding; written in plan order).
void st_write_file(const char *path, st_writer *w, const void *const *data);

#endif
