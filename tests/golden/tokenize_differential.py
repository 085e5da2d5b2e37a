#!/usr/bin/env python3
"""Differential test of bin/tokenize against Hugging Face tokenizers on random strings.

  qwen:  random strings over ASCII, many scripts, emoji, whitespace, specials and every code point
         that NFC can touch (needs the utf8proc property dump, see nfc_gap.py), Qwen tokenizer
  tiny:  random concatenations of the added-token spellings of tests/fixtures/tokenize/tiny
         (lstrip, rstrip, single_word, normalized, special) on the three tiny fixtures, with and
         without split_special_tokens
usage: python3 tests/golden/tokenize_differential.py TOKENIZER_DIR PROPS.txt SEED N WORKDIR
Prints the number of mismatches per case and the first few; exit 1 on any.
"""
import json
import os
import random
import subprocess
import sys

from tokenizers import Tokenizer

BLOCKS = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
          (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x3000, 0x30FF), (0x4E00, 0x9FFF),
          (0xAC00, 0xD7A3), (0xF900, 0xFAFF), (0xFE00, 0xFE0F), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF),
          (0x10000, 0x1FFFF), (0x20000, 0x323AF), (0, 0x10FFFF)]
EXTRA = ["\n", "\r", "\t", " ", "  ", "'s", "'T", "'ll", "<|im_end|>", "<|im_start|>", "<|endoftext|>", "\u0085",
         "\u180e", "\u200d", "\u0301", "\u3000", "\u00a0", "1", "23"]
TINY = ["[L]", "[R]", "word", "words", "e\u0301tok", "\u00e9tok", "<|sp|>", "<|plain|>", " ", "  ", "\t", "\n", "a",
        "b", "ab", "_", "1", "\u0301", "x", "\u00a0", "\u3000", "你", "é"]


def compare(tok_dir, texts, work, split_special):
    src, out = os.path.join(work, "diff.jsonl"), os.path.join(work, "diff_out.jsonl")
    with open(src, "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    args = ["bin/tokenize", "-q", "-t", tok_dir, "-f", "text", "-o", out, src]
    if split_special:
        args.insert(-1, "--special-as-text")
    subprocess.run(args, check=True)
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    tok.encode_special_tokens = split_special
    ours = [json.loads(l)["input_ids"] for l in open(out)]
    hf = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    bad = [i for i in range(len(texts)) if ours[i] != hf[i]]
    print(f"{tok_dir} split_special={split_special}: {len(texts)} strings, {len(bad)} mismatches")
    for i in bad[:3]:
        print("  ", ascii(texts[i]), ours[i], hf[i])
    return len(bad)


def main():
    tok_dir, props, seed, n, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    os.makedirs(work, exist_ok=True)
    rng = random.Random(seed)
    nfc_cps = [int(l.split()[0], 16) for l in open(props)]

    def rchar():
        r = rng.random()
        if r < 0.2:
            return rng.choice(EXTRA)
        if r < 0.45:
            return chr(rng.choice(nfc_cps))
        a, b = rng.choice(BLOCKS)
        c = rng.randint(a, b)
        return chr(0x41 if 0xD800 <= c < 0xE000 else c)

    bad = 0
    texts = ["".join(rchar() for _ in range(rng.randint(0, 50))) for _ in range(n)]
    for sp in (False, True):
        bad += compare(tok_dir, texts, work, sp)
    texts = ["".join(rng.choice(TINY) for _ in range(rng.randint(0, 25))) for _ in range(n)]
    for name in ("tiny", "tiny-gpt2", "tiny-quirk"):
        for sp in (False, True):
            bad += compare(f"tests/fixtures/tokenize/{name}", texts, work, sp)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
