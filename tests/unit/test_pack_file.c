// tests/unit/test_pack_file.c: the .pack reader on committed fixtures (made by
// bin/pack from tests/fixtures/pack/small.jsonl), the data-parallel schedule,
// and corrupted variants: truncated at every length, wrong magic, newer
// version, lying header counts, damaged index bytes.  Each must be refused
// with a message, never crash (this test also runs under ASan+UBSan).
#include "check.h"
#include "pack.h"
#include "tap.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *fixtures[] = {"tests/fixtures/pack/small-pad.pack", "tests/fixtures/pack/small-budget.pack",
                                 "tests/fixtures/pack/small-packed.pack", "tests/fixtures/pack/small-nextfit.pack"};

// The file in a 64-byte aligned buffer (as a map would be).
static uint8_t *load(const char *path, size_t *n) {
    size_t len;
    char *raw = read_file(path, &len);
    uint8_t *buf = aligned_alloc(64, (len + 63) / 64 * 64);
    memcpy(buf, raw, len);
    free(raw);
    *n = len;
    return buf;
}

static int opens(const uint8_t *img, size_t n, char *err, size_t el) {
    pack_file p;
    return pack_open_mem(&p, img, n, "img", 0, err, el) == 0;
}

static void test_accessors(const pack_file *p, const char *name) {
    const pack_header *h = p->h;
    uint64_t tokens = 0, targets = 0;
    int32_t *lab = xmalloc(h->max_sample_len * sizeof *lab);
    int labels_ok = 1;
    for (size_t s = 0; s < h->n_samples; s++) {
        size_t n = pack_sample_len(p, s);
        const uint32_t *ids = pack_sample_ids(p, s);
        pack_sample_labels(p, s, lab);
        size_t t = 0;
        for (size_t i = 0; i < n; i++) {
            if (i && lab[i] != -100) t++;
            labels_ok &= lab[i] == -100 || (lab[i] >= 0 && (uint32_t)lab[i] <= h->max_token_id);
            labels_ok &= ids[i] <= h->max_token_id;
        }
        labels_ok &= t == pack_sample_targets(p, s);
        tokens += n;
        targets += t;
    }
    free(lab);
    T_OK(labels_ok && tokens == h->n_tokens && targets == h->n_targets, "%s: samples add up", name);
    // Rows: each batch's real tokens; pad rows one sample; packed rows within capacity.
    int rows_ok = 1;
    for (size_t b = 0; b < h->n_batches; b++) {
        const pack_batch *m = pack_batch_at(p, b);
        size_t sum = 0;
        for (size_t i = 0; i < m->n_rows; i++) {
            const uint32_t *s;
            size_t k = pack_row_samples(p, b, i, &s), len = pack_row_len(p, b, i);
            rows_ok &= len <= m->row_len && (h->mode == PACK_MODE_PACKED || k == 1);
            sum += len;
        }
        rows_ok &= sum == m->n_tokens;
    }
    T_OK(rows_ok, "%s: rows add up", name);
}

// Every micro-batch exactly once; rank r slot k = window start + k*R + r;
// empties only at the end of an epoch's last window; window targets add up.
static void test_schedule(const pack_file *p, const char *name) {
    const pack_header *h = p->h;
    for (size_t world = 1; world <= 3; world++) {
        for (size_t accum = 1; accum <= 4; accum++) {
            pack_schedule s;
            char err[256];
            T_OK(pack_schedule_init(&s, p, accum, world, err, sizeof err) == 0, "schedule init");
            int *count = xcalloc(h->n_batches, sizeof *count);
            int ok = 1;
            uint64_t targets = 0, steps_want = 0;
            for (uint32_t e = 0; e < h->n_epochs; e++)
                steps_want += (pack_epoch_batches(p, e) + accum * world - 1) / (accum * world);
            ok &= s.n_steps == steps_want;
            for (size_t w = 0; w < s.n_steps; w++) {
                size_t e = pack_schedule_epoch(&s, w), real = pack_schedule_window_batches(&s, w);
                int64_t first = pack_schedule_batch(&s, w, 0, 0);
                uint64_t wt = 0;
                ok &= first >= 0 && real >= 1 && real <= accum * world;
                for (size_t k = 0; k < accum; k++)
                    for (size_t r = 0; r < world; r++) {
                        int64_t b = pack_schedule_batch(&s, w, r, k);
                        size_t j = k * world + r;
                        if (j < real) {
                            ok &= b == first + (int64_t)j && p->batches[b].epoch == e;
                            if (b >= 0) { count[b]++; wt += p->batches[b].n_targets; }
                        } else {
                            ok &= b == PACK_EMPTY;
                            // a short window is the last of its epoch
                            ok &= w + 1 == s.n_steps || pack_schedule_epoch(&s, w + 1) == e + 1;
                        }
                    }
                ok &= wt == pack_schedule_targets(&s, w);
                targets += wt;
            }
            for (size_t b = 0; b < h->n_batches; b++) ok &= count[b] == 1;
            T_OK(ok && targets == h->n_targets * h->n_epochs, "%s: schedule world %zu accum %zu", name, world, accum);
            free(count);
            pack_schedule_free(&s);
        }
    }
}

