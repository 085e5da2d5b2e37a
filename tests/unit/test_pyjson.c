// tests/unit/test_pyjson.c: Python json.dumps compatibility (expected strings
// are what CPython 3.11 prints for the same values).
#include "pyjson.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static void repr(double x, const char *want) {
    char buf[64];
    pyjson_float_repr(x, buf, sizeof buf);
    T_OK(!strcmp(buf, want), "repr(%.17g) = %s, Python says %s", x, buf, want);
}

int main(void) {
    repr(1e-06, "1e-06");
    repr(1e-05, "1e-05");
    repr(0.0001, "0.0001");
    repr(1e16, "1e+16");
    repr(1e15, "1000000000000000.0");
    repr(123456789012345678.0, "1.2345678901234568e+17");
    repr(0.1, "0.1");
    repr(1000000.0, "1000000.0");
    repr(5e-324, "5e-324");
    repr(1.7976931348623157e308, "1.7976931348623157e+308");
    repr(-0.0, "-0.0");
    repr(2.5e-07, "2.5e-07");
    repr(1.5e300, "1.5e+300");
    repr(0.02, "0.02");
    repr(10000.0, "10000.0");
    repr(5.656854249492381, "5.656854249492381");

    json_error_t je;
    json_t *v = json_loads("{\"c\":[1,{\"x\":\"\\u00e9\\u0001\\u007f\\ud83d\\ude00\\n\\\"\"}],\"b\":{},\"a\":[],"
                           "\"d\":1e-06,\"e\":true,\"f\":null,\"g\":-3}", 0, &je);
    T_OK(v != NULL, "parse");
    char *s = pyjson_dumps(v, 2, 1);
    const char *want =
        "{\n  \"a\": [],\n  \"b\": {},\n  \"c\": [\n    1,\n    {\n      \"x\": "
        "\"\\u00e9\\u0001\\u007f\\ud83d\\ude00\\n\\\"\"\n    }\n  ],\n  \"d\": 1e-06,\n  \"e\": true,\n"
        "  \"f\": null,\n  \"g\": -3\n}";
    T_OK(!strcmp(s, want), "indent=2 sort_keys=True:\n%s", s);
    free(s);
    s = pyjson_dumps(v, -1, 0);
    T_OK(!strcmp(s, "{\"c\": [1, {\"x\": \"\\u00e9\\u0001\\u007f\\ud83d\\ude00\\n\\\"\"}], \"b\": {}, \"a\": [], "
                    "\"d\": 1e-06, \"e\": true, \"f\": null, \"g\": -3}"), "compact, insertion order: %s", s);
    free(s);
    json_decref(v);
    return T_DONE("test_pyjson");
}
