// tools/merge: base model + LoRA adapter -> merged weights as one safetensors
// stream (stdout or -o FILE), tensor by tensor, so memory stays far below the
// model size.  Every tensor that no adapter touches passes through bit for
// bit (or is converted once with --dtype); an adapted weight becomes
// W + s * (B @ A) computed in fp32 and rounded once.
#include "adapter.h"
#include "atomic_out.h"
#include "byte_progress.h"
#include "check.h"
#include "hf_model.h"
#include "lora_delta.h"
#include "safetensors.h"

#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void usage(void) {
    printf(
        "Usage: merge --model DIR --adapter DIR [--dtype bf16|fp16|fp32] [-o FILE]\n"
        "\n"
        "Merge a PEFT LoRA adapter into a Hugging Face Qwen2 model and write the merged\n"
        "weights as one safetensors stream, for `export` to turn into a model folder:\n"
        "    merge --model base/ --adapter out/adapter | export --model base/ --out merged/\n"
        "\n"
        "Every adapted linear weight becomes W + s * (B @ A), with s = lora_alpha / r\n"
        "(lora_alpha / sqrt(r) with use_rslora; rank_pattern and alpha_pattern honoured),\n"
        "computed in fp32 and rounded once to the output dtype: the same bits as PEFT's\n"
        "merge_and_unload().  Every other tensor is copied unchanged.  The adapter is\n"
        "checked against the model first (layer names, layer count, shapes).\n"
        "\n"
        "Options:\n"
        "  -m, --model DIR      base model folder (config.json and model.safetensors or a\n"
        "                       sharded model.safetensors.index.json)\n"
        "  -a, --adapter DIR    adapter folder (adapter_config.json, adapter_model.safetensors)\n"
        "  -t, --dtype TYPE     output dtype of every tensor: bf16, fp16 or fp32\n"
        "                       (default: each tensor keeps the base model's dtype)\n"
        "  -o, --output FILE    write FILE (atomically) instead of standard output\n"
        "  -h, --help           show this help\n"
        "\n"
        "Standard output must be a pipe or a file (not a terminal).  Peak memory is about\n"
        "100 MiB plus the adapter in fp32 (134 MiB for a 7B model with r=8 on q,k,v,o);\n"
        "progress goes to standard error when it is a terminal.\n"
        "Exit status: 0 ok, 1 bad input (one line naming the file), 2 bad usage.\n");
}

