// lib/bpe_train.h: train a small byte-level BPE tokenizer and write it as a
// Hugging Face tokenizer.json (the Qwen2 layout: NFC, Split regex Isolated +
// ByteLevel pre-tokenizer, ByteLevel decoder, BPE model), which lib/tokenizer
// and the Rust `tokenizers` library both load and run to the same ids.
//
// Training is the textbook algorithm, deterministic: texts are pre-tokenized
// with the same Split regex the tokenizer will use, identical pieces are
// counted once, and each round merges the most frequent adjacent pair (ties:
// the pair with the lowest left id, then the lowest right id) until the merge
// budget is spent or no pair occurs min_count times.  Small corpora only
// (pair counts are recomputed every round): the demo's tokenizer.
#ifndef LORAPIPE_BPE_TRAIN_H
#define LORAPIPE_BPE_TRAIN_H
#include <stddef.h>
#include <stdint.h>

// Qwen2's pre-tokenizer regex (tokenizer.json "Split" pattern, unescaped).
extern const char BPE_QWEN2_SPLIT[];

typedef struct bpe_trainer bpe_trainer;

bpe_trainer *bpe_trainer_new(void);
void bpe_trainer_free(bpe_trainer *b);
// Add len bytes of UTF-8 text (already NFC; the demo's data is ASCII).
void bpe_trainer_add(bpe_trainer *b, const char *text, size_t len);
// Run up to max_merges rounds; returns the number of merges made.
size_t bpe_trainer_run(bpe_trainer *b, size_t max_merges, size_t min_count);
// Model tokens: 256 bytes (GPT-2 bytes_to_unicode order) + one per new token.
size_t bpe_trainer_n_tokens(const bpe_trainer *b);
size_t bpe_trainer_n_merges(const bpe_trainer *b);
// Raw bytes of model token id.
const char *bpe_trainer_token(const bpe_trainer *b, size_t id, size_t *len);
// tokenizer.json text (malloc'ed, ends with a newline): the model vocabulary,
// then the added tokens specials[0..n) as special, non-normalized tokens with
// ids n_tokens, n_tokens + 1, ...
char *bpe_trainer_json(const bpe_trainer *b, const char *const *specials, size_t n_specials);

// GPT-2's bytes_to_unicode: the code point that byte b is written as.
uint32_t bpe_byte_char(uint8_t b);

#endif
