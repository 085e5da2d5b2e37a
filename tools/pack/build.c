// tools/pack/build.c: token JSONL -> .pack, in two passes over memory-light state.
//
// Pass 1 streams the input: each line is parsed and checked, its tokens go
// straight into the output file (after a header-sized hole), and its sample
// record and label runs into unlinked spool files.  Only the per-sample length
// and target count stay in memory (8 bytes a sample).  Pass 2 builds each
// epoch's order and micro-batches from those arrays, spooling the batch index;
// then the spools are appended as sections and the header is written last.
#include "pack_tool.h"
#include "atomic_out.h"
#include "check.h"
#include "mt19937.h"
#include "pack_format.h"
#include "pack_order.h"
#include "token_record.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

// ---- spools: anonymous temporary files ----------------------------------
typedef struct {
    FILE *f;
    uint64_t bytes;
    const char *what;
} spool;

static FILE *anon_tmp(const char *what) {
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    size_t n = strlen(dir) + 32;
    char *path = xmalloc(n);
    snprintf(path, n, "%s/lorapipe-pack.XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) die("cannot create a temporary file in %s (for %s): %s", dir, what, strerror(errno));
    unlink(path);   // nothing to clean up on any exit
    free(path);
    FILE *f = fdopen(fd, "w+b");
    if (!f) die("cannot open a temporary file: %s", strerror(errno));
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    return f;
}

static void spool_open(spool *s, const char *what) { s->f = anon_tmp(what); s->bytes = 0; s->what = what; }
static void spool_write(spool *s, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, s->f) != n) die("cannot write temporary %s: %s", s->what, strerror(errno));
    s->bytes += n;
}
static void spool_close(spool *s) { if (s->f) fclose(s->f); s->f = NULL; }

// ---- the output file ----------------------------------------------------
typedef struct {
    aout a;              // the target (a temporary beside it until committed)
    FILE *f;             // where we write: a.f, or an anonymous file for stdout
    int to_stdout;
    uint64_t pos;
    const char *name;
} outfile;

static void out_write(outfile *o, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, o->f) != n) die("cannot write %s: %s", o->name, strerror(errno));
    o->pos += n;
}
static void out_align(outfile *o) {
    static const uint8_t zero[PACK_SECTION_ALIGN];
    size_t pad = (size_t)((PACK_SECTION_ALIGN - o->pos % PACK_SECTION_ALIGN) % PACK_SECTION_ALIGN);
    out_write(o, zero, pad);
}
static void copy_stream(FILE *from, const char *from_name, FILE *to, const char *to_name, uint64_t bytes) {
    static char buf[1 << 20];
    if (fflush(from) != 0 || fseeko(from, 0, SEEK_SET) != 0)
        die("cannot read back %s: %s", from_name, strerror(errno));
    while (bytes) {
        size_t want = bytes < sizeof buf ? (size_t)bytes : sizeof buf;
        if (fread(buf, 1, want, from) != want) die("cannot read back %s: %s", from_name, io_errstr());
        if (fwrite(buf, 1, want, to) != want) die("cannot write %s: %s", to_name, strerror(errno));
        bytes -= want;
    }
}
// Append a spool as the next section; returns its reference.
static pack_section_ref out_section_from(outfile *o, spool *s) {
    out_align(o);
    pack_section_ref r = {o->pos, s->bytes};
    copy_stream(s->f, s->what, o->f, o->name, s->bytes);
    o->pos += s->bytes;
    spool_close(s);
    return r;
}

