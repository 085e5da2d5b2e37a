// tests/unit/test_tokenizer.c: the BPE core against Hugging Face tokenizers.
//  - tests/fixtures/tokenize/tiny*: small byte-level BPE files (a few hundred
//    merges, added tokens with every flag) and the ids tokenizers 0.23 gives
//    (tests/golden/tokenize_tiny.py): encode, encode with specials as text,
//    decode with and without specials.
//  - the real Qwen tokenizer (build/fixtures, when unpacked): the spec's checks.
//  - UTF-8 validation and lossy repair, literal (untrusted) ranges.
#include "check.h"
#include "tap.h"
#include "tokenizer.h"
#include "utf8.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ids_equal(const tok_ids *a, json_t *arr) {
    if (a->n != json_array_size(arr)) return 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i] != json_integer_value(json_array_get(arr, i))) return 0;
    return 1;
}

static void check_expected(void) {
    tok *tiny = tok_load("tests/fixtures/tokenize/tiny");
    tok *gpt2 = tok_load("tests/fixtures/tokenize/tiny-gpt2/tokenizer.json");
    tok *quirk = tok_load("tests/fixtures/tokenize/tiny-quirk/tokenizer.json");
    tok_ctx *c_tiny = tok_ctx_new(tiny), *c_gpt2 = tok_ctx_new(gpt2), *c_quirk = tok_ctx_new(quirk);
    FILE *f = fopen("tests/fixtures/tokenize/tiny_expected.jsonl", "r");
    T_OK(f != NULL, "tiny_expected.jsonl present");
    if (!f) return;
    char *line = NULL; size_t cap = 0; ssize_t n;
    int rows = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_error_t je;
        json_t *r = json_loadb(line, (size_t)n, JSON_ALLOW_NUL, &je);
        T_OK(r != NULL, "row parses");
        if (!r) continue;
        const char *which = json_string_value(json_object_get(r, "tokenizer"));
        int is_gpt2 = !strcmp(which, "tiny-gpt2"), is_quirk = !strcmp(which, "tiny-quirk");
        tok *t = is_quirk ? quirk : is_gpt2 ? gpt2 : tiny;
        tok_ctx *c = is_quirk ? c_quirk : is_gpt2 ? c_gpt2 : c_tiny;
        json_t *text = json_object_get(r, "text");
        const char *s = json_string_value(text);
        size_t len = json_string_length(text), bad;
        tok_ids ids = {0}, ids2 = {0};
        T_OK(tok_encode(c, s, len, 0, NULL, 0, &ids, &bad) == 0, "encode");
        T_OK(ids_equal(&ids, json_object_get(r, "ids")), "%s ids differ for %s", which, line);
        T_OK(tok_encode(c, s, len, TOK_SPECIAL_AS_TEXT, NULL, 0, &ids2, &bad) == 0, "encode");
        T_OK(ids_equal(&ids2, json_object_get(r, "ids_split_special")), "split-special ids differ for %s", line);
        // The same, through a literal range covering the whole text.
        size_t lit[2] = {0, len};
        ids2.n = 0;
        tok_encode(c, s, len, 0, lit, 1, &ids2, &bad);
        T_OK(ids_equal(&ids2, json_object_get(r, "ids_split_special")), "literal-range ids differ for %s", line);
        size_t dl;
        char *d = tok_decode(t, ids.v, ids.n, 0, &dl, &bad);
        json_t *exp = json_object_get(r, "decoded");
        T_OK(d && dl == json_string_length(exp) && !memcmp(d, json_string_value(exp), dl), "decode of %s", line);
        free(d);
        d = tok_decode(t, ids.v, ids.n, 1, &dl, &bad);
        exp = json_object_get(r, "decoded_skip");
        T_OK(d && dl == json_string_length(exp) && !memcmp(d, json_string_value(exp), dl), "decode skip of %s", line);
        free(d);
        tok_ids_free(&ids); tok_ids_free(&ids2);
        json_decref(r);
        rows++;
    }
    T_OK(rows >= 100, "%d rows checked", rows);
    free(line); fclose(f);
    int32_t bad_ids[] = {1, 99999};
    size_t dl, bad = 0;
    T_OK(tok_decode(tiny, bad_ids, 2, 0, &dl, &bad) == NULL && bad == 1, "unknown id refused");
    T_OK(tok_token_id(tiny, "<|sp|>", 6) == 608, "added token id");
    T_OK(tok_id_is_special(tiny, 608) && !tok_id_is_special(tiny, 609), "special flags");
    tok_ctx_free(c_tiny); tok_ctx_free(c_gpt2); tok_ctx_free(c_quirk);
    tok_free(tiny); tok_free(gpt2); tok_free(quirk);
}

