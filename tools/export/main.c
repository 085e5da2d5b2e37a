// tools/export: merged weights (a safetensors stream or file) + the base
// model's other files -> a Hugging Face model folder (sharded safetensors,
// index, config.json with the dtype updated, tokenizer and generation files)
// or one archive of it.  With --adapter: validate an adapter folder and copy
// it, converting its tensors if asked.
#include "adapter.h"
#include "archive_out.h"
#include "atomic_out.h"
#include "byte_progress.h"
#include "check.h"
#include "fsutil.h"
#include "hf_config.h"
#include "hf_model.h"
#include "safetensors.h"
#include "shards.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static void usage(void) {
    printf(
        "Usage: export --model DIR [--weights FILE|-] --out DIR|FILE.tar|FILE.tar.zst|FILE.zip\n"
        "              [--max-shard-size SIZE] [--force]\n"
        "       export --adapter DIR [--model DIR] [--dtype bf16|fp16|fp32] --out DIR|ARCHIVE [--force]\n"
        "\n"
        "Turn merged weights into a Hugging Face model folder that transformers loads:\n"
        "    merge --model base/ --adapter adapter/ | export --model base/ --out merged/\n"
        "The weights (a safetensors stream on standard input, or --weights FILE) are split\n"
        "into model-0000k-of-0000n.safetensors shards as save_pretrained splits them, with\n"
        "model.safetensors.index.json (one shard: a single model.safetensors); config.json\n"
        "is the base model's with its dtype set to the weights' dtype; generation_config.json,\n"
        "tokenizer.json, tokenizer_config.json, vocab.json, merges.txt, special_tokens_map.json,\n"
        "added_tokens.json and chat_template.jinja are copied from the base folder when present.\n"
        "The weights are checked against config.json (names, shapes) before anything is written.\n"
        "\n"
        "Options:\n"
        "  -m, --model DIR          base model folder (config.json, tokenizer files)\n"
        "  -w, --weights FILE|-     merged weights (default -, standard input)\n"
        "  -o, --out PATH           output folder, or an archive when PATH ends in .tar,\n"
        "                           .tar.zst or .zip (entries under one folder named after it)\n"
        "  -s, --max-shard-size S   largest shard, e.g. 5GB (default), 2GiB, 500MB; decimal\n"
        "                           units as in transformers (5GB = 5e9 bytes); a tensor larger\n"
        "                           than S gets a shard of its own\n"
        "  -a, --adapter DIR        adapter mode: check a PEFT LoRA adapter folder (against\n"
        "                           --model's config.json when given) and write a copy\n"
        "  -t, --dtype TYPE         adapter mode: store the LoRA tensors as bf16, fp16 or fp32\n"
        "                           (default: as they are)\n"
        "  -f, --force              replace PATH when it exists\n"
        "  -h, --help               show this help\n"
        "\n"
        "The output is built beside PATH under a temporary name and renamed at the end: an\n"
        "error or an interrupt leaves nothing behind.  Building an archive from standard\n"
        "input needs room for the folder and the archive at once (the shards arrive out of\n"
        "order); from --weights FILE the archive is written directly.\n"
        "Exit status: 0 ok, 1 bad input (one line naming the file), 2 bad usage.\n");
}

static const char *const side_files[] = {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                         "vocab.json", "merges.txt", "special_tokens_map.json",
                                         "added_tokens.json", "chat_template.jinja", "chat_template.json"};
#define N_SIDE (sizeof side_files / sizeof *side_files)

static void write_text(const char *path, const char *text) {
    FILE *f = xfopen(path, "wb");
    xfwrite(text, 1, strlen(text), f, path);
    xfclose(f, path);
}

static void copy_file(const char *src, const char *dst) {
    size_t len;
    char *buf = read_file(src, &len);
    FILE *f = xfopen(dst, "wb");
    xfwrite(buf, 1, len, f, dst);
    xfclose(f, dst);
    free(buf);
}

// Refuse early (before a long write) when the output exists or will not fit.
static void preflight(const char *out, int force, uint64_t need) {
    struct stat sb;
    if (!force && stat(out, &sb) == 0) die("%s already exists (use --force to replace it)", out);
    char *d = xstrdup(out), *dir = dirname(d);
    struct statvfs vf;
    if (statvfs(dir, &vf) == 0) {
        uint64_t have = (uint64_t)vf.f_bavail * (uint64_t)vf.f_frsize;
        if (have < need) {
            char a[32], b[32];
            die("not enough free space in %s for %s: need %s, have %s", dir, out, fmt_bytes((double)need, a, sizeof a),
                fmt_bytes((double)have, b, sizeof b));
        }
    } else {
        die("cannot write into %s: %s", dir, strerror(errno));
    }
    free(d);
}

