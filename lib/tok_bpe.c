// lib/tok_bpe.c: BPE merges on one pre-tokenized piece.
//
// The same algorithm as the Rust library's Word::merge_all, so that ties and
// the rare case of two merge pairs producing the same token resolve the same
// way: a binary min-heap of candidate merges ordered by (rank, position);
// a popped candidate is stale (skipped) when its left symbol was merged away,
// when it has become the last symbol, or when the pair now at that position
// no longer produces the candidate's token.  Symbols form a linked list over
// the initial byte positions, so each merge is O(log n).
#include "tok_internal.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

typedef struct { uint32_t rank, pos; int32_t new_id; } cand;
typedef struct { int32_t id; int32_t prev, next; uint32_t len; } sym;

struct bpe_scratch {
    sym *s; size_t s_cap;
    cand *h; size_t h_cap, h_n;
};

bpe_scratch *bpe_scratch_new(void) { return xcalloc(1, sizeof(bpe_scratch)); }
void bpe_scratch_free(bpe_scratch *b) {
    if (!b) return;
    free(b->s); free(b->h); free(b);
}

static inline int cand_less(const cand *a, const cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bpe_scratch *b, cand c) {
    b->h = xgrow(b->h, &b->h_cap, b->h_n + 1, sizeof *b->h);
    size_t i = b->h_n++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &b->h[p])) break;
        b->h[i] = b->h[p];
        i = p;
    }
    b->h[i] = c;
}

static cand heap_pop(bpe_scratch *b) {
    cand top = b->h[0], last = b->h[--b->h_n];
    size_t i = 0, n = b->h_n;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l >= n) break;
        m = l;
        if (l + 1 < n && cand_less(&b->h[l + 1], &b->h[l])) m = l + 1;
        if (!cand_less(&b->h[m], &last)) break;
        b->h[i] = b->h[m];
        i = m;
    }
    if (n) b->h[i] = last;
    return top;
}

static inline int merge_lookup(const tok *t, int32_t a, int32_t b, uint32_t *rank, int32_t *new_id) {
    uint64_t v;
    if (!u64map_get(&t->merges, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b, &v)) return 0;
    *rank = (uint32_t)(v >> 32);
    *new_id = (int32_t)(uint32_t)v;
    return 1;
}

void bpe_piece(const tok *t, bpe_scratch *b, const unsigned char *p, size_t n, tok_ids *out) {
    if (n == 0) return;
    if (n == 1) { tok_ids_push(out, t->byte_id[p[0]]); return; }
    if (t->ignore_merges) {
        int32_t id = strmap_get(&t->vocab, (const char *)p, n);
        if (id >= 0) { tok_ids_push(out, id); return; }
    }
    CHECK(n < INT32_MAX, "piece too long");
    b->s = xgrow(b->s, &b->s_cap, n, sizeof *b->s);
    sym *s = b->s;
    for (size_t i = 0; i < n; i++) {
        s[i].id = t->byte_id[p[i]];
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        s[i].len = 1;
    }
    b->h_n = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        cand c;
        if (merge_lookup(t, s[i].id, s[i + 1].id, &c.rank, &c.new_id)) {
            c.pos = (uint32_t)i;
            heap_push(b, c);
        }
    }
    while (b->h_n) {
        cand top = heap_pop(b);
        sym *cur = &s[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        sym *right = &s[cur->next];
        uint32_t r; int32_t nid;
        if (!merge_lookup(t, cur->id, right->id, &r, &nid) || nid != top.new_id) continue;
        cur->id = top.new_id;
        cur->len += right->len;
        right->len = 0;
        int32_t rn = right->next;
        cur->next = rn;
        if (rn >= 0) s[rn].prev = (int32_t)top.pos;
        cand c;
        if (cur->prev >= 0 && merge_lookup(t, s[cur->prev].id, cur->id, &c.rank, &c.new_id)) {
            c.pos = (uint32_t)cur->prev;
            heap_push(b, c);
        }
        if (rn >= 0 && merge_lookup(t, cur->id, s[rn].id, &c.rank, &c.new_id)) {
            c.pos = top.pos;
            heap_push(b, c);
        }
    }
    for (int32_t i = 0; i >= 0; i = s[i].next) tok_ids_push(out, s[i].id);
}
