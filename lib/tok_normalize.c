// lib/tok_normalize.c: NFC normalisation (utf8proc) with a fast path.
//
// Nearly all training text is already NFC, and utf8proc_map allocates and
// decomposes every character.  A string is certainly NFC when each of its code
// points is "safe": canonical combining class 0, no canonical decomposition
// of its own, and never the second or later element of any canonical
// decomposition (so nothing can compose onto the character before it).  A
// bitmap of safe code points below U+30000 is built once at load (canonical
// decompositions all lie below U+2FA1E); anything else goes through utf8proc.
#include "tok_internal.h"
#include "check.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

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
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    CHECK(m >= 0, "utf8proc_map failed: %s", utf8proc_errmsg(m));
    *out = (char *)dst;
    return (size_t)m;
}
