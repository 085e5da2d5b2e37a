// lib/adapter.c: PEFT LoRA adapter folders.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "adapter.h"
#include "atomic_out.h"
#include "check.h"
#include "errmsg.h"
#include "fsutil.h"
#include "pyjson.h"
#include "safetensors.h"

#include <jansson.h>
#include <math.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const KEY_PREFIX = "base_model.model.";
#define PEFT_VERSION "0.21.0"

// ---- regular expressions (PEFT matches module names with Python's re) ----

// Backtracking steps allowed per match: module names are short, and PEFT's
// own patterns need a few thousand steps; a pattern such as "(.|.)*[!?]"
// needs about 2^len and took minutes per config (found while writing the
// adapter_config fuzz target: each such input is a libFuzzer timeout).
// adapter_config_parse refuses patterns that reach the limit on any Qwen2
// module name, so a match never gives up silently later.
#define RE_MATCH_LIMIT 100000

enum { RE_NO_COMPILE = -1, RE_LIMIT = -2 };

// Match subject against pattern anchored at the start (re.match) or at both
// ends (re.fullmatch).  Returns 1/0, RE_NO_COMPILE when the pattern does not
// compile, RE_LIMIT when matching needs more than RE_MATCH_LIMIT steps.
// With idx, the first capture group is parsed as an integer.
static int re_match(const char *pattern, const char *subject, int full, long *idx) {
    int ec; PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &eo, NULL);
    if (!re) return RE_NO_COMPILE;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    CHECK(md && mc, "pcre2 allocation failed");
    pcre2_set_match_limit(mc, RE_MATCH_LIMIT);
    uint32_t opts = PCRE2_ANCHORED | (full ? PCRE2_ENDANCHORED : 0);
    int rc = pcre2_match(re, (PCRE2_SPTR)subject, PCRE2_ZERO_TERMINATED, 0, opts, md, mc);
    pcre2_match_context_free(mc);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
        pcre2_match_data_free(md);
        pcre2_code_free(re);
        return RE_LIMIT;   // the match limit, or the heap or depth limit it implies
    }
    int hit = rc > 0;
    if (hit && idx) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        *idx = rc > 1 && ov[2] != PCRE2_UNSET ? strtol(subject + ov[2], NULL, 10) : -1;
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return hit;
}

// re_match for configs that passed adapter_config_parse: its patterns compile
// and stay under the limit on Qwen2 module names, so a failure here is a bug
// or a module name of another model; it is reported, never taken as "no".
static int re_hit(const char *pattern, const char *subject, int full, long *idx) {
    int rc = re_match(pattern, subject, full, idx);
    if (rc == RE_NO_COMPILE) die("adapter regex \"%s\" does not compile", pattern);
    if (rc == RE_LIMIT)
        die("adapter regex \"%s\" needs more than %d backtracking steps on \"%s\"", pattern, RE_MATCH_LIMIT, subject);
    return rc;
}

static char *strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strfmt(const char *fmt, ...) {
    va_list ap; va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static int ends_with_dot(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && s[n - m - 1] == '.' && !strcmp(s + n - m, suffix);
}

static int in_list_or_suffix(char *const *list, size_t n, const char *module) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], module) || ends_with_dot(module, list[i])) return 1;
    return 0;
}

// Layer index of a module name as PEFT finds it for layers_to_transform.
static long layer_index(const adapter_config *c, const char *module) {
    long idx = -1;
    if (!c->n_layers_pattern) {
        if (re_hit(".*?\\.[^.]*\\.(\\d+)\\.", module, 0, &idx) == 1) return idx;
        return -1;
    }
    for (size_t i = 0; i < c->n_layers_pattern; i++) {
        char *p = strfmt("(?:^|.*?\\.)%s\\.(\\d+)\\.", c->layers_pattern[i]);
        int hit = re_hit(p, module, 0, &idx);
        free(p);
        if (hit == 1) return idx;
    }
    return -1;
}

static int is_qwen2_linear_suffix(const char *module) {
    static const char *const s[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++)
        if (ends_with_dot(module, s[i])) return 1;
    return 0;
}