// ---- input ------------------------------------------------------------------

typedef struct {
    const char *what;   // "<stdin>" or the path
    int fd;
    int seekable;       // a regular file: tensors can be read in any order
    off_t base;         // file offset of the safetensors' first byte
    st_file h;          // header (tensor data pointers are NULL)
} weights_in;

static void weights_open(weights_in *in, const char *path) {
    memset(in, 0, sizeof *in);
    int is_stdin = !strcmp(path, "-");
    in->what = is_stdin ? "<stdin>" : path;
    in->fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (in->fd < 0) die("cannot open %s: %s", path, strerror(errno));
    if (is_stdin && isatty(in->fd))
        die_usage("no weights on standard input: pipe merge's output in or give --weights FILE");
    struct stat sb;
    IO_CHECK(fstat(in->fd, &sb) == 0, in->what);
    uint64_t data_len = UINT64_MAX;
    if (S_ISREG(sb.st_mode)) {
        in->seekable = 1;
        in->base = lseek(in->fd, 0, SEEK_CUR);
        uint64_t left = (uint64_t)sb.st_size - (uint64_t)in->base;
        if (left < 8) die("%s: %" PRIu64 " bytes, too short for a safetensors header", in->what, left);
        data_len = left - 8;
    } else if (S_ISFIFO(sb.st_mode)) {
        fcntl(in->fd, F_SETPIPE_SZ, 1 << 20);
    }
    char err[1024];
    if (st_read_header_fd(in->fd, in->what, data_len, &in->h, err, sizeof err)) die("%s", err);
}

static off_t data_start(const weights_in *in) { return in->base + 8 + (off_t)in->h.header_len; }

#define BUF_BYTES (16u << 20)

// Stream the data section into the shard files of a folder: tensors arrive
// in the stream's order and each is written at its offset in its shard.
static void shards_from_stream(const char *dir, const shard_plan *p, weights_in *in, byte_progress *pr) {
    int *fds = xmalloc(p->n * sizeof *fds);
    char **paths = xmalloc(p->n * sizeof *paths);
    for (size_t s = 0; s < p->n; s++) {
        paths[s] = path_join(dir, p->file[s]);
        fds[s] = open(paths[s], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fds[s] < 0) die("cannot create %s: %s", paths[s], strerror(errno));
        size_t len;
        uint8_t *pre = st_writer_prefix(&p->w[s], &len);
        pwrite_full(fds[s], pre, len, 0, paths[s]);
        free(pre);
    }
    uint8_t *buf = xmalloc(BUF_BYTES);
    size_t *ord = st_data_order(&in->h);
    uint64_t pos = 0;
    for (size_t k = 0; k < in->h.n; k++) {
        const st_tensor *t = &in->h.t[ord[k]];
        size_t s = p->shard_of[ord[k]];
        const st_tensor *dst = &p->w[s].t[p->slot_of[ord[k]]];
        off_t off = (off_t)(8 + p->w[s].header_len + dst->begin);
        uint64_t left = st_nbytes(t);
        while (left) {
            size_t n = left < BUF_BYTES ? (size_t)left : BUF_BYTES;
            ssize_t r = in->seekable ? (pread_full(in->fd, buf, n, data_start(in) + (off_t)pos, in->what), (ssize_t)n)
                                     : read_full(in->fd, buf, n);
            if (r < 0) die("cannot read %s: %s", in->what, strerror(errno));
            if ((size_t)r < n)
                die("%s: input ends inside tensor '%s' (data offset %" PRIu64 "; truncated stream?)", in->what, t->name,
                    pos + (uint64_t)r);
            pwrite_full(fds[s], buf, n, off, paths[s]);
            off += (off_t)n;
            pos += n;
            left -= n;
            byte_progress_add(pr, n);
        }
    }
    if (!in->seekable) {
        char extra;
        ssize_t r = read_full(in->fd, &extra, 1);
        if (r != 0) die("%s: bytes follow the last tensor (data offset %" PRIu64 "): not one safetensors stream", in->what, pos);
    }
    for (size_t s = 0; s < p->n; s++) {
        if (fsync(fds[s]) != 0) die("cannot write %s: %s", paths[s], strerror(errno));
        if (close(fds[s]) != 0) die("cannot write %s: %s", paths[s], strerror(errno));
        free(paths[s]);
    }
    free(ord); free(buf); free(fds); free(paths);
}

