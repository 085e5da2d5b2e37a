// lib/hf_model.c: open and validate a Qwen2 model folder (single or sharded).
#include "hf_model.h"
#include "check.h"
#include "errmsg.h"
#include "fsutil.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void spec(hf_tensor_spec *s, size_t *k, int opt, size_t d0, size_t d1, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void spec(hf_tensor_spec *s, size_t *k, int opt, size_t d0, size_t d1, const char *fmt, ...) {
    hf_tensor_spec *t = &s[(*k)++];
    va_list ap; va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->optional = opt;
}

size_t hf_expected_tensors(const hf_config *c, hf_tensor_spec **out) {
    size_t H = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, L = c->num_hidden_layers;
    size_t q = c->num_attention_heads * c->head_dim, kv = c->num_key_value_heads * c->head_dim;
    hf_tensor_spec *s = xcalloc(3 + 12 * L, sizeof *s);
    size_t k = 0;
    spec(s, &k, 0, V, H, "model.embed_tokens.weight");
    for (size_t i = 0; i < L; i++) {
        spec(s, &k, 0, q, H, "model.layers.%zu.self_attn.q_proj.weight", i);
        spec(s, &k, 0, q, 0, "model.layers.%zu.self_attn.q_proj.bias", i);
        spec(s, &k, 0, kv, H, "model.layers.%zu.self_attn.k_proj.weight", i);
        spec(s, &k, 0, kv, 0, "model.layers.%zu.self_attn.k_proj.bias", i);
        spec(s, &k, 0, kv, H, "model.layers.%zu.self_attn.v_proj.weight", i);
        spec(s, &k, 0, kv, 0, "model.layers.%zu.self_attn.v_proj.bias", i);
        spec(s, &k, 0, H, q, "model.layers.%zu.self_attn.o_proj.weight", i);
        spec(s, &k, 0, F, H, "model.layers.%zu.mlp.gate_proj.weight", i);
        spec(s, &k, 0, F, H, "model.layers.%zu.mlp.up_proj.weight", i);
        spec(s, &k, 0, H, F, "model.layers.%zu.mlp.down_proj.weight", i);
        spec(s, &k, 0, H, 0, "model.layers.%zu.input_layernorm.weight", i);
        spec(s, &k, 0, H, 0, "model.layers.%zu.post_attention_layernorm.weight", i);
    }
    spec(s, &k, 0, H, 0, "model.norm.weight");
    spec(s, &k, c->tie_word_embeddings, V, H, "lm_head.weight");
    *out = s;
    return k;
}

static int cmp_spec(const void *a, const void *b) {
    return strcmp(((const hf_tensor_spec *)a)->name, ((const hf_tensor_spec *)b)->name);
}

