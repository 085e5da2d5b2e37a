// tests/unit/test_pack_order.c: sample orders against the Trainer's (golden
// from tests/golden/pack_order.py) and the row-packing invariants.
#include "check.h"
#include "mt19937.h"
#include "pack_order.h"
#include "tap.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN "tests/fixtures/pack/order_golden.json"

static void test_golden(void) {
    json_error_t je;
    json_t *root = json_load_file(GOLDEN, 0, &je);
    T_OK(root != NULL, "cannot read %s: %s", GOLDEN, root ? "" : je.text);
    if (!root) return;
    json_t *cfgs = json_object_get(root, "configs");
    size_t ci;
    json_t *c;
    json_array_foreach(cfgs, ci, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *order = json_string_value(json_object_get(c, "order"));
        size_t bs = (size_t)json_integer_value(json_object_get(c, "batch"));
        size_t accum = (size_t)json_integer_value(json_object_get(c, "accum"));
        uint64_t seed = (uint64_t)json_integer_value(json_object_get(c, "seed"));
        json_t *lens = json_object_get(c, "lengths"), *want = json_object_get(c, "order_per_epoch");
        size_t n = json_array_size(lens);
        uint32_t *len = xmalloc(n * sizeof *len), *got = xmalloc(n * sizeof *got);
        for (size_t i = 0; i < n; i++) len[i] = (uint32_t)json_integer_value(json_array_get(lens, i));
        mt19937 global;
        mt_seed(&global, seed);
        for (size_t e = 0; e < json_array_size(want); e++) {
            if (!strcmp(order, "group_by_length")) pack_order_group_by_length(&global, len, n, bs * accum, got);
            else if (!strcmp(order, "random")) pack_order_random(&global, seed, e, got, n);
            else pack_order_sequential(got, n);
            json_t *w = json_array_get(want, e);
            size_t bad = n;
            for (size_t i = 0; i < n && bad == n; i++)
                if ((json_int_t)got[i] != json_integer_value(json_array_get(w, i))) bad = i;
            T_OK(json_array_size(w) == n && bad == n, "%s epoch %zu: differs from the Trainer at position %zu",
                 name, e, bad);
        }
        free(len); free(got);
    }
    json_decref(root);
}

// Every sample exactly once; returns 1 when rows respect cap.
static int rows_ok(const uint64_t *row_first, const uint32_t *samples, size_t n_rows, size_t n,
                   const uint32_t *len, uint32_t cap, size_t *half_empty) {
    char *seen = xcalloc(n, 1);
    int ok = row_first[0] == 0 && row_first[n_rows] == n;
    *half_empty = 0;
    for (size_t r = 0; r < n_rows && ok; r++) {
        uint64_t used = 0;
        ok &= row_first[r + 1] > row_first[r];
        for (uint64_t k = row_first[r]; k < row_first[r + 1] && ok; k++) {
            ok &= samples[k] < n && !seen[samples[k]];
            if (ok) { seen[samples[k]] = 1; used += len[samples[k]]; }
        }
        ok &= used <= cap;
        if (2 * used <= cap) (*half_empty)++;
    }
    free(seen);
    return ok;
}

static void test_bins(void) {
    // Best fit decreasing by hand: cap 10, lengths 6 5 4 3 2.
    uint32_t len5[5] = {6, 5, 4, 3, 2}, ord5[5] = {0, 1, 2, 3, 4}, seg[5];
    uint64_t rf[6];
    size_t nr = pack_bins_best_fit(ord5, 5, len5, 10, rf, seg);
    T_OK(nr == 2 && rf[1] == 2 && seg[0] == 0 && seg[1] == 2 && seg[2] == 1 && seg[3] == 3 && seg[4] == 4,
         "best fit by hand: %zu rows", nr);
    nr = pack_bins_next_fit(ord5, 5, len5, 10, rf, seg);
    T_OK(nr == 3 && rf[1] == 1 && rf[2] == 3 && rf[3] == 5, "next fit by hand: %zu rows", nr);

    // Random instances: invariants, determinism, best fit no worse than next fit.
    mt19937 g;
    mt_seed(&g, 99);
    for (int trial = 0; trial < 20; trial++) {
        uint32_t cap = 1 + mt_next_u32(&g) % 300;
        size_t n = 1 + mt_next_u32(&g) % 3000;
        uint32_t *len = xmalloc(n * 4), *ord = xmalloc(n * 4), *s1 = xmalloc(n * 4), *s2 = xmalloc(n * 4);
        uint64_t *r1 = xmalloc((n + 1) * 8), *r2 = xmalloc((n + 1) * 8);
        for (size_t i = 0; i < n; i++) len[i] = 1 + mt_next_u32(&g) % cap;
        mt_randperm(&g, ord, n);
        size_t half, bf = pack_bins_best_fit(ord, n, len, cap, r1, s1);
        T_OK(rows_ok(r1, s1, bf, n, len, cap, &half), "best fit trial %d: invariants", trial);
        T_OK(half <= 1, "best fit trial %d: %zu rows at most half full (any-fit allows 1)", trial, half);
        size_t bf2 = pack_bins_best_fit(ord, n, len, cap, r2, s2);
        T_OK(bf2 == bf && !memcmp(s1, s2, n * 4) && !memcmp(r1, r2, (bf + 1) * 8), "best fit deterministic");
        size_t nf = pack_bins_next_fit(ord, n, len, cap, r2, s2);
        T_OK(rows_ok(r2, s2, nf, n, len, cap, &half), "next fit trial %d: invariants", trial);
        T_OK(!memcmp(s2, ord, n * 4), "next fit keeps the order");
        int tight = 1;
        for (size_t r = 0; r + 1 < nf; r++) {
            uint64_t used = 0;
            for (uint64_t k = r2[r]; k < r2[r + 1]; k++) used += len[s2[k]];
            tight &= used + len[s2[r2[r + 1]]] > cap;
        }
        T_OK(tight, "next fit opens a row only when the next sample does not fit");
        T_OK(bf <= nf, "best fit (%zu rows) no worse than next fit (%zu)", bf, nf);
        free(len); free(ord); free(s1); free(s2); free(r1); free(r2);
    }
    // Capacity 1 and a large capacity (several bitmap levels).
    uint32_t one[3] = {1, 1, 1}, o3[3] = {2, 0, 1}, s3[3];
    uint64_t rf3[4];
    T_OK(pack_bins_best_fit(o3, 3, one, 1, rf3, s3) == 3 && s3[0] == 2, "capacity 1: one sample a row, stable");
    uint32_t big[4] = {300000, 200000, 100000, 250000}, o4[4] = {0, 1, 2, 3}, s4[4];
    uint64_t rf4[5];
    size_t n4 = pack_bins_best_fit(o4, 4, big, 500000, rf4, s4);
    T_OK(n4 == 2 && s4[0] == 0 && s4[1] == 1 && s4[2] == 3 && s4[3] == 2, "capacity 500000: %zu rows", n4);
}

int main(void) {
    test_golden();
    test_bins();
    return T_DONE("test_pack_order");
}