// Shards straight into an archive, reading each tensor at its offset.
static void shards_to_archive(arc_out *x, const shard_plan *p, weights_in *in, byte_progress *pr) {
    uint8_t *buf = xmalloc(BUF_BYTES);
    size_t *src = xmalloc((in->h.n ? in->h.n : 1) * sizeof *src);   // per shard slot: input tensor
    for (size_t s = 0; s < p->n; s++) {
        for (size_t i = 0; i < in->h.n; i++) if (p->shard_of[i] == s) src[p->slot_of[i]] = i;
        arc_begin(x, p->file[s], st_writer_file_size(&p->w[s]));
        size_t len;
        uint8_t *pre = st_writer_prefix(&p->w[s], &len);
        arc_data(x, pre, len);
        free(pre);
        for (size_t k = 0; k < p->w[s].n; k++) {
            const st_tensor *t = &in->h.t[src[p->w[s].order[k]]];
            uint64_t left = st_nbytes(t);
            off_t off = data_start(in) + (off_t)t->begin;
            while (left) {
                size_t n = left < BUF_BYTES ? (size_t)left : BUF_BYTES;
                pread_full(in->fd, buf, n, off, in->what);
                arc_data(x, buf, n);
                off += (off_t)n;
                left -= n;
                byte_progress_add(pr, n);
            }
        }
    }
    free(src);
    free(buf);
}

// Every file of a finished folder into the archive (sorted names).
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static void folder_to_archive(arc_out *x, const char *dir, char *const *names, size_t n) {
    char **s = xmalloc((n ? n : 1) * sizeof *s);
    memcpy(s, names, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char *p = path_join(dir, s[i]);
        arc_add_file(x, s[i], p);
        free(p);
    }
    free(s);
}

// ---- modes ------------------------------------------------------------------

// Remove a temporary folder once its files are in the archive.
static void drop_dir(aout_dir *d) {
    rm_rf(d->tmp);
    cleanup_forget(d->cleanup);
    free(d->tmp);
    free(d->path);
}

static void export_model(const char *model_dir, const char *weights, const char *out, uint64_t max_shard, int force) {
    hf_config cfg;
    char *cp = path_join(model_dir, "config.json");
    hf_config_load_or_die(&cfg, cp);
    free(cp);
    weights_in in;
    weights_open(&in, weights);
    char err[1024];
    const st_tensor **tl = xmalloc((in.h.n ? in.h.n : 1) * sizeof *tl);
    for (size_t i = 0; i < in.h.n; i++) tl[i] = &in.h.t[i];
    if (hf_check_tensors(&cfg, tl, in.h.n, NULL, in.what, err, sizeof err)) die("%s", err);
    free(tl);
    const st_tensor *emb = st_find(&in.h, "model.embed_tokens.weight");
    dtype dt = emb->dtype;
    for (size_t i = 0; i < in.h.n; i++)
        if (in.h.t[i].dtype != dt)
            warn("%s: tensor '%s' is %s while the embedding is %s; config.json says %s", in.what, in.h.t[i].name,
                 dtype_name(in.h.t[i].dtype), dtype_name(dt), dtype_torch_name(dt));

    shard_plan plan;
    shard_plan_build(&plan, &in.h, max_shard);
    arc_kind kind = arc_kind_of(out);
    uint64_t bytes = shard_plan_bytes(&plan);
    preflight(out, force, kind == ARC_NONE || in.seekable ? bytes : 2 * bytes);
    byte_progress pr;
    byte_progress_init(&pr, "export", plan.total_size);

    char *config_text = hf_config_dump_with_dtype(&cfg, dt);
    char *index_text = plan.n > 1 ? shard_plan_index_json(&plan) : NULL;
    char *names[N_SIDE + 3];
    size_t nn = 0;
    if (kind != ARC_NONE && in.seekable) {
        // Straight from the file into the archive: no temporary copy.
        arc_out x;
        arc_open(&x, out, kind);
        arc_add_mem(&x, "config.json", config_text, strlen(config_text));
        for (size_t i = 0; i < N_SIDE; i++) {
            char *p = path_join(model_dir, side_files[i]);
            if (is_regular_file(p)) arc_add_file(&x, side_files[i], p);
            free(p);
        }
        if (index_text) arc_add_mem(&x, "model.safetensors.index.json", index_text, strlen(index_text));
        shards_to_archive(&x, &plan, &in, &pr);
        arc_commit(&x);
    } else {
        aout_dir d;
        aout_dir_open(&d, out);
        shards_from_stream(d.tmp, &plan, &in, &pr);
        char *p = path_join(d.tmp, "config.json");
        write_text(p, config_text);
        free(p);
        names[nn++] = "config.json";
        if (index_text) {
            p = path_join(d.tmp, "model.safetensors.index.json");
            write_text(p, index_text);
            free(p);
            names[nn++] = "model.safetensors.index.json";
        }
        for (size_t i = 0; i < N_SIDE; i++) {
            char *src = path_join(model_dir, side_files[i]);
            if (is_regular_file(src)) {
                char *dst = path_join(d.tmp, side_files[i]);
                copy_file(src, dst);
                free(dst);
                names[nn++] = (char *)side_files[i];
            }
            free(src);
        }
        if (kind == ARC_NONE) {
            aout_dir_commit(&d, force);
        } else {
            arc_out x;
            arc_open(&x, out, kind);
            folder_to_archive(&x, d.tmp, names, nn);
            folder_to_archive(&x, d.tmp, plan.file, plan.n);
            arc_commit(&x);
            drop_dir(&d);
        }
    }
    if (pr.tty)
        fprintf(stderr, "export: %s: %zu shard%s, %s dtype\n", out, plan.n, plan.n == 1 ? "" : "s", dtype_torch_name(dt));
    free(config_text);
    free(index_text);
    shard_plan_free(&plan);
    st_close(&in.h);
    if (in.fd != STDIN_FILENO) close(in.fd);
    hf_config_free(&cfg);
}

