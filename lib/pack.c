// lib/pack.c: open, validate and read .pack files; the data-parallel schedule.
#include "pack.h"
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const char *pack_mode_name(uint32_t m) {
    return m == PACK_MODE_PAD ? "pad" : m == PACK_MODE_PACKED ? "packed" : "?";
}
const char *pack_order_name(uint32_t o) {
    return o == PACK_ORDER_SEQUENTIAL ? "sequential" : o == PACK_ORDER_RANDOM ? "random"
         : o == PACK_ORDER_GROUP_BY_LENGTH ? "group_by_length" : "?";
}
const char *pack_packing_name(uint32_t k) {
    return k == PACK_PACKING_NONE ? "none" : k == PACK_PACKING_BEST_FIT ? "best_fit"
         : k == PACK_PACKING_NEXT_FIT ? "next_fit" : "?";
}

// Formats "<name>: <message>" into err and returns -1, so that every refusal
// below is one line naming the file.
static int fail(char *err, size_t errlen, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, const char *name, const char *fmt, ...) {
    if (!err || !errlen) return -1;
    int n = snprintf(err, errlen, "%s: ", name);
    if (n < 0 || (size_t)n >= errlen) return -1;
    va_list ap; va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

// a * b into *out unless it overflows 64 bits.
static int mul_ok(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }

// Header fields and the section table, against the file length.
static int check_header(const pack_header *h, size_t bytes, const char *name, char *err, size_t el) {
    if (h->version_major != PACK_VERSION_MAJOR)
        return fail(err, el, name, h->version_major > PACK_VERSION_MAJOR
            ? "format version %u.%u is newer than this reader (%u.x); rebuild the pack with this lorapipe or update it"
            : "unknown format version %u.%u (this reader knows %u.x)",
            h->version_major, h->version_minor, PACK_VERSION_MAJOR);
    if (h->header_bytes != PACK_HEADER_BYTES)
        return fail(err, el, name, "header size %u, expected %u", h->header_bytes, PACK_HEADER_BYTES);
    if (h->file_bytes != bytes)
        return fail(err, el, name, "truncated or damaged: the header says %llu bytes, the file has %zu",
                    (unsigned long long)h->file_bytes, bytes);
    if (h->mode > PACK_MODE_PACKED) return fail(err, el, name, "unknown mode %u", h->mode);
    if (h->order > PACK_ORDER_GROUP_BY_LENGTH) return fail(err, el, name, "unknown order %u", h->order);
    if (h->mode == PACK_MODE_PAD) {
        if (h->packing != PACK_PACKING_NONE || h->row_tokens != 0 || h->pad_multiple == 0)
            return fail(err, el, name, "pad mode with packing %u, row_tokens %u, pad_multiple %u",
                        h->packing, h->row_tokens, h->pad_multiple);
    } else {
        if (h->packing != PACK_PACKING_BEST_FIT && h->packing != PACK_PACKING_NEXT_FIT)
            return fail(err, el, name, "packed mode with unknown packing %u", h->packing);
        if (h->row_tokens == 0 || h->pad_multiple != 1 || h->order == PACK_ORDER_GROUP_BY_LENGTH)
            return fail(err, el, name, "packed mode with row_tokens %u, pad_multiple %u, order %u",
                        h->row_tokens, h->pad_multiple, h->order);
    }
    if ((h->batch_size == 0) == (h->batch_tokens == 0))
        return fail(err, el, name, "exactly one of batch_size (%u) and batch_tokens (%llu) must be set",
                    h->batch_size, (unsigned long long)h->batch_tokens);
    if (h->accum == 0 || h->n_epochs == 0 || h->n_samples == 0 || h->n_samples > UINT32_MAX)
        return fail(err, el, name, "bad counts: accum %u, epochs %u, samples %llu", h->accum, h->n_epochs,
                    (unsigned long long)h->n_samples);
    if (h->mode == PACK_MODE_PACKED && h->batch_tokens && h->batch_tokens < h->row_tokens)
        return fail(err, el, name, "batch_tokens %llu is smaller than a row (%u)", (unsigned long long)h->batch_tokens,
                    h->row_tokens);
    if (h->reserved0) return fail(err, el, name, "reserved header field is not zero");
    if (h->flags & ~(PACK_FLAG_KEEP_EMPTY | PACK_FLAG_TRUNCATE))
        return fail(err, el, name, "unknown header flags 0x%x", h->flags);
    if (h->n_dropped > h->n_records || h->n_samples != h->n_records - h->n_dropped)
        return fail(err, el, name, "record counts disagree: %llu kept + %llu dropped != %llu read",
                    (unsigned long long)h->n_samples, (unsigned long long)h->n_dropped,
                    (unsigned long long)h->n_records);
    uint64_t segs;
    if (!mul_ok(h->n_samples, h->n_epochs, &segs) || segs != h->n_segments)
        return fail(err, el, name, "%llu segments, expected samples x epochs", (unsigned long long)h->n_segments);
    if (h->n_batches < h->n_epochs || h->n_rows < h->n_batches || h->n_segments < h->n_rows)
        return fail(err, el, name, "inconsistent counts: %llu batches, %llu rows, %llu segments, %u epochs",
                    (unsigned long long)h->n_batches, (unsigned long long)h->n_rows,
                    (unsigned long long)h->n_segments, h->n_epochs);

    static const char *sec_names[PACK_N_SECTIONS] = {"tokens", "samples", "spans", "labels", "epochs",
                                                     "batches", "rows", "segments"};
    const uint64_t count[PACK_N_SECTIONS] = {h->n_tokens, h->n_samples, h->n_spans, h->n_label_words,
                                             (uint64_t)h->n_epochs + 1, h->n_batches, h->n_rows + 1, h->n_segments};
    const uint64_t elem[PACK_N_SECTIONS] = {4, sizeof(pack_sample), sizeof(pack_span), 4, 8,
                                            sizeof(pack_batch), 8, 4};
    uint64_t end = PACK_HEADER_BYTES;
    for (int k = 0; k < PACK_N_SECTIONS; k++) {
        const pack_section_ref *s = &h->sec[k];
        uint64_t want;
        if (!mul_ok(count[k], elem[k], &want) || s->bytes != want)
            return fail(err, el, name, "section %s holds %llu bytes, its count needs %llu x %llu",
                        sec_names[k], (unsigned long long)s->bytes, (unsigned long long)count[k],
                        (unsigned long long)elem[k]);
        if (s->offset % PACK_SECTION_ALIGN || s->offset < end || s->offset > bytes || s->bytes > bytes - s->offset)
            return fail(err, el, name, "section %s at offset %llu (+%llu bytes) is misplaced or past the end (%zu bytes)",
                        sec_names[k], (unsigned long long)s->offset, (unsigned long long)s->bytes, bytes);
        end = s->offset + s->bytes;
    }
    return 0;
}

// Targets of sample s from its label runs: positions >= 1 inside a run.
static uint64_t span_targets(const pack_span *sp, size_t n) {
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = sp[i].start ? sp[i].start : 1;
        if (sp[i].end > a) t += sp[i].end - a;
    }
    return t;
}

