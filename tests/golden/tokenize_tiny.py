#!/usr/bin/env python3
"""Build the small byte-level BPE tokenizers used by the C unit tests, and the
ids Hugging Face `tokenizers` gives for a set of strings with them.

  tests/fixtures/tokenize/tiny/tokenizer.json       Qwen layout: NFC, Split(Qwen regex,
      Isolated), ByteLevel(use_regex=false); merges as "a b" strings (the older
      form); added tokens with every flag (special, lstrip, rstrip, single_word,
      normalized).
  tests/fixtures/tokenize/tiny-gpt2/tokenizer.json  GPT-2 layout: ByteLevel(use_regex=true),
      no normalizer, merges as ["a", "b"] lists.
  tests/fixtures/tokenize/tiny-quirk/tokenizer.json hand-made: "abc" can be formed by two merge paths
      ("ab"+"c" and "a"+"bc"), which exercises the priority-queue details (stale entries, ties).
  tests/fixtures/tokenize/tiny_expected.jsonl       {"tokenizer", "text", "ids", "ids_split_special", "decoded"}

The merges are learned by tokenizers' BpeTrainer from a fixed small text (a few
hundred merges), so the file is deterministic.
usage: python3 tests/golden/tokenize_tiny.py   (from the repository root)
"""
import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

QWEN_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
OUT = "tests/fixtures/tokenize"

CORPUS = [
    "the quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away!",
    "Hello world, hello there. Don't stop; we'll see what's next. I'm here, they're there.",
    "def tokenize(text):\n    return [t for t in text.split()]  # simple\n\tif x == 1:\n\t\tpass\n",
    "你好，世界。今天天气很好，我们一起去公园散步吧。皇上驾到！本宫知道了。",
    "안녕하세요 세계. 감사합니다. مرحبا بالعالم. नमस्ते दुनिया। Привет, мир! Γειά σου κόσμε.",
    "1234567890 3.14159 2024-01-01 10:30 $100 50% #tag @user <html><body></body></html>",
    "aaaa aaaa bbbb abab abba baba aaa bbb ab ba aa bb a b",
] * 20

STRINGS = [
    "", " ", "  ", "\n", "\r\n", "\t\t", "a", "the quick brown fox", "The Quick Brown Fox",
    "hello  world", "hello\n\nworld", "don't DON'T Don'T we'll WE'LL", "aaaa aaaaa aaaaaaaa",
    "abababab baba abba", "你好世界", "皇上驾到！", "안녕하세요", "مرحبا", "नमस्ते", "123 4567",
    "café", "cafe\u0301", "e\u0301\u0301", "\u212b", "x<|sp|>y", "<|sp|><|sp|>", "a [L] b",
    "a   [L]   b", "a [R]   b", "[R]\n\nz", "word words aword word.", " word ", "wordword",
    "e\u0301tok", "\u00e9tok", "<|sp|>", "<|plain|>x", "emoji 👨‍👩‍👧 ok", "\u0000\u0001 ctl",
    "x" * 300, "tab\tsep\tvalues", "mixed 中文 and English 123",
]


def build(path, gpt2):
    tok = Tokenizer(models.BPE())
    if gpt2:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_RE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + 400, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if not gpt2:
        tok.add_special_tokens([AddedToken("<|sp|>", special=True, normalized=False)])
        tok.add_tokens([
            AddedToken("[L]", lstrip=True, normalized=False, special=False),
            AddedToken("[R]", rstrip=True, normalized=False, special=False),
            AddedToken("word", single_word=True, normalized=False, special=False),
            AddedToken("e\u0301tok", normalized=True, special=False),
            AddedToken("<|plain|>", special=False, normalized=False),
        ])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tok.save(path)
    j = json.load(open(path))
    # The Qwen-style fixture keeps merges in the older "a b" string form.
    if not gpt2:
        j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    else:
        j["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in j["model"]["merges"]]
    with open(path, "w") as f:
        json.dump(j, f, ensure_ascii=False, indent=1)
    return Tokenizer.from_file(path)


def build_quirk(path):
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    merges = [("b", "c"), ("a", "b"), ("ab", "c"), ("a", "bc"), ("c", "a"), ("ca", "b"), ("abc", "abc"),
              ("b", "b"), ("bb", "b")]
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    j = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
         "normalizer": None,
         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
         "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                                             "use_regex": True},
         "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                   "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                   "vocab": vocab, "merges": [list(m) for m in merges]}}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(j, f, ensure_ascii=False, indent=1)
    return Tokenizer.from_file(path)


QUIRK_STRINGS = ["abc", "abcabc", "aabcc", "ababcbc", "cab", "cabc", "abcab", "bbbb", "bbbbbbb", "abbbc",
                 "cabcabcab", "aaaa", "bcbcbc", "abcbcabc", "a", ""]


def main():
    rows = []
    tok = build_quirk(f"{OUT}/tiny-quirk/tokenizer.json")
    for s in QUIRK_STRINGS:
        ids = tok.encode(s, add_special_tokens=False).ids
        rows.append({"tokenizer": "tiny-quirk", "text": s, "ids": ids, "ids_split_special": ids,
                     "decoded": tok.decode(ids), "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    for name, gpt2 in (("tiny", False), ("tiny-gpt2", True)):
        tok = build(f"{OUT}/{name}/tokenizer.json", gpt2)
        for s in STRINGS:
            ids = tok.encode(s, add_special_tokens=False).ids
            tok.encode_special_tokens = True
            ids_split = tok.encode(s, add_special_tokens=False).ids
            tok.encode_special_tokens = False
            rows.append({"tokenizer": name, "text": s, "ids": ids, "ids_split_special": ids_split,
                         "decoded": tok.decode(ids, skip_special_tokens=False),
                         "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    with open(f"{OUT}/tiny_expected.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(len(rows), "rows")


if __name__ == "__main__":
    main()
