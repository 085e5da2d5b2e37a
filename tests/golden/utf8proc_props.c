// tests/golden/utf8proc_props.c: print, for every code point that NFC can
// touch according to utf8proc, "cp ccc nfc-of-the-char-alone" (hex, the NFC as
// space-separated code points); used by nfc_gap.py.
//   cc -O2 tests/golden/utf8proc_props.c -lutf8proc -o /tmp/utf8proc_props
#include <stdio.h>
#include <stdlib.h>
#include <utf8proc.h>

int main(void) {
    for (utf8proc_int32_t cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp < 0xE000) continue;
        const utf8proc_property_t *p = utf8proc_get_property(cp);
        utf8proc_int32_t d[32];
        int last = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char(cp, d, 32, UTF8PROC_DECOMPOSE, &last);
        if (!p->combining_class && k == 1 && d[0] == cp) continue;
        utf8proc_uint8_t in[8], *out = NULL;
        utf8proc_ssize_t n = utf8proc_encode_char(cp, in);
        utf8proc_ssize_t m = utf8proc_map(in, n, &out, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        printf("%X %d", (unsigned)cp, (int)p->combining_class);
        for (utf8proc_ssize_t i = 0; i < m;) {
            utf8proc_int32_t c;
            i += utf8proc_iterate(out + i, m - i, &c);
            printf(" %X", (unsigned)c);
        }
        printf("\n");
        free(out);
    }
    return 0;
}
