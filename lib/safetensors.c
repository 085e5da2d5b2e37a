// lib/safetensors.c: safetensors reading (mmap, every check of the reference
// reader) and writing (the reference writer's exact layout).
#include "safetensors.h"
#include "atomic_out.h"
#include "check.h"
#include "errmsg.h"
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void free_parsed(st_file *f) {
    for (size_t i = 0; i < f->n; i++) free(f->t[i].name);
    for (size_t i = 0; i < f->n_meta; i++) { free(f->meta_key[i]); free(f->meta_val[i]); }
    free(f->t); free(f->meta_key); free(f->meta_val);
    f->t = NULL; f->meta_key = f->meta_val = NULL; f->n = f->n_meta = 0;
}

// A non-negative JSON integer (the reference reader deserialises usize).
static int get_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int cmp_offsets(const void *a, const void *b, void *ctx) {
    const st_tensor *t = ctx;
    const st_tensor *x = &t[*(const size_t *)a], *y = &t[*(const size_t *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

size_t *st_data_order(const st_file *f) {
    size_t *ord = xmalloc((f->n ? f->n : 1) * sizeof *ord);
    for (size_t i = 0; i < f->n; i++) ord[i] = i;
    qsort_r(ord, f->n, sizeof *ord, cmp_offsets, f->t);
    return ord;
}

static int parse_tensor(const char *what, const char *name, json_t *v, st_tensor *t, char *err, size_t errlen) {
    if (!json_is_object(v))
        return err_set(err, errlen, "%s: tensor '%s': header entry is not an object", what, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo))
        return err_set(err, errlen, "%s: tensor '%s': needs \"dtype\" (string), \"shape\" and \"data_offsets\" (arrays)",
                    what, name);
    t->name = xstrdup(name);
    t->dtype = dtype_from_name(json_string_value(jd));
    if (t->dtype == DT_INVALID)
        return err_set(err, errlen, "%s: tensor '%s': unknown dtype \"%s\"", what, name, json_string_value(jd));
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return err_set(err, errlen, "%s: tensor '%s': %zu dimensions (at most %d supported)", what, name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t d = 0; d < nd; d++) {
        uint64_t s;
        if (get_u64(json_array_get(js, d), &s))
            return err_set(err, errlen, "%s: tensor '%s': shape[%zu] is not a non-negative integer", what, name, d);
        t->shape[d] = (size_t)s;
        if (s && numel > UINT64_MAX / s) overflow = 1;
        numel *= s;
    }
    if (json_array_size(jo) != 2 || get_u64(json_array_get(jo, 0), &t->begin) ||
        get_u64(json_array_get(jo, 1), &t->end))
        return err_set(err, errlen, "%s: tensor '%s': data_offsets must be two non-negative integers", what, name);
    int bits = dtype_bits(t->dtype);
    if (overflow || numel > UINT64_MAX / (uint64_t)bits)
        return err_set(err, errlen, "%s: tensor '%s': shape too large (element count overflows)", what, name);
    t->numel = (size_t)numel;
    return 0;
}

int st_parse_header(const char *json, size_t len, uint64_t data_len, const char *what,
                    st_file *out, char *err, size_t errlen) {
    free_parsed(out);
    if (len == 0 || json[0] != '{')
        return err_set(err, errlen, "%s: header does not start with '{' (not a safetensors file?)", what);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return err_set(err, errlen, "%s: header is not valid JSON (byte %d of the header: %s)", what, je.position, je.text);
    int rc = -1;
    if (!json_is_object(root)) {
        err_set(err, errlen, "%s: header is not a JSON object", what);
        goto done;
    }
    size_t cap = json_object_size(root);
    out->t = xcalloc(cap ? cap : 1, sizeof *out->t);
    const char *key; json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) { err_set(err, errlen, "%s: __metadata__ is not an object", what); goto done; }
            size_t m = json_object_size(v);
            out->meta_key = xcalloc(m ? m : 1, sizeof(char *));
            out->meta_val = xcalloc(m ? m : 1, sizeof(char *));
            const char *mk; json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    err_set(err, errlen, "%s: __metadata__ value of \"%s\" is not a string", what, mk);
                    goto done;
                }
                out->meta_key[out->n_meta] = xstrdup(mk);
                out->meta_val[out->n_meta++] = xstrdup(json_string_value(mv));
            }
            continue;
        }
        st_tensor *t = &out->t[out->n];
        memset(t, 0, sizeof *t);
        int r = parse_tensor(what, key, v, t, err, errlen);
        out->n++;   // counted even on failure so that free_parsed frees the name
        if (r) goto done;
    }
    // The reference check: in offset order, each tensor starts where the
    // previous ended (the first at 0) and spans exactly numel x size bytes.
    size_t *ord = st_data_order(out);
    uint64_t pos = 0;
    for (size_t i = 0; i < out->n; i++) {
        st_tensor *t = &out->t[ord[i]];
        if (t->begin != pos || t->end < t->begin) {
            if (t->begin < pos)
                err_set(err, errlen, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] overlap the previous tensor (which ends at %" PRIu64 ")",
                     what, t->name, t->begin, t->end, pos);
            else if (t->end < t->begin)
                err_set(err, errlen, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                     what, t->name, t->begin, t->end);
            else
                err_set(err, errlen, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] leave a hole after offset %" PRIu64,
                     what, t->name, t->begin, t->end, pos);
            free(ord);
            goto done;
        }
        uint64_t bits = (uint64_t)t->numel * (uint64_t)dtype_bits(t->dtype);
        if (bits % 8) {
            err_set(err, errlen, "%s: tensor '%s': %zu elements of %s do not fill whole bytes", what, t->name, t->numel,
                 dtype_name(t->dtype));
            free(ord);
            goto done;
        }
        if (t->end - t->begin != bits / 8) {
            err_set(err, errlen, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64 " bytes but %s x %zu elements need %" PRIu64,
                 what, t->name, t->begin, t->end, t->end - t->begin, dtype_name(t->dtype), t->numel, bits / 8);
            free(ord);
            goto done;
        }
        pos = t->end;
    }
    free(ord);
    if (data_len != UINT64_MAX && pos != data_len) {
        if (pos > data_len)
            err_set(err, errlen, "%s: tensors need %" PRIu64 " data bytes but the file holds only %" PRIu64 " (truncated?)",
                 what, pos, data_len);
        else
            err_set(err, errlen, "%s: %" PRIu64 " bytes after the last tensor (data ends at %" PRIu64 " of %" PRIu64 ")",
                 what, data_len - pos, pos, data_len);
        goto done;
    }
    rc = 0;