static int check_samples(const pack_file *p, const char *name, char *err, size_t el) {
    const pack_header *h = p->h;
    uint64_t tok = 0, span = 0, lab = 0, targets = 0, next_record = 0, truncated = 0;
    uint32_t max_len = 0;
    for (uint64_t s = 0; s < h->n_samples; s++) {
        const pack_sample *m = &p->samples[s];
        if (m->record < next_record || m->record >= h->n_records)
            return fail(err, el, name, "sample %llu: record number %llu out of order or past %llu records",
                        (unsigned long long)s, (unsigned long long)m->record, (unsigned long long)h->n_records);
        next_record = m->record + 1;
        if (m->len == 0 || m->tok_first != tok || m->len > h->n_tokens - tok)
            return fail(err, el, name, "sample %llu: length %u at token %llu does not follow the previous sample",
                        (unsigned long long)s, m->len, (unsigned long long)m->tok_first);
        if (m->flags & ~(PACK_SAMPLE_EXPLICIT | PACK_SAMPLE_TRUNCATED))
            return fail(err, el, name, "sample %llu: unknown flags 0x%x", (unsigned long long)s, m->flags);
        tok += m->len;
        if (m->len > max_len) max_len = m->len;
        truncated += (m->flags & PACK_SAMPLE_TRUNCATED) != 0;
        uint64_t t = 0;
        if (m->flags & PACK_SAMPLE_EXPLICIT) {
            if (m->n_spans != 0 || m->label_first != lab || m->len > h->n_label_words - lab)
                return fail(err, el, name, "sample %llu: explicit labels at %llu do not follow the previous ones",
                            (unsigned long long)s, (unsigned long long)m->label_first);
            const int32_t *l = p->labels + lab;
            for (uint32_t i = 0; i < m->len; i++) {
                if (l[i] != -100 && (l[i] < 0 || (uint32_t)l[i] > h->max_token_id))
                    return fail(err, el, name, "sample %llu: label %u = %d is neither -100 nor an id <= %u",
                                (unsigned long long)s, i, l[i], h->max_token_id);
                if (i > 0 && l[i] != -100) t++;
            }
            lab += m->len;
        } else {
            if (m->label_first != span || m->n_spans > h->n_spans - span)
                return fail(err, el, name, "sample %llu: %u label runs at %llu do not follow the previous ones",
                            (unsigned long long)s, m->n_spans, (unsigned long long)m->label_first);
            const pack_span *sp = p->spans + span;
            uint32_t prev_end = 0;
            for (uint32_t i = 0; i < m->n_spans; i++) {
                if (sp[i].start < prev_end || sp[i].start >= sp[i].end || sp[i].end > m->len)
                    return fail(err, el, name, "sample %llu: label run %u [%u, %u) is empty, unsorted or past length %u",
                                (unsigned long long)s, i, sp[i].start, sp[i].end, m->len);
                prev_end = sp[i].end;
            }
            t = span_targets(sp, m->n_spans);
            span += m->n_spans;
        }
        if (t != m->n_targets)
            return fail(err, el, name, "sample %llu: %u targets recorded, its labels hold %llu",
                        (unsigned long long)s, m->n_targets, (unsigned long long)t);
        if (t == 0 && !(h->flags & PACK_FLAG_KEEP_EMPTY))
            return fail(err, el, name, "sample %llu has no target token but the pack was made without keeping such",
                        (unsigned long long)s);
        targets += t;
    }
    if (tok != h->n_tokens || span != h->n_spans || lab != h->n_label_words || targets != h->n_targets ||
        max_len != h->max_sample_len || truncated != h->n_truncated ||
        (truncated && !(h->flags & PACK_FLAG_TRUNCATE)))
        return fail(err, el, name, "sample totals (%llu tokens, %llu runs, %llu label words, %llu targets, longest %u, "
                    "%llu truncated) disagree with the header", (unsigned long long)tok, (unsigned long long)span,
                    (unsigned long long)lab, (unsigned long long)targets, max_len, (unsigned long long)truncated);
    return 0;
}

