// lib/tok_load.c: read tokenizer.json, check that every stage is one this
// library runs exactly, and build the tables (vocabulary, merges, added tokens,
// regexes, NFC bitmap).  Anything else is refused as "unsupported".
#include "tok_internal.h"
#include "check.h"
#include "tok_json.h"
#include "utf8.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// GPT-2's ByteLevel alphabet: byte -> code point, and back (-1: not a byte char).
static uint32_t byte_cp[256];
static int16_t cp_byte[0x144];

static void bytelevel_tables(void) {
    if (byte_cp['!']) return;
    for (int i = 0; i < 0x144; i++) cp_byte[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        byte_cp[b] = printable ? (uint32_t)b : 0x100u + (uint32_t)extra++;
        cp_byte[byte_cp[b]] = (int16_t)b;
    }
}

// ByteLevel decoding of one token string, as the Rust decoder does: when every
// character belongs to the alphabet, the bytes they stand for; otherwise the
// token's own UTF-8.  Writes into out (room for n bytes); returns the length,
// and *all_bytes tells which case applied.
static size_t bytelevel_decode(const char *s, size_t n, char *out, int *all_bytes) {
    size_t o = 0, i = 0;
    while (i < n) {
        uint32_t cp;
        i += utf8_next((const unsigned char *)s + i, &cp);
        if (cp >= 0x144 || cp_byte[cp] < 0) { memcpy(out, s, n); *all_bytes = 0; return n; }
        out[o++] = (char)cp_byte[cp];
    }
    *all_bytes = 1;
    return o;
}

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}
static int jtrue(json_t *o, const char *key, int dflt) {
    json_t *v = json_object_get(o, key);
    return v && !json_is_null(v) ? json_is_true(v) : dflt;
}
static int jempty_str(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

static void check_normalizer(tok *t, json_t *n) {
    if (!n || json_is_null(n)) return;
    const char *type = jstr(n, "type");
    if (type && !strcmp(type, "NFC")) { t->nfc = 1; return; }
    if (type && !strcmp(type, "Sequence")) {
        json_t *list = json_object_get(n, "normalizers");
        size_t i; json_t *e;
        json_array_foreach(list, i, e) {
            const char *et = jstr(e, "type");
            if (et && !strcmp(et, "NFC") && !t->nfc) { t->nfc = 1; continue; }
            die("%s: unsupported tokenizer: normalizer %s inside Sequence (only NFC is supported)",
                t->path, et ? et : "?");
        }
        return;
    }
    die("%s: unsupported tokenizer: normalizer %s (only NFC or none is supported)", t->path, type ? type : "?");
}

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static void add_stage(tok *t, const char *pat, size_t len, int literal) {
    if (t->n_stages == TOK_MAX_STAGES)
        die("%s: unsupported tokenizer: more than %d Split pre-tokenizers", t->path, TOK_MAX_STAGES);
    t->re[t->n_stages++] = pretok_compile(t->path, pat, len, literal);
}

// One pre-tokenizer of the Sequence; returns 1 for the ByteLevel stage.
static int check_pretok_one(tok *t, json_t *p) {
    const char *type = jstr(p, "type");
    if (type && !strcmp(type, "Split")) {
        const char *beh = jstr(p, "behavior");
        if (!beh || strcmp(beh, "Isolated"))
            die("%s: unsupported tokenizer: Split behavior %s (only Isolated is supported)", t->path, beh ? beh : "?");
        if (jtrue(p, "invert", 0)) die("%s: unsupported tokenizer: Split with invert", t->path);
        json_t *pat = json_object_get(p, "pattern");
        json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        if (json_is_string(re)) add_stage(t, json_string_value(re), json_string_length(re), 0);
        else if (json_is_string(lit)) add_stage(t, json_string_value(lit), json_string_length(lit), 1);
        else die("%s: malformed tokenizer: Split pattern has neither Regex nor String", t->path);
        return 0;
    }
    if (type && !strcmp(type, "ByteLevel")) {
        if (jtrue(p, "add_prefix_space", 0))
            die("%s: unsupported tokenizer: ByteLevel add_prefix_space=true", t->path);
        if (jtrue(p, "use_regex", 1)) add_stage(t, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, 0);
        return 1;
    }
    die("%s: unsupported tokenizer: pre-tokenizer %s (only Split and ByteLevel are supported)",
        t->path, type ? type : "?");
}

static void check_pretok(tok *t, json_t *p) {
    if (!p || json_is_null(p))
        die("%s: unsupported tokenizer: no pre-tokenizer (only byte-level BPE is supported)", t->path);
    const char *type = jstr(p, "type");
    int bytelevel = 0;
    if (type && !strcmp(type, "Sequence")) {
        size_t i; json_t *e;
        json_array_foreach(json_object_get(p, "pretokenizers"), i, e) {
            if (bytelevel)
                die("%s: unsupported tokenizer: pre-tokenizer after ByteLevel", t->path);
            bytelevel = check_pretok_one(t, e);
        }
    } else {
        bytelevel = check_pretok_one(t, p);
    }
    if (!bytelevel)
        die("%s: unsupported tokenizer: no ByteLevel pre-tokenizer (only byte-level BPE is supported)", t->path);
}

static void check_decoder(tok *t, json_t *d) {
    if (!d || json_is_null(d)) return;
    const char *type = jstr(d, "type");
    if (type && !strcmp(type, "ByteLevel")) return;
    die("%s: unsupported tokenizer: decoder %s (only ByteLevel is supported)", t->path, type ? type : "?");
}

static void check_model(tok *t, json_t *m) {
    if (!json_is_object(m)) die("%s: malformed tokenizer: no \"model\" object", t->path);
    const char *type = jstr(m, "type");
    if (type ? strcmp(type, "BPE") != 0 : !json_object_get(m, "merges"))
        die("%s: unsupported tokenizer: model type %s (only byte-level BPE is supported)",
            t->path, type ? type : "(none)");
    json_t *dropout = json_object_get(m, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0)
        die("%s: unsupported tokenizer: BPE dropout (ids would be random)", t->path);
    if (!jempty_str(m, "continuing_subword_prefix") || !jempty_str(m, "end_of_word_suffix"))
        die("%s: unsupported tokenizer: BPE continuing_subword_prefix/end_of_word_suffix", t->path);
    t->ignore_merges = jtrue(m, "ignore_merges", 0);
}

static void ensure_id(tok *t, size_t *cap, size_t id) {
    if (id < *cap) return;
    size_t old = *cap, nc = old ? old : 1024;
    while (nc <= id) nc *= 2;
    t->id_off = xrealloc(t->id_off, nc * sizeof *t->id_off);
    t->id_len = xrealloc(t->id_len, nc * sizeof *t->id_len);
    t->id_flags = xrealloc(t->id_flags, nc);
    for (size_t i = old; i < nc; i++) { t->id_off[i] = 0; t->id_len[i] = 0; t->id_flags[i] = 0; }
    *cap = nc;
}

typedef struct { char *s; size_t n, cap; } arena;
static uint32_t arena_put(arena *a, const char *s, size_t n) {
    a->s = xgrow(a->s, &a->cap, a->n + n + 1, 1);
    CHECK(a->n + n < UINT32_MAX, "token arena over 4 GiB");
    memcpy(a->s + a->n, s, n);
    uint32_t off = (uint32_t)a->n;
    a->n += n;
    return off;
}

// The jansson path: the same lists from the tree, with errors that name the entry.
static void vocab_from_tree(tok *t, json_t *vocab, tok_strs *out) {
    if (!json_is_object(vocab)) die("%s: malformed tokenizer: model.vocab is not an object", t->path);
    const char *key; json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= INT32_MAX)
            die("%s: malformed tokenizer: vocab entry \"%s\" has no valid id", t->path, key);
        tok_strs_add(out, key, strlen(key), json_integer_value(v));
    }
}

