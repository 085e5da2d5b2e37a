// lib/token_record.h: one line of tokenize's JSONL, parsed strictly.
//
//   {"input_ids":[151644,8948,...],"labels":[-100,...,1234,151645], ...}
//
// input_ids: non-empty array of integers in [0, 2^31); labels: array of the same
// length, each -100 or an id in [0, 2^31).  Other keys are ignored.  The hot path
// is a hand-written parser for exactly this shape that accepts only valid JSON;
// any line it does not fully understand (escapes, non-ASCII text, nested values
// in other keys, duplicate keys, syntax errors) goes to jansson, which either
// parses it or supplies the error message.  Both paths give the same result.
#ifndef LORAPIPE_TOKEN_RECORD_H
#define LORAPIPE_TOKEN_RECORD_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t *ids;       // (n)
    int32_t *labels;     // (n)
    size_t n;
    size_t cap;          // capacity of both arrays
    int64_t *scratch;    // the parser's raw integers
    size_t scratch_cap;
    int used_fallback;   // the last line went through jansson (for tests and statistics)
} token_record;

enum { TOKREC_OK = 0, TOKREC_BLANK = 1, TOKREC_ERROR = -1 };

// Parse line[0..len) (no trailing newline; a trailing CR is allowed).  Returns
// TOKREC_OK, TOKREC_BLANK for a line of only whitespace, or TOKREC_ERROR with a
// message (no file or line prefix) in err.
int token_record_parse(token_record *r, const char *line, size_t len, char *err, size_t errlen);
void token_record_free(token_record *r);

#endif
