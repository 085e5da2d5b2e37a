// lib/chatml.h: render a conversation as ChatML token ids and training labels.
//
// Layout (Qwen's chat template; labels before the causal shift):
//   <|im_start|>system\n{system}<|im_end|>\n         masked (-100)
//   <|im_start|>user\n{user}<|im_end|>\n             masked
//   <|im_start|>assistant\n                          masked
//   {reply}<|im_end|>                                trained (labels = ids)
//   \n<|im_start|>user\n ... <|im_start|>assistant\n masked, and so on;
// no "\n" after the final <|im_end|>.  Every masked stretch and every reply
// is tokenised on its own, as the tutorial's process_func does (no BPE merge
// or regex piece crosses a prompt/reply boundary).
#ifndef LORAPIPE_CHATML_H
#define LORAPIPE_CHATML_H

#include "conversation.h"
#include "tokenizer.h"

typedef struct {
    const char *system;      // default system turn, NULL for none
    size_t system_len;
    int train_last_only;     // train only the last assistant reply
    unsigned tok_flags;      // TOK_SPECIAL_AS_TEXT: specials in any content are text
} chatml_opts;

// Append ids and labels (same length) of conversation c.  Text records: the
// plain encoding, labels = ids.  Returns 0, or tok_encode's error: -1 on
// invalid UTF-8 (cannot happen for JSON-parsed text), -2 when the tokenizer's
// Split regex gives up on the text.
int chatml_encode(tok_ctx *ctx, const conv *c, const chatml_opts *o, tok_ids *ids, tok_ids *labels);

// The system turn a model's chat template inserts when a conversation has
// none: the literal '<|im_start|>system\n...<|im_end|>\n' string in the
// chat_template of tokenizer_config.json beside tok_path (a tokenizer.json or
// its folder).  Returns a malloc'd string, or NULL when the template inserts
// no default (or there is no config); *why tells which, for the log.
char *chatml_default_system(const char *tok_path, char *why, size_t why_len);

#endif
