// lib/token_record.c: strict fast parser for token JSONL lines, jansson fallback.
#include "token_record.h"
#include "check.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define ID_LIMIT 0x7FFFFFFFu   // ids and labels are stored as int32-compatible values
#define LABEL_IGNORE (-100)

static int rec_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rec_fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return TOKREC_ERROR;
}

static void ensure(token_record *r, size_t n) {
    if (n <= r->cap) return;
    size_t c = r->cap;
    r->ids = xgrow(r->ids, &c, n, sizeof *r->ids);
    r->labels = xrealloc(r->labels, c * sizeof *r->labels);
    r->cap = c;
}

void token_record_free(token_record *r) {
    free(r->ids); free(r->labels); free(r->scratch);
    memset(r, 0, sizeof *r);
}

// Range checks shared by both paths; ids/labels raw values in raw_ids/raw_labels.
static int check_values(token_record *r, const int64_t *raw_ids, size_t n_ids, const int64_t *raw_labels,
                        size_t n_labels, char *err, size_t errlen) {
    if (n_ids == 0) return rec_fail(err, errlen, "\"input_ids\" is empty");
    if (n_labels != n_ids)
        return rec_fail(err, errlen, "\"labels\" has %zu entries, \"input_ids\" has %zu", n_labels, n_ids);
    ensure(r, n_ids);
    for (size_t i = 0; i < n_ids; i++) {
        int64_t v = raw_ids[i];
        if (v < 0) return rec_fail(err, errlen, "input_ids[%zu] = %lld is negative", i, (long long)v);
        if (v > ID_LIMIT) return rec_fail(err, errlen, "input_ids[%zu] = %lld is too large", i, (long long)v);
        r->ids[i] = (uint32_t)v;
    }
    for (size_t i = 0; i < n_ids; i++) {
        int64_t v = raw_labels[i];
        if (v != LABEL_IGNORE && (v < 0 || v > ID_LIMIT))
            return rec_fail(err, errlen, "labels[%zu] = %lld is neither -100 nor a token id", i, (long long)v);
        r->labels[i] = (int32_t)v;
    }
    r->n = n_ids;
    return TOKREC_OK;
}

// ---- fast path -------------------------------------------------------------
// Every function returns the position after what it consumed, or NULL when the
// input is not exactly what it expects (then jansson takes over).

static const char *ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return p;
}

// An array of JSON integers, each -?(0|[1-9][0-9]*) with at most 18 digits and
// no fraction or exponent (such lines go to jansson, which names the problem).
// The caller has made room: a line of L bytes holds at most L/2 + 1 numbers.
static const char *parse_int_array(int64_t *dst, const char *p, const char *e, size_t *count) {
    if (p >= e || *p != '[') return NULL;
    p = ws(p + 1, e);
    size_t n = 0;
    if (p < e && *p == ']') { *count = 0; return p + 1; }
    for (;;) {
        int neg = p < e && *p == '-';
        p += neg;
        if (p >= e || (unsigned)(*p - '0') > 9) return NULL;
        const char *d0 = p;
        uint64_t v = (uint64_t)(*p++ - '0');
        if (v == 0) {
            if (p < e && (unsigned)(*p - '0') <= 9) return NULL;   // leading zero
        } else {
            while (p < e && (unsigned)(*p - '0') <= 9) v = v * 10 + (uint64_t)(*p++ - '0');
            if (p - d0 > 18) return NULL;   // (v may have wrapped; it is not used)
        }
        if (p < e && (*p == '.' || *p == 'e' || *p == 'E')) return NULL;
        dst[n++] = neg ? -(int64_t)v : (int64_t)v;
        if (p < e && *p == ',') {
            p++;
            if (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p = ws(p, e);
            continue;
        }
        p = ws(p, e);
        if (p < e && *p == ',') { p = ws(p + 1, e); continue; }
        if (p < e && *p == ']') { *count = n; return p + 1; }
        return NULL;
    }
}

// A string of printable ASCII with the simple escapes; anything else
// (non-ASCII, \u escapes) is left to jansson, which also validates UTF-8.
static const char *skip_string(const char *p, const char *e) {
    if (p >= e || *p != '"') return NULL;
    for (p++; p < e; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c < 0x20 || c >= 0x80) return NULL;
        if (c == '\\') {
            if (++p >= e || !strchr("\"\\/bfnrt", *p) || !*p) return NULL;
        }
    }
    return NULL;
}