static void test_corruption(const char *path) {
    size_t n;
    uint8_t *img = load(path, &n);
    uint8_t *bad = aligned_alloc(64, (n + 63) / 64 * 64);
    char err[512];
    T_OK(opens(img, n, err, sizeof err), "%s opens: %s", path, err);

    // Truncated at every length.
    int all = 1;
    for (size_t k = 0; k < n; k++) {
        memcpy(bad, img, k);
        err[0] = 0;
        if (opens(bad, k, err, sizeof err) || !err[0]) { all = 0; printf("# truncated to %zu accepted\n", k); break; }
    }
    T_OK(all, "%s: every truncation refused", path);
    memcpy(bad, img, n);
    opens(bad, n - 1, err, sizeof err);
    T_OK(strstr(err, "truncated") != NULL, "truncation message: %s", err);

    // Wrong magic, newer version.
    memcpy(bad, img, n); bad[1] ^= 0x20;
    T_OK(!opens(bad, n, err, sizeof err) && strstr(err, "magic"), "wrong magic: %s", err);
    memcpy(bad, img, n); ((pack_header *)bad)->version_major++;
    T_OK(!opens(bad, n, err, sizeof err) && strstr(err, "newer"), "newer version: %s", err);
    memcpy(bad, img, n); ((pack_header *)bad)->version_minor++;
    T_OK(opens(bad, n, err, sizeof err), "a newer minor version is readable: %s", err);

    // Lying header: every 32-bit word of the header with its top bit flipped,
    // and plus one, is refused.  Exceptions: the seed, the grouping parameters
    // and the minor version, which no file content can contradict; and for
    // "plus one" the order and packing (the reader does not re-run them), the
    // flags (keep-empty and truncate allow, they do not require) and a token
    // budget one above a multiple of 8 (equivalent).
    size_t skip[] = {offsetof(pack_header, version_minor), offsetof(pack_header, seed),
                     offsetof(pack_header, seed) + 4, offsetof(pack_header, accum), offsetof(pack_header, group_size)};
    size_t skip_plus1[] = {offsetof(pack_header, order), offsetof(pack_header, packing), offsetof(pack_header, flags),
                           offsetof(pack_header, batch_tokens)};
    all = 1;
    for (size_t off = 0; off < sizeof(pack_header); off += 4) {
        int skipped = 0, skipped_plus1 = 0;
        for (size_t i = 0; i < sizeof skip / sizeof *skip; i++) skipped |= off == skip[i];
        for (size_t i = 0; i < sizeof skip_plus1 / sizeof *skip_plus1; i++) skipped_plus1 |= off == skip_plus1[i];
        if (skipped) continue;
        for (int how = 0; how < 2 - skipped_plus1; how++) {
            memcpy(bad, img, n);
            uint32_t v;
            memcpy(&v, bad + off, 4);
            v = how ? v + 1 : v ^ 0x80000000u;
            memcpy(bad + off, &v, 4);
            if (opens(bad, n, err, sizeof err)) { all = 0; printf("# header word at %zu (%d) accepted\n", off, how); }
        }
    }
    T_OK(all, "%s: lying header words refused", path);

    // Index sections: every byte with its top bit flipped is refused.
    const pack_header *h = (const pack_header *)img;
    int secs[] = {PACK_SEC_SAMPLES, PACK_SEC_SPANS, PACK_SEC_EPOCHS, PACK_SEC_BATCHES, PACK_SEC_ROWS,
                  PACK_SEC_SEGMENTS};
    all = 1;
    for (size_t i = 0; i < sizeof secs / sizeof *secs; i++) {
        const pack_section_ref *s = &h->sec[secs[i]];
        for (uint64_t off = s->offset; off < s->offset + s->bytes; off++) {
            memcpy(bad, img, n);
            bad[off] ^= 0x80;
            if (opens(bad, n, err, sizeof err)) { all = 0; printf("# section %d byte %llu accepted\n", secs[i],
                                                                     (unsigned long long)(off - s->offset)); }
        }
    }
    T_OK(all, "%s: damaged index bytes refused", path);

    // Any single low-bit flip anywhere: refused or accepted, never a crash.
    int accepted = 0;
    for (size_t off = 0; off < n; off++) {
        memcpy(bad, img, n);
        bad[off] ^= 0x01;
        accepted += opens(bad, n, err, sizeof err);
    }
    T_OK(1, "%s: %d of %zu low-bit flips accepted (token ids, padding, seed), none crashed", path, accepted, n);
    printf("# %s: %d of %zu single low-bit flips accepted (payload bytes)\n", path, accepted, n);

    // Through the file path too: a few truncations, including inside the header.
    char tmp[] = "/tmp/test_pack_file.XXXXXX";
    int fd = mkstemp(tmp);
    size_t cuts[] = {0, 5, 100, PACK_HEADER_BYTES - 1, PACK_HEADER_BYTES, n / 2, n - 1};
    all = fd >= 0;
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts && fd >= 0; i++) {
        if (ftruncate(fd, 0) || pwrite(fd, img, cuts[i], 0) != (ssize_t)cuts[i]) { all = 0; break; }
        pack_file p;
        err[0] = 0;
        if (pack_open(&p, tmp, err, sizeof err) == 0 || !strstr(err, tmp)) { all = 0; printf("# %s\n", err); }
    }
    T_OK(all, "%s: truncated files refused with the path in the message", path);
    if (fd >= 0) { close(fd); unlink(tmp); }
    free(img); free(bad);
}

int main(void) {
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) {
        pack_file p;
        char err[512];
        int ok = pack_open(&p, fixtures[i], err, sizeof err) == 0;
        T_OK(ok, "open %s: %s", fixtures[i], err);
        if (!ok) continue;
        test_accessors(&p, fixtures[i]);
        test_schedule(&p, fixtures[i]);
        pack_close(&p);
        test_corruption(fixtures[i]);
    }
    char err[256];
    pack_file p;
    T_OK(pack_open(&p, "tests/fixtures/pack/does-not-exist.pack", err, sizeof err) != 0 && strstr(err, "cannot open"),
         "missing file: %s", err);
    T_OK(pack_open(&p, "tests/fixtures/pack/small.jsonl", err, sizeof err) != 0 && strstr(err, "magic"),
         "a JSONL file is not a pack: %s", err);
    return T_DONE("test_pack_file");
}