int adapter_targets(const adapter_config *c, const char *module) {
    if (c->exclude_regex && re_hit(c->exclude_regex, module, 1, NULL) == 1) return 0;
    if (in_list_or_suffix(c->exclude_modules, c->n_exclude, module)) return 0;
    if (c->target_regex) {
        // "all-linear" as stored: every linear layer except the output head.
        if (!strcmp(c->target_regex, "all-linear")) return is_qwen2_linear_suffix(module);
        return re_hit(c->target_regex, module, 1, NULL) == 1;
    }
    for (size_t i = 0; i < c->n_target; i++)
        if (!strcmp(c->target_modules[i], module)) return 1;   // exact name: no layer filter (as PEFT)
    int found = 0;
    for (size_t i = 0; i < c->n_target && !found; i++) found = ends_with_dot(module, c->target_modules[i]);
    if (found && c->n_layers) {
        long idx = layer_index(c, module);
        found = 0;
        for (size_t i = 0; i < c->n_layers && idx >= 0; i++) found |= c->layers_to_transform[i] == idx;
    }
    return found;
}

// PEFT's get_pattern_key: the first key k (in file order) for which
// re.match(r"(.*\.)?(k)$", module) holds.
static const adapter_pattern *pattern_for(const adapter_pattern *p, size_t n, const char *module) {
    for (size_t i = 0; i < n; i++) {
        char *re = strfmt("(.*\\.)?(%s)$", p[i].key);
        int hit = re_hit(re, module, 0, NULL);
        free(re);
        if (hit == 1) return &p[i];
    }
    return NULL;
}

size_t adapter_rank(const adapter_config *c, const char *module) {
    const adapter_pattern *p = pattern_for(c->rank_pattern, c->n_rank_pattern, module);
    return p ? (size_t)p->value : c->r;
}

double adapter_alpha(const adapter_config *c, const char *module) {
    const adapter_pattern *p = pattern_for(c->alpha_pattern, c->n_alpha_pattern, module);
    return p ? p->value : c->lora_alpha;
}

double adapter_scaling(const adapter_config *c, const char *module) {
    double r = (double)adapter_rank(c, module), a = adapter_alpha(c, module);
    return c->use_rslora ? a / sqrt(r) : a / r;
}

size_t adapter_linear_modules(const hf_config *mc, adapter_target **out) {
    size_t H = mc->hidden_size, F = mc->intermediate_size, L = mc->num_hidden_layers;
    size_t q = mc->num_attention_heads * mc->head_dim, kv = mc->num_key_value_heads * mc->head_dim;
    static const char *const names[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    size_t in[7] = {H, H, H, q, H, H, F}, outs[7] = {q, kv, kv, H, F, F, H};
    adapter_target *t = xcalloc(7 * L + 1, sizeof *t);
    size_t k = 0;
    for (size_t i = 0; i < L; i++)
        for (int j = 0; j < 7; j++, k++) {
            snprintf(t[k].name, sizeof t[k].name, "model.layers.%zu.%s", i, names[j]);
            t[k].in = in[j];
            t[k].out = outs[j];
        }
    snprintf(t[k].name, sizeof t[k].name, "lm_head");
    t[k].in = H;
    t[k].out = mc->vocab_size;
    *out = t;
    return k + 1;
}

// ---- config ---------------------------------------------------------------

void adapter_config_init(adapter_config *c) {
    memset(c, 0, sizeof *c);
    c->r = 8;
    c->lora_alpha = 8;
    c->task_type = xstrdup("CAUSAL_LM");
    c->init_lora_weights = xstrdup("true");
}

static void free_list(char **l, size_t n) {
    for (size_t i = 0; i < n; i++) free(l[i]);
    free(l);
}

void adapter_config_free(adapter_config *c) {
    free_list(c->target_modules, c->n_target);
    free_list(c->exclude_modules, c->n_exclude);
    free_list(c->layers_pattern, c->n_layers_pattern);
    free(c->target_regex); free(c->exclude_regex);
    free(c->layers_to_transform);
    for (size_t i = 0; i < c->n_rank_pattern; i++) free(c->rank_pattern[i].key);
    for (size_t i = 0; i < c->n_alpha_pattern; i++) free(c->alpha_pattern[i].key);
    free(c->rank_pattern); free(c->alpha_pattern);
    free(c->base_model_name_or_path); free(c->task_type); free(c->init_lora_weights);
    if (c->json) json_decref(c->json);
    memset(c, 0, sizeof *c);
}

// A list of strings or one string (a regex); null leaves both empty.
static int get_names(json_t *v, char ***list, size_t *n, char **regex, const char *key, const char *what, char *err,
                     size_t errlen) {
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) { *regex = xstrdup(json_string_value(v)); return 0; }
    if (!json_is_array(v)) return err_set(err, errlen, "%s: \"%s\" must be a list of names, a string or null", what, key);
    *list = xcalloc(json_array_size(v) + 1, sizeof **list);
    size_t i; json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_string(e)) return err_set(err, errlen, "%s: \"%s\"[%zu] is not a string", what, key, i);
        (*list)[(*n)++] = xstrdup(json_string_value(e));
    }
    return 0;
}

