// lib/tok_json.c: see tok_json.h.
#include "tok_json.h"
#include "check.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

void tok_strs_add(tok_strs *l, const char *s, size_t n, int64_t val) {
    if (l->n == l->cap) {
        size_t c = l->cap;
        l->off = xgrow(l->off, &c, l->n + 1, sizeof *l->off);
        c = l->cap; l->len = xgrow(l->len, &c, l->n + 1, sizeof *l->len);
        l->val = xgrow(l->val, &l->cap, l->n + 1, sizeof *l->val);
    }
    l->s = xgrow(l->s, &l->s_cap, l->s_n + n + 1, 1);
    CHECK(l->s_n + n < UINT32_MAX, "tokenizer strings over 4 GiB");
    memcpy(l->s + l->s_n, s, n);
    l->off[l->n] = (uint32_t)l->s_n; l->len[l->n] = (uint32_t)n; l->val[l->n] = val;
    l->s_n += n;
    l->n++;
}

void tok_strs_free(tok_strs *l) {
    free(l->s); free(l->off); free(l->len); free(l->val);
    memset(l, 0, sizeof *l);
}

typedef struct { const char *p, *end; char *buf; size_t buf_cap; } cur;

static void ws(cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

static int hex4(const char *p, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v * 16 + (uint32_t)d;
    }
    return 0;
}

// Decode the string at c->p ('"') into c->buf; returns its length or -1.
static long str(cur *c) {
    if (c->p >= c->end || *c->p != '"') return -1;
    c->p++;
    size_t n = 0;
    const char *start = c->p;
    for (;;) {
        // Copy the plain run up to a quote, backslash or control byte.
        const char *q = start;
        while (q < c->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20) q++;
        if (q >= c->end || (unsigned char)*q < 0x20) return -1;
        size_t run = (size_t)(q - start);
        c->buf = xgrow(c->buf, &c->buf_cap, n + run + 8, 1);
        memcpy(c->buf + n, start, run);
        n += run;
        if (*q == '"') { c->p = q + 1; break; }
        // Escape.
        if (q + 1 >= c->end) return -1;
        char e = q[1];
        const char *nx = q + 2;
        char ch = 0;
        switch (e) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (nx + 4 > c->end || hex4(nx, &cp)) return -1;
            nx += 4;
            if (cp >= 0xDC00 && cp < 0xE000) return -1;
            if (cp >= 0xD800 && cp < 0xDC00) {
                if (nx + 6 > c->end || nx[0] != '\\' || nx[1] != 'u' || hex4(nx + 2, &lo) || lo < 0xDC00 || lo >= 0xE000)
                    return -1;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                nx += 6;
            }
            n += utf8_put(cp, c->buf + n);
            start = nx;
            continue;
        }
        default: return -1;
        }
        c->buf[n++] = ch;
        start = nx;
    }
    if (utf8_check(c->buf, n) != n) return -1;
    return (long)n;
}

// Skip any value (containers by bracket counting; jansson checks them later).
static int skip(cur *c) {
    ws(c);
    if (c->p >= c->end) return -1;
    if (*c->p == '"') return str(c) < 0 ? -1 : 0;
    if (*c->p != '{' && *c->p != '[') {
        while (c->p < c->end && !strchr(",}] \t\r\n", *c->p)) c->p++;
        return 0;
    }
    int depth = 0;
    while (c->p < c->end) {
        char ch = *c->p;
        if (ch == '"') { if (str(c) < 0) return -1; continue; }
        if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') { if (--depth == 0) { c->p++; return 0; } }
        c->p++;
    }
    return -1;
}

static int vocab(cur *c, tok_strs *v) {
    ws(c);
    if (c->p >= c->end || *c->p != '{') return -1;
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == '}') { c->p++; return 0; }
    for (;;) {
        ws(c);
        long n = str(c);
        if (n < 0) return -1;
        ws(c);
        if (c->p >= c->end || *c->p != ':') return -1;
        c->p++;
        ws(c);
        int64_t id = 0;
        const char *d = c->p;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9' && c->p - d < 10) id = id * 10 + (*c->p++ - '0');
        if (c->p == d || id >= INT32_MAX || (c->p < c->end && *c->p >= '0' && *c->p <= '9')) return -1;
        if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E')) return -1;
        tok_strs_add(v, c->buf, (size_t)n, id);
        ws(c);
        if (c->p >= c->end) return -1;
        if (*c->p == ',') { c->p++; continue; }
        if (*c->p == '}') { c->p++; return 0; }
        return -1;
    }
}

