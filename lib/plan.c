// lib/plan.c: placement files and the model facts shared by shard-plan and train.
#include "plan.h"
#include "check.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

model_dims plan_dims_from_config(const hf_config *c) {
    model_dims d = {.vocab = c->vocab_size, .hidden = c->hidden_size, .inter = c->intermediate_size,
                    .layers = c->num_hidden_layers, .heads = c->num_attention_heads,
                    .kv_heads = c->num_key_value_heads, .head_dim = c->head_dim, .rms_eps = c->rms_norm_eps,
                    .rope_theta = c->rope_theta, .tied = c->tie_word_embeddings};
    if (!d.kv_heads || d.heads % d.kv_heads)
        die("%s: %zu attention heads are not a multiple of %zu key/value heads", c->path, d.heads, d.kv_heads);
    if (d.head_dim % 2) die("%s: head dimension %zu is odd; RoPE needs an even one", c->path, d.head_dim);
    return d;
}

const char *plan_fingerprint(const model_dims *d) {
    static char buf[160];
    snprintf(buf, sizeof buf, "qwen2 L=%zu H=%zu F=%zu V=%zu heads=%zu/%zu d=%zu tied=%d", d->layers, d->hidden,
             d->inter, d->vocab, d->heads, d->kv_heads, d->head_dim, d->tied);
    return buf;
}

double plan_parameter_count(const model_dims *d) {
    double C = (double)d->hidden, F = (double)d->inter, qd = (double)(d->heads * d->head_dim),
           kvd = (double)(d->kv_heads * d->head_dim);
    double layer = C * qd + qd + 2 * (C * kvd + kvd) + qd * C + 3 * C * F + 2 * C;
    return (double)d->vocab * C * (d->tied ? 1 : 2) + C + (double)d->layers * layer;
}

static int fail(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static int get_size(json_t *root, const char *key, size_t *out, const char *path, char *err, size_t n) {
    json_t *v = json_object_get(root, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return fail(err, n, "%s: \"%s\" is missing or not a non-negative integer", path, key);
    *out = (size_t)json_integer_value(v);
    return 0;
}

int plan_load(plan *p, const char *path, char *err, size_t n) {
    memset(p, 0, sizeof *p);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return fail(err, n, "%s: line %d: %s", path, je.line, je.text);
    int rc = -1;
    const char *fmt = json_string_value(json_object_get(root, "format"));
    json_t *ver = json_object_get(root, "version");
    json_t *model = json_object_get(root, "model");
    const char *fp = json_string_value(json_object_get(model, "fingerprint"));
    size_t mc = 0;
    if (!json_is_object(root) || !fmt || strcmp(fmt, "lorapipe-plan")) {
        fail(err, n, "%s: not a lorapipe placement file (\"format\" is not \"lorapipe-plan\")", path);
    } else if (!json_is_integer(ver) || json_integer_value(ver) != PLAN_VERSION) {
        fail(err, n, "%s: placement file version %lld; this train reads version %d (run shard-plan again)", path,
             (long long)json_integer_value(ver), PLAN_VERSION);
    } else if (!fp) {
        fail(err, n, "%s: \"model\".\"fingerprint\" is missing", path);
    } else if (!get_size(root, "replicas", &p->replicas, path, err, n) &&
               !get_size(root, "stages_per_replica", &p->stages, path, err, n) &&
               !get_size(root, "accum", &p->accum, path, err, n) &&
               !get_size(root, "memory_cap_bytes", &mc, path, err, n)) {
        json_t *rec = json_object_get(root, "recompute"), *off = json_object_get(root, "host_offload");
        json_t *g = json_object_get(root, "gpus");
        if (!json_is_boolean(rec)) fail(err, n, "%s: \"recompute\" is missing or not true/false", path);
        else if (off && !json_is_boolean(off)) fail(err, n, "%s: \"host_offload\" is not true/false", path);
        else if (!json_is_array(g) || json_array_size(g) == 0) fail(err, n, "%s: \"gpus\" is missing or empty", path);
        else if (p->replicas == 0 || p->replicas > json_array_size(g))
            fail(err, n, "%s: %zu replicas for %zu GPUs", path, p->replicas, json_array_size(g));
        else if (p->stages != 1)
            fail(err, n, "%s: %zu layer stages per replica; this train runs whole-model replicas only", path, p->stages);
        else {
            p->recompute = json_is_true(rec);
            p->offload = off && json_is_true(off);
            p->gpus = json_array_size(g);
            p->memory_cap = mc;
            p->fingerprint = xstrdup(fp);
            p->path = xstrdup(path);
            rc = 0;
        }
    }
    json_decref(root);
    return rc;
}

void plan_free(plan *p) {
    free(p->fingerprint);
    free(p->path);
    memset(p, 0, sizeof *p);
}
