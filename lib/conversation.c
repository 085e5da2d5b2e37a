// lib/conversation.c: see conversation.h.
#include "conversation.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

static const char *FMT_NAMES[FMT_COUNT] = {"auto", "alpaca", "messages", "sharegpt", "text"};
static const char *ROLE_NAMES[] = {"system", "user", "assistant", "tool"};

const char *conv_format_name(conv_format f) { return f < FMT_COUNT ? FMT_NAMES[f] : "?"; }
const char *conv_role_name(conv_role r) { return ROLE_NAMES[r]; }
int conv_format_parse(const char *name) {
    for (int i = 0; i < FMT_COUNT; i++) if (!strcmp(name, FMT_NAMES[i])) return i;
    return -1;
}

static void add(conv *c, conv_role role, const char *s, size_t n) {
    c->m = xgrow(c->m, &c->cap, c->n + 1, sizeof *c->m);
    c->m[c->n++] = (conv_msg){role, s, n};
}

static const char *jtype(json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

// Required (or optional: missing/null gives NULL) string field.
static json_t *str_field(json_t *o, const char *key, int required, const char *where, const char *ctx) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) die("%s: %sfield \"%s\" is missing", where, ctx, key);
        return NULL;
    }
    if (!json_is_string(v)) die("%s: %sfield \"%s\" is %s, not a string", where, ctx, key, jtype(v));
    return v;
}

static void parse_alpaca(conv *c, json_t *r, const char *sep, const char *where) {
    json_t *ins = str_field(r, "instruction", 1, where, ""), *inp = str_field(r, "input", 0, where, "");
    json_t *out = str_field(r, "output", 1, where, ""), *sys = str_field(r, "system", 0, where, "");
    if (sys) add(c, ROLE_SYSTEM, json_string_value(sys), json_string_length(sys));
    json_t *hist = json_object_get(r, "history");
    if (hist && !json_is_null(hist)) {
        if (!json_is_array(hist)) die("%s: field \"history\" is %s, not an array of [user, reply] pairs", where, jtype(hist));
        size_t i; json_t *p;
        json_array_foreach(hist, i, p) {
            json_t *u = json_array_get(p, 0), *a = json_array_get(p, 1);
            if (!json_is_array(p) || json_array_size(p) != 2 || !json_is_string(u) || !json_is_string(a))
                die("%s: history[%zu] is not a [user, reply] pair of strings", where, i);
            add(c, ROLE_USER, json_string_value(u), json_string_length(u));
            add(c, ROLE_ASSISTANT, json_string_value(a), json_string_length(a));
        }
    }
    size_t il = json_string_length(ins), nl = inp ? json_string_length(inp) : 0;
    if (nl == 0) {
        add(c, ROLE_USER, json_string_value(ins), il);
    } else {
        size_t sl = strlen(sep), n = il + sl + nl;
        char *u = xmalloc(n + 1);
        memcpy(u, json_string_value(ins), il);
        memcpy(u + il, sep, sl);
        memcpy(u + il + sl, json_string_value(inp), nl);
        u[n] = 0;
        c->owned = xgrow(c->owned, &c->owned_cap, c->n_owned + 1, sizeof *c->owned);
        c->owned[c->n_owned++] = u;
        add(c, ROLE_USER, u, n);
    }
    add(c, ROLE_ASSISTANT, json_string_value(out), json_string_length(out));
}

static void parse_list(conv *c, json_t *r, const char *key, const char *rk, const char *ck, int sharegpt, const char *where) {
    json_t *list = json_object_get(r, key);
    if (!list) die("%s: field \"%s\" is missing", where, key);
    if (!json_is_array(list)) die("%s: field \"%s\" is %s, not an array", where, key, jtype(list));
    if (!json_array_size(list)) die("%s: field \"%s\" is empty", where, key);
    if (sharegpt) {
        json_t *sys = str_field(r, "system", 0, where, "");
        if (sys) add(c, ROLE_SYSTEM, json_string_value(sys), json_string_length(sys));
    }
    size_t i; json_t *m;
    json_array_foreach(list, i, m) {
        char ctx[64];
        snprintf(ctx, sizeof ctx, "%s[%zu]: ", key, i);
        if (!json_is_object(m)) die("%s: %s[%zu] is %s, not an object", where, key, i, jtype(m));
        json_t *rv = str_field(m, rk, 1, where, ctx), *cv = str_field(m, ck, 1, where, ctx);
        const char *role = json_string_value(rv);
        conv_role cr;
        if (!strcmp(role, "system")) cr = ROLE_SYSTEM;
        else if (!strcmp(role, "user") || (sharegpt && !strcmp(role, "human"))) cr = ROLE_USER;
        else if (!strcmp(role, "assistant") ||
                 (sharegpt && (!strcmp(role, "gpt") || !strcmp(role, "chatgpt") || !strcmp(role, "function_call"))))
            cr = ROLE_ASSISTANT;
        else if (!strcmp(role, "tool") || (sharegpt && (!strcmp(role, "observation") || !strcmp(role, "function_response"))))
            cr = ROLE_TOOL;
        else die("%s: %s%s \"%s\" is not a known role", where, ctx, rk, role);
        add(c, cr, json_string_value(cv), json_string_length(cv));
    }
}

void conv_parse(conv *c, json_t *r, conv_format fmt, const char *sep, const char *where) {
    conv_clear(c);
    if (!json_is_object(r)) die("%s: the record is %s, not an object", where, jtype(r));
    if (fmt == FMT_AUTO) {
        if (json_object_get(r, "messages")) fmt = FMT_MESSAGES;
        else if (json_object_get(r, "conversations")) fmt = FMT_SHAREGPT;
        else if (json_object_get(r, "instruction") || json_object_get(r, "output")) fmt = FMT_ALPACA;
        else if (json_object_get(r, "text")) fmt = FMT_TEXT;
        else die("%s: cannot tell the record's format (no \"messages\", \"conversations\", "
                 "\"instruction\"/\"output\" or \"text\" field)", where);
    }
    c->format = fmt;
    switch (fmt) {
    case FMT_ALPACA: parse_alpaca(c, r, sep, where); break;
    case FMT_MESSAGES: parse_list(c, r, "messages", "role", "content", 0, where); break;
    case FMT_SHAREGPT: parse_list(c, r, "conversations", "from", "value", 1, where); break;
    case FMT_TEXT: {
        json_t *t = str_field(r, "text", 1, where, "");
        add(c, ROLE_USER, json_string_value(t), json_string_length(t));
        break;
    }
    default: CHECK(0, "bad format %d", (int)fmt);
    }
}

void conv_clear(conv *c) {
    for (size_t i = 0; i < c->n_owned; i++) free(c->owned[i]);
    c->n_owned = 0;
    c->n = 0;
}

void conv_free(conv *c) {
    conv_clear(c);
    free(c->owned); free(c->m);
    memset(c, 0, sizeof *c);
}
