#!/usr/bin/env python3
"""Reference token ids for the demo tokenizer (bin/demo-init's byte-level BPE,
trained by lib/bpe_train.c), computed by Hugging Face's Rust `tokenizers`
library: proof that the tokenizer.json the project writes means the same ids
to HF as to bin/tokenize.

  1. every record of the demo's data.json through the tutorial's process_func
     (prompt and reply tokenized separately, add_special_tokens=False, labels
     -100 on the prompt), with the chat template's default system turn;
  2. the 489-string hard-text corpus (tests/fixtures/tokenize/hard_strings.jsonl):
     a tokenizer with few merges exercises the regex and the byte fallback of
     every piece.

usage: bin/demo-init --out DIR    (default seed)
       python3 tests/golden/tokenize_demo.py DIR OUT.jsonl
       zstd -19 -f OUT.jsonl -o tests/fixtures/tokenize/demo_expected.jsonl.zst
The bats suite (tests/bats/demo.bats) compares bin/tokenize with the output.
"""
import json
import sys

from tokenizers import Tokenizer

SYSTEM = "You are a helpful assistant."   # the demo's chat template default


def main():
    d, out = sys.argv[1], sys.argv[2]
    tok = Tokenizer.from_file(f"{d}/model/tokenizer.json")
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids
    rows = []
    for ex in json.load(open(f"{d}/data.json", encoding="utf-8")):
        p = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
             f"<|im_start|>user\n{ex['instruction'] + ex['input']}<|im_end|>\n<|im_start|>assistant\n")
        pi, ri = enc(p), enc(ex["output"] + "<|im_end|>")
        rows.append({"input_ids": pi + ri, "labels": [-100] * len(pi) + ri})
    for line in open("tests/fixtures/tokenize/hard_strings.jsonl", encoding="utf-8"):
        ids = enc(json.loads(line)["text"])
        rows.append({"input_ids": ids, "labels": ids})
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