// ---- pass 1 -------------------------------------------------------------
typedef struct {
    const build_opts *o;
    uint32_t cap;            // longest sample allowed (0 = no limit)
    outfile out;
    spool samples, spans, labels;
    uint32_t *len;           // (n_samples) in memory
    uint32_t *tgt;           // (n_samples)
    size_t len_cap;
    pack_header h;
    pack_span *span_buf;
    size_t span_cap;
} builder;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void add_record(builder *b, token_record *r, const char *name, uint64_t line_no) {
    pack_header *h = &b->h;
    uint64_t record = h->n_records++;
    size_t n = r->n;
    uint32_t flags = 0;
    if (b->cap && n > b->cap) {
        if (!b->o->truncate)
            die("%s: line %llu: %zu tokens do not fit %s of %u (cut them with --truncate, or raise the limit)", name,
                (unsigned long long)line_no, n, b->o->mode == PACK_MODE_PACKED ? "a row" : "the micro-batch budget",
                b->cap);
        n = b->cap;
        flags |= PACK_SAMPLE_TRUNCATED;
    }
    // Targets: labels[1:] != -100 (the causal shift drops position 0).  Label
    // form: runs where labels[i] == input_ids[i], unless some label is neither.
    uint32_t targets = 0, n_spans = 0;
    int explicit_labels = 0;
    uint32_t max_id = h->max_token_id;
    for (size_t i = 0; i < n; i++) {
        int32_t l = r->labels[i];
        if (r->ids[i] > max_id) max_id = r->ids[i];
        if (l == -100) continue;
        if (i > 0) targets++;
        if ((uint32_t)l > max_id) max_id = (uint32_t)l;
        if ((uint32_t)l != r->ids[i]) explicit_labels = 1;
    }
    if (targets == 0 && !b->o->keep_empty) { h->n_dropped++; return; }
    if (!explicit_labels) {
        for (size_t i = 0; i < n;) {
            if (r->labels[i] == -100) { i++; continue; }
            size_t j = i;
            while (j < n && r->labels[j] != -100) j++;
            b->span_buf = xgrow(b->span_buf, &b->span_cap, n_spans + 1, sizeof *b->span_buf);
            b->span_buf[n_spans++] = (pack_span){(uint32_t)i, (uint32_t)j};
            i = j;
        }
    }
    if (h->n_samples >= UINT32_MAX - 1)   // sample indices are uint32 in the index
        die("%s: line %llu: more than %u samples; split the data into several packs", name,
            (unsigned long long)line_no, UINT32_MAX - 2);
    pack_sample s = {
        .tok_first = h->n_tokens,
        .label_first = explicit_labels ? h->n_label_words : h->n_spans,
        .record = record,
        .len = (uint32_t)n,
        .n_targets = targets,
        .n_spans = explicit_labels ? 0 : n_spans,
        .flags = flags | (explicit_labels ? PACK_SAMPLE_EXPLICIT : 0),
    };
    spool_write(&b->samples, &s, sizeof s);
    if (explicit_labels) {
        spool_write(&b->labels, r->labels, n * sizeof *r->labels);
        h->n_label_words += n;
    } else {
        spool_write(&b->spans, b->span_buf, n_spans * sizeof *b->span_buf);
        h->n_spans += n_spans;
    }
    out_write(&b->out, r->ids, n * sizeof *r->ids);
    if (flags & PACK_SAMPLE_TRUNCATED) h->n_truncated++;
    h->max_token_id = max_id;
    if (n > h->max_sample_len) h->max_sample_len = (uint32_t)n;
    size_t k = (size_t)h->n_samples++;
    if (k >= b->len_cap) {
        size_t c = b->len_cap;
        b->len = xgrow(b->len, &c, k + 1, sizeof *b->len);
        b->tgt = xrealloc(b->tgt, c * sizeof *b->tgt);
        b->len_cap = c;
    }
    b->len[k] = (uint32_t)n;
    b->tgt[k] = targets;
    h->n_tokens += n;
    h->n_targets += targets;
}

static void read_input(builder *b, const char *path) {
    int is_stdin = !strcmp(path, "-");
    const char *name = is_stdin ? "<stdin>" : path;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    token_record r = {0};
    char *line = NULL, err[512];
    size_t line_cap = 0;
    ssize_t got;
    uint64_t line_no = 0;
    int progress = isatty(STDERR_FILENO);
    double t0 = now_s(), last = t0;
    while ((got = getline(&line, &line_cap, f)) > 0) {
        line_no++;
        size_t n = (size_t)got;
        if (line[n - 1] == '\n') n--;
        int rc = token_record_parse(&r, line, n, err, sizeof err);
        if (rc == TOKREC_ERROR) die("%s: line %llu: %s", name, (unsigned long long)line_no, err);
        if (rc == TOKREC_OK) add_record(b, &r, name, line_no);
        if (progress && (line_no & 0x3FFF) == 0) {
            double t = now_s();
            if (t - last >= 1.0) {
                last = t;
                fprintf(stderr, "\rpack: %s: %llu lines, %.1f M tokens, %.0f s", name, (unsigned long long)line_no,
                        b->h.n_tokens / 1e6, t - t0);
            }
        }
    }
    if (ferror(f)) die("cannot read %s: %s", name, strerror(errno));
    if (progress && last > t0) fprintf(stderr, "\r\033[K");
    free(line);
    token_record_free(&r);
    if (!is_stdin) fclose(f);
}

