// tests/unit/test_hf_model.c: model folders (single file, sharded, tied),
// tensor lookup, fp32 conversion, and refusals of folders that do not match
// their config.
#include "atomic_out.h"
#include "check.h"
#include "hf_model.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FIX "tests/fixtures/tiny-models/"
static char tmpdir[] = "/tmp/test_hf_model.XXXXXX";

static void copy(const char *src, const char *dst) {
    size_t n;
    char *b = read_file(src, &n);
    FILE *f = xfopen(dst, "wb");
    xfwrite(b, 1, n, f, dst);
    xfclose(f, dst);
    free(b);
}

// A copy of the untied bf16 model with one change: drop a tensor, give one
// a wrong shape, or add a tensor.
static const char *variant(const char *name, const char *drop, const char *reshape, const char *extra) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    mkdir_p(dir);
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    copy(FIX "qwen2-tiny-untied-bf16/config.json", p);
    st_file f;
    st_open_or_die(&f, FIX "qwen2-tiny-untied-bf16/model.safetensors");
    st_writer w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    const void *data[64];
    size_t k = 0;
    static uint8_t zeros[1 << 16];
    for (size_t i = 0; i < f.n; i++) {
        if (drop && !strcmp(f.t[i].name, drop)) continue;
        size_t shape[2] = {f.t[i].shape[0], f.t[i].ndim > 1 ? f.t[i].shape[1] : 0};
        if (reshape && !strcmp(f.t[i].name, reshape)) shape[0] /= 2;
        st_writer_add(&w, f.t[i].name, f.t[i].dtype, f.t[i].ndim, shape);
        data[k++] = f.t[i].data;
    }
    if (extra) {
        size_t shape[1] = {64};
        st_writer_add(&w, extra, DT_BF16, 1, shape);
        data[k++] = zeros;
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    st_write_file(p, &w, data);
    st_writer_free(&w);
    st_close(&f);
    return dir;
}

static void expect_refused(const char *dir, const char *needle) {
    hf_model m;
    char err[1024] = "";
    int r = hf_model_open(&m, dir, err, sizeof err);
    T_OK(r == -1 && strstr(err, needle) && !strchr(err, '\n'), "%s refused naming '%s': %s", dir, needle, err);
    if (!r) hf_model_close(&m);
}

static void write_text(const char *path, const char *text) {
    FILE *f = xfopen(path, "wb");
    xfwrite(text, 1, strlen(text), f, path);
    xfclose(f, path);
}

int main(void) {
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    hf_model m;
    char err[1024] = "";
    T_OK(hf_model_open(&m, FIX "qwen2-tiny-untied-bf16", err, sizeof err) == 0, "untied bf16: %s", err);
    if (!err[0]) {
        T_OK(m.n == 2 + 2 * 12 + 1 && m.n_shards == 1, "27 tensors in one file");
        const st_tensor *q = hf_model_tensor(&m, "model.layers.1.self_attn.k_proj.weight");
        T_OK(q && q->shape[0] == 32 && q->shape[1] == 64 && q->dtype == DT_BF16, "k_proj [32, 64] BF16");
        T_OK(hf_model_tensor(&m, "lm_head.weight") != hf_model_tensor(&m, "model.embed_tokens.weight"), "untied head");
        T_OK(hf_model_tensor(&m, "nope") == NULL, "absent name");
        float *x = hf_tensor_f32(q);
        uint16_t h0;
        memcpy(&h0, q->data, 2);
        T_OK(x[0] == bf16_to_f32(h0) && x[0] != 0, "fp32 conversion");
        free(x);
        T_OK(hf_model_file_of(&m, q) == &m.shards[0], "file of a tensor");
        hf_model_close(&m);
    }
    T_OK(hf_model_open(&m, FIX "qwen2-tiny-tied-fp32", err, sizeof err) == 0, "tied fp32: %s", err);
    if (!err[0]) {
        T_OK(m.n == 26 && m.cfg.tie_word_embeddings, "tied: no lm_head stored");
        T_OK(hf_model_tensor(&m, "lm_head.weight") == hf_model_tensor(&m, "model.embed_tokens.weight"),
             "lm_head resolves to embed_tokens");
        hf_model_close(&m);
    }
    T_OK(hf_model_open(&m, FIX "merged-untied-bf16-qkvo", err, sizeof err) == 0, "sharded: %s", err);
    if (!err[0]) {
        T_OK(m.n_shards == 3 && m.n == 27, "3 shards, 27 tensors");
        T_OK(hf_model_tensor(&m, "model.norm.weight") != NULL, "lookup across shards");
        hf_model_close(&m);
    }
    hf_tensor_spec *spec;
    hf_config_load_or_die(&m.cfg, FIX "qwen2-tiny-untied-bf16/config.json");
    size_t ns = hf_expected_tensors(&m.cfg, &spec);
    T_OK(ns == 27 && !strcmp(spec[0].name, "model.embed_tokens.weight") &&
         !strcmp(spec[1].name, "model.layers.0.self_attn.q_proj.weight") && !strcmp(spec[26].name, "lm_head.weight"),
         "module order");
    free(spec);
    hf_config_free(&m.cfg);

    expect_refused(variant("drop", "model.layers.1.mlp.up_proj.weight", NULL, NULL),
                   "missing tensor 'model.layers.1.mlp.up_proj.weight'");
    expect_refused(variant("nohead", "lm_head.weight", NULL, NULL), "tie_word_embeddings is false");
    expect_refused(variant("shape", NULL, "model.layers.0.self_attn.o_proj.weight", NULL), "has shape [32, 64] but");
    expect_refused(variant("extra", NULL, NULL, "model.layers.0.self_attn.rotary.weight"), "unexpected tensor");
    expect_refused(variant("layer", NULL, NULL, "model.layers.7.input_layernorm.weight"), "layer 7 is out of range");
    char p[600], d[512];
    snprintf(d, sizeof d, "%s/empty", tmpdir);
    mkdir_p(d);
    expect_refused(d, "config.json");
    snprintf(p, sizeof p, "%s/config.json", d);
    copy(FIX "qwen2-tiny-untied-bf16/config.json", p);
    expect_refused(d, "no model.safetensors or model.safetensors.index.json");
    expect_refused("/nonexistent/model", "not a model folder");
    // Sharded folders whose index lies.
    const char *idx_cases[][2] = {
        {"{\"weight_map\":{\"model.norm.weight\":\"../x.safetensors\"}}", "not a file name in the folder"},
        {"{\"weight_map\":{\"model.norm.weight\":\"gone.safetensors\"}}", "gone.safetensors: cannot open"},
        {"{\"weight_map\":{\"model.norm.weight\":\"model-00001-of-00001.safetensors\"}}", "is not listed for this file"},
        {"{\"metadata\":{}}", "weight_map"},
    };
    for (size_t i = 0; i < sizeof idx_cases / sizeof *idx_cases; i++) {
        snprintf(d, sizeof d, "%s/idx%zu", tmpdir, i);
        mkdir_p(d);
        snprintf(p, sizeof p, "%s/config.json", d);
        copy(FIX "qwen2-tiny-untied-bf16/config.json", p);
        snprintf(p, sizeof p, "%s/model-00001-of-00001.safetensors", d);
        copy(FIX "qwen2-tiny-untied-bf16/model.safetensors", p);
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
        write_text(p, idx_cases[i][0]);
        expect_refused(d, idx_cases[i][1]);
    }
    rm_rf(tmpdir);
    return T_DONE("test_hf_model");
}
