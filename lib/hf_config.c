// lib/hf_config.c: config.json of a Qwen2-family model.
#include "hf_config.h"
#include "atomic_out.h"
#include "check.h"
#include "errmsg.h"
#include "pyjson.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

// Upper bounds on the sizes: far above any Qwen2 (72B: hidden 8192, 29568
// intermediate, 80 layers, 64 heads, vocabulary 152064) and low enough that
// every size computed from them (a weight's bytes: V x H x 4; all layers'
// parameters) fits in 64 bits.  Without them a config could make the
// arithmetic downstream wrap around and allocate or map the wrong sizes.
#define MAX_VOCAB (1u << 24)
#define MAX_WIDTH (1u << 20)
#define MAX_COUNT (1u << 12)

// A positive integer key, at most max; required unless def > 0 (used when
// absent or null).
static int get_dim(const json_t *root, const char *key, size_t def, size_t max, size_t *out, const char *what,
                   char *err, size_t n) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (!def) return err_set(err, n, "%s: missing \"%s\"", what, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return err_set(err, n, "%s: \"%s\" must be a positive integer", what, key);
    if ((json_int_t)max < json_integer_value(v))
        return err_set(err, n, "%s: \"%s\" = %lld is beyond the largest supported (%zu)", what, key,
                       (long long)json_integer_value(v), max);
    *out = (size_t)json_integer_value(v);
    return 0;
}

static int get_real(const json_t *root, const char *key, double def, double *out, const char *what, char *err, size_t n) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) { *out = def; return 0; }
    if (!json_is_number(v)) return err_set(err, n, "%s: \"%s\" must be a number", what, key);
    *out = json_number_value(v);
    return 0;
}

static int is_default_rope(const json_t *v) {
    if (!v || json_is_null(v)) return 1;
    if (!json_is_object(v)) return 0;
    json_t *t = json_object_get(v, "rope_type");
    if (!t) t = json_object_get(v, "type");
    return t && json_is_string(t) && !strcmp(json_string_value(t), "default");
}

