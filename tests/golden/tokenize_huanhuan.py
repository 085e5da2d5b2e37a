#!/usr/bin/env python3
"""Reference token ids for the huanhuan dataset: the tutorial's process_func,
run with transformers' AutoTokenizer, exactly as the tutorial does.

usage: python3 tests/golden/tokenize_huanhuan.py TOKENIZER_DIR huanhuan.json OUT.jsonl
then:  zstd -19 -f OUT.jsonl -o tests/fixtures/tokenize/huanhuan_expected.jsonl.zst
The bats suite compares `bin/tokenize --system ... --max-len 128` with it, record for record.
"""
import json
import sys

from transformers import AutoTokenizer

MAX = 128


def main():
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    data = json.load(open(sys.argv[2], encoding="utf-8"))

    def process_func(ex):
        p = ("<|im_start|>system\n现在你要扮演皇帝身边的女人--甄嬛<|im_end|>\n"
             f"<|im_start|>user\n{ex['instruction'] + ex['input']}<|im_end|>\n<|im_start|>assistant\n")
        pe = tok(p, add_special_tokens=False)
        re_ = tok(ex['output'] + "<|im_end|>", add_special_tokens=False)
        ids = pe["input_ids"] + re_["input_ids"]
        lab = [-100] * len(pe["input_ids"]) + re_["input_ids"]
        return {"input_ids": ids[:MAX], "labels": lab[:MAX]}

    with open(sys.argv[3], "w") as f:
        for ex in data:
            f.write(json.dumps(process_func(ex), separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