// ---- pass 2: the batch index --------------------------------------------
typedef struct {
    spool batches, rows, segments;
    uint64_t *epoch_first;   // (epochs + 1)
    uint64_t n_batches, n_rows, n_segments;
} index_out;

// Close a micro-batch of rows [r0, r1) of the index built so far.
static void emit_batch(index_out *x, uint32_t epoch, uint64_t r0, uint32_t n_rows, uint32_t row_len,
                       uint64_t tokens, uint64_t targets) {
    if (tokens > UINT32_MAX) die("a micro-batch of %llu tokens is too large; lower the batch size",
                                 (unsigned long long)tokens);
    pack_batch m = {.row_first = r0, .n_rows = n_rows, .row_len = row_len, .epoch = epoch,
                    .n_tokens = (uint32_t)tokens, .n_targets = (uint32_t)targets};
    spool_write(&x->batches, &m, sizeof m);
    x->n_batches++;
}
static void emit_row(index_out *x, const uint32_t *samples, size_t n) {
    spool_write(&x->rows, &x->n_segments, sizeof x->n_segments);
    spool_write(&x->segments, samples, n * sizeof *samples);
    x->n_segments += n;
    x->n_rows++;
}

// Pad mode: one sample per row, consecutive samples of the order per micro-batch.
static void index_pad(const builder *b, index_out *x, uint32_t e, const uint32_t *order, size_t n) {
    const build_opts *o = b->o;
    uint32_t pm = o->pad_multiple;
    for (size_t i = 0; i < n;) {
        uint64_t r0 = x->n_rows, tokens = 0, targets = 0;
        uint32_t longest = 0, rows = 0;
        while (i < n) {
            uint32_t s = order[i], l = b->len[s];
            if (o->batch_size) {
                if (rows == o->batch_size) break;
            } else {
                uint32_t want = pack_padded_len(l > longest ? l : longest, pm);
                if ((uint64_t)(rows + 1) * want > o->batch_tokens) break;
            }
            if (l > longest) longest = l;
            tokens += l;
            targets += b->tgt[s];
            emit_row(x, &order[i], 1);
            rows++;
            i++;
        }
        CHECK(rows > 0, "sample %u does not fit the micro-batch budget", order[i]);
        emit_batch(x, e, r0, rows, pack_padded_len(longest, pm), tokens, targets);
    }
}

// Packed mode: bin-pack the epoch's order into rows, then `per` rows per
// micro-batch.  g: the epoch's generator when the order is random, else NULL.
static void index_packed(const builder *b, index_out *x, uint32_t e, const uint32_t *order, size_t n,
                         mt19937 *g) {
    const build_opts *o = b->o;
    uint64_t *row_first = xmalloc((n + 1) * sizeof *row_first);
    uint32_t *segs = xmalloc(n * sizeof *segs);
    size_t n_rows = o->packing == PACK_PACKING_BEST_FIT
        ? pack_bins_best_fit(order, n, b->len, o->row_tokens, row_first, segs)
        : pack_bins_next_fit(order, n, b->len, o->row_tokens, row_first, segs);
    // Best fit emits rows longest-first; with a random order, shuffle them
    // (randperm from the epoch's generator, right after the sample order).
    uint32_t *row_order = xmalloc((n_rows ? n_rows : 1) * sizeof *row_order);
    if (o->packing == PACK_PACKING_BEST_FIT && g) mt_randperm(g, row_order, n_rows);
    else pack_order_sequential(row_order, n_rows);
    uint32_t per = o->batch_size ? o->batch_size : (uint32_t)(o->batch_tokens / o->row_tokens);
    for (size_t i = 0; i < n_rows;) {
        uint64_t r0 = x->n_rows, tokens = 0, targets = 0;
        uint32_t rows = 0;
        for (; rows < per && i < n_rows; rows++, i++) {
            uint32_t r = row_order[i];
            size_t k0 = (size_t)row_first[r], k1 = (size_t)row_first[r + 1];
            for (size_t k = k0; k < k1; k++) { tokens += b->len[segs[k]]; targets += b->tgt[segs[k]]; }
            emit_row(x, segs + k0, k1 - k0);
        }
        emit_batch(x, e, r0, rows, o->row_tokens, tokens, targets);
    }
    free(row_first); free(segs); free(row_order);
}