// Scalars only: nested arrays and objects go to jansson.
static const char *skip_value(const char *p, const char *e) {
    if (p >= e) return NULL;
    if (*p == '"') return skip_string(p, e);
    if (e - p >= 4 && !memcmp(p, "true", 4)) return p + 4;
    if (e - p >= 5 && !memcmp(p, "false", 5)) return p + 5;
    if (e - p >= 4 && !memcmp(p, "null", 4)) return p + 4;
    // Any JSON number: -?int frac? exp?
    const char *q = p;
    if (q < e && *q == '-') q++;
    if (q >= e || *q < '0' || *q > '9') return NULL;
    if (*q == '0') q++; else while (q < e && *q >= '0' && *q <= '9') q++;
    if (q < e && *q == '.') {
        q++;
        if (q >= e || *q < '0' || *q > '9') return NULL;
        while (q < e && *q >= '0' && *q <= '9') q++;
    }
    if (q < e && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < e && (*q == '+' || *q == '-')) q++;
        if (q >= e || *q < '0' || *q > '9') return NULL;
        while (q < e && *q >= '0' && *q <= '9') q++;
    }
    return q;
}

// 1 = parsed (ids in scratch[0..n_ids), labels in scratch[n_ids..]), 0 = ask jansson.
static int fast_parse(token_record *r, const char *p, const char *e, size_t *n_ids, size_t *n_labels,
                      int *has_ids, int *has_labels) {
    *has_ids = *has_labels = 0;
    p = ws(p, e);
    if (p >= e || *p != '{') return 0;
    p = ws(p + 1, e);
    if (p < e && *p == '}') { p++; goto end; }
    // input_ids must come first so that labels can follow it in scratch.
    for (;;) {
        const char *k = p;
        p = skip_string(p, e);
        if (!p) return 0;
        size_t klen = (size_t)(p - k) - 2;
        int is_ids = klen == 9 && !memcmp(k + 1, "input_ids", 9);
        int is_labels = klen == 6 && !memcmp(k + 1, "labels", 6);
        if (memchr(k + 1, '\\', klen)) return 0;   // an escaped key could spell one of ours
        p = ws(p, e);
        if (p >= e || *p != ':') return 0;
        p = ws(p + 1, e);
        if (is_ids) {
            if (*has_ids || *has_labels) return 0;
            p = parse_int_array(r->scratch, p, e, n_ids);
            *has_ids = 1;
        } else if (is_labels) {
            if (*has_labels || !*has_ids) return 0;
            p = parse_int_array(r->scratch + *n_ids, p, e, n_labels);
            *has_labels = 1;
        } else {
            p = skip_value(p, e);
        }
        if (!p) return 0;
        p = ws(p, e);
        if (p < e && *p == ',') { p = ws(p + 1, e); continue; }
        if (p < e && *p == '}') { p++; break; }
        return 0;
    }
end:
    p = ws(p, e);
    return p == e && *has_ids && *has_labels;
}

// ---- jansson fallback ------------------------------------------------------
static int json_int_array(json_t *a, const char *key, int64_t **buf, size_t *cap, size_t *n, char *err, size_t el) {
    if (!json_is_array(a)) return rec_fail(err, el, "\"%s\" is not an array", key);
    *n = json_array_size(a);
    *buf = xgrow(*buf, cap, *n + 1, sizeof **buf);
    for (size_t i = 0; i < *n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v)) return rec_fail(err, el, "%s[%zu] is not an integer", key, i);
        (*buf)[i] = (int64_t)json_integer_value(v);
    }
    return TOKREC_OK;
}

static int slow_parse(token_record *r, const char *line, size_t len, char *err, size_t el) {
    json_error_t je;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return rec_fail(err, el, "not valid JSON: %s (column %d)", je.text, je.column);
    int rc = TOKREC_ERROR;
    int64_t *lab = NULL;
    size_t lab_cap = 0, n_ids = 0, n_lab = 0;
    json_t *ids, *labels;
    if (!json_is_object(root)) rec_fail(err, el, "not a JSON object");
    else if (!(ids = json_object_get(root, "input_ids"))) rec_fail(err, el, "missing \"input_ids\"");
    else if (!(labels = json_object_get(root, "labels"))) rec_fail(err, el, "missing \"labels\"");
    else if (json_int_array(ids, "input_ids", &r->scratch, &r->scratch_cap, &n_ids, err, el) == TOKREC_OK &&
             json_int_array(labels, "labels", &lab, &lab_cap, &n_lab, err, el) == TOKREC_OK)
        rc = check_values(r, r->scratch, n_ids, lab, n_lab, err, el);
    free(lab);
    json_decref(root);
    return rc;
}

int token_record_parse(token_record *r, const char *line, size_t len, char *err, size_t errlen) {
    const char *e = line + len, *p = ws(line, e);
    r->n = 0;
    r->used_fallback = 0;
    if (p == e) return TOKREC_BLANK;
    size_t n_ids = 0, n_labels = 0;
    int has_ids, has_labels;
    // Every number takes at least two bytes with its separator: room for all.
    if (len / 2 + 2 > r->scratch_cap) r->scratch = xgrow(r->scratch, &r->scratch_cap, len / 2 + 2, sizeof *r->scratch);
    if (fast_parse(r, line, e, &n_ids, &n_labels, &has_ids, &has_labels))
        return check_values(r, r->scratch, n_ids, r->scratch + n_ids, n_labels, err, errlen);
    r->used_fallback = 1;
    return slow_parse(r, line, len, err, errlen);
}
