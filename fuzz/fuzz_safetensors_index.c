// fuzz/fuzz_safetensors_index.c: model.safetensors.index.json (lib/hf_model.c).
// Each process builds a model folder once (the tiny Qwen2 config, and the
// tiny model's weights under two shard names, so that an index can name the
// right file, the wrong one, or one holding every tensor twice); each input
// becomes the folder's index, opened as merge and train open a model.
#include "fuzz_common.h"
#include "fuzz_tiny_config.h"
#include "hf_model.h"

#include <fcntl.h>

#ifndef FUZZ_ROOT
#error "FUZZ_ROOT (the repository root) must be defined"
#endif
#define TINY_WEIGHTS "/tests/fixtures/tiny-models/qwen2-tiny-tied-fp32/model.safetensors"

static char dir[64];

static void put(const char *name, const void *p, size_t n) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f)) { perror(path); abort(); }
}

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/fuzz-index-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(dir)) { perror("mkdtemp"); abort(); }
    put("config.json", FZ_TINY_CONFIG, sizeof FZ_TINY_CONFIG - 1);
    // The checkout's root: FUZZ_ROOT from the environment (a copy elsewhere),
    // else where it was built.
    const char *root = getenv("FUZZ_ROOT") ? getenv("FUZZ_ROOT") : FUZZ_ROOT;
    char wpath[4096];
    snprintf(wpath, sizeof wpath, "%s%s", root, TINY_WEIGHTS);
    size_t n;
    char *w = read_file(wpath, &n);
    put("model-00001-of-00002.safetensors", w, n);
    put("model-00002-of-00002.safetensors", w, n);
    free(w);
}

// The folder goes when the fuzzer exits (libFuzzer ends with exit()).
static void cleanup_dir(void) {
    char path[128];
    const char *names[] = {"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fz_init();
    if (!dir[0]) { setup(); atexit(cleanup_dir); }
    put("model.safetensors.index.json", data, n);
    if (setjmp(fz_jmp)) abort();       // hf_model_open reports errors; it must never die
    hf_model m;
    char err[1024];
    if (hf_model_open(&m, dir, err, sizeof err) == 0) {
        for (size_t i = 0; i < m.n; i++)
            if (hf_model_file_of(&m, m.by_name[i]) == NULL) abort();
        if (!hf_model_tensor(&m, "lm_head.weight")) abort();
        hf_model_close(&m);
    }
    return 0;
}
