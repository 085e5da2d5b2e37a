// lib/tok_internal.h: the loaded tokenizer's tables, shared by the lib/tok_*.c
// files and lib/tokenizer.c (not part of the public API).
#ifndef LORAPIPE_TOK_INTERNAL_H
#define LORAPIPE_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "hashmap.h"
#include "tokenizer.h"

enum { TOK_MAX_STAGES = 4 };
// Ids are refused from 2^24 on: the largest vocabularies in use hold about
// 256k tokens, and the per-id tables are sized by the largest id, so a file
// naming id 2^31 - 1 would otherwise make the loader allocate 18 GiB.
enum { TOK_MAX_IDS = 1 << 24 };
// PCRE2 match steps allowed per match: TOK_MATCH_LIMIT plus
// TOK_MATCH_PER_BYTE per byte of text left (PCRE2's fixed default is 10
// million).  An adversarial Split regex then fails in milliseconds with an
// error instead of backtracking for seconds on every piece, while real
// patterns on long runs (megabytes of spaces) stay far below it.
enum { TOK_MATCH_LIMIT = 1000000, TOK_MATCH_PER_BYTE = 64 };

// Per-id flags.
enum { TID_MODEL = 1, TID_ADDED = 2, TID_SPECIAL = 4 };

typedef struct {
    char *content; size_t len;   // as matched (normalised first when normalized)
    int32_t id;
    unsigned char single_word, lstrip, rstrip, normalized, special;
} tok_added;

// Added tokens that are matched in one pass (raw text or normalised text),
// sorted longest first within each first-byte bucket.
typedef struct {
    tok_added **by_len;          // all tokens, longest first
    size_t n;
    uint8_t first[256];          // first[b]: some token starts with byte b
} tok_added_set;

struct tok {
    char *path;
    char desc[160];
    size_t n_ids;                // largest id + 1
    // Decoded bytes of every id: id_bytes + id_off[id], id_len[id] bytes.
    char *id_bytes; uint32_t *id_off, *id_len;
    uint8_t *id_flags;
    strmap vocab;                // raw bytes -> model id (encodable tokens only)
    int32_t byte_id[256];        // model id of each single byte
    u64map merges;               // (left << 32 | right) -> (rank << 32 | new id)
    int ignore_merges;
    int nfc;                     // normalizer is NFC
    uint8_t *nfc_safe;           // bitmap over code points < TOK_NFC_TABLE
    size_t n_stages;             // Split regexes, applied in order
    pcre2_code *re[TOK_MAX_STAGES];
    tok_added *added; size_t n_added;
    tok_added_set raw_set, norm_set;
};

enum { TOK_NFC_TABLE = 0x30000 };

// tok_pretok.c
pcre2_code *pretok_compile(const char *path, const char *pattern, size_t len, int literal);
// tok_normalize.c
void nfc_build_table(tok *t);
// Returns text unchanged (*out = NULL) when it is already NFC; otherwise a
// malloc'd NFC copy in *out with its length.
size_t nfc_apply(const tok *t, const char *s, size_t n, char **out);
// tok_bpe.c: ids of one pre-tokenized piece (raw bytes), appended to out.
typedef struct bpe_scratch bpe_scratch;
bpe_scratch *bpe_scratch_new(void);
void bpe_scratch_free(bpe_scratch *b);
void bpe_piece(const tok *t, bpe_scratch *b, const unsigned char *p, size_t n, tok_ids *out);
// tok_added.c: split text at added tokens, as HF's AddedVocabulary::find_matches.
typedef struct { size_t start, end; int32_t id; } tok_split;   // id -1: plain text
size_t added_find(const tok *t, const tok_added_set *set, const char *s, size_t n,
                  unsigned flags, const size_t *literal, size_t n_literal,
                  tok_split **splits, size_t *cap);
void added_set_build(tok_added_set *set, tok_added *tokens, size_t n, int normalized);
void added_set_free(tok_added_set *set);

#endif