static int get_patterns(json_t *v, adapter_pattern **p, size_t *n, int integer, const char *key, const char *what,
                        char *err, size_t errlen) {
    if (!v || json_is_null(v)) return 0;
    if (!json_is_object(v)) return err_set(err, errlen, "%s: \"%s\" must be an object", what, key);
    *p = xcalloc(json_object_size(v) + 1, sizeof **p);
    const char *k; json_t *e;
    json_object_foreach(v, k, e) {
        if (!json_is_number(e) || json_number_value(e) <= 0 || (integer && !json_is_integer(e)))
            return err_set(err, errlen, "%s: %s[\"%s\"] must be a positive %s", what, key, k, integer ? "integer" : "number");
        (*p)[*n].key = xstrdup(k);
        (*p)[(*n)++].value = json_number_value(e);
    }
    return 0;
}

// Keys that change what the adapter computes in ways this project does not
// implement: refuse them rather than merge something else.
static int refuse_unsupported(json_t *root, const char *what, char *err, size_t errlen) {
    static const char *const must_be_false[] = {"use_dora", "lora_bias", "fan_in_fan_out", "use_qalora", "use_bdlora"};
    for (size_t i = 0; i < sizeof must_be_false / sizeof *must_be_false; i++) {
        json_t *v = json_object_get(root, must_be_false[i]);
        if (v && !json_is_null(v) && !json_is_false(v))
            return err_set(err, errlen, "%s: \"%s\" is set; this adapter variant is not supported", what, must_be_false[i]);
    }
    static const char *const must_be_empty[] = {"modules_to_save", "layer_replication", "target_parameters",
                                                "trainable_token_indices", "alora_invocation_tokens"};
    for (size_t i = 0; i < sizeof must_be_empty / sizeof *must_be_empty; i++) {
        json_t *v = json_object_get(root, must_be_empty[i]);
        if (v && !json_is_null(v) && !((json_is_array(v) && !json_array_size(v)) || (json_is_object(v) && !json_object_size(v))))
            return err_set(err, errlen, "%s: \"%s\" is set; adapters that carry it are not supported", what, must_be_empty[i]);
    }
    json_t *b = json_object_get(root, "bias");
    if (b && !(json_is_string(b) && !strcmp(json_string_value(b), "none")))
        return err_set(err, errlen, "%s: \"bias\" must be \"none\" (trained biases are not supported)", what);
    json_t *pt = json_object_get(root, "peft_type");
    if (!json_is_string(pt) || strcmp(json_string_value(pt), "LORA"))
        return err_set(err, errlen, "%s: \"peft_type\" is %s, not \"LORA\"", what,
                    json_is_string(pt) ? json_string_value(pt) : "missing");
    return 0;
}

// One user pattern (as PEFT embeds it: wrapped by fmt) against long Qwen2
// module names of every projection: it must compile and stay under the
// match limit.
static int check_regex(const char *fmt, const char *pattern, int full, const char *key, const char *what, char *err,
                       size_t errlen) {
    static const char *const probes[] = {
        "model.layers.1000.self_attn.q_proj", "model.layers.1000.self_attn.k_proj", "model.layers.1000.self_attn.v_proj",
        "model.layers.1000.self_attn.o_proj", "model.layers.1000.mlp.gate_proj", "model.layers.1000.mlp.up_proj",
        "model.layers.1000.mlp.down_proj", "lm_head"};
    char *re = strfmt(fmt, pattern);
    int r = 0;
    for (size_t i = 0; i < sizeof probes / sizeof *probes && !r; i++) {
        long idx;
        int rc = re_match(re, probes[i], full, &idx);
        if (rc == RE_NO_COMPILE)
            r = err_set(err, errlen, "%s: %s regex \"%s\" does not compile", what, key, pattern);
        else if (rc == RE_LIMIT)
            r = err_set(err, errlen, "%s: %s regex \"%s\" backtracks catastrophically (more than %d steps on \"%s\")",
                        what, key, pattern, RE_MATCH_LIMIT, probes[i]);
    }
    free(re);
    return r;
}

