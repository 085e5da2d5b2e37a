// tests/unit/test_bpe_train.c: the BPE trainer behind demo-init: the byte
// table, the merges it picks, determinism, and that the tokenizer.json it
// writes loads in lib/tokenizer and round-trips the training text.
#include "bpe_train.h"
#include "check.h"
#include "tap.h"
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const CORPUS[] = {
    "The sky is blue.", "The grass is green.", "The snow is white.", "What color is the sky?",
    "A cat says meow.", "A dog says woof.", "Repeat the word two times.", "apple apple",
    "line one\nline two\n\n", "  spaced   out  ", "digits 12345 and 2026", "caf\xc3\xa9 na\xc3\xafve",
};
#define N_CORPUS (sizeof CORPUS / sizeof CORPUS[0])

static bpe_trainer *trained(size_t merges) {
    bpe_trainer *b = bpe_trainer_new();
    for (int rep = 0; rep < 3; rep++)
        for (size_t i = 0; i < N_CORPUS; i++) bpe_trainer_add(b, CORPUS[i], strlen(CORPUS[i]));
    bpe_trainer_run(b, merges, 2);
    return b;
}

int main(void) {
    check_init("test_bpe_train");
    // GPT-2's bytes_to_unicode (qwen_lora_spec §6.2 examples).
    T_OK(bpe_byte_char(' ') == 0x120, "space -> U+0120");
    T_OK(bpe_byte_char('\n') == 0x10A, "newline -> U+010A");
    T_OK(bpe_byte_char(0x7F) == 0x121, "0x7F -> U+0121");
    T_OK(bpe_byte_char(0xAD) == 0x143, "0xAD -> U+0143");
    T_OK(bpe_byte_char('a') == 'a' && bpe_byte_char(0xFF) == 0xFF, "printable bytes map to themselves");
    int distinct = 1;
    for (int a = 0; a < 256; a++)
        for (int b = a + 1; b < 256; b++) distinct &= bpe_byte_char((uint8_t)a) != bpe_byte_char((uint8_t)b);
    T_OK(distinct, "the byte table is one to one");

    // The first merge of "aaab aaab" pieces: ("a","a") occurs twice per piece.
    bpe_trainer *b = bpe_trainer_new();
    T_OK(bpe_trainer_n_tokens(b) == 256, "256 byte tokens before training");
    for (int i = 0; i < 4; i++) bpe_trainer_add(b, "aaab", 4);
    T_OK(bpe_trainer_run(b, 1, 2) == 1, "one merge");
    size_t len;
    const char *t = bpe_trainer_token(b, 256, &len);
    T_OK(len == 2 && !memcmp(t, "aa", 2), "first merge makes \"aa\"");
    T_OK(bpe_trainer_run(b, 100, 2) == 2, "then aa+a? and ...b: 3 merges in all, the piece is one token");
    t = bpe_trainer_token(b, bpe_trainer_n_tokens(b) - 1, &len);
    T_OK(len == 4 && !memcmp(t, "aaab", 4), "last token is the whole piece");
    T_OK(bpe_trainer_run(b, 100, 2) == 0, "nothing left to merge");
    bpe_trainer_free(b);

    // min_count: pairs seen once are not merged.
    b = bpe_trainer_new();
    bpe_trainer_add(b, "xyz", 3);
    T_OK(bpe_trainer_run(b, 10, 2) == 0, "min_count 2: no merge from a single piece");
    bpe_trainer_free(b);

    // Determinism: two runs give the same file.
    static const char *const specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    bpe_trainer *b1 = trained(60), *b2 = trained(60);
    char *j1 = bpe_trainer_json(b1, specials, 3), *j2 = bpe_trainer_json(b2, specials, 3);
    T_OK(!strcmp(j1, j2), "same corpus, same tokenizer.json");
    T_OK(bpe_trainer_n_merges(b1) > 20, "the corpus gives merges (%zu)", bpe_trainer_n_merges(b1));
    T_OK(strstr(j1, "\"type\": \"Split\"") && strstr(j1, "\"type\": \"ByteLevel\"") && strstr(j1, "\"NFC\""),
         "Qwen2 layout: NFC, Split, ByteLevel");

    // Load it with lib/tokenizer and round-trip every line of the corpus.
    char path[] = "/tmp/test_bpe_train.XXXXXX";
    int fd = mkstemp(path);
    T_OK(fd >= 0, "temp file");
    size_t n = strlen(j1);
    T_OK(write(fd, j1, n) == (ssize_t)n, "write tokenizer.json");
    close(fd);
    tok *tk = tok_load(path);
    size_t ntok = bpe_trainer_n_tokens(b1);
    T_OK(tok_vocab_size(tk) == ntok + 3, "vocab = model tokens + 3 specials (%zu)", tok_vocab_size(tk));
    T_OK(tok_token_id(tk, "<|im_end|>", 10) == (int32_t)ntok + 2, "<|im_end|> is the last id");
    tok_ctx *cx = tok_ctx_new(tk);
    int round = 1, shorter = 1;
    for (size_t i = 0; i < N_CORPUS; i++) {
        tok_ids ids = {0};
        size_t bad;
        tok_encode(cx, CORPUS[i], strlen(CORPUS[i]), 0, NULL, 0, &ids, &bad);
        char *back = tok_decode(tk, ids.v, ids.n, 0, &n, &bad);
        round &= n == strlen(CORPUS[i]) && !memcmp(back, CORPUS[i], n);
        shorter &= ids.n < strlen(CORPUS[i]);
        free(back);
        tok_ids_free(&ids);
    }
    T_OK(round, "encode -> decode gives the text back");
    T_OK(shorter, "every training line takes fewer tokens than bytes");
    // Specials are matched as added tokens; a trained word is one token.
    tok_ids ids = {0};
    const char *chat = "<|im_start|>user\nThe sky<|im_end|>";
    size_t bad;
    tok_encode(cx, chat, strlen(chat), 0, NULL, 0, &ids, &bad);
    T_OK(ids.n >= 3 && ids.v[0] == (int32_t)ntok + 1 && ids.v[ids.n - 1] == (int32_t)ntok + 2,
         "ChatML specials at both ends");
    tok_ids_free(&ids);
    tok_encode(cx, " sky", 4, 0, NULL, 0, &ids, &bad);
    T_OK(ids.n == 1, "\" sky\" (3 times x 2 in the corpus) is one token");
    tok_ids_free(&ids);
    tok_ctx_free(cx);
    tok_free(tk);
    unlink(path);
    free(j1); free(j2);
    bpe_trainer_free(b1); bpe_trainer_free(b2);
    return T_DONE("test_bpe_train");
}