static int merges(cur *c, tok_strs *m) {
    ws(c);
    if (c->p >= c->end || *c->p != '[') return -1;
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == ']') { c->p++; return 0; }
    for (;;) {
        ws(c);
        if (c->p >= c->end) return -1;
        if (*c->p == '"') {                 // "left right"
            long n = str(c);
            if (n < 0) return -1;
            char *sp = memchr(c->buf, ' ', (size_t)n);
            if (!sp || memchr(sp + 1, ' ', (size_t)n - (size_t)(sp + 1 - c->buf))) return -1;
            size_t ln = (size_t)(sp - c->buf);
            tok_strs_add(m, c->buf, ln, 0);
            tok_strs_add(m, sp + 1, (size_t)n - ln - 1, 0);
        } else if (*c->p == '[') {          // ["left", "right"]
            c->p++;
            for (int k = 0; k < 2; k++) {
                ws(c);
                long n = str(c);
                if (n < 0) return -1;
                tok_strs_add(m, c->buf, (size_t)n, 0);
                ws(c);
                if (c->p >= c->end || *c->p != (k == 0 ? ',' : ']')) return -1;
                c->p++;
            }
        } else {
            return -1;
        }
        ws(c);
        if (c->p >= c->end) return -1;
        if (*c->p == ',') { c->p++; continue; }
        if (*c->p == ']') { c->p++; return 0; }
        return -1;
    }
}

// Walk an object's members; for the wanted keys call the parsers and note the
// value's span.  depth 0: the root (looks for "model"), 1: the model.
static int walk(cur *c, int depth, tok_strs *v, tok_strs *m, const char **span, int *found) {
    ws(c);
    if (c->p >= c->end || *c->p != '{') return -1;
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == '}') { c->p++; return 0; }
    for (;;) {
        ws(c);
        long n = str(c);
        if (n < 0) return -1;
        ws(c);
        if (c->p >= c->end || *c->p != ':') return -1;
        c->p++;
        ws(c);
        int which = -1;
        if (depth == 0 && n == 5 && !memcmp(c->buf, "model", 5)) which = 2;
        else if (depth == 1 && n == 5 && !memcmp(c->buf, "vocab", 5)) which = 0;
        else if (depth == 1 && n == 6 && !memcmp(c->buf, "merges", 6)) which = 1;
        if (which >= 0 && (*found & (1 << which))) return -1;     // duplicate key
        if (which == 2) {
            *found |= 4;
            if (walk(c, 1, v, m, span, found)) return -1;
        } else if (which >= 0) {
            *found |= 1 << which;
            span[2 * which] = c->p;
            if ((which == 0 ? vocab(c, v) : merges(c, m))) return -1;
            span[2 * which + 1] = c->p;
        } else if (skip(c)) {
            return -1;
        }
        ws(c);
        if (c->p >= c->end) return -1;
        if (*c->p == ',') { c->p++; continue; }
        if (*c->p == '}') { c->p++; return 0; }
        return -1;
    }
}

int tokjson_fast(const char *text, size_t n, tok_strs *v, tok_strs *m, char **rest, size_t *rest_n) {
    cur c = {text, text + n, NULL, 0};
    const char *span[4] = {0};
    int found = 0;
    int rc = walk(&c, 0, v, m, span, &found);
    free(c.buf);
    if (rc || found != 7) { tok_strs_free(v); tok_strs_free(m); return -1; }
    // The text with the two spans replaced by {} and [] (in file order).
    int first = span[0] < span[2] ? 0 : 1, second = 1 - first;
    char *r = xmalloc(n + 8);
    size_t k = 0;
    const char *p = text;
    for (int i = 0; i < 2; i++) {
        int w = i == 0 ? first : second;
        size_t len = (size_t)(span[2 * w] - p);
        memcpy(r + k, p, len); k += len;
        memcpy(r + k, w == 0 ? "{}" : "[]", 2); k += 2;
        p = span[2 * w + 1];
    }
    size_t len = (size_t)(text + n - p);
    memcpy(r + k, p, len); k += len;
    r[k] = 0;
    *rest = r;
    *rest_n = k;
    return 0;
}
