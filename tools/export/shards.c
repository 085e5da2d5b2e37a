// tools/export/shards.c: the shard plan and the index file.
#include "shards.h"
#include "check.h"
#include "pyjson.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Compare two digit strings as integers.
static int cmp_digits(const char *a, size_t na, const char *b, size_t nb) {
    while (na > 1 && *a == '0') { a++; na--; }
    while (nb > 1 && *b == '0') { b++; nb--; }
    if (na != nb) return na < nb ? -1 : 1;
    return memcmp(a, b, na);
}

// transformers' dot_natural_key: names split on '.', an all-digit part
// compares as a number and sorts before text, a text part compares by its
// text and then by its trailing digits as a number ("layers.2" < "layers.10").
static int cmp_natural(const char *a, const char *b) {
    for (;;) {
        size_t na = strcspn(a, "."), nb = strcspn(b, ".");
        size_t da = 0, db = 0;   // trailing digits
        while (da < na && a[na - 1 - da] >= '0' && a[na - 1 - da] <= '9') da++;
        while (db < nb && b[nb - 1 - db] >= '0' && b[nb - 1 - db] <= '9') db++;
        int num_a = na && da == na, num_b = nb && db == nb;
        int c;
        if (num_a != num_b) return num_a ? -1 : 1;
        if (num_a) {
            c = cmp_digits(a, na, b, nb);
        } else {
            size_t ta = na - da, tb = nb - db, m = ta < tb ? ta : tb;
            c = memcmp(a, b, m);
            if (!c && ta != tb) c = ta < tb ? -1 : 1;
            if (!c && (da != 0) != (db != 0)) c = da ? 1 : -1;   // (1, t) before (1, t, n)
            if (!c && da) c = cmp_digits(a + ta, da, b + tb, db);
        }
        if (c) return c;
        a += na; b += nb;
        if (!*a || !*b) return *a ? 1 : *b ? -1 : 0;   // a prefix sorts first
        a++; b++;
    }
}

static int cmp_order(const void *x, const void *y, void *ctx) {
    const st_tensor *t = ctx;
    return cmp_natural(t[*(const size_t *)x].name, t[*(const size_t *)y].name);
}

void shard_plan_build(shard_plan *p, const st_file *in, uint64_t max_bytes) {
    memset(p, 0, sizeof *p);
    // transformers 5 sorts the state dict with dot_natural_key before it
    // splits (revert_weight_conversion, for every model from from_pretrained;
    // a model built in memory keeps module order instead).
    size_t no = in->n;
    size_t *order = xmalloc((no ? no : 1) * sizeof *order);
    for (size_t i = 0; i < no; i++) order[i] = i;
    qsort_r(order, no, sizeof *order, cmp_order, in->t);

    // Shards are numbered in the order they are appended to the list; the
    // open shard is appended only when it is closed (or at the end), so an
    // oversized tensor's shard can precede the one it interrupted.
    p->shard_of = xcalloc(in->n + 1, sizeof *p->shard_of);
    size_t *open = xmalloc((in->n ? in->n : 1) * sizeof *open), nopen = 0;
    uint64_t open_bytes = 0;
    for (size_t j = 0; j < no; j++) {
        const st_tensor *t = &in->t[order[j]];
        uint64_t b = st_nbytes(t);
        p->total_size += b;
        p->total_params += t->numel;
        if (b > max_bytes) { p->shard_of[order[j]] = p->n++; continue; }
        if (nopen && open_bytes + b > max_bytes) {
            for (size_t k = 0; k < nopen; k++) p->shard_of[open[k]] = p->n;
            p->n++;
            nopen = 0;
            open_bytes = 0;
        }
        open[nopen++] = order[j];
        open_bytes += b;
    }
    if (nopen) {
        for (size_t k = 0; k < nopen; k++) p->shard_of[open[k]] = p->n;
        p->n++;
    }
    free(open);
    p->w = xcalloc(p->n + 1, sizeof *p->w);

    p->slot_of = xcalloc(in->n + 1, sizeof *p->slot_of);
    p->file = xcalloc(p->n + 1, sizeof *p->file);
    for (size_t s = 0; s < p->n; s++) {
        st_writer_init(&p->w[s]);
        st_writer_meta(&p->w[s], "format", "pt");
        char name[64];
        if (p->n == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, p->n);
        p->file[s] = xstrdup(name);
    }
    for (size_t j = 0; j < no; j++) {
        size_t i = order[j], s = p->shard_of[i];
        p->slot_of[i] = p->w[s].n;
        st_writer_add(&p->w[s], in->t[i].name, in->t[i].dtype, in->t[i].ndim, in->t[i].shape);
    }
    for (size_t s = 0; s < p->n; s++) st_writer_plan(&p->w[s]);
    free(order);
}

void shard_plan_free(shard_plan *p) {
    for (size_t s = 0; s < p->n; s++) { st_writer_free(&p->w[s]); free(p->file[s]); }
    free(p->w); free(p->file); free(p->shard_of); free(p->slot_of);
    memset(p, 0, sizeof *p);
}

char *shard_plan_index_json(const shard_plan *p) {
    json_t *root = json_object(), *meta = json_object(), *wm = json_object();
    json_object_set_new(meta, "total_parameters", json_integer((json_int_t)p->total_params));
    json_object_set_new(meta, "total_size", json_integer((json_int_t)p->total_size));
    for (size_t s = 0; s < p->n; s++)
        for (size_t i = 0; i < p->w[s].n; i++) json_object_set_new(wm, p->w[s].t[i].name, json_string(p->file[s]));
    json_object_set_new(root, "metadata", meta);
    json_object_set_new(root, "weight_map", wm);
    char *s = pyjson_dumps(root, 2, 1);
    json_decref(root);
    size_t n = strlen(s);
    s = xrealloc(s, n + 2);
    s[n] = '\n'; s[n + 1] = 0;
    return s;
}

uint64_t shard_plan_bytes(const shard_plan *p) {
    uint64_t b = 0;
    for (size_t s = 0; s < p->n; s++) b += st_writer_file_size(&p->w[s]);
    return b;
}
