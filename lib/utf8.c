// lib/utf8.c: see utf8.h.
#include "utf8.h"

#include <string.h>

// Length of the valid sequence starting at s (1..4), or 0 when invalid; *sub
// gets the length of its longest valid prefix (the "maximal subpart" that
// from_utf8_lossy replaces by one U+FFFD).
static size_t seq_len(const unsigned char *s, size_t n, size_t *sub) {
    unsigned c = s[0];
    *sub = 1;
    if (c < 0x80) return 1;
    size_t need; unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;        // overlong
        if (c == 0xED) hi = 0x9F;        // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;        // overlong
        if (c == 0xF4) hi = 0x8F;        // past U+10FFFF
    } else return 0;
    for (size_t i = 1; i < need; i++) {
        if (i >= n) return 0;
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
        *sub = i + 1;
    }
    return need;
}

size_t utf8_check(const char *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        // ASCII fast path, 8 bytes at a time.
        while (i + 8 <= n) {
            uint64_t w; memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        if (s[i] < 0x80) { i++; continue; }
        size_t sub, k = seq_len(s + i, n - i, &sub);
        if (!k) return i;
        i += k;
    }
    return n;
}

size_t utf8_put(uint32_t cp, char *o) {
    unsigned char *b = (unsigned char *)o;
    if (cp < 0x80) { b[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { b[0] = 0xC0 | (cp >> 6); b[1] = 0x80 | (cp & 63); return 2; }
    if (cp < 0x10000) {
        b[0] = 0xE0 | (cp >> 12); b[1] = 0x80 | ((cp >> 6) & 63); b[2] = 0x80 | (cp & 63);
        return 3;
    }
    b[0] = 0xF0 | (cp >> 18); b[1] = 0x80 | ((cp >> 12) & 63);
    b[2] = 0x80 | ((cp >> 6) & 63); b[3] = 0x80 | (cp & 63);
    return 4;
}

size_t utf8_lossy(const char *p, size_t n, char *out) {
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0, o = 0;
    while (i < n) {
        size_t sub, k = seq_len(s + i, n - i, &sub);
        if (k) { memcpy(out + o, s + i, k); o += k; i += k; continue; }
        memcpy(out + o, "\xEF\xBF\xBD", 3); o += 3;
        i += sub;
    }
    return o;
}