static int check_regexes(const adapter_config *c, const char *what, char *err, size_t errlen) {
    if (c->target_regex && strcmp(c->target_regex, "all-linear") &&
        check_regex("%s", c->target_regex, 1, "target_modules", what, err, errlen))
        return -1;
    if (c->exclude_regex && check_regex("%s", c->exclude_regex, 1, "exclude_modules", what, err, errlen)) return -1;
    for (size_t i = 0; i < c->n_layers_pattern; i++)
        if (check_regex("(?:^|.*?\\.)%s\\.(\\d+)\\.", c->layers_pattern[i], 0, "layers_pattern", what, err, errlen))
            return -1;
    for (size_t i = 0; i < c->n_rank_pattern; i++)
        if (check_regex("(.*\\.)?(%s)$", c->rank_pattern[i].key, 0, "rank_pattern", what, err, errlen)) return -1;
    for (size_t i = 0; i < c->n_alpha_pattern; i++)
        if (check_regex("(.*\\.)?(%s)$", c->alpha_pattern[i].key, 0, "alpha_pattern", what, err, errlen)) return -1;
    return 0;
}

int adapter_config_parse(adapter_config *c, const char *text, size_t len, const char *what, char *err, size_t errlen) {
    adapter_config_init(c);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) { adapter_config_free(c); return err_set(err, errlen, "%s: line %d: %s", what, je.line, je.text); }
    c->json = root;
    int r = -1;
    if (!json_is_object(root)) { err_set(err, errlen, "%s: not a JSON object", what); goto done; }
    if (refuse_unsupported(root, what, err, errlen)) goto done;
    json_t *v = json_object_get(root, "r");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0) { err_set(err, errlen, "%s: \"r\" must be a positive integer", what); goto done; }
        c->r = (size_t)json_integer_value(v);
    }
    if ((v = json_object_get(root, "lora_alpha"))) {
        if (!json_is_number(v)) { err_set(err, errlen, "%s: \"lora_alpha\" must be a number", what); goto done; }
        c->lora_alpha = json_number_value(v);
    }
    if ((v = json_object_get(root, "lora_dropout")) && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) >= 1) {
            err_set(err, errlen, "%s: \"lora_dropout\" must be a number in [0, 1)", what);
            goto done;
        }
        c->lora_dropout = json_number_value(v);
    }
    c->use_rslora = json_is_true(json_object_get(root, "use_rslora"));
    if (get_names(json_object_get(root, "target_modules"), &c->target_modules, &c->n_target, &c->target_regex,
                  "target_modules", what, err, errlen) ||
        get_names(json_object_get(root, "exclude_modules"), &c->exclude_modules, &c->n_exclude, &c->exclude_regex,
                  "exclude_modules", what, err, errlen))
        goto done;
    if (!c->n_target && !c->target_regex) {
        // PEFT fills a missing target_modules from its per-model table (qwen2: q_proj, v_proj).
        free(c->target_modules);      // an empty list ([]) was allocated
        c->target_modules = xcalloc(2, sizeof *c->target_modules);
        c->target_modules[c->n_target++] = xstrdup("q_proj");
        c->target_modules[c->n_target++] = xstrdup("v_proj");
    }
    char *lp_regex = NULL;
    if (get_names(json_object_get(root, "layers_pattern"), &c->layers_pattern, &c->n_layers_pattern, &lp_regex,
                  "layers_pattern", what, err, errlen))
        goto done;
    if (lp_regex) {   // a single string is one pattern
        c->layers_pattern = xcalloc(1, sizeof *c->layers_pattern);
        c->layers_pattern[c->n_layers_pattern++] = lp_regex;
    }
    if ((v = json_object_get(root, "layers_to_transform")) && !json_is_null(v)) {
        if (json_is_integer(v)) {
            c->layers_to_transform = xmalloc(sizeof(long));
            c->layers_to_transform[c->n_layers++] = (long)json_integer_value(v);
        } else if (json_is_array(v)) {
            c->layers_to_transform = xcalloc(json_array_size(v) + 1, sizeof(long));
            size_t i; json_t *e;
            json_array_foreach(v, i, e) {
                if (!json_is_integer(e)) { err_set(err, errlen, "%s: layers_to_transform[%zu] is not an integer", what, i); goto done; }
                c->layers_to_transform[c->n_layers++] = (long)json_integer_value(e);
            }
        } else {
            err_set(err, errlen, "%s: \"layers_to_transform\" must be an integer, a list or null", what);
            goto done;
        }
    }
    if (get_patterns(json_object_get(root, "rank_pattern"), &c->rank_pattern, &c->n_rank_pattern, 1, "rank_pattern",
                     what, err, errlen) ||
        get_patterns(json_object_get(root, "alpha_pattern"), &c->alpha_pattern, &c->n_alpha_pattern, 0, "alpha_pattern",
                     what, err, errlen))
        goto done;
    if ((v = json_object_get(root, "base_model_name_or_path")) && json_is_string(v))
        c->base_model_name_or_path = xstrdup(json_string_value(v));
    free(c->task_type);
    c->task_type = NULL;
    if ((v = json_object_get(root, "task_type")) && json_is_string(v)) c->task_type = xstrdup(json_string_value(v));
    if ((v = json_object_get(root, "init_lora_weights"))) {
        free(c->init_lora_weights);
        if (json_is_boolean(v)) c->init_lora_weights = xstrdup(json_is_true(v) ? "true" : "false");
        else if (json_is_string(v) && !strcmp(json_string_value(v), "gaussian")) c->init_lora_weights = xstrdup("gaussian");
        else {
            c->init_lora_weights = NULL;
            err_set(err, errlen, "%s: init_lora_weights %s changes the base weights (PiSSA/OLoRA/LoftQ-style); not supported",
                 what, json_is_string(v) ? json_string_value(v) : "(not a boolean)");
            goto done;
        }
    }
    if (check_regexes(c, what, err, errlen)) goto done;
    r = 0;
