// lib/tokenizer.c: encoding and decoding with a loaded tokenizer (tok_load.c
// builds the tables); one tok_ctx per thread.
#include "tok_internal.h"
#include "check.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

void tok_ids_push(tok_ids *a, int32_t id) {
    if (a->n == a->cap) a->v = xgrow(a->v, &a->cap, a->n + 1, sizeof *a->v);
    a->v[a->n++] = id;
}
void tok_ids_free(tok_ids *a) { free(a->v); memset(a, 0, sizeof *a); }

// ---- per-thread word cache ---------------------------------------------
// Pieces repeat a lot (words, punctuation, whitespace runs), and BPE is the
// expensive step: a piece's ids are kept until the table is half full or the
// arenas pass their cap, then everything is dropped at once (no LRU
// bookkeeping on the hot path).
enum { CACHE_SLOTS = 1 << 16, CACHE_MAX_PIECE = 256, CACHE_ARENA_MAX = 8u << 20 };

typedef struct { uint64_t h; uint32_t koff, klen, ioff, nids; } centry;

struct tok_ctx {
    const tok *t;
    pcre2_match_data *md[TOK_MAX_STAGES];
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    bpe_scratch *bpe;
    tok_split *sp_raw, *sp_norm; size_t sp_raw_cap, sp_norm_cap;
    centry *cache; size_t cache_n;
    char *keys; size_t keys_n, keys_cap;
    int32_t *cids; size_t cids_n, cids_cap;
    size_t hits, misses;
};

tok_ctx *tok_ctx_new(const tok *t) {
    tok_ctx *c = xcalloc(1, sizeof *c);
    c->t = t;
    for (size_t i = 0; i < t->n_stages; i++) {
        c->md[i] = pcre2_match_data_create_from_pattern(t->re[i], NULL);
        CHECK(c->md[i], "pcre2_match_data_create failed");
    }
    // A private JIT stack: long whitespace runs backtrack through \s+(?!\S).
    c->mctx = pcre2_match_context_create(NULL);
    c->jit = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    CHECK(c->mctx && c->jit, "pcre2 context allocation failed");
    pcre2_jit_stack_assign(c->mctx, NULL, c->jit);
    c->bpe = bpe_scratch_new();
    c->cache = xcalloc(CACHE_SLOTS, sizeof *c->cache);
    return c;
}

void tok_ctx_free(tok_ctx *c) {
    if (!c) return;
    for (size_t i = 0; i < TOK_MAX_STAGES; i++) if (c->md[i]) pcre2_match_data_free(c->md[i]);
    pcre2_match_context_free(c->mctx);
    pcre2_jit_stack_free(c->jit);
    bpe_scratch_free(c->bpe);
    free(c->sp_raw); free(c->sp_norm);
    free(c->cache); free(c->keys); free(c->cids);
    free(c);
}

void tok_ctx_stats(const tok_ctx *c, size_t *hits, size_t *misses) { *hits = c->hits; *misses = c->misses; }

static void cache_clear(tok_ctx *c) {
    memset(c->cache, 0, CACHE_SLOTS * sizeof *c->cache);
    c->cache_n = c->keys_n = c->cids_n = 0;
}

static void piece_ids(tok_ctx *c, const unsigned char *p, size_t n, tok_ids *out) {
    const tok *t = c->t;
    if (n == 1) { tok_ids_push(out, t->byte_id[p[0]]); return; }
    if (n > CACHE_MAX_PIECE) { bpe_piece(t, c->bpe, p, n, out); return; }
    uint64_t h = hash_bytes(p, n);
    size_t mask = CACHE_SLOTS - 1, i = (size_t)h & mask;
    for (;;) {
        centry *e = &c->cache[i];
        if (!e->klen) break;
        if (e->h == h && e->klen == n && !memcmp(c->keys + e->koff, p, n)) {
            c->hits++;
            if (out->n + e->nids > out->cap) out->v = xgrow(out->v, &out->cap, out->n + e->nids, sizeof *out->v);
            memcpy(out->v + out->n, c->cids + e->ioff, e->nids * sizeof *out->v);
            out->n += e->nids;
            return;
        }
        i = (i + 1) & mask;
    }
    c->misses++;
    size_t before = out->n;
    bpe_piece(t, c->bpe, p, n, out);
    size_t k = out->n - before;
    if (c->cache_n * 2 >= CACHE_SLOTS || c->keys_n + n > CACHE_ARENA_MAX || c->cids_n + k > CACHE_ARENA_MAX) {
        cache_clear(c);
        i = (size_t)h & mask;
    }
    c->keys = xgrow(c->keys, &c->keys_cap, c->keys_n + n, 1);
    c->cids = xgrow(c->cids, &c->cids_cap, c->cids_n + k, sizeof *c->cids);
    memcpy(c->keys + c->keys_n, p, n);
    memcpy(c->cids + c->cids_n, out->v + before, k * sizeof *c->cids);
    c->cache[i] = (centry){h, (uint32_t)c->keys_n, (uint32_t)n, (uint32_t)c->cids_n, (uint32_t)k};
    c->keys_n += n; c->cids_n += k; c->cache_n++;
}

