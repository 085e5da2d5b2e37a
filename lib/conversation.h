// lib/conversation.h: dataset records (alpaca, messages, sharegpt, text) read
// into one conversation model that lib/chatml.c renders.
//
//   alpaca    {"instruction", "input"?, "output", "system"?, "history"?: [[user, reply], ...]}
//             user turn = instruction + input_sep + input (input_sep only when
//             input is non-empty; the default separator is "", the tutorial's).
//   messages  {"messages": [{"role": system|user|assistant|tool, "content": str}, ...]}
//   sharegpt  {"conversations": [{"from": human|user|gpt|assistant|system|
//             function_call|observation|tool, "value": str}, ...], "system"?}
//   text      {"text": str}: no template, every token trained.
// auto picks per record: messages, conversations, instruction/output, text.
#ifndef LORAPIPE_CONVERSATION_H
#define LORAPIPE_CONVERSATION_H

#include <jansson.h>
#include <stddef.h>

typedef enum { FMT_AUTO, FMT_ALPACA, FMT_MESSAGES, FMT_SHAREGPT, FMT_TEXT, FMT_COUNT } conv_format;
typedef enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL } conv_role;

typedef struct {
    conv_role role;
    const char *text;        // UTF-8, may hold NULs; borrowed from the record or conv->owned
    size_t len;
} conv_msg;

typedef struct {
    conv_format format;      // the format the record was read as
    conv_msg *m; size_t n, cap;
    char **owned; size_t n_owned, owned_cap;    // strings built here (alpaca user turns)
} conv;

// Parse a record (a JSON value) as fmt; where names it in errors ("data.json: record 3").
// The conversation borrows strings from rec: keep rec alive while using it.
void conv_parse(conv *c, json_t *rec, conv_format fmt, const char *input_sep, const char *where);
void conv_clear(conv *c);     // forget messages, free owned strings, keep buffers
void conv_free(conv *c);

const char *conv_format_name(conv_format f);
// -1 for an unknown name.
int conv_format_parse(const char *name);
const char *conv_role_name(conv_role r);

#endif