// Drop the pages of [p, p + n) from our resident set (the page cache keeps
// them): the mapping of a 15 GB model would otherwise count fully as RSS.
static void release(const void *p, size_t n) {
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1), b = ((uintptr_t)p + n) & ~(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

static void prefetch(const void *p, size_t n) {
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(pg - 1);
    if (n) madvise((void *)a, (uintptr_t)p + n - a, MADV_WILLNEED);
}

#define CHUNK (64u << 20)

// Copy or convert a tensor that no adapter touches.
static void pass_through(aout *o, const st_tensor *t, dtype ot, byte_progress *pr, void *buf) {
    size_t isz = (size_t)dtype_bits(t->dtype) / 8, osz = (size_t)dtype_bits(ot) / 8;
    size_t per = CHUNK / (isz > osz ? isz : osz);   // elements per chunk
    const uint8_t *src = t->data;
    for (size_t i = 0; i < t->numel; i += per) {
        size_t n = t->numel - i < per ? t->numel - i : per;
        if (i + n < t->numel) prefetch(src + (i + n) * isz, (t->numel - i - n < per ? t->numel - i - n : per) * isz);
        if (ot == t->dtype) {
            aout_write(o, src + i * isz, n * isz);
        } else {
            float *f = buf;
            size_t sub = CHUNK / 4 / 2;   // the fp32 staging half of buf
            for (size_t j = 0; j < n; j += sub) {
                size_t m = n - j < sub ? n - j : sub;
                to_f32(f, src + (i + j) * isz, t->dtype, m);
                from_f32((uint8_t *)buf + CHUNK / 2, ot, f, m);
                aout_write(o, (uint8_t *)buf + CHUNK / 2, m * osz);
            }
        }
        release(src + i * isz, n * isz);
        byte_progress_add(pr, n * isz);
    }
}

static void merge_tensor(aout *o, const st_tensor *t, dtype ot, const adapter_lora *l, float s, byte_progress *pr, void *buf) {
    size_t out = t->shape[0], in = t->shape[1];
    size_t isz = (size_t)dtype_bits(t->dtype) / 8, osz = (size_t)dtype_bits(ot) / 8;
    size_t rows = CHUNK / (in * osz);   // rows per block; the scratch buffer holds CHUNK bytes
    CHECK(rows > 0, "tensor %s: rows of %zu elements exceed the merge buffer", t->name, in);
    const uint8_t *src = t->data;
    for (size_t r0 = 0; r0 < out; r0 += rows) {
        size_t n = out - r0 < rows ? out - r0 : rows;
        if (r0 + n < out) prefetch(src + (r0 + n) * in * isz, (out - r0 - n < rows ? out - r0 - n : rows) * in * isz);
        lora_delta_rows(buf, ot, src + r0 * in * isz, t->dtype, r0, n, in, l->A, l->B, l->r, s);
        aout_write(o, buf, n * in * osz);
        release(src + r0 * in * isz, n * in * isz);
        byte_progress_add(pr, n * in * isz);
    }
}

int main(int argc, char **argv) {
    check_init(argv[0]);
    const char *model_dir = NULL, *adapter_dir = NULL, *out_path = NULL;
    dtype force = DT_INVALID;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"adapter", required_argument, 0, 'a'},
        {"dtype", required_argument, 0, 't'}, {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:a:t:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'a': adapter_dir = optarg; break;
        case 'o': out_path = optarg; break;
        case 't':
            force = dtype_from_user(optarg);
            if (force == DT_INVALID) die_usage("--dtype must be bf16, fp16 or fp32 (got '%s')", optarg);
            break;
        case 'h': usage(); return 0;
        default: die_usage("unknown option");
        }
    }
    if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);
    if (!model_dir) die_usage("--model DIR is required");
    if (!adapter_dir) die_usage("--adapter DIR is required");
    int to_stdout = !out_path || !strcmp(out_path, "-");
    if (to_stdout && isatty(STDOUT_FILENO))
        die_usage("refusing to write binary safetensors to a terminal; use -o FILE or a pipe");

    // Everything is checked before the first output byte.
    hf_model m;
    hf_model_open_or_die(&m, model_dir);
    adapter a;
    adapter_load_or_die(&a, adapter_dir);
    char err[1024];
    if (adapter_validate(&a, &m.cfg, err, sizeof err)) die("%s", err);

    st_writer w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    for (size_t i = 0; i < m.n; i++) {
        const st_tensor *t = m.by_name[i];
        st_writer_add(&w, t->name, force == DT_INVALID ? t->dtype : force, t->ndim, t->shape);
    }
    st_writer_plan(&w);

    if (to_stdout) fcntl(STDOUT_FILENO, F_SETPIPE_SZ, 1 << 20);   // fewer wake-ups; harmless on a file
    aout o;
    aout_open(&o, out_path);
    size_t plen;
    uint8_t *prefix = st_writer_prefix(&w, &plen);
    aout_write(&o, prefix, plen);
    free(prefix);

    uint64_t total = 0;
    for (size_t i = 0; i < m.n; i++) total += st_nbytes(m.by_name[i]);
    byte_progress pr;
    byte_progress_init(&pr, "merge", total);
    void *buf = xmalloc(CHUNK + 4096);
    size_t merged = 0;
    for (size_t k = 0; k < w.n; k++) {
        const st_tensor *wt = &w.t[w.order[k]];
        const st_tensor *t = hf_model_tensor(&m, wt->name);
        // Ask for this tensor's first chunk and the next tensor's: most
        // tensors (32 MB q/k/v/o of a 7B model) fit in one chunk, and would
        // otherwise be read by page faults at the device's read-ahead size.
        prefetch(t->data, st_nbytes(t) < CHUNK ? st_nbytes(t) : CHUNK);
        if (k + 1 < w.n) {
            const st_tensor *nx = hf_model_tensor(&m, w.t[w.order[k + 1]].name);
            prefetch(nx->data, st_nbytes(nx) < CHUNK ? st_nbytes(nx) : CHUNK);
        }
        size_t nl = strlen(t->name);
        const adapter_lora *l = NULL;
        if (nl > 7 && !strcmp(t->name + nl - 7, ".weight")) {
            char mod[128];
            snprintf(mod, sizeof mod, "%.*s", (int)(nl - 7), t->name);
            l = adapter_find(&a, mod);
        }
        if (l) {
            merge_tensor(&o, t, wt->dtype, l, (float)adapter_scaling(&a.cfg, l->module), &pr, buf);
            merged++;
        } else {
            pass_through(&o, t, wt->dtype, &pr, buf);
        }
    }
    CHECK(merged == a.n, "merged %zu of %zu adapted layers", merged, a.n);   // adapter_validate guarantees it
    aout_commit(&o);
    if (pr.tty) fprintf(stderr, "merge: %zu layers merged, %zu tensors written\n", merged, w.n);
    free(buf);
    st_writer_free(&w);
    adapter_free(&a);
    hf_model_close(&m);
    return 0;
}
