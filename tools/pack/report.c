// tools/pack/report.c: --info, --dump, --batches, --schedule (readers of a pack).
#include "pack_tool.h"
#include "check.h"
#include "pack.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

// ---- fast JSON number output (--dump writes every token) -----------------
typedef struct {
    char *buf;
    size_t n, cap;
} outbuf;

static void ob_flush(outbuf *o) {
    if (o->n && fwrite(o->buf, 1, o->n, stdout) != o->n) die("cannot write <stdout>: %s", strerror(errno));
    o->n = 0;
}
static void ob_reserve(outbuf *o, size_t need) {
    if (o->n + need > o->cap) ob_flush(o);
    if (need > o->cap) { o->cap = need; o->buf = xrealloc(o->buf, o->cap); }
}
static void ob_str(outbuf *o, const char *s) {
    size_t n = strlen(s);
    ob_reserve(o, n);
    memcpy(o->buf + o->n, s, n);
    o->n += n;
}
static void ob_i64(outbuf *o, int64_t v) {
    char tmp[24];
    int k = 0;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    do { tmp[k++] = (char)('0' + u % 10); u /= 10; } while (u);
    ob_reserve(o, (size_t)k + 1);
    if (v < 0) o->buf[o->n++] = '-';
    while (k) o->buf[o->n++] = tmp[--k];
}
static void ob_char(outbuf *o, char c) { ob_reserve(o, 1); o->buf[o->n++] = c; }

void pack_report_dump(const char *path) {
    pack_file p;
    pack_open_or_die(&p, path);
    outbuf o = {.cap = 1 << 20};
    o.buf = xmalloc(o.cap);
    size_t lab_cap = p.h->max_sample_len;
    int32_t *lab = xmalloc(lab_cap * sizeof *lab);
    for (size_t s = 0; s < p.h->n_samples; s++) {
        size_t n = pack_sample_len(&p, s);
        const uint32_t *ids = pack_sample_ids(&p, s);
        pack_sample_labels(&p, s, lab);
        ob_str(&o, "{\"input_ids\":[");
        for (size_t i = 0; i < n; i++) { if (i) ob_char(&o, ','); ob_i64(&o, ids[i]); }
        ob_str(&o, "],\"labels\":[");
        for (size_t i = 0; i < n; i++) { if (i) ob_char(&o, ','); ob_i64(&o, lab[i]); }
        ob_str(&o, "]}\n");
    }
    ob_flush(&o);
    if (fflush(stdout) != 0) die("cannot write <stdout>: %s", strerror(errno));
    free(o.buf); free(lab);
    pack_close(&p);
}

void pack_report_batches(const char *path) {
    pack_file p;
    pack_open_or_die(&p, path);
    outbuf o = {.cap = 1 << 20};
    o.buf = xmalloc(o.cap);
    for (size_t b = 0; b < p.h->n_batches; b++) {
        const pack_batch *m = pack_batch_at(&p, b);
        ob_str(&o, "{\"batch\":"); ob_i64(&o, (int64_t)b);
        ob_str(&o, ",\"epoch\":"); ob_i64(&o, m->epoch);
        ob_str(&o, ",\"row_len\":"); ob_i64(&o, m->row_len);
        ob_str(&o, ",\"tokens\":"); ob_i64(&o, m->n_tokens);
        ob_str(&o, ",\"targets\":"); ob_i64(&o, m->n_targets);
        ob_str(&o, ",\"rows\":[");
        for (uint32_t r = 0; r < m->n_rows; r++) {
            const uint32_t *s;
            size_t k = pack_row_samples(&p, b, r, &s);
            ob_str(&o, r ? ",[" : "[");
            for (size_t i = 0; i < k; i++) { if (i) ob_char(&o, ','); ob_i64(&o, s[i]); }
            ob_char(&o, ']');
        }
        ob_str(&o, "]}\n");
    }
    ob_flush(&o);
    if (fflush(stdout) != 0) die("cannot write <stdout>: %s", strerror(errno));
    free(o.buf);
    pack_close(&p);
}

void pack_report_schedule(const char *path, size_t accum, size_t world) {
    pack_file p;
    pack_open_or_die(&p, path);
    pack_schedule s;
    char err[512];
    if (pack_schedule_init(&s, &p, accum ? accum : p.h->accum, world, err, sizeof err)) die("%s", err);
    outbuf o = {.cap = 1 << 20};
    o.buf = xmalloc(o.cap);
    for (size_t w = 0; w < s.n_steps; w++) {
        ob_str(&o, "{\"step\":"); ob_i64(&o, (int64_t)w);
        ob_str(&o, ",\"epoch\":"); ob_i64(&o, (int64_t)pack_schedule_epoch(&s, w));
        ob_str(&o, ",\"micro_batches\":"); ob_i64(&o, (int64_t)pack_schedule_window_batches(&s, w));
        ob_str(&o, ",\"targets\":"); ob_i64(&o, (int64_t)pack_schedule_targets(&s, w));
        ob_str(&o, ",\"ranks\":[");
        for (size_t r = 0; r < s.world; r++) {
            ob_str(&o, r ? ",[" : "[");
            for (size_t k = 0; k < s.accum; k++) {
                if (k) ob_char(&o, ',');
                ob_i64(&o, pack_schedule_batch(&s, w, r, k));
            }
            ob_char(&o, ']');
        }
        ob_str(&o, "]}\n");
    }
    ob_flush(&o);
    if (fflush(stdout) != 0) die("cannot write <stdout>: %s", strerror(errno));
    free(o.buf);
    pack_schedule_free(&s);
    pack_close(&p);
}

