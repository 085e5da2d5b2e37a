// fuzz/fuzz_safetensors_header.c: safetensors files (lib/safetensors.c): the
// whole file through st_open (length prefix, header, offsets against the file
// size), the header alone through st_parse_header as merge and export read a
// stream, and any header that parses checked against a tiny Qwen2 config
// (lib/hf_model.c hf_check_tensors).
#include "fuzz_common.h"
#include "fuzz_tiny_config.h"
#include "hf_config.h"
#include "hf_model.h"
#include "safetensors.h"

static hf_config cfg;

static void walk(const st_file *f) {
    size_t *order = st_data_order(f);
    uint64_t at = 0;
    for (size_t i = 0; i < f->n; i++) {
        const st_tensor *t = &f->t[order[i]];
        if (t->begin < at || t->end < t->begin) abort();     // sorted, no overlap
        at = t->end;
        if (st_find(f, t->name) == NULL) abort();
    }
    free(order);
    (void)st_meta(f, "format");
    const st_tensor **list = malloc((f->n ? f->n : 1) * sizeof *list);
    if (!list) abort();
    for (size_t i = 0; i < f->n; i++) list[i] = &f->t[i];
    char err[1024];
    (void)hf_check_tensors(&cfg, list, f->n, NULL, "fuzz.safetensors", err, sizeof err);
    free(list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fz_init();
    if (!cfg.path) {
        char err[512];
        if (hf_config_parse(&cfg, FZ_TINY_CONFIG, sizeof FZ_TINY_CONFIG - 1, "config.json", err, sizeof err)) abort();
    }
    if (setjmp(fz_jmp)) abort();       // these readers report errors; they must never die
    char err[1024];
    st_file f;
    if (st_open(&f, fz_memfile(data, n), err, sizeof err) == 0) {
        walk(&f);
        st_close(&f);
    }
    // The header alone, as from a pipe (data length unknown).
    if (n >= 8) {
        uint64_t hl;
        memcpy(&hl, data, 8);
        if (hl <= n - 8) {
            st_file g;
            memset(&g, 0, sizeof g);
            if (st_parse_header((const char *)data + 8, (size_t)hl, UINT64_MAX, "<stdin>", &g, err, sizeof err) == 0) {
                walk(&g);
                st_close(&g);
            }
        }
    }
    return 0;
}