done:
    json_decref(root);
    if (rc) free_parsed(out);
    return rc;
}

int st_open(st_file *f, const char *path, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) { close(fd); return err_set(err, errlen, "%s: cannot stat: %s", path, strerror(errno)); }
    if (!S_ISREG(sb.st_mode)) { close(fd); return err_set(err, errlen, "%s: not a regular file", path); }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) { close(fd); return err_set(err, errlen, "%s: file is %" PRIu64 " bytes, too short for a safetensors header", path, size); }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return err_set(err, errlen, "%s: cannot map: %s", path, strerror(errno));
    uint64_t n = le64(map);
    int r = -1;
    if (n > ST_MAX_HEADER)
        err_set(err, errlen, "%s: header length %" PRIu64 " exceeds the limit of %llu bytes (not a safetensors file?)",
             path, n, ST_MAX_HEADER);
    else if (n > size - 8)
        err_set(err, errlen, "%s: header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)", path, n, size);
    else
        r = st_parse_header((const char *)map + 8, (size_t)n, size - 8 - n, path, f, err, errlen);
    if (r) { munmap(map, (size_t)size); return -1; }
    f->path = xstrdup(path);
    f->map = map;
    f->size = (size_t)size;
    f->header_len = n;
    f->data = (const uint8_t *)map + 8 + n;
    for (size_t i = 0; i < f->n; i++) f->t[i].data = f->data + f->t[i].begin;
    return 0;
}

