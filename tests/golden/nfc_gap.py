#!/usr/bin/env python3
"""Combining marks whose canonical combining class Hugging Face tokenizers' NFC
does not know (its normalisation tables are older than utf8proc's), so that it
leaves them where they are while utf8proc reorders them.  lib/tok_normalize.c
treats these code points as inert starters (NFC runs on the text between them).

usage: cc -O2 tests/golden/utf8proc_props.c -lutf8proc -o /tmp/utf8proc_props
       /tmp/utf8proc_props > /tmp/props.txt
       python3 tests/golden/nfc_gap.py /tmp/props.txt
Output of the run behind lib/tok_normalize.c (tokenizers 0.23.3, utf8proc 2.8.0):
  ccc unknown to HF: 108 code points (Unicode 11.0 to 15.0 marks); decompositions that differ: 0
"""
import sys

from tokenizers import normalizers


def ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def main():
    nfc = normalizers.NFC()
    unknown_ccc, bad_decomp = [], []
    for line in open(sys.argv[1]):
        f = line.split()
        cp, ccc = int(f[0], 16), int(f[1])
        alone = "".join(chr(int(x, 16)) for x in f[2:])
        c = chr(cp)
        if nfc.normalize_str(c) != alone:
            bad_decomp.append(cp)
        if ccc:
            # After a base (q, which composes with nothing here) put a mark the
            # character must move across when HF knows its class.
            if ccc < 230:
                s, want = "q\u0301" + c, "q" + c + "\u0301"
            else:
                s, want = "q" + c + "\u0334", "q\u0334" + c
            got = nfc.normalize_str(s)
            if got == s and got != nfc.normalize_str(want):
                unknown_ccc.append(cp)
    print(f"ccc unknown to HF: {len(unknown_ccc)}: " +
          ", ".join(f"{a:X}-{b:X}" if a != b else f"{a:X}" for a, b in ranges(unknown_ccc)))
    print(f"decompositions that differ: {len(bad_decomp)}: " + ", ".join(f"{c:X}" for c in bad_decomp))


if __name__ == "__main__":
    main()
