// tests/unit/test_token_record.c: the token-JSONL line parser is strict (only
// valid JSON of the right shape passes, on either path), takes the fast path
// for tokenize's own lines, and names the problem on bad ones.
#include "token_record.h"
#include "tap.h"

#include <string.h>

// expect: 'o' ok, 'b' blank, 'e' error (msg must contain want); fast: 1 = must not fall back.
static void line(const char *s, size_t len, char expect, int fast, const char *want) {
    token_record r = {0};
    char err[256] = "";
    int rc = token_record_parse(&r, s, len, err, sizeof err);
    char got = rc == TOKREC_OK ? 'o' : rc == TOKREC_BLANK ? 'b' : 'e';
    T_OK(got == expect, "%.60s: got %c (%s), expected %c", s, got, err, expect);
    if (fast) T_OK(!r.used_fallback, "%.60s: took the slow path", s);
    if (want) T_OK(strstr(err, want) != NULL, "%.60s: message '%s' lacks '%s'", s, err, want);
    token_record_free(&r);
}
#define L(s, e, fast, want) line(s, strlen(s), e, fast, want)

int main(void) {
    // tokenize's shape, fast.
    L("{\"input_ids\":[151644,8948,0],\"labels\":[-100,-100,0]}", 'o', 1, NULL);
    L(" { \"input_ids\" : [ 1 , 2 ] , \"labels\" : [ 1 , -100 ] , \"n\" : -1.5e+3, \"t\": true, \"s\": \"a\\\"b\" }\r",
      'o', 1, NULL);
    {
        token_record r = {0};
        char err[128];
        const char *s = "{\"input_ids\":[5,6,7],\"labels\":[-100,6,9],\"id\":3}";
        T_OK(token_record_parse(&r, s, strlen(s), err, sizeof err) == TOKREC_OK && r.n == 3 && r.ids[2] == 7 &&
             r.labels[0] == -100 && r.labels[2] == 9, "values");
        token_record_free(&r);
    }
    // Valid JSON the fast path leaves to jansson.
    L("{\"labels\":[1,2],\"input_ids\":[1,2]}", 'o', 0, NULL);
    L("{\"meta\":{\"a\":[1]},\"input_ids\":[1],\"labels\":[1]}", 'o', 0, NULL);
    L("{\"input\\u005fids\":[3],\"labels\":[3]}", 'o', 0, NULL);
    L("{\"input_ids\":[1],\"labels\":[1],\"s\":\"\xc3\xa9\"}", 'o', 0, NULL);
    // Blank lines.
    L("", 'b', 0, NULL);
    L("  \t\r", 'b', 0, NULL);
    // Not JSON, or not the shape: refused whichever path sees them.
    L("{\"input_ids\":[1,],\"labels\":[1]}", 'e', 0, "not valid JSON");
    L("{\"input_ids\":[1 2],\"labels\":[1,2]}", 'e', 0, "not valid JSON");
    L("{\"input_ids\":[01],\"labels\":[1]}", 'e', 0, "not valid JSON");
    L("{\"input_ids\":[+1],\"labels\":[1]}", 'e', 0, "not valid JSON");
    L("{\"input_ids\":[-],\"labels\":[1]}", 'e', 0, "not valid JSON");
    L("{\"input_ids\":[1],\"labels\":[1]} x", 'e', 0, "not valid JSON");
    L("{\"input_ids\":[1],\"labels\":[1]}{}", 'e', 0, "not valid JSON");
    L("{\"input_ids\":[1],\"labels\":[1],}", 'e', 0, "not valid JSON");
    L("{'input_ids':[1],'labels':[1]}", 'e', 0, "not valid JSON");
    L("{\"input_ids\":[NaN],\"labels\":[1]}", 'e', 0, "not valid JSON");
    L("{\"input_ids\":[1],\"labels\":[1],\"s\":\"\xff\"}", 'e', 0, "not valid JSON");
    L("{\"input_ids\":[1],\"labels\":[1],\"s\":\"a\tb\"}", 'e', 0, "not valid JSON");
    line("{\"input_ids\":[1],\"labels\":[1]}\0", 33, 'e', 0, "not valid JSON");
    L("{\"input_ids\":[1],\"input_ids\":[1],\"labels\":[1]}", 'e', 0, "duplicate");
    L("[1,2]", 'e', 0, "not a JSON object");
    L("{\"labels\":[1]}", 'e', 0, "missing \"input_ids\"");
    L("{\"input_ids\":[1]}", 'e', 0, "missing \"labels\"");
    L("{\"input_ids\":{},\"labels\":[1]}", 'e', 0, "\"input_ids\" is not an array");
    L("{\"input_ids\":[1.0],\"labels\":[1]}", 'e', 0, "input_ids[0] is not an integer");
    L("{\"input_ids\":[1e2],\"labels\":[1]}", 'e', 0, "input_ids[0] is not an integer");
    L("{\"input_ids\":[\"1\"],\"labels\":[1]}", 'e', 0, "input_ids[0] is not an integer");
    L("{\"input_ids\":[1,2],\"labels\":[1]}", 'e', 1, "\"labels\" has 1 entries, \"input_ids\" has 2");
    L("{\"input_ids\":[],\"labels\":[]}", 'e', 1, "\"input_ids\" is empty");
    L("{\"input_ids\":[-1],\"labels\":[1]}", 'e', 1, "input_ids[0] = -1 is negative");
    L("{\"input_ids\":[2147483648],\"labels\":[1]}", 'e', 1, "is too large");
    L("{\"input_ids\":[99999999999999999999],\"labels\":[1]}", 'e', 0, NULL);
    L("{\"input_ids\":[1],\"labels\":[-1]}", 'e', 1, "labels[0] = -1 is neither -100 nor a token id");
    return T_DONE("test_token_record");
}
