#!/usr/bin/env python3
"""Load what merge | export writes with transformers and compare with PEFT.

For each (base model, adapter) pair of the tiny-model fixtures:
  1. run  bin/merge --model BASE --adapter ADAPTER | bin/export --model BASE --out DIR
  2. load DIR with AutoModelForCausalLM.from_pretrained, and the reference
     PeftModel.from_pretrained(BASE, ADAPTER).merge_and_unload(), and compare
     every weight and the logits on a fixed batch.  Tolerance: one rounding of
     the model dtype (bf16: 2^-8 relative, fp32: 2^-23), elementwise.
Then it writes the adapter again with bin/export --adapter (lib/adapter.c's
adapter_save), as F32 and converted to BF16, loads both with
PeftModel.from_pretrained and compares the adapted model's logits with those
of PEFT's own adapter files.

Usage (from the repository root, after make):  python3 tests/golden/check_export.py
Exit status 0 when every check holds.  Needs torch, transformers and peft.
"""
import os
import subprocess
import sys
import tempfile

import torch
import transformers
import peft
from transformers import AutoModelForCausalLM
from peft import PeftModel

T = "tests/fixtures/tiny-models"
PAIRS = [("qwen2-tiny-untied-bf16", "lora-qkvo-r8"),
         ("qwen2-tiny-tied-fp32", "lora-all-rslora"),
         ("qwen2-tiny-tied-bf16", "lora-pattern"),
         ("qwen2-tiny-untied-fp32", "lora-qkvo-r8")]
failures = []


def check(ok, what):
    print(("ok      " if ok else "FAILED  ") + what)
    if not ok:
        failures.append(what)


def one_rounding(dtype):
    return 2.0 ** -8 if dtype in (torch.bfloat16, torch.float16) else 2.0 ** -23


def within_one_rounding(a, b, dtype):
    a, b = a.float(), b.float()
    tol = one_rounding(dtype) * torch.maximum(a.abs(), b.abs()) + 1e-30
    return bool(((a - b).abs() <= tol).all()), float((a - b).abs().max())


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def main():
    print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)
    torch.manual_seed(0)
    ids = torch.randint(0, 320, (2, 24))
    tmp = tempfile.mkdtemp(prefix="check_export.")
    for base, ad in PAIRS:
        b, a = os.path.join(T, base), os.path.join(T, ad)
        out = os.path.join(tmp, base + "+" + ad)
        subprocess.run(f"bin/merge --model {b} --adapter {a} | bin/export --model {b} --out {out}",
                       shell=True, check=True)
        ours = AutoModelForCausalLM.from_pretrained(out)
        ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(b), a).merge_and_unload()
        dtype = ref.dtype
        check(ours.dtype == dtype, f"{base}+{ad}: exported model loads as {ours.dtype}")
        so, sr = ours.state_dict(), ref.state_dict()
        same = so.keys() == sr.keys() and all(torch.equal(so[k], sr[k]) for k in sr)
        check(same, f"{base}+{ad}: every weight bit-identical to merge_and_unload")
        ok, diff = within_one_rounding(logits(ours, ids), logits(ref, ids), dtype)
        check(ok, f"{base}+{ad}: logits within one {str(dtype)[6:]} rounding (max |diff| {diff:.3g})")

    # Adapters written by adapter_save (export --adapter), loaded by PEFT.
    for base, ad in PAIRS[:3]:
        b, a = os.path.join(T, base), os.path.join(T, ad)
        ref = logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(b), a), ids)
        for dt in ("fp32", "bf16"):
            out = os.path.join(tmp, f"{ad}-{dt}")
            subprocess.run(["bin/export", "--adapter", a, "--model", b, "--dtype", dt, "--out", out], check=True)
            pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(b), out)
            got = logits(pm, ids)
            if dt == "fp32":
                check(torch.equal(got, ref), f"{ad} written by adapter_save (F32): PeftModel loads it, logits identical")
            else:
                # LoRA weights rounded to bf16 once: the logits move by far less than the LoRA term itself.
                d = float((got.float() - ref.float()).abs().max())
                lora = float((ref.float() - logits(AutoModelForCausalLM.from_pretrained(b), ids).float()).abs().max())
                check(d < 0.05 * lora, f"{ad} converted to BF16: PeftModel loads it, max |diff| {d:.3g} "
                                       f"(LoRA moves logits by up to {lora:.3g})")
    print(f"{len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
