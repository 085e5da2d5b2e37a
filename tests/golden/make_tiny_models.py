#!/usr/bin/env python3
"""Golden fixtures for lib/safetensors, lib/hf_model, lib/adapter, merge and export.

Writes, under tests/fixtures/tiny-models/ (run from the repository root):
  qwen2-tiny-{untied,tied}-{bf16,fp32}/   Qwen2ForCausalLM(config) seeded, save_pretrained
                                          (2 layers, H 64, 4 heads / 2 KV heads, F 128, V 320)
  lora-qkvo-r8/        PEFT LoRA r=8 alpha=32 dropout 0.1 on q,k,v,o (random non-zero B)
  lora-all-rslora/     r=8 alpha=16 rsLoRA on q,k,v,o,gate,up,down
  lora-pattern/        r=8 alpha=16 on q,v,down with rank_pattern {down_proj: 4},
                       alpha_pattern {q_proj: 10}
  <adapter>.config-sorted.json   PEFT's adapter_config.json with target_modules sorted
                                 (PEFT writes a set in arbitrary order; ours is sorted)
  merged-untied-bf16-qkvo/       merge_and_unload + save_pretrained(max_shard_size="100KB")
  merged-tied-fp32-all-rslora/   merge_and_unload + save_pretrained
  merged-tied-bf16-pattern/      merge_and_unload + save_pretrained
and tests/fixtures/safetensors/mixed.safetensors (every common dtype, a scalar, an empty
tensor) written by safetensors.torch.save_file, plus tests/fixtures/dtype/conv.txt:
fp32 bit patterns with torch's bf16 and fp16 conversions ("%08x %04x %04x" per line).

Versions used are printed; the fixtures were made with torch 2.11, transformers 5.17,
peft 0.21, safetensors 0.8.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch
import transformers
import peft
import safetensors
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model

ROOT = "tests/fixtures/tiny-models"


def tiny_config(tied):
    return Qwen2Config(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2)


def make_model(name, tied, dtype, seed):
    torch.manual_seed(seed)
    m = Qwen2ForCausalLM(tiny_config(tied))
    # Non-trivial norms and biases so that pass-through is visible.
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in n else 0.0))
    m = m.to(dtype)
    path = os.path.join(ROOT, name)
    shutil.rmtree(path, ignore_errors=True)
    m.save_pretrained(path)
    return path


def make_adapter(name, base_path, seed, **kw):
    base = Qwen2ForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    torch.manual_seed(seed)
    pm = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", **kw))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.05)
    path = os.path.join(ROOT, name)
    shutil.rmtree(path, ignore_errors=True)
    pm.save_pretrained(path)
    os.remove(os.path.join(path, "README.md"))   # PEFT's model card: boilerplate
    with open(os.path.join(path, "adapter_config.json")) as f:
        cfg = json.load(f)
    cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(os.path.join(ROOT, name + ".config-sorted.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True))
    return path


def make_merged(name, base_path, adapter_path, **save_kw):
    base = Qwen2ForCausalLM.from_pretrained(base_path)   # file dtype (transformers 5 default "auto")
    merged = PeftModel.from_pretrained(base, adapter_path).merge_and_unload()
    path = os.path.join(ROOT, name)
    shutil.rmtree(path, ignore_errors=True)
    merged.save_pretrained(path, **save_kw)


def make_mixed():
    d = "tests/fixtures/safetensors"
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    t = {
        "b.f32": torch.randn(3, 5, generator=g),
        "a.f32": torch.randn(7, generator=g),
        "w.bf16": torch.randn(4, 4, generator=g).to(torch.bfloat16),
        "w.f16": torch.randn(2, 3, generator=g).to(torch.float16),
        "ids.i64": torch.arange(5, dtype=torch.int64),
        "mask.bool": torch.tensor([True, False, True]),
        "bytes.u8": torch.arange(9, dtype=torch.uint8),
        "x.f64": torch.randn(2, generator=g, dtype=torch.float64),
        "n.i32": torch.tensor([-1, 2, -3], dtype=torch.int32),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 3),
        "name with \"quote\" and \\ and \t and \u00e9": torch.ones(1),
    }
    save_file(t, os.path.join(d, "mixed.safetensors"), metadata={"format": "pt"})


def make_dtype_table():
    vals = set()
    rng = np.random.default_rng(3)
    # Special values and boundaries.
    for u in [0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001,
              0x7fa00000, 0x7fffffff, 0x00000001, 0x807fffff, 0x00800000, 0x7f7fffff, 0xff7fffff,
              0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x47800000,   # around fp16 max 65504 / 65520
              0x38800000, 0x387fffff, 0x387fe000, 0x387ff000,                # fp16 smallest normal
              0x33800000, 0x33000000, 0x33000001, 0x32ffffff, 0x33c00000,    # fp16 smallest subnormal / half
              0x3f800000, 0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001,    # bf16 halfway, even and odd
              0x7f7f8000, 0x7f7f7fff, 0x7f7fffff]:                           # bf16 overflow to inf
        vals.add(u)
    # bf16 halfway cases at many exponents, both parities.
    for e in range(0, 255):
        for m in [0x008000, 0x018000, 0x7f8000, 0x7e8000, 0x007fff, 0x008001]:
            vals.add((e << 23) | m)
            vals.add(0x80000000 | (e << 23) | m)
    # fp16 halfway and near-halfway cases over its whole range (exponents 101..143).
    for e in range(101, 144):
        for m in [0x001000, 0x003000, 0x000fff, 0x001001, 0x7ff000, 0x7fe000, 0x400000, 0x000000, 0x7fffff]:
            vals.add((e << 23) | m)
            vals.add(0x80000000 | (e << 23) | m)
    vals.update(int(x) for x in rng.integers(0, 2**32, 1500, dtype=np.uint64))
    vals.update(int(x) for x in np.float32(rng.standard_normal(500) * 0.02).view(np.uint32))
    u = np.array(sorted(vals), dtype=np.uint32)
    f = torch.from_numpy(u.view(np.float32).copy())
    bf = f.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    hf = f.to(torch.float16).view(torch.int16).numpy().view(np.uint16)
    d = "tests/fixtures/dtype"
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "conv.txt"), "w") as out:
        out.write("# fp32 bits, torch %s bf16 bits, fp16 bits (tensor.to on CPU)\n" % torch.__version__)
        for a, b, c in zip(u, bf, hf):
            out.write("%08x %04x %04x\n" % (a, b, c))


def main():
    if not os.path.isdir("tests/fixtures"):
        sys.exit("run from the repository root")
    print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__,
          "safetensors", safetensors.__version__)
    os.makedirs(ROOT, exist_ok=True)
    ub = make_model("qwen2-tiny-untied-bf16", False, torch.bfloat16, 1)
    tb = make_model("qwen2-tiny-tied-bf16", True, torch.bfloat16, 2)
    make_model("qwen2-tiny-untied-fp32", False, torch.float32, 3)
    tf = make_model("qwen2-tiny-tied-fp32", True, torch.float32, 4)
    qkvo = make_adapter("lora-qkvo-r8", ub, 11, r=8, lora_alpha=32, lora_dropout=0.1,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    rs = make_adapter("lora-all-rslora", tf, 12, r=8, lora_alpha=16, use_rslora=True,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    pat = make_adapter("lora-pattern", tb, 13, r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                       rank_pattern={"down_proj": 4}, alpha_pattern={"q_proj": 10})
    make_merged("merged-untied-bf16-qkvo", ub, qkvo, max_shard_size="100KB")
    make_merged("merged-tied-fp32-all-rslora", tf, rs)
    make_merged("merged-tied-bf16-pattern", tb, pat)
    make_mixed()
    make_dtype_table()


if __name__ == "__main__":
    main()