static void fmt_shape(char *buf, size_t n, int ndim, const size_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && o < n; d++) o += (size_t)snprintf(buf + o, n - o, d ? ", %zu" : "%zu", shape[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

int hf_check_tensors(const hf_config *c, const st_tensor *const *t, size_t n, const char *const *files,
                     const char *what, char *err, size_t errlen) {
    hf_tensor_spec *s;
    size_t ns = hf_expected_tensors(c, &s);
    qsort(s, ns, sizeof *s, cmp_spec);
    size_t *seen = xcalloc(ns, sizeof *seen);   // 1 + index into t of the tensor found
    int r = -1;
    for (size_t i = 0; i < n; i++) {
        const char *file = files ? files[i] : what;
        hf_tensor_spec key;
        snprintf(key.name, sizeof key.name, "%s", t[i]->name);
        hf_tensor_spec *e = strlen(t[i]->name) < sizeof key.name ? bsearch(&key, s, ns, sizeof *s, cmp_spec) : NULL;
        if (!e) {
            unsigned long layer;
            if (sscanf(t[i]->name, "model.layers.%lu.", &layer) == 1 && layer >= c->num_hidden_layers)
                err_set(err, errlen, "%s: tensor '%s': layer %lu is out of range (%s has %zu layers)", file, t[i]->name,
                     layer, c->path, c->num_hidden_layers);
            else
                err_set(err, errlen, "%s: unexpected tensor '%s' (not part of a Qwen2 model)", file, t[i]->name);
            goto done;
        }
        size_t k = (size_t)(e - s);
        if (seen[k]) {
            err_set(err, errlen, "%s: tensor '%s' is stored twice (also in %s)", file, t[i]->name,
                 files ? files[seen[k] - 1] : what);
            goto done;
        }
        seen[k] = i + 1;
        if (t[i]->ndim != e->ndim || t[i]->shape[0] != e->shape[0] || (e->ndim == 2 && t[i]->shape[1] != e->shape[1])) {
            char got[128], want[64];
            fmt_shape(got, sizeof got, t[i]->ndim, t[i]->shape);
            fmt_shape(want, sizeof want, e->ndim, e->shape);
            err_set(err, errlen, "%s: tensor '%s' has shape %s but %s implies %s", file, t[i]->name, got, c->path, want);
            goto done;
        }
        if (!dtype_is_float(t[i]->dtype)) {
            err_set(err, errlen, "%s: tensor '%s' has dtype %s (weights must be BF16, F16 or F32)", file, t[i]->name,
                 dtype_name(t[i]->dtype));
            goto done;
        }
    }
    for (size_t k = 0; k < ns; k++) {
        if (!seen[k] && !s[k].optional) {
            err_set(err, errlen, "%s: missing tensor '%s'%s", what, s[k].name,
                 !strcmp(s[k].name, "lm_head.weight") ? " (tie_word_embeddings is false)" : "");
            goto done;
        }
    }
    r = 0;
done:
    free(s);
    free(seen);
    return r;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

// Read model.safetensors.index.json: the shard file names, in first-seen
// order, and check that each tensor is in the file the index names.
static int open_sharded(hf_model *m, const char *index_path, char *err, size_t errlen) {
    json_error_t je;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return err_set(err, errlen, "%s: line %d: %s", index_path, je.line, je.text);
    int r = -1;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) { err_set(err, errlen, "%s: missing \"weight_map\" object", index_path); goto done; }
    const char *name; json_t *v;
    size_t cap = 0, nf = 0;
    char **files = NULL;
    json_object_foreach(wm, name, v) {
        if (!json_is_string(v)) { err_set(err, errlen, "%s: weight_map[\"%s\"] is not a file name", index_path, name); goto done_files; }
        const char *fn = json_string_value(v);
        if (!*fn || strchr(fn, '/') || !strcmp(fn, "..") || !strcmp(fn, ".")) {
            err_set(err, errlen, "%s: weight_map[\"%s\"] = \"%s\" is not a file name in the folder", index_path, name, fn);
            goto done_files;
        }
        size_t k;
        for (k = 0; k < nf; k++) if (!strcmp(files[k], fn)) break;
        if (k == nf) {
            files = xgrow(files, &cap, nf + 1, sizeof *files);
            files[nf++] = xstrdup(fn);
        }
    }
    m->shards = xcalloc(nf ? nf : 1, sizeof *m->shards);
    for (size_t k = 0; k < nf; k++) {
        char *p = path_join(m->dir, files[k]);
        int rc = st_open(&m->shards[k], p, err, errlen);
        free(p);
        if (rc) goto done_files;
        m->n_shards = k + 1;
    }
    // Every tensor of every shard must be the one the index names, and vice versa.
    for (size_t k = 0; k < m->n_shards; k++) {
        for (size_t i = 0; i < m->shards[k].n; i++) {
            json_t *f = json_object_get(wm, m->shards[k].t[i].name);
            if (!f || strcmp(json_string_value(f), files[k])) {
                err_set(err, errlen, "%s: tensor '%s' is not listed for this file in %s", m->shards[k].path,
                     m->shards[k].t[i].name, index_path);
                goto done_files;
            }
        }
    }
    json_object_foreach(wm, name, v) {
        size_t k;
        for (k = 0; k < m->n_shards; k++) if (!strcmp(files[k], json_string_value(v))) break;
        if (!st_find(&m->shards[k], name)) {
            err_set(err, errlen, "%s: tensor '%s' is listed in %s but absent from it", index_path, name, files[k]);
            goto done_files;
        }
    }
    r = 0;
done_files:
    for (size_t k = 0; k < nf; k++) free(files[k]);
    free(files);
done:
    json_decref(root);
    return r;
}

int hf_model_open(hf_model *m, const char *dir, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->dir = xstrdup(dir);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        err_set(err, errlen, "%s: not a model folder (%s)", dir, errno ? io_errstr() : "not a directory");
        free(m->dir);
        m->dir = NULL;
        return -1;
    }
    char *cp = path_join(dir, "config.json");
    int rc = hf_config_load(&m->cfg, cp, err, errlen);
    free(cp);
    if (rc) { hf_model_close(m); return -1; }
    // transformers prefers model.safetensors when both it and an index exist.
    char *single = path_join(dir, "model.safetensors"), *index = path_join(dir, "model.safetensors.index.json");
    if (is_regular_file(single)) {
        m->shards = xcalloc(1, sizeof *m->shards);
        rc = st_open(&m->shards[0], single, err, errlen);
        if (!rc) m->n_shards = 1;
    } else if (is_regular_file(index)) {
        rc = open_sharded(m, index, err, errlen);
    } else {
        rc = err_set(err, errlen, "%s: no model.safetensors or model.safetensors.index.json", dir);
    }
    free(single);
    free(index);
    if (rc) { hf_model_close(m); return -1; }
    for (size_t k = 0; k < m->n_shards; k++) m->n += m->shards[k].n;
    m->by_name = xmalloc((m->n ? m->n : 1) * sizeof *m->by_name);
    const char **files = xmalloc((m->n ? m->n : 1) * sizeof *files);
    size_t i = 0;
    for (size_t k = 0; k < m->n_shards; k++)
        for (size_t j = 0; j < m->shards[k].n; j++, i++) {
            m->by_name[i] = &m->shards[k].t[j];
            files[i] = m->shards[k].path;
        }
    rc = hf_check_tensors(&m->cfg, m->by_name, m->n, files, dir, err, errlen);
    free(files);
    if (rc) { hf_model_close(m); return -1; }
    qsort(m->by_name, m->n, sizeof *m->by_name, cmp_by_name);
    return 0;
}

void hf_model_open_or_die(hf_model *m, const char *dir) {
    char err[1024];
    if (hf_model_open(m, dir, err, sizeof err)) die("%s", err);
}

void hf_model_close(hf_model *m) {
    for (size_t k = 0; k < m->n_shards; k++) st_close(&m->shards[k]);
    free(m->shards);
    free(m->by_name);
    hf_config_free(&m->cfg);
    free(m->dir);
    memset(m, 0, sizeof *m);
}

const st_tensor *hf_model_tensor(const hf_model *m, const char *name) {
    st_tensor key = {.name = (char *)name};
    const st_tensor *kp = &key;
    const st_tensor **hit = bsearch(&kp, m->by_name, m->n, sizeof *m->by_name, cmp_by_name);
    if (hit) return *hit;
    if (m->cfg.tie_word_embeddings && !strcmp(name, "lm_head.weight"))
        return hf_model_tensor(m, "model.embed_tokens.weight");
    return NULL;
}

const st_file *hf_model_file_of(const hf_model *m, const st_tensor *t) {
    for (size_t k = 0; k < m->n_shards; k++)
        if (t >= m->shards[k].t && t < m->shards[k].t + m->shards[k].n) return &m->shards[k];
    return NULL;
}

void hf_tensor_to_f32(const st_tensor *t, float *dst) {
    CHECK(dtype_is_float(t->dtype) && t->data, "tensor %s: cannot convert %s to fp32", t->name, dtype_name(t->dtype));
    to_f32(dst, t->data, t->dtype, t->numel);
}

float *hf_tensor_f32(const st_tensor *t) {
    float *p = xmalloc(t->numel * sizeof *p);
    hf_tensor_to_f32(t, p);
    return p;
}
