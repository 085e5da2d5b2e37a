// lib/tok_normalize.c: NFC normalisation (utf8proc) with a fast path.
//
// Nearly all training text is already NFC, and utf8proc_map allocates and
// decomposes every character.  A string is certainly NFC when each of its code
// points is "safe": canonical combining class 0, no canonical decomposition
// of its own, and never the second or later element of any canonical
// decomposition (so nothing can compose onto the character before it).  A
// bitmap of safe code points below U+30000 is built once at load (canonical
// decompositions all lie below U+2FA1E); anything else goes through utf8proc.
//
// Hugging Face's NFC tables are older than utf8proc's (Unicode 15): 108
// combining marks added since Unicode 10 have class 0 for it, so it never
// moves them (tests/golden/nfc_gap.py measured the list; no decomposition
// differs).  Those marks are kept as inert starters here: NFC runs on the
// text between them, which is what a class-0 character without decomposition
// or composition amounts to.
#include "tok_internal.h"
#include "check.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static const uint32_t HF_INERT[][2] = {
    {0x7FD, 0x7FD}, {0x898, 0x89F}, {0x8CA, 0x8D3}, {0x9FE, 0x9FE}, {0xC3C, 0xC3C}, {0xD3B, 0xD3C},
    {0xEBA, 0xEBA}, {0x1715, 0x1715}, {0x1ABF, 0x1ACE}, {0x1DF6, 0x1DFA}, {0xA82C, 0xA82C},
    {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x1193D, 0x1193E},
    {0x11943, 0x11943}, {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99},
    {0x11D42, 0x11D42}, {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1},
    {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF},
};

static int hf_inert(uint32_t cp) {
    size_t lo = 0, hi = sizeof HF_INERT / sizeof *HF_INERT;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < HF_INERT[mid][0]) hi = mid;
        else if (cp > HF_INERT[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

// utf8proc NFC of n bytes appended to out (grown as needed).
static void nfc_append(const char *s, size_t n, char **out, size_t *len, size_t *cap) {
    if (!n) return;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    CHECK(m >= 0, "utf8proc_map failed: %s", utf8proc_errmsg(m));
    *out = xgrow(*out, cap, *len + (size_t)m + 1, 1);
    memcpy(*out + *len, dst, (size_t)m);
    *len += (size_t)m;
    free(dst);
}

static void unsafe_mark(uint8_t *bm, uint32_t cp) {
    if (cp < TOK_NFC_TABLE) bm[cp >> 3] &= (uint8_t)~(1u << (cp & 7));
}

void nfc_build_table(tok *t) {
    uint8_t *bm = xmalloc(TOK_NFC_TABLE / 8);
    memset(bm, 0xff, TOK_NFC_TABLE / 8);
    for (uint32_t cp = 0; cp < TOK_NFC_TABLE; cp++) {
        if (cp >= 0xD800 && cp < 0xE000) continue;
        const utf8proc_property_t *pr = utf8proc_get_property((utf8proc_int32_t)cp);
        if (pr->combining_class) unsafe_mark(bm, cp);
        utf8proc_int32_t d[32];
        int last = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char((utf8proc_int32_t)cp, d, 32, UTF8PROC_DECOMPOSE, &last);
        if (k < 1 || k > 32) { unsafe_mark(bm, cp); continue; }
        if (k != 1 || (uint32_t)d[0] != cp) unsafe_mark(bm, cp);
        for (utf8proc_ssize_t j = 1; j < k; j++) unsafe_mark(bm, (uint32_t)d[j]);
    }
    t->nfc_safe = bm;
}

size_t nfc_apply(const tok *t, const char *s, size_t n, char **out) {
    *out = NULL;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    // Below U+0300 every code point is safe: skip bytes < 0xCC quickly.
    while (i < n) {
        if (u[i] < 0xCC) {
            if (u[i] < 0x80) { i++; continue; }
            i += 2;                      // a 2-byte sequence below U+0300
            continue;
        }
        uint32_t cp;
        size_t k = utf8_next(u + i, &cp);
        if (cp >= TOK_NFC_TABLE || !(t->nfc_safe[cp >> 3] & (1u << (cp & 7)))) break;
        i += k;
    }
    if (i >= n) return n;
    // Split at the marks HF leaves alone (scanning only from the first
    // character that needs work; earlier ones are safe, hence not such marks).
    char *buf = NULL;
    size_t len = 0, cap = 0, from = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_next(u + i, &cp);
        if (cp >= 0x7FD && hf_inert(cp)) {
            nfc_append(s + from, i - from, &buf, &len, &cap);
            buf = xgrow(buf, &cap, len + k + 1, 1);
            memcpy(buf + len, s + i, k);
            len += k;
            from = i + k;
        }
        i += k;
    }
    nfc_append(s + from, n - from, &buf, &len, &cap);
    if (!buf) buf = xmalloc(1);
    *out = buf;
    return len;
}