done:
    if (r) adapter_config_free(c);
    return r;
}

static json_t *peft_defaults(void) {
    json_t *d = json_object();
    static const char *const nulls[] = {
        "alora_invocation_tokens", "arrow_config", "auto_mapping", "base_model_name_or_path", "corda_config",
        "eva_config", "exclude_modules", "kasa_config", "layer_replication", "layers_pattern", "layers_to_transform",
        "lora_ga_config", "megatron_config", "modules_to_save", "monteclora_config", "revision", "target_modules",
        "target_parameters", "trainable_token_indices", "use_bdlora", "velora_config"};
    for (size_t i = 0; i < sizeof nulls / sizeof *nulls; i++) json_object_set_new(d, nulls[i], json_null());
    static const char *const falses[] = {"ensure_weight_tying", "fan_in_fan_out", "lora_bias", "use_dora", "use_qalora",
                                         "use_rslora"};
    for (size_t i = 0; i < sizeof falses / sizeof *falses; i++) json_object_set_new(d, falses[i], json_false());
    json_object_set_new(d, "alpha_pattern", json_object());
    json_object_set_new(d, "rank_pattern", json_object());
    json_object_set_new(d, "loftq_config", json_object());
    json_object_set_new(d, "bias", json_string("none"));
    json_object_set_new(d, "inference_mode", json_true());
    json_object_set_new(d, "init_lora_weights", json_true());
    json_object_set_new(d, "lora_alpha", json_integer(8));
    json_object_set_new(d, "lora_dropout", json_real(0.0));
    json_object_set_new(d, "megatron_core", json_string("megatron.core"));
    json_object_set_new(d, "peft_type", json_string("LORA"));
    json_object_set_new(d, "peft_version", json_string(PEFT_VERSION));
    json_object_set_new(d, "qalora_group_size", json_integer(16));
    json_object_set_new(d, "r", json_integer(8));
    json_object_set_new(d, "task_type", json_string("CAUSAL_LM"));
    return d;
}

// A number as Python would have it: keep the JSON value read when it is
// equal (32 vs 32.0 matters to the bytes), else an int when integral.
static void set_number(json_t *root, const char *key, double v, int as_real) {
    json_t *old = json_object_get(root, key);
    if (old && json_is_number(old) && json_number_value(old) == v) return;
    if (!as_real && v == floor(v) && fabs(v) < 9e15) json_object_set_new(root, key, json_integer((json_int_t)v));
    else json_object_set_new(root, key, json_real(v));
}

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static json_t *names_json(char *const *list, size_t n, const char *regex) {
    if (regex) return json_string(regex);
    if (!n) return json_null();
    char **s = xmalloc(n * sizeof *s);
    memcpy(s, list, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_cstr);   // a set in PEFT: any order is valid; sorted is reproducible
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(s[i]));
    free(s);
    return a;
}

