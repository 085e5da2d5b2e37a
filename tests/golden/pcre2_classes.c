// tests/golden/pcre2_classes.c: print (decimal, one a line) every code point
// that PCRE2 in UTF+UCP mode matches with the class given as argv[1]; used by
// unicode_gap.py.  cc -O2 tests/golden/pcre2_classes.c -lpcre2-8
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: pcre2_classes CLASS\n"); return 2; }
    int err; PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)argv[1], PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &err, &off, NULL);
    if (!re) { fprintf(stderr, "bad class\n"); return 1; }
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    for (unsigned cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp < 0xE000) continue;
        unsigned char b[4]; size_t l;
        if (cp < 0x80) { b[0] = cp; l = 1; }
        else if (cp < 0x800) { b[0] = 0xC0 | cp >> 6; b[1] = 0x80 | (cp & 63); l = 2; }
        else if (cp < 0x10000) { b[0] = 0xE0 | cp >> 12; b[1] = 0x80 | ((cp >> 6) & 63); b[2] = 0x80 | (cp & 63); l = 3; }
        else { b[0] = 0xF0 | cp >> 18; b[1] = 0x80 | ((cp >> 12) & 63); b[2] = 0x80 | ((cp >> 6) & 63); b[3] = 0x80 | (cp & 63); l = 4; }
        if (pcre2_match(re, b, l, 0, 0, md, NULL) >= 0) printf("%u\n", cp);
    }
    return 0;
}