static void check_qwen(void) {
    const char *path = "build/fixtures/qwen-tokenizer/tokenizer.json";
    if (access(path, R_OK) != 0) { printf("# skip: %s absent (make fixtures)\n", path); return; }
    tok *t = tok_load(path);
    tok_ctx *c = tok_ctx_new(t);
    struct { const char *s; int32_t ids[8]; size_t n; } cases[] = {
        {"Hello world", {9707, 1879}, 2},
        {" Hello world", {21927, 1879}, 2},
        {"<|im_start|>user\n\xe4\xbd\xa0\xe5\xa5\xbd<|im_end|>\n", {151644, 872, 198, 108386, 151645, 198}, 6},
        {"", {0}, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        tok_ids ids = {0};
        size_t bad;
        tok_encode(c, cases[k].s, strlen(cases[k].s), 0, NULL, 0, &ids, &bad);
        int ok = ids.n == cases[k].n;
        for (size_t i = 0; ok && i < ids.n; i++) ok = ids.v[i] == cases[k].ids[i];
        T_OK(ok, "qwen ids for case %zu", k);
        tok_ids_free(&ids);
    }
    int32_t ids[] = {151644, 872, 198, 108386, 151645, 198};
    size_t dl, bad;
    char *d = tok_decode(t, ids, 6, 1, &dl, &bad);
    T_OK(d && !strcmp(d, "user\n\xe4\xbd\xa0\xe5\xa5\xbd\n"), "decode skipping specials");
    free(d);
    tok_ids one = {0};
    tok_encode(c, "\xe4\xbd\xa0", 3, 0, NULL, 0, &one, &bad);
    d = tok_decode(t, one.v, one.n, 0, &dl, &bad);
    T_OK(d && !strcmp(d, "\xe4\xbd\xa0"), "decode one CJK char");
    free(d);
    tok_ids_free(&one);
    // Invalid UTF-8 is refused with its offset; nothing is appended.
    tok_ids x = {0};
    T_OK(tok_encode(c, "ab\xff", 3, 0, NULL, 0, &x, &bad) == -1 && bad == 2 && x.n == 0, "invalid UTF-8 refused");
    // Literal range: a special token inside it is text, outside it is special.
    const char *s = "<|im_start|>x<|im_end|>";
    size_t lit[2] = {12, 23};
    tok_encode(c, s, strlen(s), 0, lit, 1, &x, &bad);
    T_OK(x.n > 3 && x.v[0] == 151644 && x.v[x.n - 1] != 151645, "literal range keeps only the template special");
    tok_ids_free(&x);
    tok_ctx_free(c);
    tok_free(t);
}

static void check_utf8(void) {
    T_OK(utf8_check("abc", 3) == 3, "ascii");
    T_OK(utf8_check("\xc3\xa9", 2) == 2, "2-byte");
    T_OK(utf8_check("a\xc0\xaf", 3) == 1, "overlong");
    T_OK(utf8_check("\xed\xa0\x80", 3) == 0, "surrogate");
    T_OK(utf8_check("\xf4\x90\x80\x80", 4) == 0, "past U+10FFFF");
    T_OK(utf8_check("12345678\xe4\xbd", 10) == 8, "truncated after the ASCII fast path");
    char out[64];
    // Maximal subparts, as Python's errors="replace" and Rust's from_utf8_lossy.
    size_t n = utf8_lossy("a\xe4\xbd" "b\xe0\x80z\xff", 8, out);
    T_OK(n == 15 && !memcmp(out, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbdz\xef\xbf\xbd", 15), "lossy repair");
}

// A Split regex that backtracks catastrophically (fuzz/regressions): tok_encode
// gives up within the match limit with -2 and appends nothing, so the caller
// can name the record.
static void check_match_limit(void) {
    size_t n;
    char *text = read_file("fuzz/regressions/tokenizer_json/split-regex-backtracking.json", &n);
    char path[] = "/tmp/test_tokenizer_XXXXXX";
    int fd = mkstemp(path);
    T_OK(fd >= 0 && write(fd, text, n) == (ssize_t)n && close(fd) == 0, "temporary tokenizer.json");
    free(text);
    tok *t = tok_load(path);
    unlink(path);
    tok_ctx *c = tok_ctx_new(t);
    tok_ids ids = {0};
    size_t bad = 99;
    const char *s = "xy aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab";
    T_OK(tok_encode(c, s, strlen(s), 0, NULL, 0, &ids, &bad) == -2 && ids.n == 0, "regex over the match limit: -2");
    T_OK(tok_encode(c, "xy", 2, 0, NULL, 0, &ids, &bad) == 0 && ids.n > 0, "short text still encodes");
    tok_ids_free(&ids);
    tok_ctx_free(c);
    tok_free(t);
}

int main(void) {
    check_init("test_tokenizer");
    check_match_limit();
    check_utf8();
    check_expected();
    check_qwen();
    return T_DONE("test_tokenizer");
}