void st_open_or_die(st_file *f, const char *path) {
    char err[1024];
    if (st_open(f, path, err, sizeof err)) die("%s", err);
}

void st_close(st_file *f) {
    free_parsed(f);
    if (f->map) munmap(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
    for (size_t i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_key[i], key)) return f->meta_val[i];
    return NULL;
}

int st_read_header_fd(int fd, const char *what, uint64_t data_len, st_file *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    uint8_t len8[8];
    ssize_t r = read_full(fd, len8, 8);
    if (r < 0) return err_set(err, errlen, "%s: cannot read: %s", what, strerror(errno));
    if (r < 8) return err_set(err, errlen, "%s: input is %zd bytes, too short for a safetensors header", what, r);
    uint64_t n = le64(len8);
    if (n > ST_MAX_HEADER)
        return err_set(err, errlen, "%s: header length %" PRIu64 " exceeds the limit of %llu bytes (not a safetensors stream?)",
                    what, n, ST_MAX_HEADER);
    if (data_len != UINT64_MAX) {
        if (n > data_len)
            return err_set(err, errlen, "%s: header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)",
                        what, n, data_len + 8);
        data_len -= n;
    }
    char *hdr = xmalloc((size_t)n + 1);
    r = read_full(fd, hdr, (size_t)n);
    if (r < 0) { free(hdr); return err_set(err, errlen, "%s: cannot read: %s", what, strerror(errno)); }
    if ((uint64_t)r < n) {
        free(hdr);
        return err_set(err, errlen, "%s: input ends inside the header (%zd of %" PRIu64 " bytes)", what, r, n);
    }
    int rc = st_parse_header(hdr, (size_t)n, data_len, what, f, err, errlen);
    free(hdr);
    if (rc) return -1;
    f->path = xstrdup(what);
    f->header_len = n;
    return 0;
}

// ---- writing --------------------------------------------------------------

void st_writer_init(st_writer *w) { memset(w, 0, sizeof *w); }

void st_writer_meta(st_writer *w, const char *key, const char *val) {
    w->meta_key = xrealloc(w->meta_key, (w->n_meta + 1) * sizeof(char *));
    w->meta_val = xrealloc(w->meta_val, (w->n_meta + 1) * sizeof(char *));
    w->meta_key[w->n_meta] = xstrdup(key);
    w->meta_val[w->n_meta++] = xstrdup(val);
}

void st_writer_add(st_writer *w, const char *name, dtype dt, int ndim, const size_t *shape) {
    CHECK(ndim >= 0 && ndim <= ST_MAX_DIMS, "tensor %s: %d dimensions", name, ndim);
    w->t = xgrow(w->t, &w->cap, w->n + 1, sizeof *w->t);
    st_tensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->dtype = dt;
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) { t->shape[d] = shape[d]; t->numel *= shape[d]; }
}

// Reference order: dtype descending (in the writer's enum order), then name
// ascending byte-wise.
static int cmp_plan(const void *a, const void *b, void *ctx) {
    const st_tensor *t = ctx;
    const st_tensor *x = &t[*(const size_t *)a], *y = &t[*(const size_t *)b];
    int rx = dtype_st_rank(x->dtype), ry = dtype_st_rank(y->dtype);
    if (rx != ry) return rx > ry ? -1 : 1;
    return strcmp(x->name, y->name);
}

// JSON string as serde_json writes it: only '"', '\\' and control
// characters are escaped (short forms where they exist, else \u00xx).
static void put_json_string(char **p, size_t *n, size_t *cap, const char *s) {
    size_t len = strlen(s);
    *p = xgrow(*p, cap, *n + len * 6 + 3, 1);
    char *o = *p + *n;
    *o++ = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"': *o++ = '\\'; *o++ = '"'; break;
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        case '\b': *o++ = '\\'; *o++ = 'b'; break;
        case '\f': *o++ = '\\'; *o++ = 'f'; break;
        default:
            if (*c < 0x20) o += sprintf(o, "\\u%04x", *c);
            else *o++ = (char)*c;
        }
    }
    *o++ = '"';
    *n = (size_t)(o - *p);
}