static int check_ids(const pack_file *p, const char *name, char *err, size_t el) {
    const pack_header *h = p->h;
    uint32_t mx = 0;
    const uint32_t *t = p->tokens;
    size_t n = (size_t)h->n_tokens;
    // A plain max reduction: the compiler vectorises it; memory bound.
    #pragma omp parallel for reduction(max : mx) schedule(static) if (n > (1u << 22))
    for (size_t i = 0; i < n; i++) if (t[i] > mx) mx = t[i];
    for (uint64_t i = 0; i < h->n_label_words; i++)
        if (p->labels[i] >= 0 && (uint32_t)p->labels[i] > mx) mx = (uint32_t)p->labels[i];
    if (mx != h->max_token_id) {
        if (mx > h->max_token_id) {
            for (size_t i = 0; i < n; i++)
                if (t[i] > h->max_token_id)
                    return fail(err, el, name, "token %zu = %u is above the recorded largest id %u", i, t[i],
                                h->max_token_id);
        }
        return fail(err, el, name, "largest token id is %u, the header says %u", mx, h->max_token_id);
    }
    return 0;
}

static int check_batches(const pack_file *p, const char *name, char *err, size_t el) {
    const pack_header *h = p->h;
    if (p->epoch_first[0] != 0 || p->epoch_first[h->n_epochs] != h->n_batches)
        return fail(err, el, name, "epoch table does not span the %llu micro-batches", (unsigned long long)h->n_batches);
    for (uint32_t e = 0; e < h->n_epochs; e++)
        if (p->epoch_first[e + 1] <= p->epoch_first[e])
            return fail(err, el, name, "epoch %u has no micro-batch or the epoch table is unsorted", e);
    if (p->row_first_seg[0] != 0 || p->row_first_seg[h->n_rows] != h->n_segments)
        return fail(err, el, name, "row table does not span the %llu segments", (unsigned long long)h->n_segments);
    for (uint64_t r = 0; r < h->n_rows; r++)
        if (p->row_first_seg[r + 1] <= p->row_first_seg[r])
            return fail(err, el, name, "row %llu is empty or the row table is unsorted", (unsigned long long)r);

    // One bit per sample, cleared at each epoch: every sample exactly once per epoch.
    size_t words = (size_t)(h->n_samples + 63) / 64;
    uint64_t *seen = xcalloc(words, sizeof *seen);
    int rc = 0;
    uint64_t row = 0, seg_epoch_start = 0;
    uint32_t e = 0;
    for (uint64_t b = 0; b < h->n_batches && rc == 0; b++) {
        const pack_batch *m = &p->batches[b];
        if (b == p->epoch_first[e + 1]) {   // entering the next epoch
            if (p->row_first_seg[row] - seg_epoch_start != h->n_samples) {
                rc = fail(err, el, name, "epoch %u holds %llu segments, expected one per sample (%llu)", e,
                          (unsigned long long)(p->row_first_seg[row] - seg_epoch_start),
                          (unsigned long long)h->n_samples);
                break;
            }
            seg_epoch_start = p->row_first_seg[row];
            memset(seen, 0, words * sizeof *seen);
            e++;
        }
        if (m->epoch != e || m->row_first != row || m->n_rows == 0 || m->n_rows > h->n_rows - row) {
            rc = fail(err, el, name, "micro-batch %llu: epoch %u, rows %llu+%u do not follow the previous batch",
                      (unsigned long long)b, m->epoch, (unsigned long long)m->row_first, m->n_rows);
            break;
        }
        // Micro-batch sizes are a function of the header: full batches, except
        // the last one of each epoch.
        int last_in_epoch = b + 1 == p->epoch_first[e + 1];
        uint64_t full = h->batch_size ? h->batch_size
                      : h->mode == PACK_MODE_PACKED ? h->batch_tokens / h->row_tokens : 0;
        if ((full && (m->n_rows > full || (!last_in_epoch && m->n_rows != full))) ||
            (h->batch_tokens && (uint64_t)m->n_rows * m->row_len > h->batch_tokens)) {
            rc = fail(err, el, name, "micro-batch %llu: %u rows of %u do not match the batch size",
                      (unsigned long long)b, m->n_rows, m->row_len);
            break;
        }
        uint64_t tokens = 0, targets = 0;
        uint32_t longest = 0;
        for (uint32_t i = 0; i < m->n_rows && rc == 0; i++, row++) {
            uint64_t s0 = p->row_first_seg[row], s1 = p->row_first_seg[row + 1];
            if (h->mode == PACK_MODE_PAD && s1 - s0 != 1) {
                rc = fail(err, el, name, "micro-batch %llu row %u: %llu samples in a pad-mode row",
                          (unsigned long long)b, i, (unsigned long long)(s1 - s0));
                break;
            }
            uint64_t len = 0;
            for (uint64_t k = s0; k < s1; k++) {
                uint32_t s = p->segments[k];
                if (s >= h->n_samples || (seen[s / 64] >> (s % 64) & 1)) {
                    rc = fail(err, el, name, "micro-batch %llu: sample %u is out of range or repeated in epoch %u",
                              (unsigned long long)b, s, e);
                    break;
                }
                seen[s / 64] |= 1ull << (s % 64);
                len += p->samples[s].len;
                targets += p->samples[s].n_targets;
            }
            if (rc) break;
            if (h->mode == PACK_MODE_PACKED && len > h->row_tokens) {
                rc = fail(err, el, name, "micro-batch %llu row %u: %llu tokens exceed the row capacity %u",
                          (unsigned long long)b, i, (unsigned long long)len, h->row_tokens);
                break;
            }
            if (len > longest) longest = (uint32_t)len;
            tokens += len;
        }
        if (rc) break;
        uint32_t want_len = h->mode == PACK_MODE_PAD ? pack_padded_len(longest, h->pad_multiple) : h->row_tokens;
        if (m->row_len != want_len || m->n_tokens != tokens || m->n_targets != targets || m->reserved) {
            rc = fail(err, el, name, "micro-batch %llu: row length %u, %u tokens, %u targets; its rows give %u, %llu, %llu",
                      (unsigned long long)b, m->row_len, m->n_tokens, m->n_targets, want_len,
                      (unsigned long long)tokens, (unsigned long long)targets);
            break;
        }
        // Pad mode by budget: a micro-batch closes only when the next sample
        // would break the budget (the greedy rule pack uses).
        if (h->mode == PACK_MODE_PAD && h->batch_tokens && !last_in_epoch && row < h->n_rows) {
            uint32_t next_len = p->samples[p->segments[p->row_first_seg[row]] % h->n_samples].len;
            uint64_t l = pack_padded_len(next_len > longest ? next_len : longest, h->pad_multiple);
            if ((uint64_t)(m->n_rows + 1) * l <= h->batch_tokens) {
                rc = fail(err, el, name, "micro-batch %llu closes before its token budget is reached",
                          (unsigned long long)b);
                break;
            }
        }
    }
    if (rc == 0 && (row != h->n_rows || p->row_first_seg[row] - seg_epoch_start != h->n_samples))
        rc = fail(err, el, name, "the micro-batches cover %llu of %llu rows, or the last epoch misses samples",
                  (unsigned long long)row, (unsigned long long)h->n_rows);
    free(seen);
    return rc;
}