int hf_config_parse(hf_config *c, const char *text, size_t len, const char *what, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return err_set(err, errlen, "%s: line %d: %s", what, je.line, je.text);
    if (!json_is_object(root)) { json_decref(root); return err_set(err, errlen, "%s: not a JSON object", what); }
    c->json = root;
    c->path = xstrdup(what);
    int r = -1;
    json_t *mt = json_object_get(root, "model_type");
    if (!json_is_string(mt)) { err_set(err, errlen, "%s: missing \"model_type\"", what); goto done; }
    if (strcmp(json_string_value(mt), "qwen2")) {
        err_set(err, errlen, "%s: model_type \"%s\" is not supported (only qwen2: Qwen1.5, Qwen2, Qwen2.5)", what,
             json_string_value(mt));
        goto done;
    }
    c->model_type = xstrdup(json_string_value(mt));
    json_t *act = json_object_get(root, "hidden_act");
    if (act && !(json_is_string(act) && !strcmp(json_string_value(act), "silu"))) {
        err_set(err, errlen, "%s: hidden_act must be \"silu\" (the only activation Qwen2 uses)", what);
        goto done;
    }
    if (!is_default_rope(json_object_get(root, "rope_scaling"))) {
        err_set(err, errlen, "%s: rope_scaling is set; scaled RoPE is not supported", what);
        goto done;
    }
    json_t *rp = json_object_get(root, "rope_parameters");
    if (rp && !json_is_null(rp) && (!json_is_object(rp) || !is_default_rope(rp))) {
        err_set(err, errlen, "%s: rope_parameters has a rope_type other than \"default\"; scaled RoPE is not supported", what);
        goto done;
    }
    json_t *sw = json_object_get(root, "use_sliding_window");
    if (json_is_true(sw)) {
        err_set(err, errlen, "%s: use_sliding_window is true; sliding-window attention is not supported", what);
        goto done;
    }
    json_t *lt = json_object_get(root, "layer_types");
    if (json_is_array(lt)) {
        size_t i; json_t *e;
        json_array_foreach(lt, i, e) {
            if (!json_is_string(e) || strcmp(json_string_value(e), "full_attention")) {
                err_set(err, errlen, "%s: layer_types[%zu] is not \"full_attention\"; sliding-window attention is not supported",
                     what, i);
                goto done;
            }
        }
    }
    if (get_dim(root, "vocab_size", 0, MAX_VOCAB, &c->vocab_size, what, err, errlen) ||
        get_dim(root, "hidden_size", 0, MAX_WIDTH, &c->hidden_size, what, err, errlen) ||
        get_dim(root, "intermediate_size", 0, MAX_WIDTH, &c->intermediate_size, what, err, errlen) ||
        get_dim(root, "num_hidden_layers", 0, MAX_COUNT, &c->num_hidden_layers, what, err, errlen) ||
        get_dim(root, "num_attention_heads", 0, MAX_COUNT, &c->num_attention_heads, what, err, errlen) ||
        get_dim(root, "num_key_value_heads", c->num_attention_heads, MAX_COUNT, &c->num_key_value_heads, what, err,
                errlen))
        goto done;
    if (c->hidden_size % c->num_attention_heads && !json_is_integer(json_object_get(root, "head_dim"))) {
        err_set(err, errlen, "%s: hidden_size %zu is not a multiple of num_attention_heads %zu", what, c->hidden_size,
             c->num_attention_heads);
        goto done;
    }
    if (get_dim(root, "head_dim", c->hidden_size / c->num_attention_heads ? c->hidden_size / c->num_attention_heads : 1,
                MAX_COUNT, &c->head_dim, what, err, errlen))
        goto done;
    if (c->num_attention_heads % c->num_key_value_heads) {
        err_set(err, errlen, "%s: num_attention_heads %zu is not a multiple of num_key_value_heads %zu", what,
             c->num_attention_heads, c->num_key_value_heads);
        goto done;
    }
    if (get_real(root, "rms_norm_eps", 1e-6, &c->rms_norm_eps, what, err, errlen) ||
        get_real(root, "rope_theta", 10000.0, &c->rope_theta, what, err, errlen))
        goto done;
    if (json_is_object(rp) && get_real(rp, "rope_theta", c->rope_theta, &c->rope_theta, what, err, errlen)) goto done;
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_boolean(tie)) { err_set(err, errlen, "%s: tie_word_embeddings must be true or false", what); goto done; }
    c->tie_word_embeddings = json_is_true(tie);
    c->dtype = DT_INVALID;
    const char *keys[2] = {"torch_dtype", "dtype"};   // "dtype" (v5) wins when both are present
    for (int k = 0; k < 2; k++) {
        json_t *d = json_object_get(root, keys[k]);
        if (!d) continue;
        if (k) c->has_dtype = 1; else c->has_torch_dtype = 1;
        if (json_is_null(d)) continue;
        dtype t = json_is_string(d) ? dtype_from_torch_name(json_string_value(d)) : DT_INVALID;
        if (!dtype_is_float(t)) {
            err_set(err, errlen, "%s: \"%s\" must be \"bfloat16\", \"float16\" or \"float32\"", what, keys[k]);
            goto done;
        }
        c->dtype = t;
    }
    r = 0;
done:
    if (r) hf_config_free(c);
    return r;
}

int hf_config_load(hf_config *c, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { memset(c, 0, sizeof *c); return err_set(err, errlen, "%s: cannot open: %s", path, io_errstr()); }
    fclose(f);
    size_t len;
    char *text = read_file(path, &len);
    int r = hf_config_parse(c, text, len, path, err, errlen);
    free(text);
    return r;
}

void hf_config_load_or_die(hf_config *c, const char *path) {
    char err[1024];
    if (hf_config_load(c, path, err, sizeof err)) die("%s", err);
}

void hf_config_free(hf_config *c) {
    if (c->json) json_decref(c->json);
    free(c->path); free(c->model_type);
    memset(c, 0, sizeof *c);
}

char *hf_config_dump_with_dtype(const hf_config *c, dtype dt) {
    json_t *root = json_deep_copy(c->json);
    const char *name = dtype_torch_name(dt);
    CHECK(name && dtype_is_float(dt), "hf_config_dump_with_dtype: dtype %s", dtype_name(dt));
    int any = 0;
    if (c->has_torch_dtype) { json_object_set_new(root, "torch_dtype", json_string(name)); any = 1; }
    if (c->has_dtype) { json_object_set_new(root, "dtype", json_string(name)); any = 1; }
    if (!any) json_object_set_new(root, json_object_get(root, "rope_parameters") ? "dtype" : "torch_dtype", json_string(name));
    char *s = pyjson_dumps(root, 2, 1);
    json_decref(root);
    size_t n = strlen(s);
    s = xrealloc(s, n + 2);
    s[n] = '\n'; s[n + 1] = 0;
    return s;
}

void hf_config_write_with_dtype(const hf_config *c, dtype dt, const char *path) {
    char *s = hf_config_dump_with_dtype(c, dt);
    aout o;
    aout_open(&o, path);
    aout_write(&o, s, strlen(s));
    aout_commit(&o);
    free(s);
}