static void build_index(builder *b, index_out *x) {
    const build_opts *o = b->o;
    size_t n = (size_t)b->h.n_samples;
    uint32_t *order = xmalloc(n * sizeof *order);
    x->epoch_first = xmalloc(((size_t)o->epochs + 1) * sizeof *x->epoch_first);
    spool_open(&x->batches, "batch table");
    spool_open(&x->rows, "row table");
    spool_open(&x->segments, "segment table");
    // group_by_length draws from the Trainer's global generator: seeded once, carried over epochs.
    mt19937 global;
    mt_seed(&global, o->seed);
    size_t bs_eff = (size_t)b->h.group_size * o->accum;
    for (uint32_t e = 0; e < o->epochs; e++) {
        x->epoch_first[e] = x->n_batches;
        mt19937 epoch_gen;   // accelerate's sampler: a private generator seeded seed + epoch
        switch (o->order) {
        case PACK_ORDER_SEQUENTIAL: pack_order_sequential(order, n); break;
        case PACK_ORDER_RANDOM: pack_order_random(&epoch_gen, o->seed, e, order, n); break;
        default: pack_order_group_by_length(&global, b->len, n, bs_eff, order); break;
        }
        if (o->mode == PACK_MODE_PAD) index_pad(b, x, e, order, n);
        else index_packed(b, x, e, order, n, o->order == PACK_ORDER_RANDOM ? &epoch_gen : NULL);
    }
    x->epoch_first[o->epochs] = x->n_batches;
    spool_write(&x->rows, &x->n_segments, sizeof x->n_segments);   // the CSR's closing entry
    free(order);
}