int pack_open_mem(pack_file *p, const void *data, size_t bytes, const char *name, unsigned flags,
                  char *err, size_t el) {
    memset(p, 0, sizeof *p);
    const uint8_t *d = data;
    if (bytes < PACK_MAGIC_LEN)
        return fail(err, el, name, "not a .pack file: only %zu bytes", bytes);
    if (memcmp(d, PACK_MAGIC, PACK_MAGIC_LEN) != 0)
        return fail(err, el, name, "not a .pack file (wrong magic; make one with `pack -o FILE`)");
    if (bytes < PACK_HEADER_BYTES)
        return fail(err, el, name, "truncated: %zu bytes, shorter than the %u-byte header", bytes, PACK_HEADER_BYTES);
    if ((uintptr_t)d % PACK_SECTION_ALIGN)
        return fail(err, el, name, "image not %u-byte aligned in memory", PACK_SECTION_ALIGN);
    const pack_header *h = (const pack_header *)d;
    if (check_header(h, bytes, name, err, el)) return -1;
    p->map = d;
    p->map_bytes = bytes;
    p->h = h;
    p->tokens = (const uint32_t *)(d + h->sec[PACK_SEC_TOKENS].offset);
    p->samples = (const pack_sample *)(d + h->sec[PACK_SEC_SAMPLES].offset);
    p->spans = (const pack_span *)(d + h->sec[PACK_SEC_SPANS].offset);
    p->labels = (const int32_t *)(d + h->sec[PACK_SEC_LABELS].offset);
    p->epoch_first = (const uint64_t *)(d + h->sec[PACK_SEC_EPOCHS].offset);
    p->batches = (const pack_batch *)(d + h->sec[PACK_SEC_BATCHES].offset);
    p->row_first_seg = (const uint64_t *)(d + h->sec[PACK_SEC_ROWS].offset);
    p->segments = (const uint32_t *)(d + h->sec[PACK_SEC_SEGMENTS].offset);
    if (check_samples(p, name, err, el) || (!(flags & PACK_OPEN_NO_ID_SCAN) && check_ids(p, name, err, el)) ||
        check_batches(p, name, err, el)) {
        memset(p, 0, sizeof *p);
        return -1;
    }
    return 0;
}