// ---- --info ---------------------------------------------------------------
static json_t *u64j(uint64_t v) { return json_integer((json_int_t)v); }

void pack_report_info(const char *path) {
    pack_file p;
    pack_open_or_die(&p, path);
    const pack_header *h = p.h;
    // Length histogram over power-of-two buckets [2^k, 2^(k+1)).
    uint64_t hist[33] = {0};
    for (size_t s = 0; s < h->n_samples; s++) {
        uint32_t l = p.samples[s].len;
        hist[31 - __builtin_clz(l)]++;
    }
    // Padded shapes: rows x row_len per micro-batch (pad: padded length;
    // packed: row capacity, so this is the packing slack).
    uint64_t slots = 0, tokens = 0;
    json_t *per_epoch = json_array();
    for (size_t b = 0; b < h->n_batches; b++) {
        slots += (uint64_t)p.batches[b].n_rows * p.batches[b].row_len;
        tokens += p.batches[b].n_tokens;
    }
    for (uint32_t e = 0; e < h->n_epochs; e++) json_array_append_new(per_epoch, u64j(pack_epoch_batches(&p, e)));
    pack_schedule sch;
    char err[512];
    if (pack_schedule_init(&sch, &p, h->accum, 1, err, sizeof err)) die("%s", err);

    json_t *j = json_object();
    json_object_set_new(j, "file", json_string(path));
    json_object_set_new(j, "file_bytes", u64j(h->file_bytes));
    char ver[32];
    snprintf(ver, sizeof ver, "%u.%u", h->version_major, h->version_minor);
    json_object_set_new(j, "format_version", json_string(ver));
    json_object_set_new(j, "mode", json_string(pack_mode_name(h->mode)));
    json_object_set_new(j, "order", json_string(pack_order_name(h->order)));
    json_object_set_new(j, "packing", json_string(pack_packing_name(h->packing)));
    json_object_set_new(j, "seed", u64j(h->seed));
    json_object_set_new(j, "epochs", u64j(h->n_epochs));
    json_object_set_new(j, "batch_size", h->batch_size ? u64j(h->batch_size) : json_null());
    json_object_set_new(j, "batch_tokens", h->batch_tokens ? u64j(h->batch_tokens) : json_null());
    json_object_set_new(j, "row_tokens", h->row_tokens ? u64j(h->row_tokens) : json_null());
    json_object_set_new(j, "pad_multiple", u64j(h->pad_multiple));
    json_object_set_new(j, "accum", u64j(h->accum));
    json_object_set_new(j, "group_size", h->group_size ? u64j(h->group_size) : json_null());
    json_object_set_new(j, "keep_empty", json_boolean(h->flags & PACK_FLAG_KEEP_EMPTY));
    json_object_set_new(j, "records", u64j(h->n_records));
    json_object_set_new(j, "samples", u64j(h->n_samples));
    json_object_set_new(j, "dropped_no_target", u64j(h->n_dropped));
    json_object_set_new(j, "truncated", u64j(h->n_truncated));
    json_object_set_new(j, "tokens", u64j(h->n_tokens));
    json_object_set_new(j, "targets", u64j(h->n_targets));
    json_object_set_new(j, "max_token_id", u64j(h->max_token_id));
    json_object_set_new(j, "max_sample_len", u64j(h->max_sample_len));
    json_object_set_new(j, "mean_sample_len", json_real((double)h->n_tokens / (double)h->n_samples));
    json_object_set_new(j, "batches", u64j(h->n_batches));
    json_object_set_new(j, "batches_per_epoch", per_epoch);
    json_object_set_new(j, "optimizer_steps", u64j(sch.n_steps));
    json_object_set_new(j, "rows", u64j(h->n_rows));
    json_object_set_new(j, "padded_tokens", u64j(slots));
    json_object_set_new(j, "padding_fraction", json_real(slots ? 1.0 - (double)tokens / (double)slots : 0.0));
    json_t *hj = json_array();
    for (int k = 0; k < 33; k++) {
        if (!hist[k]) continue;
        json_t *e = json_object();
        json_object_set_new(e, "min", u64j(1ull << k));
        json_object_set_new(e, "max", u64j((2ull << k) - 1));
        json_object_set_new(e, "count", u64j(hist[k]));
        json_array_append_new(hj, e);
    }
    json_object_set_new(j, "length_histogram", hj);
    if (json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 || fputc('\n', stdout) == EOF ||
        fflush(stdout) != 0)
        die("cannot write <stdout>: %s", strerror(errno));
    json_decref(j);
    pack_schedule_free(&sch);
    pack_close(&p);
}
