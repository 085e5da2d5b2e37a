// fuzz/fuzz_tokenizer_json.c: tokenizer.json (lib/tok_load.c, lib/tok_json.c),
// then encoding and decoding a fixed text with whatever loaded, so that fuzzed
// regexes, merges and added tokens are run as well as read.
#include "fuzz_common.h"
#include "tokenizer.h"

static const char SAMPLE[] =
    "Hello, world! It's 2026-11-29: 12345 tokens\n\n  \t  indented   spaces   \r\n"
    "<|im_start|>user\n你好，世界。現在你要扮演皇帝身边的女人<|im_end|>\n"
    "café naïve ﬁ Ａ１ e\xcc\x81 \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd "
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab     \n<|endoftext|>'ll 've";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fz_init();
    const char *path = fz_memfile(data, n);
    if (setjmp(fz_jmp)) return 0;      // a refusal: die() jumped here
    tok *t = tok_load(path);
    tok_ctx *c = tok_ctx_new(t);
    tok_ids ids = {0};
    size_t bad;
    for (unsigned flags = 0; flags <= TOK_SPECIAL_AS_TEXT; flags += TOK_SPECIAL_AS_TEXT) {
        ids.n = 0;
        int rc = tok_encode(c, SAMPLE, sizeof SAMPLE - 1, flags, NULL, 0, &ids, &bad);
        if (rc == -2) break;           // a fuzzed Split regex over the match limit: reported, fine
        if (rc != 0) abort();          // the sample is valid UTF-8
        for (size_t i = 0; i < ids.n; i++)
            if (ids.v[i] < 0 || (size_t)ids.v[i] >= tok_vocab_size(t)) abort();
        size_t len, bad_i;
        char *txt = tok_decode(t, ids.v, ids.n, (int)flags, &len, &bad_i);
        free(txt);
    }
    // Every id decodes or is reported unknown (never read out of bounds).
    size_t nv = tok_vocab_size(t);
    for (size_t id = 0; id < nv && id < 4096; id++) {
        size_t len;
        const char *b = tok_id_bytes(t, (int32_t)id, &len);
        if (b) (void)tok_token_id(t, b, len);
    }
    tok_ids_free(&ids);
    tok_ctx_free(c);
    tok_free(t);
    return 0;
}
