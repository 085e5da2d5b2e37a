// tests/unit/test_safetensors.c: the reader's checks (every rule of the
// reference reader, with messages naming the file and tensor), and the
// writer's byte-identity with files written by Python safetensors.
#include "atomic_out.h"
#include "check.h"
#include "safetensors.h"
#include "tap.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/test_safetensors.XXXXXX";

static char *tmp_path(const char *name) {
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

// A file: 8-byte length (n_override if non-zero), header, data_len zero bytes.
static const char *mk(const char *name, const char *header, size_t data_len, uint64_t n_override) {
    const char *p = tmp_path(name);
    FILE *f = fopen(p, "wb");
    uint64_t n = n_override ? n_override : strlen(header);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_len; i++) fputc(0, f);
    fclose(f);
    return p;
}

static void expect_fail(const char *name, const char *header, size_t data_len, uint64_t n, const char *needle) {
    const char *p = mk(name, header, data_len, n);
    st_file f;
    char err[1024] = "";
    int r = st_open(&f, p, err, sizeof err);
    T_OK(r == -1, "%s: refused", name);
    T_OK(strstr(err, p) != NULL && strstr(err, needle) != NULL && !strchr(err, '\n'),
         "%s: one-line message naming the file and '%s': %s", name, needle, err);
    if (r == 0) st_close(&f);
}