char *adapter_config_dump(const adapter_config *c) {
    json_t *root = peft_defaults();
    if (c->json) json_object_update(root, c->json);
    json_object_set_new(root, "r", json_integer((json_int_t)c->r));
    set_number(root, "lora_alpha", c->lora_alpha, 0);
    set_number(root, "lora_dropout", c->lora_dropout, 1);
    json_object_set_new(root, "use_rslora", json_boolean(c->use_rslora));
    json_object_set_new(root, "target_modules", names_json(c->target_modules, c->n_target, c->target_regex));
    json_object_set_new(root, "exclude_modules", names_json(c->exclude_modules, c->n_exclude, c->exclude_regex));
    // The layer filters: a file's own spelling (3 vs [3], "layers" vs ["layers"]) is kept when it says the same.
    json_t *lt = json_object_get(root, "layers_to_transform");
    int lt_same = c->n_layers == 0 ? (!lt || json_is_null(lt) || (json_is_array(lt) && !json_array_size(lt)))
                  : json_is_integer(lt) ? c->n_layers == 1 && json_integer_value(lt) == c->layers_to_transform[0]
                  : json_is_array(lt) && json_array_size(lt) == c->n_layers;
    for (size_t i = 0; lt_same && json_is_array(lt) && i < c->n_layers; i++)
        lt_same = json_integer_value(json_array_get(lt, i)) == c->layers_to_transform[i];
    if (!lt_same) {
        json_t *a = json_array();
        for (size_t i = 0; i < c->n_layers; i++) json_array_append_new(a, json_integer(c->layers_to_transform[i]));
        json_object_set_new(root, "layers_to_transform", c->n_layers ? a : json_null());
        if (!c->n_layers) json_decref(a);
    }
    json_t *lp = json_object_get(root, "layers_pattern");
    int lp_same = c->n_layers_pattern == 0 ? (!lp || json_is_null(lp))
                  : json_is_string(lp) ? c->n_layers_pattern == 1 && !strcmp(json_string_value(lp), c->layers_pattern[0])
                  : json_is_array(lp) && json_array_size(lp) == c->n_layers_pattern;
    for (size_t i = 0; lp_same && json_is_array(lp) && i < c->n_layers_pattern; i++)
        lp_same = json_is_string(json_array_get(lp, i)) && !strcmp(json_string_value(json_array_get(lp, i)), c->layers_pattern[i]);
    if (!lp_same) {
        json_t *v = json_null();
        if (c->n_layers_pattern == 1) v = json_string(c->layers_pattern[0]);
        else if (c->n_layers_pattern) {
            v = json_array();
            for (size_t i = 0; i < c->n_layers_pattern; i++) json_array_append_new(v, json_string(c->layers_pattern[i]));
        }
        json_object_set_new(root, "layers_pattern", v);
    }
    json_t *rp = json_object(), *ap = json_object();
    for (size_t i = 0; i < c->n_rank_pattern; i++)
        json_object_set_new(rp, c->rank_pattern[i].key, json_integer((json_int_t)c->rank_pattern[i].value));
    for (size_t i = 0; i < c->n_alpha_pattern; i++) {
        double v = c->alpha_pattern[i].value;
        json_object_set_new(ap, c->alpha_pattern[i].key, v == floor(v) ? json_integer((json_int_t)v) : json_real(v));
    }
    json_object_set_new(root, "rank_pattern", rp);
    json_object_set_new(root, "alpha_pattern", ap);
    json_object_set_new(root, "base_model_name_or_path",
                        c->base_model_name_or_path ? json_string(c->base_model_name_or_path) : json_null());
    json_object_set_new(root, "task_type", c->task_type ? json_string(c->task_type) : json_null());
    const char *init = c->init_lora_weights ? c->init_lora_weights : "true";
    json_object_set_new(root, "init_lora_weights",
                        !strcmp(init, "true") ? json_true() : !strcmp(init, "false") ? json_false() : json_string(init));
    json_object_set_new(root, "inference_mode", json_true());
    json_object_set_new(root, "peft_type", json_string("LORA"));
    json_object_set_new(root, "peft_version", json_string(PEFT_VERSION));
    char *s = pyjson_dumps(root, 2, 1);
    json_decref(root);
    return s;
}

// ---- loading ----------------------------------------------------------------

static int cmp_mod(const void *a, const void *b) {
    return strcmp(((const adapter_lora *)a)->module, ((const adapter_lora *)b)->module);
}

const adapter_lora *adapter_find(const adapter *a, const char *module) {
    adapter_lora key = {.module = (char *)module};
    return bsearch(&key, a->mods, a->n, sizeof *a->mods, cmp_mod);
}

