// lib/tok_pretok.c: compile a tokenizer.json Split pattern (Oniguruma syntax,
// as the Rust library runs it) into an equivalent PCRE2 program.
//
// Oniguruma and PCRE2 agree on the syntax Qwen-style patterns use (ordered
// alternation, greedy backtracking, look-ahead, (?i:...), \p{..}), but not on
// every class: tokenizers 0.23 carries Oniguruma with Unicode 16.0, PCRE2 10.42
// has Unicode 14.0, and PCRE2's \s also takes U+180E.  So \s, \S, \p{L} and
// \p{N} are rewritten into explicit classes that hold exactly Oniguruma's sets
// (tests/golden/unicode_gap.py measured them on the installed tokenizers; the
// hard-strings corpus has characters from every range below).
#include "tok_internal.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

// Unicode White_Space, which is Oniguruma's \s (without PCRE2's U+180E).
#define WS_SET "\\t-\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
// Letters and numbers assigned in Unicode 15.0-16.0 (Oniguruma knows them,
// PCRE2 10.42 sees unassigned code points).
#define L_EXTRA "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}" \
    "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"      \
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}"        \
    "\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}"       \
    "\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"                 \
    "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}"                  \
    "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}"       \
    "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define N_EXTRA "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}" \
    "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}"            \
    "\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}"

typedef struct { char *s; size_t n, cap; } sbuf;
static void sb_put(sbuf *b, const char *s, size_t n) {
    b->s = xgrow(b->s, &b->cap, b->n + n + 1, 1);
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

// Rewrite pattern p (n bytes); dies naming the file for constructs that PCRE2
// would read differently and that cannot be rewritten.
static char *rewrite(const char *path, const char *p, size_t n) {
    sbuf b = {0};
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[i + 1];
            const char *set = NULL;
            int neg = 0;
            size_t skip = 1;
            if (e == 's' || e == 'S') { set = WS_SET; neg = e == 'S'; }
            else if ((e == 'p' || e == 'P') && i + 4 < n && p[i + 2] == '{' && p[i + 4] == '}' &&
                     (p[i + 3] == 'L' || p[i + 3] == 'N')) {
                set = p[i + 3] == 'L' ? "\\p{L}" L_EXTRA : "\\p{N}" N_EXTRA;
                neg = e == 'P';
                skip = 4;
            }
            if (set) {
                if (in_class && neg)
                    die("%s: unsupported tokenizer: negated class \\%c inside [...] in the Split pattern", path, e);
                if (in_class) sb_str(&b, set);
                else { sb_str(&b, neg ? "[^" : "["); sb_str(&b, set); sb_str(&b, "]"); }
                i += skip;
                continue;
            }
            // Any other escape is copied whole (\x{...}, \p{...} with braces).
            sb_put(&b, p + i, 2);
            i++;
            if ((e == 'x' || e == 'p' || e == 'P') && i + 1 < n && p[i + 1] == '{') {
                size_t j = i + 1;
                while (j < n && p[j] != '}') j++;
                sb_put(&b, p + i + 1, j < n ? j - i : n - i - 1);
                i = j;
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            sb_put(&b, p + i, 1);
            // A ']' right after '[' or '[^' is a literal.
            if (i + 1 < n && p[i + 1] == '^') { sb_put(&b, "^", 1); i++; }
            if (i + 1 < n && p[i + 1] == ']') { sb_put(&b, "\\]", 2); i++; }
            continue;
        }
        if (in_class) {
            if (c == '[') {
                if (i + 1 < n && p[i + 1] == ':') {           // POSIX [:name:]
                    const char *end = strstr(p + i, ":]");
                    if (end && (size_t)(end - p) < n) {
                        sb_put(&b, p + i, (size_t)(end - (p + i)) + 2);
                        i = (size_t)(end - p) + 1;
                        continue;
                    }
                }
                die("%s: unsupported tokenizer: nested character class in the Split pattern", path);
            }
            if (c == '&' && i + 1 < n && p[i + 1] == '&')
                die("%s: unsupported tokenizer: class intersection && in the Split pattern", path);
            if (c == ']') in_class = 0;
        }
        sb_put(&b, p + i, 1);
    }
    if (!b.s) sb_put(&b, "", 0);
    return b.s;
}

pcre2_code *pretok_compile(const char *path, const char *pattern, size_t len, int literal) {
    char *pat = literal ? NULL : rewrite(path, pattern, len);
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    CHECK(cc, "pcre2_compile_context_create failed");
    // Oniguruma's Ruby syntax: '$' and '^' work at line ends, lines end at LF.
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int err; PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = literal ? pcre2_compile((PCRE2_SPTR)pattern, len, opts, &err, &off, cc)
                             : pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &err, &off, cc);
    pcre2_compile_context_free(cc);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        die("%s: unsupported tokenizer: the Split pattern does not compile (%s at offset %zu)",
            path, (char *)msg, (size_t)off);
    }
    free(pat);
    // JIT is several times faster; the interpreter is the fallback where the
    // platform has no JIT (results are identical).
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}
