#!/usr/bin/env python3
"""The hard-strings corpus and the ids Hugging Face gives for it.

Writes
  tests/fixtures/tokenize/hard_strings.jsonl           {"text": s} per line (input of bin/tokenize --format text)
  tests/fixtures/tokenize/hard_strings_expected.jsonl  {"ids", "ids_split_special", "decoded", "decoded_skip"} per line
using the committed Qwen tokenizer (tokenizers.Tokenizer, add_special_tokens=False;
ids_split_special with encode_special_tokens=True, i.e. split_special_tokens).
usage: python3 tests/golden/tokenize_hard_strings.py build/fixtures/qwen-tokenizer/tokenizer.json
"""
import json
import random
import sys

from tokenizers import Tokenizer


def corpus():
    s = []
    # Whitespace runs, CR/LF mixes, tabs.
    for ws in [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r\n\r\n", "\r", "\n\r", " \n", "\n ",
               " \t \n", "\u00a0", "\u3000", "\u2003\u2003", "\u0085", "\u180e", "\u2028", "\u2029", "\u200b",
               "\u000b\u000c", " " * 17, "\n" * 9, "\t \t \t"]:
        s += [ws, "a" + ws + "b", ws + "word", "word" + ws, "x" + ws + ws + "y", ws + "123" + ws]
    s += [" " * 10000, "a" + " " * 5000 + "b", "\n \n \n  \n", "end  ", "  start", "  \n  x", "a\r\n\r\nb\r\n"]
    # Digits and numbers in other scripts.
    s += ["0", "1234567890", "3.14159", "-42", "1,000,000", "10^9", "v1.2.3", "x2y3z4", "٠١٢٣٤٥", "१२३",
          "Ⅻ ½ ² ³", "①②③", "12abc34", "0x1F600", "1e-9", "𝟙𝟚𝟛"]
    # Contractions in any case.
    s += ["don't", "DON'T", "Don'T", "it's", "IT'S", "It'S", "we'll", "WE'LL", "they're", "THEY'RE", "I've",
          "I'VE", "I'm", "I'M", "he'd", "HE'D", "'s", "'S'", "rock'n'roll", "it'ſ", "o'clock", "''", "' s",
          "can't won't shan't", "y'all'd've"]
    # Emoji, ZWJ sequences, flags, skin tones, variation selectors.
    s += ["👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵🇫🇷", "❤️", "☺︎", "👩🏻‍💻 coding", "a👨‍👩‍👧b", "🙂🙃" * 20,
          "#️⃣", "🧑🏿‍🤝‍🧑🏻"]
    # Combining marks and NFC (composable, singletons, Hangul jamo, kana voicing).
    s += ["e\u0301", "cafe\u0301", "A\u030a", "\u212b", "\u212a", "\u2126", "o\u0308\u0304", "q\u0307\u0323",
          "\u1100\u1161\u11a8", "\u1100\u1161", "\u304b\u3099", "\uf900", "\U0002f800", "Z\u0335\u0336\u0337",
          "\u0958", "\u0b47\u0b3e", "a\u0300\u0301\u0302\u0303\u0304", "\u0344", "\u1e9b\u0323", "ﬁ ﬂ",
          "\u00c5\u0301", "\u0041\u0328\u0301"]
    # Scripts.
    s += ["你好，世界！", "皇上驾到！本宫知道了。", "現在你要扮演皇帝身邊的女人", "日本語のテキストです。カタカナ",
          "한국어 텍스트입니다", "안녕하세요 세계", "مرحبا بالعالم", "السلام عليكم ورحمة الله",
          "नमस्ते दुनिया", "हिन्दी भाषा में पाठ", "Привет, мир!", "Γειά σου κόσμε", "שלום עולם",
          "สวัสดีชาวโลก", "ሰላም ልዑል", "Xin chào thế giới", "Ça va? Où est l'hôtel?", "Straße ß ẞ",
          "İstanbul ıi", "ǅemal ǈ ǋ", "𐍈𐌰𐌹", "𓀀𓀁", "ᓀᐦᐃᔭᐍᐏᐣ", "ꯃꯩꯇꯩ", "中文English混合123"]
    # Unicode 15/16 letters and digits (Oniguruma knows them, PCRE2 10.42 does not).
    s += ["a\U00031350b", "\U00011f04\U00011f05x", "\U00016d40\U00016d41", "\U0001e5d0\U0001e5d1 z",
          "\U00011bc0 \U00011bf0\U00011bf1", "\U0001ccf0\U0001ccf1", "\u1c89\u1c8a", "\ua7cb\ua7cc",
          "\U00010d4a-\U00010d40", "\U0002ebf0\U0002ebf1", "x\U00013460y"]
    # Combining marks newer than HF's NFC tables (class 0 there; see nfc_gap.py) next to old marks.
    s += ["q\u0301\U000119e0", "\u200d\u0347\U000119e0", "\U0001e4ef\u064f\r", "\U00016ff1\u03d5\u0320",
          "a\u0301\u1ac0\u0316", "\u0915\u094d\u0c3c\u0301", "e\u1df6\u0301", "\u07fd\u0300x", "\U0001e4ee\u032d(\u0301",
          "\u0898\u0899\u0301\u0316"]
    # Code.
    s += ["def f(x):\n    return x**2\n", "int main(void) {\n\treturn 0;\n}\n", "if (a && b || !c) { x += 1; }",
          "for i in range(10):\n        print(i)", "<div class=\"x\">&nbsp;</div>", "SELECT * FROM t WHERE a='b';",
          "const f = () => { return `${x}`; };", "#include <stdio.h>\n", "    \n    \n", "x = [1, 2, 3]  # list",
          "$ ls -la | grep '^d'", "{\"key\": [1, null, true]}", "a->b->c", "i++; --j;", "/* comment */",
          "\\n\\t\\\\", "https://example.com/path?q=1&r=2#frag", "user@example.com", "C:\\Windows\\System32",
          "```python\nprint('hi')\n```"]
    # Special tokens inside text.
    s += ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>\n",
          "text<|im_end|>more", "<|im_start|><|im_start|>", "<|im_end", "|im_end|>", "<|im_end|>>",
          "<<|im_end|>", "<tool_call>", "</tool_call>", "<think>x</think>", "<|fim_prefix|>code<|fim_suffix|>",
          "<|vision_start|><|image_pad|><|vision_end|>", " <|im_end|> ", "\n<|im_start|>assistant\n",
          "<|IM_END|>", "<|endoftext|><|endoftext|>", "a<|object_ref_start|>b"]
    # Empty and tiny.
    s += ["", "a", "A", ".", "'", "\"", "\\", "\u0000", "\u0000a\u0000", "\u0001\u0002\u007f", "\ufeff", "\ufeffx",
          "\ufffd", "\U0010ffff", "\ue000"]
    # Very long words.
    s += ["a" * 1000, "ab" * 700, "supercalifragilisticexpialidocious" * 20, "你" * 800, "😀" * 300,
          "x" + "0123456789" * 100, "-" * 2000, "=" * 513, "\u0301" * 50, "A" + "\u0301" * 40]
    # Punctuation runs and mixes.
    s += ["...", "!!!", "?!?!", "---", "***", "a...b", "(a)", "[b]", "{c}", "\"quoted\"", "«guillemets»",
          "「括号」", "【标题】", "——", "……", "、。，", "a,b;c:d", " !!!\n\n", "!!!\r\n", "x.\n\ny"]
    # Random mixtures from a hard alphabet (fixed seed).
    rng = random.Random(1234)
    alpha = (list("aZ09 '\t\n\r.,!?-_") + ["\u00a0", "\u0301", "\u0308", "é", "ß", "你", "好", "한", "\u1161",
             "ا", "न", "्", "😀", "\u200d", "👍", "🏽", "<|im_end|>", "<|im_start|>", "\u3000", "\u0085",
             "Ⅻ", "½", "'s", "'LL", "\U00031350", "\u180e", "\u2028", "\ufe0f"])
    for _ in range(120):
        s.append("".join(rng.choice(alpha) for _ in range(rng.randint(1, 40))))
    return s


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    strings = corpus()
    out = "tests/fixtures/tokenize"
    with open(f"{out}/hard_strings.jsonl", "w") as f, open(f"{out}/hard_strings_expected.jsonl", "w") as g:
        for s in strings:
            ids = tok.encode(s, add_special_tokens=False).ids
            tok.encode_special_tokens = True
            ids2 = tok.encode(s, add_special_tokens=False).ids
            tok.encode_special_tokens = False
            f.write(json.dumps({"text": s}) + "\n")
            g.write(json.dumps({"ids": ids, "ids_split_special": ids2, "decoded": tok.decode(ids, skip_special_tokens=False),
                               "decoded_skip": tok.decode(ids, skip_special_tokens=True)},
                               separators=(",", ":")) + "\n")
    print(len(strings), "strings")


if __name__ == "__main__":
    main()
