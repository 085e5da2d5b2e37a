#!/usr/bin/env python3
"""Write a Qwen2-architecture model folder with seeded random bf16 weights.

usage: python3 bench/make_random_model.py OUTDIR [--shape qwen1.5-7b|qwen1.5-0.5b|qwen2.5-0.5b] [--layers N]
       [--seed S] [--max-shard-size 5GB]
The weights are what transformers' own init gives (Qwen2ForCausalLM.from_config, torch.manual_seed(S)),
built on the GPU when there is one, saved with save_pretrained (sharded like the Hub). Speed and memory do
not depend on the values; the loss-curve comparison only needs both sides to read the same folder.
"""
import argparse, time
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

SHAPES = {
    "qwen1.5-7b": dict(vocab_size=151936, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, rope_theta=1e6, tie_word_embeddings=False),
    "qwen1.5-0.5b": dict(vocab_size=151936, hidden_size=1024, intermediate_size=2816, num_hidden_layers=24,
                         num_attention_heads=16, num_key_value_heads=16, rope_theta=1e6, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True),
}
ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--shape", default="qwen1.5-7b", choices=SHAPES)
ap.add_argument("--layers", type=int)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--max-shard-size", default="5GB")
a = ap.parse_args()
kw = dict(SHAPES[a.shape])
if a.layers:
    kw["num_hidden_layers"] = a.layers
cfg = Qwen2Config(max_position_embeddings=32768, rms_norm_eps=1e-6, **kw)
t0 = time.time()
torch.manual_seed(a.seed)
dev = "cuda" if torch.cuda.is_available() else "cpu"
with torch.device(dev):
    model = Qwen2ForCausalLM._from_config(cfg, dtype=torch.bfloat16)
model.save_pretrained(a.out, max_shard_size=a.max_shard_size)
n = sum(p.numel() for p in model.parameters())
print(f"wrote {a.out}: {a.shape} ({kw['num_hidden_layers']} layers), {n/1e9:.2f}B parameters, {time.time()-t0:.1f} s")
