// lib/tok_added.c: find added tokens in text, as the Rust library's
// AddedVocabulary::find_matches does (Aho-Corasick "leftmost-longest", then
// the single_word / lstrip / rstrip rules), so the splits are identical.
//
// Added tokens are few (tens), so instead of an automaton: at each byte that
// starts some token, try the tokens that start with it, longest first; the
// first that matches is the leftmost-longest match.  Non-overlapping matches
// are taken left to right whatever the rules then do with them, like
// find_iter.
#include "tok_internal.h"
#include "check.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static int by_len_desc(const void *a, const void *b) {
    const tok_added *x = *(tok_added *const *)a, *y = *(tok_added *const *)b;
    if (x->len != y->len) return x->len < y->len ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

void added_set_build(tok_added_set *set, tok_added *tokens, size_t n, int normalized) {
    memset(set, 0, sizeof *set);
    set->by_len = xcalloc(n ? n : 1, sizeof *set->by_len);
    for (size_t i = 0; i < n; i++) {
        if (!tokens[i].len || !!tokens[i].normalized != !!normalized) continue;
        set->by_len[set->n++] = &tokens[i];
        set->first[(unsigned char)tokens[i].content[0]] = 1;
    }
    qsort(set->by_len, set->n, sizeof *set->by_len, by_len_desc);
}

void added_set_free(tok_added_set *set) { free(set->by_len); memset(set, 0, sizeof *set); }

// Rust regex \w (Unicode): Alphabetic, marks, decimal digits, connector
// punctuation, joiners.  Alphabetic = letters, Nl and Other_Alphabetic; the
// latter is approximated by the marks plus the circled/squared letters.
static int is_word_cp(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    if (cp == 0x200C || cp == 0x200D) return 1;
    if ((cp >= 0x24B6 && cp <= 0x24E9) || (cp >= 0x1F130 && cp <= 0x1F149) ||
        (cp >= 0x1F150 && cp <= 0x1F169) || (cp >= 0x1F170 && cp <= 0x1F189)) return 1;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

// Rust \s: Unicode White_Space.
static int is_space_cp(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

// Code point that ends at s[end) (valid UTF-8): step back over continuation bytes.
static uint32_t cp_before(const char *s, size_t end, size_t *start) {
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    uint32_t cp;
    utf8_next((const unsigned char *)s + i, &cp);
    *start = i;
    return cp;
}

static int overlaps_literal(size_t a, size_t b, const size_t *lit, size_t n_lit) {
    for (size_t k = 0; k < n_lit; k++)
        if (a < lit[2 * k + 1] && lit[2 * k] < b) return 1;
    return 0;
}

static void push(tok_split **sp, size_t *cap, size_t *n, size_t a, size_t b, int32_t id) {
    *sp = xgrow(*sp, cap, *n + 1, sizeof **sp);
    (*sp)[(*n)++] = (tok_split){a, b, id};
}

size_t added_find(const tok *t, const tok_added_set *set, const char *s, size_t n,
                  unsigned flags, const size_t *literal, size_t n_literal,
                  tok_split **splits, size_t *cap) {
    (void)t;
    size_t ns = 0, start_offset = 0;
    if (set->n) {
        size_t i = 0;
        while (i < n) {
            if (!set->first[(unsigned char)s[i]]) { i++; continue; }
            const tok_added *hit = NULL;
            for (size_t k = 0; k < set->n; k++) {
                const tok_added *a = set->by_len[k];
                if (a->content[0] == s[i] && a->len <= n - i && !memcmp(s + i, a->content, a->len)) { hit = a; break; }
            }
            if (!hit) { i++; continue; }
            size_t start = i, stop = i + hit->len;
            i = stop;                          // find_iter goes on after the match
            if (hit->special && ((flags & TOK_SPECIAL_AS_TEXT) ||
                                 (n_literal && overlaps_literal(start, stop, literal, n_literal))))
                continue;
            if (hit->single_word) {
                size_t dummy;
                int start_space = start == 0 || !is_word_cp(cp_before(s, start, &dummy));
                uint32_t nx = 0;
                if (stop < n) utf8_next((const unsigned char *)s + stop, &nx);
                int stop_space = stop == n || !is_word_cp(nx);
                if (!start_space || !stop_space) continue;
            }
            if (hit->lstrip) {
                size_t ns_ = start;
                while (ns_ > 0) {
                    size_t b;
                    uint32_t cp = cp_before(s, ns_, &b);
                    if (!is_space_cp(cp)) break;
                    ns_ = b;
                }
                start = ns_ > start_offset ? ns_ : start_offset;
            }
            if (hit->rstrip) {
                while (stop < n) {
                    uint32_t cp;
                    size_t k = utf8_next((const unsigned char *)s + stop, &cp);
                    if (!is_space_cp(cp)) break;
                    stop += k;
                }
            }
            if (start_offset < start) push(splits, cap, &ns, start_offset, start, -1);
            push(splits, cap, &ns, start, stop, hit->id);
            start_offset = stop;
        }
    }
    if (start_offset != n) push(splits, cap, &ns, start_offset, n, -1);
    return ns;
}
