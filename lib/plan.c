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

// Read "placement" into p->bounds and p->gpu: every (replica, stage) once, each
// replica's stages covering [0, layers) in order, every replica cut alike, the
// embedding on the first stage only and the head on the last only. Two ranks
// may share a GPU (a pipeline tried out on one card); the index must exist.
static int load_placement(plan *p, json_t *pl, size_t ngpus, const char *path, char *err, size_t n) {
    size_t np = json_array_size(pl), S = p->stages, ranks;
    if (!json_is_array(pl)) return fail(err, n, "%s: \"placement\" is missing or not an array", path);
    if (S == 0) return fail(err, n, "%s: \"stages_per_replica\" is 0", path);
    if (S > p->layers)
        return fail(err, n, "%s: %zu stages per replica for %zu layers (every stage holds at least one layer)", path,
                    S, p->layers);
    // Checked before allocating: a rank per entry, so the count is bounded by the file.
    if (p->replicas > np / S)
        return fail(err, n, "%s: \"placement\" has %zu entries; %zu replicas x %zu stages need one each", path, np,
                    p->replicas, S);
    ranks = p->replicas * S;
    size_t *first = xcalloc(ranks, sizeof *first), *end = xcalloc(ranks, sizeof *end), *where = xcalloc(ranks, sizeof *where);
    p->gpu = xcalloc(ranks, sizeof *p->gpu);
    p->bounds = xcalloc(S + 1, sizeof *p->bounds);
    int rc = -1;
    for (size_t i = 0; i < np; i++) {
        json_t *e = json_array_get(pl, i);
        json_t *jr = json_object_get(e, "replica"), *js = json_object_get(e, "stage"), *jg = json_object_get(e, "gpu");
        json_t *jl = json_object_get(e, "layers"), *je = json_object_get(e, "embedding"), *jh = json_object_get(e, "head");
        json_t *l0 = json_array_get(jl, 0), *l1 = json_array_get(jl, 1);
        if (!json_is_object(e)) { fail(err, n, "%s: \"placement\"[%zu] is not an object", path, i); goto out; }
        if (!json_is_integer(jr) || json_integer_value(jr) < 0 || (size_t)json_integer_value(jr) >= p->replicas ||
            !json_is_integer(js) || json_integer_value(js) < 0 || (size_t)json_integer_value(js) >= S) {
            fail(err, n, "%s: \"placement\"[%zu]: \"replica\" and \"stage\" must be integers below %zu and %zu", path,
                 i, p->replicas, S);
            goto out;
        }
        size_t r = (size_t)json_integer_value(jr), s = (size_t)json_integer_value(js), k = r * S + s;
        if (where[k]) {
            fail(err, n, "%s: \"placement\"[%zu]: replica %zu, stage %zu appears twice (also \"placement\"[%zu])", path,
                 i, r, s, where[k] - 1);
            goto out;
        }
        where[k] = i + 1;
        if (!json_is_integer(jg) || json_integer_value(jg) < 0 || (size_t)json_integer_value(jg) >= ngpus) {
            fail(err, n, "%s: \"placement\"[%zu] (replica %zu, stage %zu): \"gpu\" must be an index into \"gpus\" "
                 "(0 to %zu)", path, i, r, s, ngpus - 1);
            goto out;
        }
        p->gpu[k] = (int)json_integer_value(jg);
        if (!json_is_array(jl) || json_array_size(jl) != 2 || !json_is_integer(l0) || !json_is_integer(l1) ||
            json_integer_value(l0) < 0 || json_integer_value(l1) <= json_integer_value(l0) ||
            (size_t)json_integer_value(l1) > p->layers) {
            fail(err, n, "%s: \"placement\"[%zu] (replica %zu, stage %zu): \"layers\" must be [first, end) with "
                 "first < end <= %zu", path, i, r, s, p->layers);
            goto out;
        }
        first[k] = (size_t)json_integer_value(l0);
        end[k] = (size_t)json_integer_value(l1);
        if (!json_is_boolean(je) || !json_is_boolean(jh)) {
            fail(err, n, "%s: \"placement\"[%zu] (replica %zu, stage %zu): \"embedding\" and \"head\" must be "
                 "true/false", path, i, r, s);
            goto out;
        }
        // The trainer's stage roles: tokens enter at stage 0, the loss is taken on the last stage.
        if (json_is_true(je) != (s == 0)) {
            fail(err, n, "%s: \"placement\"[%zu] (replica %zu, stage %zu): \"embedding\" is %s; only stage 0 holds "
                 "the embedding", path, i, r, s, json_is_true(je) ? "true" : "false");
            goto out;
        }
        if (json_is_true(jh) != (s == S - 1)) {
            fail(err, n, "%s: \"placement\"[%zu] (replica %zu, stage %zu): \"head\" is %s; only the last stage "
                 "(%zu) holds the head", path, i, r, s, json_is_true(jh) ? "true" : "false", S - 1);
            goto out;
        }
    }
    for (size_t k = 0; k < ranks; k++)
        if (!where[k]) {
            fail(err, n, "%s: \"placement\" has no entry for replica %zu, stage %zu", path, k / S, k % S);
            goto out;
        }
    // Stage by stage in rank order: each replica contiguous first, then alike to replica 0.
    for (size_t k = 0; k < ranks; k++) {
        size_t r = k / S, s = k % S, i = where[k] - 1;
        size_t want = s ? end[k - 1] : 0;
        if (first[k] != want) {
            if (s)
                fail(err, n, "%s: \"placement\"[%zu] (replica %zu, stage %zu): layers start at %zu, but the stage "
                     "before ends at %zu; a replica's stages cover [0, %zu) in order", path, i, r, s, first[k], want,
                     p->layers);
            else
                fail(err, n, "%s: \"placement\"[%zu] (replica %zu, stage 0): layers start at %zu, not 0; a "
                     "replica's stages cover [0, %zu) in order", path, i, r, first[k], p->layers);
            goto out;
        }
        if (s == S - 1 && end[k] != p->layers) {
            fail(err, n, "%s: \"placement\"[%zu] (replica %zu, stage %zu): the last stage ends at layer %zu; the "
                 "model has %zu", path, i, r, s, end[k], p->layers);
            goto out;
        }
        if (first[k] != first[s] || end[k] != end[s]) {
            fail(err, n, "%s: \"placement\"[%zu] (replica %zu, stage %zu): layers [%zu, %zu), but replica 0's stage "
                 "%zu holds [%zu, %zu); every replica is cut alike", path, i, r, s, first[k], end[k], s, first[s],
                 end[s]);
            goto out;
        }
    }
    for (size_t s = 0; s < S; s++) p->bounds[s] = first[s];
    p->bounds[S] = p->layers;
    rc = 0;
out:
    free(first);
    free(end);
    free(where);
    return rc;
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
    const char *fl = fp ? strstr(fp, " L=") : NULL;
    size_t mc = 0, fp_layers = 0;
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
        if (get_size(model, "layers", &p->layers, path, err, n))
            snprintf(err, n, "%s: \"model\".\"layers\" is missing or not a non-negative integer", path);
        else if (p->layers == 0)
            fail(err, n, "%s: \"model\".\"layers\" is 0", path);
        else if (fl && sscanf(fl, " L=%zu", &fp_layers) == 1 && fp_layers != p->layers)
            // Stage bounds are layer numbers of the fingerprint's model (the one train checks against).
            fail(err, n, "%s: \"model\".\"layers\" is %zu but the fingerprint says L=%zu", path, p->layers,
                 fp_layers);
        else if (!json_is_boolean(rec)) fail(err, n, "%s: \"recompute\" is missing or not true/false", path);
        else if (off && !json_is_boolean(off)) fail(err, n, "%s: \"host_offload\" is not true/false", path);
        else if (!json_is_array(g) || json_array_size(g) == 0) fail(err, n, "%s: \"gpus\" is missing or empty", path);
        else if (p->replicas == 0 || p->replicas > json_array_size(g))
            fail(err, n, "%s: %zu replicas for %zu GPUs", path, p->replicas, json_array_size(g));
        else if (!load_placement(p, json_object_get(root, "placement"), json_array_size(g), path, err, n)) {
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
    if (rc) plan_free(p);
    return rc;
}

void plan_free(plan *p) {
    free(p->fingerprint);
    free(p->path);
    free(p->bounds);
    free(p->gpu);
    memset(p, 0, sizeof *p);
}