static void merges_from_tree(tok *t, json_t *merges, tok_strs *out) {
    if (!json_is_array(merges)) die("%s: malformed tokenizer: model.merges is not an array", t->path);
    size_t i; json_t *m;
    json_array_foreach(merges, i, m) {
        if (json_is_string(m)) {
            // "left right": byte-level tokens never hold a plain space.
            const char *l = json_string_value(m), *sp = strchr(l, ' ');
            if (!sp || strchr(sp + 1, ' '))
                die("%s: malformed tokenizer: merge %zu \"%s\" is not two tokens", t->path, i, l);
            tok_strs_add(out, l, (size_t)(sp - l), 0);
            tok_strs_add(out, sp + 1, strlen(sp + 1), 0);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            for (int k = 0; k < 2; k++)
                tok_strs_add(out, json_string_value(json_array_get(m, k)), json_string_length(json_array_get(m, k)), 0);
        } else {
            die("%s: malformed tokenizer: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", t->path, i);
        }
    }
}

static void load_vocab(tok *t, const tok_strs *vs, size_t *cap, arena *ar) {
    strmap_init(&t->vocab, vs->n);
    char *buf = NULL; size_t bcap = 0;
    for (size_t i = 0; i < vs->n; i++) {
        const char *key = vs->s + vs->off[i];
        size_t klen = vs->len[i], id = (size_t)vs->val[i];
        if (vs->val[i] < 0 || id >= TOK_MAX_IDS)
            die("%s: malformed tokenizer: vocab entry %zu has id %lld (ids must be below %d)", t->path, i,
                (long long)vs->val[i], TOK_MAX_IDS);
        ensure_id(t, cap, id);
        if (id + 1 > t->n_ids) t->n_ids = id + 1;
        buf = xgrow(buf, &bcap, klen + 1, 1);
        int all;
        size_t bl = bytelevel_decode(key, klen, buf, &all);
        t->id_off[id] = arena_put(ar, buf, bl);
        t->id_len[id] = (uint32_t)bl;
        t->id_flags[id] |= TID_MODEL;
        if (all) strmap_put(&t->vocab, buf, bl, (int32_t)id);
    }
    free(buf);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = strmap_get(&t->vocab, &c, 1);
        if (t->byte_id[b] < 0)
            die("%s: unsupported tokenizer: the vocabulary has no token for byte 0x%02X (not byte-level BPE)",
                t->path, b);
    }
}

