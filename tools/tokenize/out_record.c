// tools/tokenize/out_record.c: the output line, written by hand because it is
// the hot path of the writer (jansson would build a tree per record).
#include "tokenize.h"
#include "check.h"

#include <string.h>

static char *put_int(char *p, int32_t v) {
    char tmp[12];
    int k = 0;
    uint32_t u = v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v;
    do { tmp[k++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) *p++ = '-';
    while (k) *p++ = tmp[--k];
    return p;
}

void out_record(char **buf, size_t *len, size_t *cap, const int32_t *ids, const int32_t *labels, size_t n) {
    // Each number takes at most 11 bytes plus a comma.
    *buf = xgrow(*buf, cap, *len + 40 + 24 * n, 1);
    char *p = *buf + *len;
    memcpy(p, "{\"input_ids\":[", 14); p += 14;
    for (size_t i = 0; i < n; i++) { if (i) *p++ = ','; p = put_int(p, ids[i]); }
    memcpy(p, "],\"labels\":[", 12); p += 12;
    for (size_t i = 0; i < n; i++) { if (i) *p++ = ','; p = put_int(p, labels[i]); }
    memcpy(p, "]}\n", 3); p += 3;
    *len = (size_t)(p - *buf);
}
