#!/usr/bin/env python3
"""Throughput of bin/tokenize against Hugging Face tokenizers, same text, same CPU,
with a check that every id is identical.

Corpora (written to WORKDIR as {"text": ...} JSON Lines):
  chinese  the huanhuan records' prompts and replies, as separate texts, repeated 10x
  code     Python standard-library sources (whole files), the first ~20 MB
HF: tokenizers.Tokenizer.from_file + encode_batch(add_special_tokens=False), timed
around encode_batch only (file reading and tokenizer loading excluded), once with
RAYON_NUM_THREADS=1 and once with all cores.  Ours: bin/tokenize --format text,
timed twice: the whole process (load + read + encode + write JSONL) and the
encode loop alone (its --stats "seconds" excludes the tokenizer load).

usage: python3 tools/tokenize/bench/bench_vs_hf.py TOKENIZER_DIR HUANHUAN.json WORKDIR
"""
import glob
import json
import os
import subprocess
import sys
import time

HF_CHILD = r"""
import json, sys, time
from tokenizers import Tokenizer
texts = [json.loads(l)["text"] for l in open(sys.argv[2], encoding="utf-8")]
tok = Tokenizer.from_file(sys.argv[1])
t0 = time.perf_counter()
enc = tok.encode_batch(texts, add_special_tokens=False)
dt = time.perf_counter() - t0
with open(sys.argv[3], "w") as f:
    for e in enc:
        f.write(json.dumps(e.ids, separators=(",", ":")) + "\n")
print(json.dumps({"seconds": dt, "tokens": sum(len(e.ids) for e in enc)}))
"""


def corpora(huanhuan, work):
    out = {}
    data = json.load(open(huanhuan, encoding="utf-8"))
    p = os.path.join(work, "chinese.jsonl")
    with open(p, "w", encoding="utf-8") as f:
        for _ in range(10):
            for ex in data:
                f.write(json.dumps({"text": ex["instruction"] + ex["input"]}, ensure_ascii=False) + "\n")
                f.write(json.dumps({"text": ex["output"]}, ensure_ascii=False) + "\n")
    out["chinese"] = p
    p = os.path.join(work, "code.jsonl")
    n = 0
    with open(p, "w", encoding="utf-8") as f:
        for src in sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True)):
            try:
                s = open(src, encoding="utf-8").read()
            except (UnicodeDecodeError, OSError):
                continue
            f.write(json.dumps({"text": s}, ensure_ascii=False) + "\n")
            n += len(s.encode())
            if n > 20e6:
                break
    out["code"] = p
    return out


def run_hf(tok_json, corpus, ids_out, threads):
    env = dict(os.environ)
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    else:
        env.pop("RAYON_NUM_THREADS", None)
    env["TOKENIZERS_PARALLELISM"] = "true"
    r = subprocess.run([sys.executable, "-c", HF_CHILD, tok_json, corpus, ids_out], env=env,
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def run_ours(tok_dir, corpus, out, threads, work):
    stats = os.path.join(work, "stats.json")
    t0 = time.perf_counter()
    subprocess.run(["bin/tokenize", "-q", "-t", tok_dir, "-f", "text", "-j", str(threads), "--stats", stats,
                    "-o", out, corpus], check=True)
    wall = time.perf_counter() - t0
    st = json.load(open(stats))
    return {"wall": wall, "seconds": st["seconds"], "load": st["load_seconds"], "tokens": st["tokens"]}


def main():
    tok_dir, huanhuan, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    tok_json = os.path.join(tok_dir, "tokenizer.json")
    ncpu = os.cpu_count()
    print(f"cpus: {ncpu}")
    for name, corpus in corpora(huanhuan, work).items():
        mb = os.path.getsize(corpus) / 1e6
        hf1 = run_hf(tok_json, corpus, os.path.join(work, "hf1.ids"), 1)
        hfn = run_hf(tok_json, corpus, os.path.join(work, "hfn.ids"), 0)
        o1 = run_ours(tok_dir, corpus, os.path.join(work, "o1.jsonl"), 1, work)
        on = run_ours(tok_dir, corpus, os.path.join(work, "on.jsonl"), ncpu, work)
        ref = [json.loads(l) for l in open(os.path.join(work, "hf1.ids"))]
        same = True
        for f in ("hfn.ids",):
            same &= [json.loads(l) for l in open(os.path.join(work, f))] == ref
        for f in ("o1.jsonl", "on.jsonl"):
            same &= [json.loads(l)["input_ids"] for l in open(os.path.join(work, f))] == ref
        n = hf1["tokens"]
        print(f"\n{name}: {len(ref)} texts, {mb:.1f} MB JSONL, {n} tokens, ids identical: {same}")
        rows = [("HF tokenizers, 1 thread (encode_batch only)", hf1["seconds"]),
                (f"HF tokenizers, {ncpu} threads (encode_batch only)", hfn["seconds"]),
                ("bin/tokenize -j 1, encode loop (--stats seconds)", o1["seconds"]),
                ("bin/tokenize -j 1, whole process incl. load", o1["wall"]),
                (f"bin/tokenize -j {ncpu}, encode loop", on["seconds"]),
                (f"bin/tokenize -j {ncpu}, whole process incl. load", on["wall"])]
        for label, s in rows:
            print(f"  {label:52s} {s:8.3f} s  {n / s / 1e6:7.3f} M tokens/s  {hf1['seconds'] / s:6.2f}x HF 1-thread")
        print(f"  tokenizer.json load (ours): {o1['load']:.3f} s")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