// Id of merge side s (a vocabulary token, in its byte-level spelling); -1
// when it is not a token; *byte_level 0 when s is not byte-level at all.
static int32_t merge_side(tok *t, const char *s, size_t n, char **buf, size_t *cap, int *byte_level) {
    *buf = xgrow(*buf, cap, n + 1, 1);
    size_t bl = bytelevel_decode(s, n, *buf, byte_level);
    return *byte_level ? strmap_get(&t->vocab, *buf, bl) : -1;
}

static void load_merges(tok *t, const tok_strs *ms) {
    size_t n = ms->n / 2;
    u64map_init(&t->merges, n);
    char *a = NULL, *b = NULL, *ab = NULL; size_t ca = 0, cb = 0, cab = 0;
    for (size_t i = 0; i < n; i++) {
        int bl_l, bl_r;
        int32_t il = merge_side(t, ms->s + ms->off[2 * i], ms->len[2 * i], &a, &ca, &bl_l);
        int32_t ir = merge_side(t, ms->s + ms->off[2 * i + 1], ms->len[2 * i + 1], &b, &cb, &bl_r);
        if (!bl_l || !bl_r) continue;     // a non-byte-level token can never be formed by encoding
        if (il < 0 || ir < 0)
            die("%s: malformed tokenizer: merge %zu uses a token that is not in the vocabulary", t->path, i);
        size_t la = t->id_len[il], lb = t->id_len[ir];
        ab = xgrow(ab, &cab, la + lb, 1);
        memcpy(ab, t->id_bytes + t->id_off[il], la);
        memcpy(ab + la, t->id_bytes + t->id_off[ir], lb);
        int32_t nid = strmap_get(&t->vocab, ab, la + lb);
        if (nid < 0) die("%s: malformed tokenizer: merge %zu makes a token that is not in the vocabulary", t->path, i);
        // Later duplicates win, as when the Rust library collects the merges into a map.
        u64map_put(&t->merges, ((uint64_t)(uint32_t)il << 32) | (uint32_t)ir, ((uint64_t)i << 32) | (uint32_t)nid);
    }
    free(a); free(b); free(ab);
}

static void load_added(tok *t, json_t *list, size_t *cap, arena *ar) {
    if (!list || json_is_null(list)) return;
    if (!json_is_array(list)) die("%s: malformed tokenizer: added_tokens is not an array", t->path);
    size_t n = json_array_size(list);
    t->added = xcalloc(n ? n : 1, sizeof *t->added);
    char *buf = NULL; size_t bcap = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(list, i), *id = json_object_get(e, "id"), *c = json_object_get(e, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || !json_is_string(c))
            die("%s: malformed tokenizer: added_tokens[%zu] needs an integer id and a string content", t->path, i);
        if (json_integer_value(id) >= TOK_MAX_IDS)
            die("%s: malformed tokenizer: added_tokens[%zu] has id %lld (ids must be below %d)", t->path, i,
                (long long)json_integer_value(id), TOK_MAX_IDS);
        tok_added *a = &t->added[t->n_added++];
        a->id = (int32_t)json_integer_value(id);
        a->single_word = (unsigned char)jtrue(e, "single_word", 0);
        a->lstrip = (unsigned char)jtrue(e, "lstrip", 0);
        a->rstrip = (unsigned char)jtrue(e, "rstrip", 0);
        a->normalized = (unsigned char)jtrue(e, "normalized", 1);
        a->special = (unsigned char)jtrue(e, "special", 0);
        const char *s = json_string_value(c);
        size_t len = json_string_length(c);
        if (memchr(s, 0, len)) die("%s: unsupported tokenizer: added token %zu holds a NUL", t->path, i);
        char *norm = NULL;
        if (a->normalized && t->nfc) {
            size_t m = nfc_apply(t, s, len, &norm);
            if (norm) { s = norm; len = m; }
        }
        a->content = xmalloc(len + 1);
        memcpy(a->content, s, len);
        a->content[len] = 0;
        a->len = len;
        free(norm);
        size_t uid = (size_t)a->id;
        ensure_id(t, cap, uid);
        if (uid + 1 > t->n_ids) t->n_ids = uid + 1;
        // Decoding shows the content as matched: tokenizers 0.23 decodes a
        // normalized token from its normalised form (observed, tiny fixture).
        const char *raw = a->content;
        size_t rlen = a->len;
        buf = xgrow(buf, &bcap, rlen + 1, 1);
        int all;
        size_t bl = bytelevel_decode(raw, rlen, buf, &all);
        t->id_off[uid] = arena_put(ar, buf, bl);
        t->id_len[uid] = (uint32_t)bl;
        t->id_flags[uid] |= TID_ADDED | (a->special ? TID_SPECIAL : 0);
    }
    free(buf);
}