static void test_bad_files(void) {
    const char *t = "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char h[512];
    expect_fail("short", "", 0, 3, "runs past the end");   // a length but no header
    {   // fewer than 8 bytes
        const char *p = tmp_path("tiny");
        FILE *f = fopen(p, "wb"); fwrite("abc", 1, 3, f); fclose(f);
        st_file sf; char err[512];
        T_OK(st_open(&sf, p, err, sizeof err) == -1 && strstr(err, "too short"), "3-byte file: %s", err);
    }
    expect_fail("absurd", "{}", 0, 1ULL << 40, "exceeds the limit");
    expect_fail("pastend", "{}", 0, 4096, "runs past the end");
    expect_fail("nobrace", "[1]     ", 0, 0, "does not start with '{'");
    expect_fail("badjson", "{\"t\":     ", 0, 0, "not valid JSON");
    snprintf(h, sizeof h, "{%s,%s}", t, t);
    expect_fail("dup", h, 8, 0, "duplicate");
    expect_fail("dtype", "{\"t\":{\"dtype\":\"Q8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, 0, "unknown dtype");
    expect_fail("overlap",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0, "overlap");
    expect_fail("hole",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}", 24, 0, "hole");
    expect_fail("backwards", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, 0, "'b'");
    expect_fail("size", "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0, "need 12");
    expect_fail("outofrange", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, 0, "truncated");
    expect_fail("trailing", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12, 0, "after the last tensor");
    expect_fail("meta", "{\"__metadata__\":{\"a\":1}}", 0, 0, "not a string");
    expect_fail("overflow", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}", 8, 0,
                "overflows");
    expect_fail("neg", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0, "shape[0]");
    expect_fail("offs", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, 0, "two non-negative");
    expect_fail("f4", "{\"t\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", 1, 0, "whole bytes");
    expect_fail("notobj", "{\"t\":3}", 0, 0, "not an object");
    // Valid corner cases: a scalar, an empty tensor, F4 pairs, padding spaces.
    const char *p = mk("ok", "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
                             "\"s\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,2]},"
                             "\"q\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[2,4]}}    ", 4, 0);
    st_file f;
    char err[512] = "";
    T_OK(st_open(&f, p, err, sizeof err) == 0, "scalar + empty + F4: %s", err);
    if (!err[0]) {
        const st_tensor *s = st_find(&f, "s");
        T_OK(s && s->ndim == 0 && s->numel == 1, "scalar has 1 element");
        T_OK(st_find(&f, "e")->numel == 0, "empty tensor");
        st_close(&f);
    }
}

static int same_bytes(const char *a, const char *b) {
    size_t na, nb;
    char *x = read_file(a, &na), *y = read_file(b, &nb);
    int same = na == nb && !memcmp(x, y, na);
    free(x); free(y);
    return same;
}

// Re-write a file with our writer from its own tensors; must be identical.
static void rewrite_identical(const char *path) {
    st_file f;
    char err[512] = "";
    T_OK(st_open(&f, path, err, sizeof err) == 0, "open %s: %s", path, err);
    if (err[0]) return;
    st_writer w;
    st_writer_init(&w);
    for (size_t i = 0; i < f.n_meta; i++) st_writer_meta(&w, f.meta_key[i], f.meta_val[i]);
    const void **data = calloc(f.n + 1, sizeof *data);
    for (size_t i = 0; i < f.n; i++) {
        st_writer_add(&w, f.t[i].name, f.t[i].dtype, f.t[i].ndim, f.t[i].shape);
        data[i] = f.t[i].data;
    }
    const char *out = tmp_path("rewrite.safetensors");
    st_write_file(out, &w, data);
    T_OK(st_writer_file_size(&w) == f.size, "%s: planned size", path);
    T_OK(same_bytes(path, out), "%s: our writer gives identical bytes", path);
    free(data);
    st_writer_free(&w);
    st_close(&f);
}

static void test_reference_files(void) {
    rewrite_identical("tests/fixtures/safetensors/mixed.safetensors");
    rewrite_identical("tests/fixtures/tiny-models/qwen2-tiny-untied-bf16/model.safetensors");
    rewrite_identical("tests/fixtures/tiny-models/qwen2-tiny-tied-fp32/model.safetensors");
    rewrite_identical("tests/fixtures/tiny-models/lora-qkvo-r8/adapter_model.safetensors");
    rewrite_identical("tests/fixtures/tiny-models/merged-untied-bf16-qkvo/model-00002-of-00003.safetensors");
    st_file f;
    st_open_or_die(&f, "tests/fixtures/safetensors/mixed.safetensors");
    T_OK(st_meta(&f, "format") && !strcmp(st_meta(&f, "format"), "pt"), "metadata");
    const st_tensor *t = st_find(&f, "w.bf16");
    T_OK(t && t->dtype == DT_BF16 && t->ndim == 2 && t->shape[0] == 4, "w.bf16");
    T_OK(st_find(&f, "name with \"quote\" and \\ and \t and \xc3\xa9") != NULL, "escaped name read back");
    T_OK(((uintptr_t)f.data & 7) == 0, "data section 8-byte aligned");
    st_close(&f);
}

static void test_stream_header(void) {
    const char *path = "tests/fixtures/tiny-models/lora-qkvo-r8/adapter_model.safetensors";
    int fds[2];
    T_OK(pipe(fds) == 0, "pipe");
    size_t len;
    char *all = read_file(path, &len);
    // The header is small: it fits in the pipe buffer in one write.
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | (uint8_t)all[i];
    T_OK(write(fds[1], all, 8 + n) == (ssize_t)(8 + n), "write header");
    close(fds[1]);
    st_file f;
    char err[512] = "";
    T_OK(st_read_header_fd(fds[0], "<pipe>", UINT64_MAX, &f, err, sizeof err) == 0, "read header from a pipe: %s", err);
    T_OK(f.n == 16 && f.header_len == n && f.t[0].data == NULL, "16 tensors, no data");
    size_t *ord = st_data_order(&f);
    T_OK(f.t[ord[0]].begin == 0, "data order starts at 0");
    free(ord);
    st_close(&f);
    close(fds[0]);
    // A stream that stops inside the header.
    T_OK(pipe(fds) == 0, "pipe");
    T_OK(write(fds[1], all, 20) == 20, "write");
    close(fds[1]);
    T_OK(st_read_header_fd(fds[0], "<pipe>", UINT64_MAX, &f, err, sizeof err) == -1 && strstr(err, "ends inside the header"),
         "short stream: %s", err);
    close(fds[0]);
    free(all);
}

int main(void) {
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    test_bad_files();
    test_reference_files();
    test_stream_header();
    rm_rf(tmpdir);
    return T_DONE("test_safetensors");
}
