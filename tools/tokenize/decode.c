// tools/tokenize/decode.c: tokenize --decode, ids back to text.
#include "tokenize.h"
#include "atomic_out.h"
#include "check.h"
#include "records.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void decode_run(const tok *t, char **inputs, size_t n_inputs, const char *out_path, int skip_special) {
    aout o;
    aout_open(&o, out_path);
    char *stdin_only[] = {"-"};
    if (!n_inputs) { inputs = stdin_only; n_inputs = 1; }
    tok_ids ids = {0};
    for (size_t f = 0; f < n_inputs; f++) {
        rec_reader *r = rec_open(inputs[f]);
        rec x;
        char where[512];
        while (rec_next(r, &x)) {
            rec_where(&x, where, sizeof where);
            json_t *arr = json_object_get(x.json, "input_ids");
            if (!json_is_array(arr)) die("%s: field \"input_ids\" is missing or not an array", where);
            ids.n = 0;
            size_t i; json_t *v;
            json_array_foreach(arr, i, v) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
                    die("%s: input_ids[%zu] is not a token id", where, i);
                tok_ids_push(&ids, (int32_t)json_integer_value(v));
            }
            size_t len, bad;
            char *txt = tok_decode(t, ids.v, ids.n, skip_special, &len, &bad);
            if (!txt) die("%s: input_ids[%zu] = %d is not an id of this tokenizer", where, bad, ids.v[bad]);
            json_t *s = json_stringn(txt, len);
            json_t *obj = json_pack("{s:o}", "text", s);
            char *line = json_dumps(obj, JSON_COMPACT);
            CHECK(line, "json_dumps failed");
            aout_write(&o, line, strlen(line));
            aout_write(&o, "\n", 1);
            free(line); json_decref(obj); free(txt);
            json_decref(x.json);
        }
        rec_close(r);
    }
    tok_ids_free(&ids);
    aout_commit(&o);
}