// ---- driver -------------------------------------------------------------
void pack_build(const build_opts *o) {
    builder b;
    memset(&b, 0, sizeof b);
    b.o = o;
    if (o->mode == PACK_MODE_PACKED) b.cap = o->row_tokens;
    else if (o->batch_tokens) b.cap = (uint32_t)(o->batch_tokens / o->pad_multiple * o->pad_multiple);

    outfile *out = &b.out;
    out->to_stdout = !strcmp(o->out, "-");
    if (out->to_stdout) {
        out->f = anon_tmp("the pack before it goes to stdout");
        out->name = "<stdout>";
    } else {
        aout_open(&out->a, o->out);
        out->f = out->a.f;
        out->name = o->out;
    }
    static const uint8_t hole[PACK_HEADER_BYTES];
    out_write(out, hole, sizeof hole);   // the header goes here at the end
    spool_open(&b.samples, "sample table");
    spool_open(&b.spans, "label runs");
    spool_open(&b.labels, "labels");

    double t0 = now_s();
    if (o->n_inputs == 0) read_input(&b, "-");
    for (size_t i = 0; i < o->n_inputs; i++) read_input(&b, o->inputs[i]);
    double t_read = now_s() - t0;
    pack_header *h = &b.h;
    const char *src = o->n_inputs == 1 ? o->inputs[0] : o->n_inputs ? "the input" : "<stdin>";
    if (h->n_records == 0) die("%s: no records (empty input)", src);
    if (h->n_samples == 0)
        die("%s: none of the %llu records has a target token (labels[1:] all -100); --keep-empty keeps them",
            src, (unsigned long long)h->n_records);
    if (h->n_dropped)
        warn("dropped %llu of %llu records with no target token (--keep-empty keeps them)",
             (unsigned long long)h->n_dropped, (unsigned long long)h->n_records);

    h->group_size = o->group_size;
    if (o->order == PACK_ORDER_GROUP_BY_LENGTH && !h->group_size) {
        if (o->batch_size) h->group_size = o->batch_size;
        else {   // by budget: how many samples of the mean padded length fit T
            uint64_t mean = (h->n_tokens + h->n_samples - 1) / h->n_samples;
            uint64_t g = o->batch_tokens / pack_padded_len(mean, o->pad_multiple);
            h->group_size = (uint32_t)(g ? g : 1);
        }
    }
    pack_section_ref tokens_ref = {PACK_HEADER_BYTES, h->n_tokens * 4};

    index_out x;
    memset(&x, 0, sizeof x);
    build_index(&b, &x);

    memcpy(h->magic, PACK_MAGIC, PACK_MAGIC_LEN);
    h->version_major = PACK_VERSION_MAJOR;
    h->version_minor = PACK_VERSION_MINOR;
    h->header_bytes = PACK_HEADER_BYTES;
    h->mode = o->mode;
    h->order = o->order;
    h->packing = o->packing;
    h->n_batches = x.n_batches;
    h->n_rows = x.n_rows;
    h->n_segments = x.n_segments;
    h->seed = o->seed;
    h->batch_size = o->batch_size;
    h->batch_tokens = o->batch_tokens;
    h->row_tokens = o->mode == PACK_MODE_PACKED ? o->row_tokens : 0;
    h->pad_multiple = o->pad_multiple;
    h->accum = o->accum;
    h->n_epochs = o->epochs;
    h->flags = (o->keep_empty ? PACK_FLAG_KEEP_EMPTY : 0) | (o->truncate ? PACK_FLAG_TRUNCATE : 0);
    h->sec[PACK_SEC_TOKENS] = tokens_ref;
    h->sec[PACK_SEC_SAMPLES] = out_section_from(out, &b.samples);
    h->sec[PACK_SEC_SPANS] = out_section_from(out, &b.spans);
    h->sec[PACK_SEC_LABELS] = out_section_from(out, &b.labels);
    out_align(out);
    h->sec[PACK_SEC_EPOCHS] = (pack_section_ref){out->pos, ((uint64_t)o->epochs + 1) * 8};
    out_write(out, x.epoch_first, ((size_t)o->epochs + 1) * sizeof *x.epoch_first);
    h->sec[PACK_SEC_BATCHES] = out_section_from(out, &x.batches);
    h->sec[PACK_SEC_ROWS] = out_section_from(out, &x.rows);
    h->sec[PACK_SEC_SEGMENTS] = out_section_from(out, &x.segments);
    h->file_bytes = out->pos;

    if (fflush(out->f) != 0 || fseeko(out->f, 0, SEEK_SET) != 0)
        die("cannot write %s: %s", out->name, strerror(errno));
    if (fwrite(h, sizeof *h, 1, out->f) != 1) die("cannot write %s: %s", out->name, strerror(errno));
    if (out->to_stdout) {
        copy_stream(out->f, "the finished pack", stdout, "<stdout>", h->file_bytes);
        if (fflush(stdout) != 0) die("cannot write <stdout>: %s", strerror(errno));
        fclose(out->f);
    } else {
        aout_commit(&out->a);
    }
    if (o->verbose)
        fprintf(stderr, "pack: %llu records -> %llu samples (%llu dropped, %llu truncated), %llu tokens, "
                "%llu targets, %llu micro-batches over %u epochs, %.2f MB -> %s (read %.1f s, total %.1f s)\n",
                (unsigned long long)h->n_records, (unsigned long long)h->n_samples,
                (unsigned long long)h->n_dropped, (unsigned long long)h->n_truncated,
                (unsigned long long)h->n_tokens, (unsigned long long)h->n_targets,
                (unsigned long long)h->n_batches, h->n_epochs, h->file_bytes / 1e6, out->name, t_read,
                now_s() - t0);
    free(b.len); free(b.tgt); free(b.span_buf); free(x.epoch_first);
}
