// lib/pack_order.c: Trainer sample orders; best-fit and next-fit row packing.
#include "pack_order.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

void pack_order_sequential(uint32_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (uint32_t)i;
}

void pack_order_random(mt19937 *g, uint64_t seed, size_t epoch, uint32_t *out, size_t n) {
    mt_seed(g, seed + epoch);
    mt_randperm(g, out, n);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void pack_order_group_by_length(mt19937 *g, const uint32_t *lengths, size_t n, size_t bs_eff, uint32_t *out) {
    CHECK(bs_eff >= 1, "group_by_length needs a batch size");
    mt_skip(g, 2);   // torch.empty((), dtype=int64).random_(): the DataLoader iterator's base seed
    mt_randperm(g, out, n);
    if (n == 0) return;
    size_t mult = n / (4 * bs_eff);
    if (mult > 50) mult = 50;
    if (mult == 0) mult = 1;
    size_t mega = mult * bs_eff;
    // Keys (UINT32_MAX - length) << 32 | position: all distinct, so any sort
    // ascending by key is the stable descending-by-length sort.
    size_t cap = mega < n ? mega : n;
    uint64_t *key = xmalloc(cap * sizeof *key);
    uint32_t *sorted = xmalloc(cap * sizeof *sorted);
    size_t best_chunk = 0;
    uint32_t best_len = 0;
    for (size_t c0 = 0; c0 < n; c0 += mega) {
        size_t m = n - c0 < mega ? n - c0 : mega;
        for (size_t i = 0; i < m; i++) key[i] = (uint64_t)(UINT32_MAX - lengths[out[c0 + i]]) << 32 | i;
        qsort(key, m, sizeof *key, cmp_u64);
        for (size_t i = 0; i < m; i++) sorted[i] = out[c0 + (uint32_t)key[i]];
        memcpy(out + c0, sorted, m * sizeof *out);
        // torch.argmax over the chunk maxima: the first chunk with the largest.
        if (c0 == 0 || lengths[out[c0]] > best_len) { best_len = lengths[out[c0]]; best_chunk = c0; }
    }
    free(key);
    free(sorted);
    uint32_t t = out[0]; out[0] = out[best_chunk]; out[best_chunk] = t;
}

// ---- bin packing ----

// A set of small integers [0, n) with "smallest member >= i" in O(log64 n):
// level 0 holds one bit per integer, each higher level one bit per non-zero
// word below it, up to a single top word.
#define FB_MAX_LEVELS 8
typedef struct {
    int levels;
    size_t words[FB_MAX_LEVELS];
    uint64_t *lv[FB_MAX_LEVELS];
} fbits;

static void fb_init(fbits *f, size_t n) {
    memset(f, 0, sizeof *f);
    size_t bits = n ? n : 1;
    do {
        CHECK(f->levels < FB_MAX_LEVELS, "bit set too large");
        size_t w = (bits + 63) / 64;
        f->words[f->levels] = w;
        f->lv[f->levels] = xcalloc(w, sizeof(uint64_t));
        f->levels++;
        bits = w;
    } while (bits > 1);
}
static void fb_free(fbits *f) {
    for (int l = 0; l < f->levels; l++) free(f->lv[l]);
}
static void fb_set(fbits *f, size_t i) {
    for (int l = 0; l < f->levels; l++, i /= 64) f->lv[l][i / 64] |= 1ull << (i % 64);
}
static void fb_clear(fbits *f, size_t i) {
    for (int l = 0; l < f->levels; l++, i /= 64) {
        f->lv[l][i / 64] &= ~(1ull << (i % 64));
        if (f->lv[l][i / 64]) break;   // the word still has members: parents stay set
    }
}
// Smallest member >= i, or SIZE_MAX.
static size_t fb_next(const fbits *f, size_t i) {
    int l = 0;
    size_t pos = i;
    for (;;) {   // climb until a word holds a set bit at or after pos
        size_t w = pos / 64;
        if (w >= f->words[l]) return SIZE_MAX;
        uint64_t m = f->lv[l][w] & (~0ull << (pos % 64));
        if (m) { pos = w * 64 + (size_t)__builtin_ctzll(m); break; }
        if (++l == f->levels) return SIZE_MAX;
        pos = w + 1;   // the words after w, as bits of the level above
    }
    while (l > 0) {   // descend to the first member under that bit
        l--;
        pos = pos * 64 + (size_t)__builtin_ctzll(f->lv[l][pos]);
    }
    return pos;
}

#define NONE UINT32_MAX

// Gather samples into CSR rows given each placed sample's row (in placement order).
static size_t rows_to_csr(const uint32_t *placed, const uint32_t *row_of, size_t n, size_t n_rows,
                          uint64_t *row_first, uint32_t *samples) {
    memset(row_first, 0, (n_rows + 1) * sizeof *row_first);
    for (size_t k = 0; k < n; k++) row_first[row_of[k] + 1]++;
    for (size_t r = 0; r < n_rows; r++) row_first[r + 1] += row_first[r];
    uint64_t *fill = xmalloc((n_rows ? n_rows : 1) * sizeof *fill);
    memcpy(fill, row_first, n_rows * sizeof *fill);
    for (size_t k = 0; k < n; k++) samples[fill[row_of[k]]++] = placed[k];
    free(fill);
    return n_rows;
}

size_t pack_bins_best_fit(const uint32_t *order, size_t n, const uint32_t *lengths, uint32_t cap,
                          uint64_t *row_first, uint32_t *samples) {
    if (n == 0) { row_first[0] = 0; return 0; }
    CHECK(n < NONE, "too many samples for one epoch (%zu)", n);
    // Longest first, ties in input order: a stable counting sort (lengths <= cap).
    uint64_t *cnt = xcalloc((size_t)cap + 2, sizeof *cnt);
    for (size_t i = 0; i < n; i++) {
        CHECK(lengths[order[i]] >= 1 && lengths[order[i]] <= cap, "sample %u of length %u does not fit a row of %u",
              order[i], lengths[order[i]], cap);
        cnt[cap - lengths[order[i]] + 1]++;
    }
    for (size_t k = 1; k <= (size_t)cap + 1; k++) cnt[k] += cnt[k - 1];
    uint32_t *placed = xmalloc(n * sizeof *placed);
    for (size_t i = 0; i < n; i++) placed[cnt[cap - lengths[order[i]]]++] = order[i];
    free(cnt);

    // Open rows by room left: one stack of rows per room value (head/next),
    // and the set of room values that have a row, for "least room >= len".
    uint32_t *head = xmalloc(((size_t)cap + 1) * sizeof *head);
    for (size_t r = 0; r <= cap; r++) head[r] = NONE;
    uint32_t *next = xmalloc(n * sizeof *next), *room = xmalloc(n * sizeof *room);
    uint32_t *row_of = xmalloc(n * sizeof *row_of);
    fbits open;
    fb_init(&open, (size_t)cap + 1);
    size_t n_rows = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t len = lengths[placed[k]];
        size_t r = fb_next(&open, len);
        uint32_t row;
        if (r == SIZE_MAX) {                // nothing fits: open a new row
            row = (uint32_t)n_rows++;
            room[row] = cap;
        } else {                            // take the top row of that room value
            row = head[r];
            head[r] = next[row];
            if (head[r] == NONE) fb_clear(&open, r);
        }
        row_of[k] = row;
        room[row] -= len;
        if (room[row] > 0) {
            next[row] = head[room[row]];
            head[room[row]] = row;
            fb_set(&open, room[row]);
        }
    }
    fb_free(&open);
    free(head); free(next); free(room);
    rows_to_csr(placed, row_of, n, n_rows, row_first, samples);
    free(placed); free(row_of);
    return n_rows;
}

size_t pack_bins_next_fit(const uint32_t *order, size_t n, const uint32_t *lengths, uint32_t cap,
                          uint64_t *row_first, uint32_t *samples) {
    size_t n_rows = 0;
    uint64_t used = cap;   // forces a new row for the first sample
    row_first[0] = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = lengths[order[i]];
        CHECK(len >= 1 && len <= cap, "sample %u of length %u does not fit a row of %u", order[i], len, cap);
        if (used + len > cap) {
            if (n_rows) row_first[n_rows] = i;
            n_rows++;
            used = 0;
        }
        used += len;
        samples[i] = order[i];
    }
    row_first[n_rows] = n;
    return n_rows;
}
