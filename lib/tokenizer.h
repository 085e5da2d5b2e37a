// lib/tokenizer.h: Hugging Face byte-level BPE tokenizers (the kind Qwen uses), read
// from tokenizer.json and run exactly as the Rust `tokenizers` library runs them.
//
// Pipeline of tok_encode (docs/FORMATS.md, "Tokenizer support"):
//   1. added tokens split out of the raw text (leftmost-longest; lstrip, rstrip,
//      single_word honoured; normalized:true tokens matched after step 2),
//   2. NFC normalisation (when the file asks for it),
//   3. the Split pre-tokenizer regex(es), behaviour Isolated (PCRE2, JIT),
//   4. the ByteLevel byte -> character mapping,
//   5. BPE by merge rank (same priority queue semantics as the Rust library).
// Anything else in the file (WordPiece, Unigram, other normalizers or
// pre-tokenizers, dropout, prefixes) is refused with an "unsupported" error:
// wrong ids are never produced silently.
//
// Thread safety: a loaded tok is read-only; every thread encodes through its
// own tok_ctx (regex match data, a word -> ids cache, scratch buffers).
#ifndef LORAPIPE_TOKENIZER_H
#define LORAPIPE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok tok;
typedef struct tok_ctx tok_ctx;

// A growable array of token ids; tok_encode appends to it.
typedef struct { int32_t *v; size_t n, cap; } tok_ids;
void tok_ids_push(tok_ids *a, int32_t id);
void tok_ids_free(tok_ids *a);

// Encode flags.
enum {
    // Added tokens marked "special" are encoded as plain text, as HF does with
    // split_special_tokens=True (non-special added tokens are still matched).
    TOK_SPECIAL_AS_TEXT = 1u << 0,
};

// Load a tokenizer.json, or the tokenizer.json inside a model folder.
// Dies with "PATH: ..." on unreadable, malformed or unsupported files.
tok *tok_load(const char *path);
void tok_free(tok *t);

// Number of ids (largest id + 1, model vocabulary and added tokens together).
size_t tok_vocab_size(const tok *t);
// Id of a token given by its text (added tokens by content, model tokens by
// their raw bytes); -1 when there is none.
int32_t tok_token_id(const tok *t, const char *text, size_t len);
// Raw bytes of one id (added tokens: their content); NULL for an unknown id.
const char *tok_id_bytes(const tok *t, int32_t id, size_t *len);
// Whether an id is an added token flagged special (skipped by --skip-special).
int tok_id_is_special(const tok *t, int32_t id);
// A short description for messages ("byte-level BPE, 151643 + 22 added ...").
const char *tok_describe(const tok *t);

tok_ctx *tok_ctx_new(const tok *t);
void tok_ctx_free(tok_ctx *c);

// Encode len bytes of UTF-8 text, appending ids to out.
// literal (may be NULL): byte ranges [literal[2k], literal[2k+1]) of text in
// which special added tokens are not recognised (untrusted content inside a
// trusted template); matches overlapping them are treated as text.
// Returns 0, or -1 when text is not valid UTF-8 (*bad_at = byte offset of the
// first invalid byte; nothing is appended), or -2 when a Split regex gives up
// on it (more than TOK_MATCH_LIMIT steps: an adversarial pattern; *bad_at =
// start of the segment; nothing is appended).
int tok_encode(tok_ctx *c, const char *text, size_t len, unsigned flags,
               const size_t *literal, size_t n_literal, tok_ids *out, size_t *bad_at);

// Decode ids to UTF-8 text as HF's ByteLevel decoder does (invalid UTF-8 in the
// byte stream becomes U+FFFD, maximal subparts as Rust's from_utf8_lossy).
// skip_special drops ids of special added tokens. Returns a malloc'd,
// NUL-terminated string (*len excludes the NUL); unknown ids return NULL with
// *bad_index set to their position.
char *tok_decode(const tok *t, const int32_t *ids, size_t n, int skip_special,
                 size_t *len, size_t *bad_index);

// Statistics of one context (cache hits and misses) for --verbose output.
void tok_ctx_stats(const tok_ctx *c, size_t *hits, size_t *misses);

#endif