static void export_adapter(const char *adapter_dir, const char *model_dir, dtype dt, const char *out, int force) {
    adapter a;
    adapter_load_or_die(&a, adapter_dir);
    if (model_dir) {
        hf_config cfg;
        char *cp = path_join(model_dir, "config.json");
        hf_config_load_or_die(&cfg, cp);
        free(cp);
        char err[1024];
        if (adapter_validate(&a, &cfg, err, sizeof err)) die("%s", err);
        hf_config_free(&cfg);
    }
    if (dt == DT_INVALID) dt = dtype_is_float(a.file_dtype) ? a.file_dtype : DT_F32;
    uint64_t bytes = 1 << 20;
    for (size_t i = 0; i < a.n; i++) bytes += (uint64_t)(a.mods[i].in + a.mods[i].out) * a.mods[i].r * 4;
    arc_kind kind = arc_kind_of(out);
    preflight(out, force, 2 * bytes);
    aout_dir d;
    aout_dir_open(&d, out);
    adapter_save(d.tmp, &a.cfg, a.mods, a.n, dt);
    char *names[3] = {"adapter_config.json", "adapter_model.safetensors", "README.md"};
    size_t nn = 2;
    char *readme = path_join(adapter_dir, "README.md");
    if (is_regular_file(readme)) {
        char *dst = path_join(d.tmp, "README.md");
        copy_file(readme, dst);
        free(dst);
        nn = 3;
    }
    free(readme);
    if (kind == ARC_NONE) {
        aout_dir_commit(&d, force);
    } else {
        arc_out x;
        arc_open(&x, out, kind);
        folder_to_archive(&x, d.tmp, names, nn);
        arc_commit(&x);
        drop_dir(&d);
    }
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "export: %s: %zu LoRA layers, %s tensors\n", out, a.n, dtype_name(dt));
    adapter_free(&a);
}

int main(int argc, char **argv) {
    check_init(argv[0]);
    const char *model_dir = NULL, *weights = NULL, *out = NULL, *adapter_dir = NULL;
    unsigned long long max_shard = 5000000000ULL;   // "5GB", transformers 4.x's default
    dtype dt = DT_INVALID;
    int force = 0, shard_set = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"weights", required_argument, 0, 'w'},
        {"out", required_argument, 0, 'o'}, {"max-shard-size", required_argument, 0, 's'},
        {"adapter", required_argument, 0, 'a'}, {"dtype", required_argument, 0, 't'},
        {"force", no_argument, 0, 'f'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:w:o:s:a:t:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'w': weights = optarg; break;
        case 'o': out = optarg; break;
        case 's':
            if (parse_size(optarg, &max_shard) || max_shard == 0)
                die_usage("--max-shard-size: '%s' is not a size such as 5GB, 2GiB or 500MB", optarg);
            shard_set = 1;
            break;
        case 'a': adapter_dir = optarg; break;
        case 't':
            dt = dtype_from_user(optarg);
            if (dt == DT_INVALID) die_usage("--dtype must be bf16, fp16 or fp32 (got '%s')", optarg);
            break;
        case 'f': force = 1; break;
        case 'h': usage(); return 0;
        default: die_usage("unknown option");
        }
    }
    if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);
    if (!out) die_usage("--out PATH is required");
    if (adapter_dir) {
        if (weights || shard_set) die_usage("--weights and --max-shard-size do not apply to --adapter");
        export_adapter(adapter_dir, model_dir, dt, out, force);
        return 0;
    }
    if (!model_dir) die_usage("--model DIR is required (or --adapter DIR)");
    if (dt != DT_INVALID) die_usage("--dtype applies to --adapter; convert model weights with merge --dtype");
    export_model(model_dir, weights ? weights : "-", out, max_shard, force);
    return 0;
}