int pack_open_flags(pack_file *p, const char *path, unsigned flags, char *err, size_t el) {
    memset(p, 0, sizeof *p);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(err, el, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return fail(err, el, path, "cannot stat: %s", strerror(errno)); }
    if (!S_ISREG(st.st_mode)) { close(fd); return fail(err, el, path, "not a regular file"); }
    size_t bytes = (size_t)st.st_size;
    if (bytes < PACK_HEADER_BYTES) {
        // Too short to map usefully; read what is there for the magic check.
        uint8_t buf[PACK_HEADER_BYTES] __attribute__((aligned(64)));
        ssize_t got = pread(fd, buf, bytes, 0);
        close(fd);
        if (got < 0 || (size_t)got != bytes) return fail(err, el, path, "cannot read: %s", strerror(errno));
        // Shorter than a header: this always fails, with the right message.
        (void)pack_open_mem(p, buf, bytes, path, flags, err, el);
        return -1;
    }
    void *m = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return fail(err, el, path, "cannot map: %s", strerror(errno));
    if (pack_open_mem(p, m, bytes, path, flags, err, el) != 0) { munmap(m, bytes); return -1; }
    p->path = xstrdup(path);
    return 0;
}

int pack_open(pack_file *p, const char *path, char *err, size_t el) { return pack_open_flags(p, path, 0, err, el); }