// ---- pre-tokenization ------------------------------------------------------
// Split s with regex stage k (behaviour Isolated: matches and the gaps between
// them are pieces), each piece going on to stage k+1, the last to BPE.
// Returns 0, or -1 when the regex gives up (PCRE2's match limit).
static int split_stage(tok_ctx *c, size_t k, const char *s, size_t n, tok_ids *out) {
    if (n == 0) return 0;
    if (k == c->t->n_stages) { piece_ids(c, (const unsigned char *)s, n, out); return 0; }
    pcre2_code *re = c->t->re[k];
    pcre2_match_data *md = c->md[k];
    size_t gap = 0, at = 0;
    while (at < n) {
        // A budget linear in the text left: real patterns need a few steps
        // per byte (a 3 MB whitespace run is one match), a catastrophic one
        // needs exponentially many and gives up within milliseconds.
        size_t budget = TOK_MATCH_LIMIT + TOK_MATCH_PER_BYTE * (n - at);
        pcre2_set_match_limit(c->mctx, budget < UINT32_MAX ? (uint32_t)budget : UINT32_MAX);
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, c->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return -1;      // the match limit (or the heap limit it implies)
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {                 // empty match: no piece; step one character
            if (ms >= n) break;
            uint32_t cp;
            at = ms + utf8_next((const unsigned char *)s + ms, &cp);
            continue;
        }
        if (ms > gap && split_stage(c, k + 1, s + gap, ms - gap, out)) return -1;
        if (split_stage(c, k + 1, s + ms, me - ms, out)) return -1;
        gap = at = me;
    }
    return gap < n ? split_stage(c, k + 1, s + gap, n - gap, out) : 0;
}

// One segment between raw-text added tokens: normalise, split out the
// normalized added tokens, pre-tokenize the rest.
static int encode_segment(tok_ctx *c, const char *s, size_t n, unsigned flags, tok_ids *out) {
    if (n == 0) return 0;
    const tok *t = c->t;
    char *norm = NULL;
    if (t->nfc) {
        size_t m = nfc_apply(t, s, n, &norm);
        if (norm) { s = norm; n = m; }
    }
    int rc = 0;
    if (t->norm_set.n) {
        size_t ns = added_find(t, &t->norm_set, s, n, flags, NULL, 0, &c->sp_norm, &c->sp_norm_cap);
        // split_stage does not touch sp_norm, so it can be walked directly.
        for (size_t i = 0; i < ns && !rc; i++) {
            tok_split sp = c->sp_norm[i];
            if (sp.id >= 0) tok_ids_push(out, sp.id);
            else rc = split_stage(c, 0, s + sp.start, sp.end - sp.start, out);
        }
    } else {
        rc = split_stage(c, 0, s, n, out);
    }
    free(norm);
    return rc;
}

static int overlaps(size_t a, size_t b, const size_t *lit, size_t n_lit) {
    for (size_t k = 0; k < n_lit; k++)
        if (a < lit[2 * k + 1] && lit[2 * k] < b) return 1;
    return 0;
}

int tok_encode(tok_ctx *c, const char *text, size_t len, unsigned flags,
               const size_t *literal, size_t n_literal, tok_ids *out, size_t *bad_at) {
    size_t v = utf8_check(text, len);
    if (v != len) { if (bad_at) *bad_at = v; return -1; }
    const tok *t = c->t;
    size_t ns = added_find(t, &t->raw_set, text, len, flags, literal, n_literal, &c->sp_raw, &c->sp_raw_cap);
    size_t before = out->n;
    for (size_t i = 0; i < ns; i++) {
        tok_split sp = c->sp_raw[i];
        if (sp.id >= 0) { tok_ids_push(out, sp.id); continue; }
        // Normalized added tokens are matched after NFC, where offsets into the
        // caller's text are gone: inside untrusted content they stay text.
        unsigned f = flags;
        if (n_literal && overlaps(sp.start, sp.end, literal, n_literal)) f |= TOK_SPECIAL_AS_TEXT;
        if (encode_segment(c, text + sp.start, sp.end - sp.start, f, out)) {
            out->n = before;
            if (bad_at) *bad_at = sp.start;
            return -2;
        }
    }
    return 0;
}

// ---- decoding and accessors ------------------------------------------------
char *tok_decode(const tok *t, const int32_t *ids, size_t n, int skip_special, size_t *len, size_t *bad_index) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->n_ids || !t->id_flags[id]) { if (bad_index) *bad_index = i; return NULL; }
        total += t->id_len[id];
    }
    char *raw = xmalloc(total + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special && (t->id_flags[id] & TID_SPECIAL)) continue;
        memcpy(raw + o, t->id_bytes + t->id_off[id], t->id_len[id]);
        o += t->id_len[id];
    }
    char *txt = xmalloc(3 * o + 1);
    size_t m = utf8_lossy(raw, o, txt);
    txt[m] = 0;
    free(raw);
    *len = m;
    return txt;
}

size_t tok_vocab_size(const tok *t) { return t->n_ids; }
const char *tok_describe(const tok *t) { return t->desc; }

int32_t tok_token_id(const tok *t, const char *text, size_t len) {
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && !memcmp(t->added[i].content, text, len)) return t->added[i].id;
    return strmap_get(&t->vocab, text, len);
}

const char *tok_id_bytes(const tok *t, int32_t id, size_t *len) {
    if (id < 0 || (size_t)id >= t->n_ids || !t->id_flags[id]) return NULL;
    *len = t->id_len[id];
    return t->id_bytes + t->id_off[id];
}

int tok_id_is_special(const tok *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_ids && (t->id_flags[id] & TID_SPECIAL);
}
