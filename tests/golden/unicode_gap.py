#!/usr/bin/env python3
"""Which code points Hugging Face tokenizers' regex engine (Oniguruma, in the
installed `tokenizers` wheel) puts in \\p{L}, \\p{N} and \\s that PCRE2 (the
engine lib/tok_pretok.c uses) does not, and the reverse.

The two engines carry different Unicode versions (Oniguruma 16.0 in tokenizers
0.23, PCRE2 10.42 14.0), and they disagree on \\s (PCRE2 has U+180E, not U+0085).
lib/tok_pretok.c rewrites \\p{L}, \\p{N}, \\s and \\S with these tables so that
PCRE2 splits text exactly as Oniguruma does.

The classes are observed through the Qwen Split pre-tokenizer itself, char by
char (about 15 s):
  L  iff "x"+c is one piece       ([^\\r\\n\\p{L}\\p{N}]?\\p{L}+ takes both)
  N  iff c+c is two pieces        (\\p{N} takes one char)
  S  iff "!"+c+"!" is three pieces (neither letter, number nor punctuation)
usage: cc -O2 tests/golden/pcre2_classes.c -lpcre2-8 -o /tmp/pcre2_classes
       python3 tests/golden/unicode_gap.py TOKENIZER.json /tmp/pcre2_classes
(pcre2_classes prints the code points PCRE2 matches for the class given as argv[1]).
Output of the run behind lib/tok_pretok.c (tokenizers 0.23.3, PCRE2 10.42):
  L: Oniguruma-only 9272 code points (Unicode 15.0-16.0 letters), PCRE2-only 0
  N: Oniguruma-only 120, PCRE2-only 0
  S: Oniguruma-only 0, PCRE2-only 1 (U+180E)
"""
import subprocess
import sys

from tokenizers import Tokenizer


def ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def main():
    pt = Tokenizer.from_file(sys.argv[1]).pre_tokenizer
    L, N, S = set(), set(), set()
    for c in range(0x110000):
        if 0xD800 <= c < 0xE000 or c in (0x0A, 0x0D):
            continue
        ch = chr(c)
        if len(pt.pre_tokenize_str("x" + ch)) == 1:
            L.add(c)
        elif len(pt.pre_tokenize_str(ch + ch)) == 2:
            N.add(c)
        elif len(pt.pre_tokenize_str("!" + ch + "!")) == 3:
            S.add(c)
    S |= {0x0A, 0x0D, 0x20}   # excluded from the probe above; \s by definition
    for name, onig, cls in (("L", L, r"\p{L}"), ("N", N, r"\p{N}"), ("S", S, r"\s")):
        out = subprocess.run([sys.argv[2], cls], capture_output=True, text=True, check=True).stdout
        pcre = {int(x) for x in out.split()}
        extra, missing = ranges(onig - pcre), ranges(pcre - onig)
        print(f"// {name}: Oniguruma-only {sum(b - a + 1 for a, b in extra)} code points, "
              f"PCRE2-only {sum(b - a + 1 for a, b in missing)}")
        print(f"//   only in Oniguruma: " + ", ".join(f"{a:X}-{b:X}" for a, b in extra))
        print(f"//   only in PCRE2:     " + ", ".join(f"{a:X}-{b:X}" for a, b in missing))


if __name__ == "__main__":
    main()
