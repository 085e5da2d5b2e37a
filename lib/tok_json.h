// lib/tok_json.h: the two big parts of tokenizer.json (model.vocab, about
// 150k entries, and model.merges, about 150k pairs) read without building a
// jansson tree, which takes most of the load time.  Anything unexpected makes
// the fast path give up, and the caller parses the whole file with jansson
// (which then names the problem).
#ifndef LORAPIPE_TOK_JSON_H
#define LORAPIPE_TOK_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

// Decoded strings back to back; entry i is s + off[i], len[i] bytes, with an
// integer val[i] (vocab ids; unused for merges).
typedef struct {
    char *s; size_t s_n, s_cap;
    uint32_t *off, *len; int64_t *val;
    size_t n, cap;
} tok_strs;

void tok_strs_add(tok_strs *l, const char *s, size_t n, int64_t val);
void tok_strs_free(tok_strs *l);

// Fast path.  On success returns 0, fills vocab (key, id) and merges (two
// entries per merge: left, right) and sets *rest to a malloc'd copy of text
// in which both are replaced by empty containers, for jansson.  Returns -1
// when the text is not in the expected shape.
int tokjson_fast(const char *text, size_t n, tok_strs *vocab, tok_strs *merges, char **rest, size_t *rest_n);

#endif