tok *tok_load(const char *path) {
    bytelevel_tables();
    tok *t = xcalloc(1, sizeof *t);
    struct stat st;
    if (stat(path, &st) != 0) die("cannot open tokenizer %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        size_t n = strlen(path) + 32;
        t->path = xmalloc(n);
        snprintf(t->path, n, "%s/tokenizer.json", path);
        if (stat(t->path, &st) != 0)
            die("%s: no tokenizer.json in this folder (only Hugging Face tokenizer.json files are supported)", path);
    } else {
        t->path = xstrdup(path);
    }
    // One read; model.vocab and model.merges by the fast path when it can,
    // the rest (or everything, when it cannot) with jansson.
    size_t flen;
    char *text = read_file(t->path, &flen);
    tok_strs vs = {0}, ms = {0};
    char *rest = NULL; size_t rest_n = 0;
    int fast = tokjson_fast(text, flen, &vs, &ms, &rest, &rest_n) == 0;
    json_error_t je;
    json_t *root = fast ? json_loadb(rest, rest_n, JSON_ALLOW_NUL, &je) : json_loadb(text, flen, JSON_ALLOW_NUL, &je);
    free(rest);
    free(text);
    if (!root) die("%s: line %d: not valid JSON: %s", t->path, je.line, je.text);
    if (!json_is_object(root)) die("%s: malformed tokenizer: not a JSON object", t->path);
    json_t *model = json_object_get(root, "model");
    check_model(t, model);
    check_normalizer(t, json_object_get(root, "normalizer"));
    if (t->nfc) nfc_build_table(t);
    check_pretok(t, json_object_get(root, "pre_tokenizer"));
    check_decoder(t, json_object_get(root, "decoder"));
    // post_processor only adds tokens when add_special_tokens is asked for;
    // lorapipe always encodes as add_special_tokens=False (docs/FORMATS.md).

    size_t cap = 0;
    arena ar = {0};
    if (!fast) {
        vocab_from_tree(t, json_object_get(model, "vocab"), &vs);
        merges_from_tree(t, json_object_get(model, "merges"), &ms);
    }
    load_vocab(t, &vs, &cap, &ar);
    t->id_bytes = ar.s;                 // merges read token bytes through it
    load_merges(t, &ms);
    tok_strs_free(&vs); tok_strs_free(&ms);
    load_added(t, json_object_get(root, "added_tokens"), &cap, &ar);
    t->id_bytes = ar.s;
    added_set_build(&t->raw_set, t->added, t->n_added, 0);
    added_set_build(&t->norm_set, t->added, t->n_added, 1);
    snprintf(t->desc, sizeof t->desc, "byte-level BPE, %zu tokens, %zu merges, %zu added tokens, %s, %zu split regex%s",
             t->vocab.n, t->merges.n, t->n_added, t->nfc ? "NFC" : "no normalizer", t->n_stages,
             t->n_stages == 1 ? "" : "es");
    json_decref(root);
    return t;
}

void tok_free(tok *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_stages; i++) pcre2_code_free(t->re[i]);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    added_set_free(&t->raw_set); added_set_free(&t->norm_set);
    free(t->added); free(t->nfc_safe);
    strmap_free(&t->vocab); u64map_free(&t->merges);
    free(t->id_bytes); free(t->id_off); free(t->id_len); free(t->id_flags);
    free(t->path);
    free(t);
}
