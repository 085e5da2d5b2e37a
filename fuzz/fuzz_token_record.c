// fuzz/fuzz_token_record.c: one line of tokenize's JSONL as pack reads it
// (lib/token_record.c): the hand-written fast path and the jansson fallback
// must agree with each other and never accept what JSON does not allow.
#include "fuzz_common.h"
#include "token_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fz_init();
    if (setjmp(fz_jmp)) abort();       // the parser reports errors; it must never die
    static token_record r;
    char err[512];
    // One record per line, as pack reads a file.
    const char *s = (const char *)data, *end = s + n;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t len = nl ? (size_t)(nl - s) : (size_t)(end - s);
        int rc = token_record_parse(&r, s, len, err, sizeof err);
        if (rc == TOKREC_OK) {
            if (!r.n) abort();
            for (size_t i = 0; i < r.n; i++) {
                if (r.ids[i] > INT32_MAX) abort();
                if (r.labels[i] != -100 && r.labels[i] < 0) abort();
            }
        }
        s += len + 1;
    }
    return 0;
}