int adapter_load(adapter *a, const char *dir, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    a->dir = xstrdup(dir);
    char *cp = path_join(dir, "adapter_config.json"), *wp = path_join(dir, "adapter_model.safetensors");
    st_file f = {0};
    const st_tensor **A = NULL, **B = NULL;
    int r = -1;
    if (!is_regular_file(cp)) { err_set(err, errlen, "%s: no adapter_config.json (not a PEFT adapter folder?)", dir); goto done; }
    size_t len;
    char *text = read_file(cp, &len);
    r = adapter_config_parse(&a->cfg, text, len, cp, err, errlen);
    free(text);
    if (r) goto done;
    r = -1;
    if (!is_regular_file(wp)) {
        char *bin = path_join(dir, "adapter_model.bin");
        if (is_regular_file(bin)) err_set(err, errlen, "%s: only adapter_model.bin (pickle) is present; convert it to safetensors", dir);
        else err_set(err, errlen, "%s: no adapter_model.safetensors", dir);
        free(bin);
        goto done;
    }
    if (st_open(&f, wp, err, errlen)) goto done;
    // Pair lora_A / lora_B weights by module.
    A = xcalloc(f.n + 1, sizeof *A);
    B = xcalloc(f.n + 1, sizeof *B);
    char **mods = xcalloc(f.n + 1, sizeof *mods);
    size_t nm = 0;
    size_t plen = strlen(KEY_PREFIX);
    a->file_dtype = DT_INVALID;
    for (size_t i = 0; i < f.n; i++) {
        const st_tensor *t = &f.t[i];
        size_t n = strlen(t->name);
        int isA = n > plen + 14 && !strcmp(t->name + n - 14, ".lora_A.weight");
        int isB = n > plen + 14 && !strcmp(t->name + n - 14, ".lora_B.weight");
        if (strncmp(t->name, KEY_PREFIX, plen) || (!isA && !isB)) {
            err_set(err, errlen, "%s: tensor '%s' is not a LoRA weight (base_model.model.<module>.lora_A/B.weight); "
                 "this adapter kind is not supported", wp, t->name);
            goto done_mods;
        }
        if (t->ndim != 2 || !dtype_is_float(t->dtype)) {
            err_set(err, errlen, "%s: tensor '%s' must be a 2-D F32, F16 or BF16 matrix", wp, t->name);
            goto done_mods;
        }
        char *module = strfmt("%.*s", (int)(n - plen - 14), t->name + plen);
        size_t k;
        for (k = 0; k < nm; k++) if (!strcmp(mods[k], module)) break;
        if (k == nm) mods[nm++] = module;
        else free(module);
        if (isA) A[k] = t; else B[k] = t;
        if (a->file_dtype == DT_INVALID) a->file_dtype = t->dtype;
    }
    a->mods = xcalloc(nm + 1, sizeof *a->mods);
    for (size_t k = 0; k < nm; k++) {
        const char *m = mods[k];
        if (!A[k] || !B[k]) {
            err_set(err, errlen, "%s: module %s has %s but no %s", wp, m, A[k] ? "lora_A" : "lora_B", A[k] ? "lora_B" : "lora_A");
            goto done_mods;
        }
        size_t rA = A[k]->shape[0], rB = B[k]->shape[1];
        if (rA != rB) {
            err_set(err, errlen, "%s: module %s: lora_A has rank %zu but lora_B has rank %zu", wp, m, rA, rB);
            goto done_mods;
        }
        if (!adapter_targets(&a->cfg, m)) {
            err_set(err, errlen, "%s: module %s is not targeted by adapter_config.json (target_modules)", wp, m);
            goto done_mods;
        }
        size_t want = adapter_rank(&a->cfg, m);
        if (rA != want) {
            err_set(err, errlen, "%s: module %s has rank %zu but adapter_config.json says %zu", wp, m, rA, want);
            goto done_mods;
        }
        adapter_lora *l = &a->mods[a->n++];
        l->module = xstrdup(m);
        l->r = rA;
        l->in = A[k]->shape[1];
        l->out = B[k]->shape[0];
        l->A = xmalloc(l->r * l->in * sizeof(float));
        l->B = xmalloc(l->out * l->r * sizeof(float));
        to_f32(l->A, A[k]->data, A[k]->dtype, A[k]->numel);
        to_f32(l->B, B[k]->data, B[k]->dtype, B[k]->numel);
    }
    qsort(a->mods, a->n, sizeof *a->mods, cmp_mod);
    if (!a->n) { err_set(err, errlen, "%s: holds no LoRA weights", wp); goto done_mods; }
    r = 0;
done_mods:
    for (size_t k = 0; k < nm; k++) free(mods[k]);
    free(mods);
done:
    free(A); free(B);
    st_close(&f);
    free(cp); free(wp);
    if (r) adapter_free(a);
    return r;
}

void adapter_load_or_die(adapter *a, const char *dir) {
    char err[1024];
    if (adapter_load(a, dir, err, sizeof err)) die("%s", err);
}

