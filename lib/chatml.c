// lib/chatml.c: see chatml.h.
#include "chatml.h"
#include "check.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <libgen.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    char *s; size_t n, cap;
    size_t *lit; size_t n_lit, lit_cap;   // content byte ranges [lit[2k], lit[2k+1])
} seg;

static void seg_put(seg *g, const char *s, size_t n) {
    g->s = xgrow(g->s, &g->cap, g->n + n + 1, 1);
    memcpy(g->s + g->n, s, n);
    g->n += n;
}
static void seg_str(seg *g, const char *s) { seg_put(g, s, strlen(s)); }
static void seg_content(seg *g, const char *s, size_t n) {
    g->lit = xgrow(g->lit, &g->lit_cap, 2 * g->n_lit + 2, sizeof *g->lit);
    g->lit[2 * g->n_lit] = g->n;
    seg_put(g, s, n);
    g->lit[2 * g->n_lit + 1] = g->n;
    g->n_lit++;
}

// Tokenise a segment; append ids, and labels (ids when trained, else -100).
static int seg_flush(tok_ctx *ctx, seg *g, int trained, const chatml_opts *o, tok_ids *ids, tok_ids *labels) {
    size_t before = ids->n, bad;
    // Content ranges matter only when specials in content are to stay text.
    int lit = (o->tok_flags & TOK_SPECIAL_AS_TEXT) != 0;
    int rc = tok_encode(ctx, g->s ? g->s : "", g->n, 0, lit ? g->lit : NULL, lit ? g->n_lit : 0, ids, &bad);
    if (rc) return rc;
    for (size_t i = before; i < ids->n; i++) tok_ids_push(labels, trained ? ids->v[i] : -100);
    g->n = 0; g->n_lit = 0;
    return 0;
}

static void seg_turn(seg *g, const char *role, const char *s, size_t n) {
    seg_str(g, "<|im_start|>");
    seg_str(g, role);
    seg_str(g, "\n");
    seg_content(g, s, n);
    seg_str(g, "<|im_end|>\n");
}

int chatml_encode(tok_ctx *ctx, const conv *c, const chatml_opts *o, tok_ids *ids, tok_ids *labels) {
    if (c->format == FMT_TEXT) {
        size_t before = ids->n, bad;
        int rc = tok_encode(ctx, c->m[0].text, c->m[0].len, o->tok_flags, NULL, 0, ids, &bad);
        if (rc) return rc;
        for (size_t i = before; i < ids->n; i++) tok_ids_push(labels, ids->v[i]);
        return 0;
    }
    size_t last_reply = c->n;
    for (size_t i = 0; i < c->n; i++) if (c->m[i].role == ROLE_ASSISTANT) last_reply = i;
    seg g = {0};
    int rc = 0;
    if (o->system && (c->n == 0 || c->m[0].role != ROLE_SYSTEM)) seg_turn(&g, "system", o->system, o->system_len);
    for (size_t i = 0; i < c->n && !rc; i++) {
        const conv_msg *m = &c->m[i];
        if (m->role != ROLE_ASSISTANT) { seg_turn(&g, conv_role_name(m->role), m->text, m->len); continue; }
        seg_str(&g, "<|im_start|>assistant\n");
        rc = seg_flush(ctx, &g, 0, o, ids, labels);
        if (rc) break;
        seg_content(&g, m->text, m->len);
        seg_str(&g, "<|im_end|>");
        rc = seg_flush(ctx, &g, !o->train_last_only || i == last_reply, o, ids, labels);
        // The "\n" closing the reply's turn opens the next masked stretch; after
        // the last message it is not written (the tutorial's layout).
        if (i + 1 < c->n) seg_str(&g, "\n");
    }
    if (!rc && g.n) rc = seg_flush(ctx, &g, 0, o, ids, labels);
    free(g.s); free(g.lit);
    return rc;
}

// ---- default system turn from the chat template ---------------------------
static char *jinja_unescape(const char *s, size_t n) {
    char *o = xmalloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char e = s[++i];
            o[k++] = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
        } else {
            o[k++] = s[i];
        }
    }
    o[k] = 0;
    return o;
}

char *chatml_default_system(const char *tok_path, char *why, size_t why_len) {
    struct stat st;
    char *dir;
    if (stat(tok_path, &st) == 0 && S_ISDIR(st.st_mode)) dir = xstrdup(tok_path);
    else { char *d = xstrdup(tok_path); dir = xstrdup(dirname(d)); free(d); }
    size_t n = strlen(dir) + 32;
    char *cfg = xmalloc(n);
    snprintf(cfg, n, "%s/tokenizer_config.json", dir);
    free(dir);
    json_error_t je;
    json_t *root = json_load_file(cfg, 0, &je);
    if (!root) {
        snprintf(why, why_len, "none (no readable %s)", cfg);
        free(cfg);
        return NULL;
    }
    json_t *tpl = json_object_get(root, "chat_template");
    if (json_is_array(tpl)) {               // [{"name": "default", "template": ...}, ...]
        size_t i; json_t *e; json_t *pick = NULL;
        json_array_foreach(tpl, i, e) {
            json_t *nm = json_object_get(e, "name");
            if (json_is_string(nm) && !strcmp(json_string_value(nm), "default")) pick = json_object_get(e, "template");
        }
        tpl = pick;
    }
    char *out = NULL;
    if (!json_is_string(tpl)) {
        snprintf(why, why_len, "none (%s has no chat_template)", cfg);
    } else {
        // A quoted literal holding the whole default turn; the quote may not
        // occur inside it, so '...system\n' + messages[0].content + ... never matches.
        static const char *pat = "(['\"])<\\|im_start\\|>system\\\\n((?:(?!\\1)[^\\\\]|\\\\.)*?)<\\|im_end\\|>\\\\n\\1";
        int err; PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &err, &off, NULL);
        CHECK(re, "default-system pattern does not compile");
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
        const char *s = json_string_value(tpl);
        if (pcre2_match(re, (PCRE2_SPTR)s, json_string_length(tpl), 0, 0, md, NULL) >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            out = jinja_unescape(s + ov[4], ov[5] - ov[4]);
            snprintf(why, why_len, "the chat template's default (%s)", cfg);
        } else {
            snprintf(why, why_len, "none (the chat template in %s inserts no default system turn)", cfg);
        }
        pcre2_match_data_free(md);
        pcre2_code_free(re);
    }
    json_decref(root);
    free(cfg);
    return out;
}
