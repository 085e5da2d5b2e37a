// lib/bpe_train.c: byte-level BPE training (see bpe_train.h).
#include "bpe_train.h"
#include "check.h"
#include "hashmap.h"
#include "tok_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

const char BPE_QWEN2_SPLIT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// One distinct pre-tokenized piece: its symbols (token ids) and how often it occurs.
typedef struct { int32_t *sym; size_t n; uint64_t count; } bpe_word;

struct bpe_trainer {
    pcre2_code *re;
    pcre2_match_data *md;
    strmap word_ix;                    // piece bytes -> index into words
    bpe_word *words; size_t n_words, cap_words;
    // Model tokens: raw bytes tok_bytes + tok_off[id], tok_len[id] bytes.
    char *tok_bytes; size_t tok_bytes_n, tok_bytes_cap;
    size_t *tok_off, *tok_len; size_t n_tok, cap_tok;
    strmap tok_ix;                     // raw bytes -> id
    int32_t (*merges)[2]; size_t n_merges, cap_merges;
};

uint32_t bpe_byte_char(uint8_t b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    // The 68 other bytes, in increasing order, take U+0100, U+0101, ...
    uint32_t k = 0;
    for (unsigned c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE)) k++;
    return 0x100 + k;
}

static int32_t tok_add(bpe_trainer *b, const char *s, size_t n) {
    int32_t id = strmap_get(&b->tok_ix, s, n);
    if (id >= 0) return id;   // two pairs may spell one token: one id, two merges
    b->tok_bytes = xgrow(b->tok_bytes, &b->tok_bytes_cap, b->tok_bytes_n + n, 1);
    memcpy(b->tok_bytes + b->tok_bytes_n, s, n);
    size_t c = b->cap_tok;
    b->tok_off = xgrow(b->tok_off, &c, b->n_tok + 1, sizeof *b->tok_off);
    b->tok_len = xgrow(b->tok_len, &b->cap_tok, b->n_tok + 1, sizeof *b->tok_len);
    b->tok_off[b->n_tok] = b->tok_bytes_n;
    b->tok_len[b->n_tok] = n;
    b->tok_bytes_n += n;
    id = (int32_t)b->n_tok++;
    strmap_put(&b->tok_ix, s, n, id);
    return id;
}

bpe_trainer *bpe_trainer_new(void) {
    bpe_trainer *b = xcalloc(1, sizeof *b);
    b->re = pretok_compile("bpe_train", BPE_QWEN2_SPLIT, strlen(BPE_QWEN2_SPLIT), 0);
    b->md = pcre2_match_data_create_from_pattern(b->re, NULL);
    CHECK(b->md, "pcre2_match_data_create failed");
    strmap_init(&b->word_ix, 1024);
    strmap_init(&b->tok_ix, 1024);
    // Ids 0..255: the bytes in the order GPT-2's table lists them (printable first).
    for (int pass = 0; pass < 2; pass++)
        for (unsigned c = 0; c < 256; c++) {
            int printable = bpe_byte_char((uint8_t)c) == c;
            if (printable == (pass == 0)) { char ch = (char)c; tok_add(b, &ch, 1); }
        }
    return b;
}

void bpe_trainer_free(bpe_trainer *b) {
    if (!b) return;
    pcre2_match_data_free(b->md);
    pcre2_code_free(b->re);
    strmap_free(&b->word_ix); strmap_free(&b->tok_ix);
    for (size_t i = 0; i < b->n_words; i++) free(b->words[i].sym);
    free(b->words); free(b->tok_bytes); free(b->tok_off); free(b->tok_len); free(b->merges);
    free(b);
}

static void add_piece(bpe_trainer *b, const char *p, size_t n) {
    int32_t w = strmap_get(&b->word_ix, p, n);
    if (w >= 0) { b->words[w].count++; return; }
    b->words = xgrow(b->words, &b->cap_words, b->n_words + 1, sizeof *b->words);
    bpe_word *nw = &b->words[b->n_words];
    nw->sym = xmalloc(n * sizeof *nw->sym);
    nw->n = n;
    nw->count = 1;
    for (size_t i = 0; i < n; i++) nw->sym[i] = strmap_get(&b->tok_ix, p + i, 1);
    strmap_put(&b->word_ix, p, n, (int32_t)b->n_words++);
}

void bpe_trainer_add(bpe_trainer *b, const char *text, size_t len) {
    CHECK(b->n_merges == 0, "bpe_trainer_add after bpe_trainer_run");
    size_t at = 0;
    while (at < len) {
        int rc = pcre2_match(b->re, (PCRE2_SPTR)text, len, at, 0, b->md, NULL);
        if (rc < 0) { add_piece(b, text + at, len - at); break; }   // a gap to the end
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(b->md);
        if (ov[0] > at) add_piece(b, text + at, ov[0] - at);        // a gap (Isolated keeps it)
        if (ov[1] == ov[0]) { at = ov[1] + 1; continue; }            // cannot happen with R
        add_piece(b, text + ov[0], ov[1] - ov[0]);
        at = ov[1];
    }
}