int adapter_validate(const adapter *a, const hf_config *mc, char *err, size_t errlen) {
    adapter_target *t;
    size_t nt = adapter_linear_modules(mc, &t);
    const char *what = a->dir ? a->dir : "adapter";
    int r = -1;
    for (size_t i = 0; i < a->n; i++) {
        const adapter_lora *l = &a->mods[i];
        size_t k;
        for (k = 0; k < nt; k++) if (!strcmp(t[k].name, l->module)) break;
        if (k == nt) {
            unsigned long layer;
            if (sscanf(l->module, "model.layers.%lu.", &layer) == 1 && layer >= mc->num_hidden_layers)
                err_set(err, errlen, "%s: module %s: layer %lu is out of range (%s has %zu layers)", what, l->module, layer,
                     mc->path, mc->num_hidden_layers);
            else
                err_set(err, errlen, "%s: module %s is not a linear layer of a Qwen2 model (adapter for another model?)",
                     what, l->module);
            goto done;
        }
        if (l->in != t[k].in || l->out != t[k].out) {
            err_set(err, errlen, "%s: module %s: lora_A is [%zu, %zu] and lora_B [%zu, %zu], but the model's layer is "
                 "[%zu, %zu] (out, in): adapter for another model?", what, l->module, l->r, l->in, l->out, l->r,
                 t[k].out, t[k].in);
            goto done;
        }
        if (!strcmp(l->module, "lm_head") && mc->tie_word_embeddings) {
            err_set(err, errlen, "%s: adapts lm_head, which %s ties to embed_tokens; merging it is not supported", what,
                 mc->path);
            goto done;
        }
    }
    const adapter_config *c = &a->cfg;
    for (size_t j = 0; j < c->n_target; j++) {
        size_t k;
        for (k = 0; k < nt; k++)
            if (!strcmp(t[k].name, c->target_modules[j]) || ends_with_dot(t[k].name, c->target_modules[j])) break;
        if (k == nt) {
            err_set(err, errlen, "%s: target module '%s' matches no linear layer of a Qwen2 model (adapter for another model?)",
                 what, c->target_modules[j]);
            goto done;
        }
    }
    for (size_t k = 0; k < nt; k++) {
        if (adapter_targets(c, t[k].name) && !adapter_find(a, t[k].name)) {
            err_set(err, errlen, "%s: adapter_model.safetensors has no weights for %s, which adapter_config.json targets",
                 what, t[k].name);
            goto done;
        }
    }
    if (c->target_regex && !a->n) {
        err_set(err, errlen, "%s: target_modules '%s' matches no layer", what, c->target_regex);
        goto done;
    }
    r = 0;
done:
    free(t);
    return r;
}

void adapter_free(adapter *a) {
    for (size_t i = 0; i < a->n; i++) { free(a->mods[i].module); free(a->mods[i].A); free(a->mods[i].B); }
    free(a->mods);
    adapter_config_free(&a->cfg);
    free(a->dir);
    memset(a, 0, sizeof *a);
}

// ---- writing ----------------------------------------------------------------

void adapter_save(const char *dir, const adapter_config *c, const adapter_lora *mods, size_t n, dtype dt) {
    CHECK(dtype_is_float(dt), "adapter_save: dtype %s", dtype_name(dt));
    mkdir_p(dir);
    st_writer w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    const void **data = xcalloc(2 * n + 1, sizeof *data);
    void **owned = xcalloc(2 * n + 1, sizeof *owned);
    for (size_t i = 0; i < n; i++) {
        const adapter_lora *l = &mods[i];
        size_t sa[2] = {l->r, l->in}, sb[2] = {l->out, l->r};
        char *ka = strfmt("%s%s.lora_A.weight", KEY_PREFIX, l->module);
        char *kb = strfmt("%s%s.lora_B.weight", KEY_PREFIX, l->module);
        st_writer_add(&w, ka, dt, 2, sa);
        st_writer_add(&w, kb, dt, 2, sb);
        free(ka); free(kb);
        const float *src[2] = {l->A, l->B};
        size_t cnt[2] = {l->r * l->in, l->out * l->r};
        for (int j = 0; j < 2; j++) {
            if (dt == DT_F32) { data[2 * i + j] = src[j]; continue; }
            owned[2 * i + j] = xmalloc(cnt[j] * 2);
            from_f32(owned[2 * i + j], dt, src[j], cnt[j]);
            data[2 * i + j] = owned[2 * i + j];
        }
    }
    char *wp = path_join(dir, "adapter_model.safetensors"), *cp = path_join(dir, "adapter_config.json");
    st_write_file(wp, &w, data);
    // The config goes last: a folder with a config holds complete weights.
    char *js = adapter_config_dump(c);
    aout o;
    aout_open(&o, cp);
    aout_write(&o, js, strlen(js));
    aout_commit(&o);
    free(js);
    for (size_t i = 0; i < 2 * n; i++) free(owned[i]);
    free(owned); free(data); free(wp); free(cp);
    st_writer_free(&w);
}