static void put_raw(char **p, size_t *n, size_t *cap, const char *s) {
    size_t len = strlen(s);
    *p = xgrow(*p, cap, *n + len + 1, 1);
    memcpy(*p + *n, s, len);
    *n += len;
}

void st_writer_plan(st_writer *w) {
    free(w->order);
    w->order = xmalloc((w->n ? w->n : 1) * sizeof *w->order);
    for (size_t i = 0; i < w->n; i++) w->order[i] = i;
    qsort_r(w->order, w->n, sizeof *w->order, cmp_plan, w->t);
    for (size_t i = 1; i < w->n; i++)
        CHECK(strcmp(w->t[w->order[i - 1]].name, w->t[w->order[i]].name) != 0,
              "tensor %s added twice", w->t[w->order[i]].name);
    char *h = NULL; size_t n = 0, cap = 0;
    put_raw(&h, &n, &cap, "{");
    if (w->n_meta) {
        put_raw(&h, &n, &cap, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i) put_raw(&h, &n, &cap, ",");
            put_json_string(&h, &n, &cap, w->meta_key[i]);
            put_raw(&h, &n, &cap, ":");
            put_json_string(&h, &n, &cap, w->meta_val[i]);
        }
        put_raw(&h, &n, &cap, "}");
    }
    uint64_t off = 0;
    char num[64];
    for (size_t k = 0; k < w->n; k++) {
        st_tensor *t = &w->t[w->order[k]];
        uint64_t bytes = (uint64_t)t->numel * (uint64_t)dtype_bits(t->dtype) / 8;
        t->begin = off;
        t->end = off + bytes;
        off = t->end;
        if (k || w->n_meta) put_raw(&h, &n, &cap, ",");
        put_json_string(&h, &n, &cap, t->name);
        put_raw(&h, &n, &cap, ":{\"dtype\":\"");
        put_raw(&h, &n, &cap, dtype_name(t->dtype));
        put_raw(&h, &n, &cap, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%zu" : "%zu", t->shape[d]);
            put_raw(&h, &n, &cap, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", t->begin, t->end);
        put_raw(&h, &n, &cap, num);
    }
    put_raw(&h, &n, &cap, "}");
    while (n % 8) put_raw(&h, &n, &cap, " ");   // data starts 8-byte aligned
    free(w->header);
    w->header = h;
    w->header_len = n;
    w->data_len = off;
}

uint64_t st_writer_file_size(const st_writer *w) { return 8 + (uint64_t)w->header_len + w->data_len; }

uint8_t *st_writer_prefix(const st_writer *w, size_t *len) {
    CHECK(w->header, "st_writer_prefix before st_writer_plan");
    uint8_t *p = xmalloc(8 + w->header_len);
    uint64_t n = w->header_len;
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(n >> (8 * i));
    memcpy(p + 8, w->header, w->header_len);
    *len = 8 + w->header_len;
    return p;
}

void st_writer_free(st_writer *w) {
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    for (size_t i = 0; i < w->n_meta; i++) { free(w->meta_key[i]); free(w->meta_val[i]); }
    free(w->t); free(w->meta_key); free(w->meta_val); free(w->header); free(w->order);
    memset(w, 0, sizeof *w);
}

void st_write_file(const char *path, st_writer *w, const void *const *data) {
    if (!w->header) st_writer_plan(w);
    aout o;
    aout_open(&o, path);
    size_t len;
    uint8_t *pre = st_writer_prefix(w, &len);
    aout_write(&o, pre, len);
    free(pre);
    for (size_t k = 0; k < w->n; k++) {
        size_t i = w->order[k];
        aout_write(&o, data[i], (size_t)(w->t[i].end - w->t[i].begin));
    }
    aout_commit(&o);
}