void pack_open_or_die(pack_file *p, const char *path) {
    char err[1024];
    if (pack_open(p, path, err, sizeof err) != 0) die("%s", err);
}

void pack_close(pack_file *p) {
    if (p->path && p->map) munmap((void *)p->map, p->map_bytes);
    free(p->path);
    memset(p, 0, sizeof *p);
}

void pack_sample_labels(const pack_file *p, size_t s, int32_t *out) {
    const pack_sample *m = &p->samples[s];
    if (m->flags & PACK_SAMPLE_EXPLICIT) {
        memcpy(out, p->labels + m->label_first, (size_t)m->len * sizeof *out);
        return;
    }
    const uint32_t *ids = p->tokens + m->tok_first;
    for (uint32_t i = 0; i < m->len; i++) out[i] = -100;
    const pack_span *sp = p->spans + m->label_first;
    for (uint32_t k = 0; k < m->n_spans; k++)
        for (uint32_t i = sp[k].start; i < sp[k].end; i++) out[i] = (int32_t)ids[i];
}

size_t pack_row_len(const pack_file *p, size_t b, size_t i) {
    const uint32_t *s;
    size_t n = pack_row_samples(p, b, i, &s), len = 0;
    for (size_t k = 0; k < n; k++) len += p->samples[s[k]].len;
    return len;
}

// ---- schedule ----
int pack_schedule_init(pack_schedule *s, const pack_file *p, size_t accum, size_t world, char *err, size_t el) {
    memset(s, 0, sizeof *s);
    if (accum == 0 || world == 0 || accum > UINT32_MAX / world)
        return fail(err, el, p->path ? p->path : "pack", "schedule needs accum >= 1 and world >= 1 (got %zu, %zu)",
                    accum, world);
    s->p = p; s->accum = accum; s->world = world;
    uint32_t E = p->h->n_epochs;
    s->epoch_step_first = xmalloc((E + 1) * sizeof *s->epoch_step_first);
    uint64_t steps = 0, per = (uint64_t)accum * world;
    for (uint32_t e = 0; e < E; e++) {
        s->epoch_step_first[e] = steps;
        steps += (pack_epoch_batches(p, e) + per - 1) / per;
    }
    s->epoch_step_first[E] = steps;
    s->n_steps = (size_t)steps;
    return 0;
}

void pack_schedule_free(pack_schedule *s) {
    free(s->epoch_step_first);
    memset(s, 0, sizeof *s);
}

size_t pack_schedule_epoch(const pack_schedule *s, size_t step) {
    CHECK(step < s->n_steps, "step %zu out of range (%zu steps)", step, s->n_steps);
    // Last epoch whose first step is <= step (epochs are few: binary search anyway).
    size_t lo = 0, hi = s->p->h->n_epochs;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (s->epoch_step_first[mid] <= step) lo = mid; else hi = mid;
    }
    return lo;
}

// First micro-batch of window `step` and the end of its epoch.
static void window_bounds(const pack_schedule *s, size_t step, uint64_t *first, uint64_t *epoch_end) {
    size_t e = pack_schedule_epoch(s, step);
    *first = s->p->epoch_first[e] + (step - s->epoch_step_first[e]) * (uint64_t)s->accum * s->world;
    *epoch_end = s->p->epoch_first[e + 1];
}

int64_t pack_schedule_batch(const pack_schedule *s, size_t step, size_t rank, size_t slot) {
    CHECK(rank < s->world && slot < s->accum, "rank %zu / slot %zu out of range (world %zu, accum %zu)",
          rank, slot, s->world, s->accum);
    uint64_t first, end;
    window_bounds(s, step, &first, &end);
    uint64_t b = first + (uint64_t)slot * s->world + rank;
    return b < end ? (int64_t)b : PACK_EMPTY;
}

size_t pack_schedule_window_batches(const pack_schedule *s, size_t step) {
    uint64_t first, end;
    window_bounds(s, step, &first, &end);
    uint64_t n = end - first, full = (uint64_t)s->accum * s->world;
    return (size_t)(n < full ? n : full);
}

uint64_t pack_schedule_targets(const pack_schedule *s, size_t step) {
    uint64_t first, end;
    window_bounds(s, step, &first, &end);
    size_t n = pack_schedule_window_batches(s, step);
    uint64_t t = 0;
    for (size_t k = 0; k < n; k++) t += s->p->batches[first + k].n_targets;
    return t;
}
