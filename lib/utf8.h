// lib/utf8.h: UTF-8 validation, decoding and lossy repair (as Rust's
// String::from_utf8_lossy does it, so decoded text matches Hugging Face's).
#ifndef LORAPIPE_UTF8_H
#define LORAPIPE_UTF8_H

#include <stddef.h>
#include <stdint.h>

// Offset of the first byte that is not part of a valid UTF-8 sequence
// (overlongs, surrogates and code points past U+10FFFF are invalid), or n
// when all n bytes are valid.
size_t utf8_check(const char *s, size_t n);

// Decode one code point at s (valid UTF-8 assumed); returns its byte length.
static inline size_t utf8_next(const unsigned char *s, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    if (c < 0xE0) { *cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu); return 2; }
    if (c < 0xF0) { *cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu); return 3; }
    *cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
    return 4;
}

// Encode cp into out (4 bytes room); returns the length.
size_t utf8_put(uint32_t cp, char *out);

// Copy n bytes into out (room for 3*n bytes), replacing every maximal invalid
// subpart with U+FFFD; returns the output length.
size_t utf8_lossy(const char *s, size_t n, char *out);

#endif
