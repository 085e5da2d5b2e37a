// tools/tokenize/tokenize.h: pieces of bin/tokenize shared between its files.
#ifndef LORAPIPE_TOOL_TOKENIZE_H
#define LORAPIPE_TOOL_TOKENIZE_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

// Append `{"input_ids":[...],"labels":[...]}\n` to *buf (grown as needed).
void out_record(char **buf, size_t *len, size_t *cap, const int32_t *ids, const int32_t *labels, size_t n);

// --decode: read records with "input_ids", write {"text": ...} lines.
void decode_run(const tok *t, char **inputs, size_t n_inputs, const char *out_path, int skip_special);

#endif
