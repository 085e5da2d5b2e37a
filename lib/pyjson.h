// lib/pyjson.h: JSON text exactly as Python's json.dumps(obj, indent=2,
// sort_keys=True) writes it (ensure_ascii, float repr, "key": value), which is
// how transformers writes config.json and the shard index, and how PEFT writes
// adapter_config.json.  Writing the same bytes lets a file we produce be
// compared byte for byte with the reference stack's.
#ifndef LORAPIPE_PYJSON_H
#define LORAPIPE_PYJSON_H
#include <jansson.h>

// Returns a malloc'ed NUL-terminated string (no trailing newline).
// indent < 0 means Python's compact default separators (", " and ": ").
char *pyjson_dumps(const json_t *v, int indent, int sort_keys);
// Python repr() of a double ("1e-06", "1000000.0", "0.1") into buf (>= 32 bytes).
void pyjson_float_repr(double x, char *buf, size_t n);

#endif