size_t bpe_trainer_run(bpe_trainer *b, size_t max_merges, size_t min_count) {
    size_t made = 0;
    char *buf = NULL; size_t buf_cap = 0;
    while (made < max_merges) {
        // Count every adjacent pair, weighted by the piece's frequency.
        u64map pairs;
        u64map_init(&pairs, 1024);
        for (size_t w = 0; w < b->n_words; w++) {
            const bpe_word *wd = &b->words[w];
            for (size_t i = 0; i + 1 < wd->n; i++) {
                uint64_t key = (uint64_t)(uint32_t)wd->sym[i] << 32 | (uint32_t)wd->sym[i + 1], c = 0;
                u64map_get(&pairs, key, &c);
                u64map_put(&pairs, key, c + wd->count);
            }
        }
        uint64_t best = UINT64_MAX, best_c = 0;
        for (size_t s = 0; s < pairs.cap; s++) {
            uint64_t k = pairs.slots[s].key, c = pairs.slots[s].val;
            if (k == UINT64_MAX) continue;
            if (c > best_c || (c == best_c && k < best)) { best = k; best_c = c; }
        }
        u64map_free(&pairs);
        if (best_c < min_count || best_c == 0) break;
        int32_t l = (int32_t)(best >> 32), r = (int32_t)(best & 0xffffffffu);
        size_t ln = b->tok_len[l], rn = b->tok_len[r];
        buf = xgrow(buf, &buf_cap, ln + rn, 1);
        memcpy(buf, b->tok_bytes + b->tok_off[l], ln);
        memcpy(buf + ln, b->tok_bytes + b->tok_off[r], rn);
        int32_t nid = tok_add(b, buf, ln + rn);
        b->merges = xgrow(b->merges, &b->cap_merges, b->n_merges + 1, sizeof *b->merges);
        b->merges[b->n_merges][0] = l;
        b->merges[b->n_merges][1] = r;
        b->n_merges++;
        // Apply it left to right, without overlap, in every piece.
        for (size_t w = 0; w < b->n_words; w++) {
            bpe_word *wd = &b->words[w];
            size_t o = 0;
            for (size_t i = 0; i < wd->n; i++) {
                if (i + 1 < wd->n && wd->sym[i] == l && wd->sym[i + 1] == r) { wd->sym[o++] = nid; i++; }
                else wd->sym[o++] = wd->sym[i];
            }
            wd->n = o;
        }
        made++;
    }
    free(buf);
    return made;
}

size_t bpe_trainer_n_tokens(const bpe_trainer *b) { return b->n_tok; }
size_t bpe_trainer_n_merges(const bpe_trainer *b) { return b->n_merges; }
const char *bpe_trainer_token(const bpe_trainer *b, size_t id, size_t *len) {
    CHECK(id < b->n_tok, "token id %zu out of range", id);
    *len = b->tok_len[id];
    return b->tok_bytes + b->tok_off[id];
}

// A token's bytes written through bytes_to_unicode, as UTF-8 (malloc'ed).
static char *bytelevel_str(const char *s, size_t n) {
    char *out = xmalloc(2 * n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = bpe_byte_char((uint8_t)s[i]);
        if (c < 0x80) *o++ = (char)c;
        else { *o++ = (char)(0xC0 | (c >> 6)); *o++ = (char)(0x80 | (c & 0x3F)); }
    }
    *o = 0;
    return out;
}

static json_t *bytelevel_obj(void) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0,
                     "use_regex", 0);
}

char *bpe_trainer_json(const bpe_trainer *b, const char *const *specials, size_t n_specials) {
    json_t *root = json_object();
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_t *added = json_array();
    for (size_t i = 0; i < n_specials; i++)
        json_array_append_new(added, json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id",
                                               (json_int_t)(b->n_tok + i), "content", specials[i],
                                               "single_word", 0, "lstrip", 0, "rstrip", 0,
                                               "normalized", 0, "special", 1));
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(root, "normalizer", json_pack("{s:s}", "type", "NFC"));
    json_t *split = json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", BPE_QWEN2_SPLIT,
                              "behavior", "Isolated", "invert", 0);
    json_object_set_new(root, "pre_tokenizer",
                        json_pack("{s:s, s:[o, o]}", "type", "Sequence", "pretokenizers", split, bytelevel_obj()));
    json_object_set_new(root, "post_processor", bytelevel_obj());
    json_object_set_new(root, "decoder", bytelevel_obj());
    json_t *vocab = json_object(), *merges = json_array();
    for (size_t i = 0; i < b->n_tok; i++) {
        char *s = bytelevel_str(b->tok_bytes + b->tok_off[i], b->tok_len[i]);
        json_object_set_new(vocab, s, json_integer((json_int_t)i));
        free(s);
    }
    for (size_t m = 0; m < b->n_merges; m++) {
        char *l = bytelevel_str(b->tok_bytes + b->tok_off[b->merges[m][0]], b->tok_len[b->merges[m][0]]);
        char *r = bytelevel_str(b->tok_bytes + b->tok_off[b->merges[m][1]], b->tok_len[b->merges[m][1]]);
        // "left right": every tokenizers version reads it (a byte-level token has no plain space)
        size_t ln = strlen(l), rn = strlen(r);
        char *lr = xmalloc(ln + rn + 2);
        memcpy(lr, l, ln); lr[ln] = ' '; memcpy(lr + ln + 1, r, rn + 1);
        json_array_append_new(merges, json_string(lr));
        free(l); free(r); free(lr);
    }
    json_t *model = json_pack("{s:s, s:n, s:n, s:s, s:s, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                              "unk_token", "continuing_subword_prefix", "", "end_of_word_suffix", "", "fuse_unk", 0,
                              "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", merges);
    CHECK(model, "json_pack failed");
    json_object_set_new(root, "model", model);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    CHECK(text, "json_dumps failed");
    json_decref(root);
    size_t n = strlen(text);
    char *out = xmalloc(n + 2);
    memcpy(out, text, n);
    out[n] = '\n'; out[n + 1] = 0;
    free(text);
    return out;
}
