// lib/pyjson.c: a JSON writer that reproduces Python's json.dumps byte for byte
// for the values a config file holds (objects, arrays, strings, integers,
// floats, booleans, null).  jansson's own dumper differs in float spelling
// (%.17g) and escapes, so the reference files could not be matched with it.
#include "pyjson.h"
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char *p; size_t n, cap; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    b->p = xgrow(b->p, &b->cap, b->n + n + 1, 1);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

// Python's float repr: the shortest digit string that round-trips, written
// in fixed notation when the decimal exponent lies in [-4, 16), else as
// d.ddde+XX; integral fixed values get ".0".
void pyjson_float_repr(double x, char *buf, size_t n) {
    if (isnan(x)) { snprintf(buf, n, "NaN"); return; }
    if (isinf(x)) { snprintf(buf, n, x > 0 ? "Infinity" : "-Infinity"); return; }
    if (x == 0) { snprintf(buf, n, signbit(x) ? "-0.0" : "0.0"); return; }
    char e[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, x);
        if (strtod(e, NULL) == x) break;
    }
    // e = [-]d[.ddd]e[+-]XX: collect digits and the exponent.
    const char *s = e;
    int neg = 0;
    if (*s == '-') { neg = 1; s++; }
    char digits[24]; int nd = 0;
    for (; *s && *s != 'e'; s++) if (*s != '.') digits[nd++] = *s;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int exp10 = atoi(s + 1);      // value = d.ddd * 10^exp10
    int decpt = exp10 + 1;        // value = 0.dddd * 10^decpt (Python's convention)
    char out[64]; size_t o = 0;
    if (neg) out[o++] = '-';
    if (decpt <= -4 || decpt > 16) {
        out[o++] = digits[0];
        if (nd > 1) { out[o++] = '.'; for (int i = 1; i < nd; i++) out[o++] = digits[i]; }
        o += (size_t)snprintf(out + o, sizeof out - o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (decpt <= 0) {
        out[o++] = '0'; out[o++] = '.';
        for (int i = 0; i < -decpt; i++) out[o++] = '0';
        for (int i = 0; i < nd; i++) out[o++] = digits[i];
    } else {
        for (int i = 0; i < decpt; i++) out[o++] = i < nd ? digits[i] : '0';
        out[o++] = '.';
        if (nd > decpt) for (int i = decpt; i < nd; i++) out[o++] = digits[i];
        else out[o++] = '0';
    }
    out[o] = 0;
    snprintf(buf, n, "%s", out);
}

// Decode one UTF-8 sequence (jansson guarantees valid UTF-8).
static unsigned utf8_next(const unsigned char **ps) {
    const unsigned char *s = *ps;
    unsigned c = *s++;
    int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    if (more) c &= 0x3f >> more;
    while (more--) c = (c << 6) | (*s++ & 0x3f);
    *ps = s;
    return c;
}

// ensure_ascii=True: everything outside ' '..'~' is escaped; \n etc. by name.
static void put_string(sbuf *b, const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str, *end = s + len;
    sb_put(b, "\"", 1);
    while (s < end) {
        unsigned c = utf8_next(&s);
        char tmp[16];
        switch (c) {
        case '"': sb_puts(b, "\\\""); continue;
        case '\\': sb_puts(b, "\\\\"); continue;
        case '\n': sb_puts(b, "\\n"); continue;
        case '\r': sb_puts(b, "\\r"); continue;
        case '\t': sb_puts(b, "\\t"); continue;
        case '\b': sb_puts(b, "\\b"); continue;
        case '\f': sb_puts(b, "\\f"); continue;
        }
        if (c >= 0x20 && c <= 0x7e) { tmp[0] = (char)c; sb_put(b, tmp, 1); continue; }
        if (c >= 0x10000) {
            unsigned v = c - 0x10000;
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
        } else {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
        }
        sb_puts(b, tmp);
    }
    sb_put(b, "\"", 1);
}

static void newline(sbuf *b, int indent, int level) {
    sb_put(b, "\n", 1);
    for (int i = 0; i < indent * level; i++) sb_put(b, " ", 1);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void dump(sbuf *b, const json_t *v, int indent, int sort, int level) {
    char tmp[64];
    switch (json_typeof(v)) {
    case JSON_NULL: sb_puts(b, "null"); break;
    case JSON_TRUE: sb_puts(b, "true"); break;
    case JSON_FALSE: sb_puts(b, "false"); break;
    case JSON_INTEGER:
        snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        sb_puts(b, tmp);
        break;
    case JSON_REAL:
        pyjson_float_repr(json_real_value(v), tmp, sizeof tmp);
        sb_puts(b, tmp);
        break;
    case JSON_STRING: put_string(b, json_string_value(v), json_string_length(v)); break;
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (!n) { sb_puts(b, "[]"); break; }
        sb_put(b, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) sb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0) newline(b, indent, level + 1);
            dump(b, json_array_get(v, i), indent, sort, level + 1);
        }
        if (indent >= 0) newline(b, indent, level);
        sb_put(b, "]", 1);
        break;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        if (!n) { sb_puts(b, "{}"); break; }
        const char **keys = xmalloc(n * sizeof *keys);
        const char *k; json_t *val;
        json_object_foreach((json_t *)v, k, val) keys[i++] = k;
        if (sort) qsort(keys, n, sizeof *keys, cmp_str);
        sb_put(b, "{", 1);
        for (i = 0; i < n; i++) {
            if (i) sb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0) newline(b, indent, level + 1);
            put_string(b, keys[i], strlen(keys[i]));
            sb_puts(b, ": ");
            dump(b, json_object_get(v, keys[i]), indent, sort, level + 1);
        }
        free(keys);
        if (indent >= 0) newline(b, indent, level);
        sb_put(b, "}", 1);
        break;
    }
    }
}

char *pyjson_dumps(const json_t *v, int indent, int sort_keys) {
    sbuf b = {0};
    sb_put(&b, "", 0);
    dump(&b, v, indent, sort_keys, 0);
    return b.p;
}
