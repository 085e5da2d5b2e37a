#!/usr/bin/env python3
"""A Qwen1.5-7B-shaped model folder with random bf16 weights, and a random LoRA adapter.

usage: make_random_model.py MODEL_DIR ADAPTER_DIR [--layers L] [--shard-size BYTES]

MODEL_DIR gets config.json (transformers-5 spelling), generation_config.json and
model-0000k-of-0000n.safetensors + model.safetensors.index.json, split in module
order at --shard-size (default 4e9: 4 shards, as the Hub's Qwen1.5-7B); shape
H 4096, F 11008, 32 layers, 32 heads (MHA), V 151936, untied (about 15.4 GB).
ADAPTER_DIR gets a PEFT 0.21 LoRA adapter, r=8, alpha 16, on q,k,v,o, F32, with
random non-zero A and B.  Weights are random bit patterns of magnitude 2^-7..2^-6
(one random draw per element; generation is limited by the disk, not the RNG).
Used by tests/perf/bench_merge_export.sh for docs/PERF.md; needs numpy, torch,
safetensors and peft.
"""
import argparse
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("adapter")
p.add_argument("--layers", type=int, default=32)
p.add_argument("--shard-size", type=float, default=4e9)
args = p.parse_args()

H, F, V, L, NH = 4096, 11008, 151936, args.layers, 32
rng = np.random.default_rng(0)

specs = [("model.embed_tokens.weight", (V, H))]
for i in range(L):
    pre = f"model.layers.{i}."
    specs += [(pre + "self_attn.q_proj.weight", (H, H)), (pre + "self_attn.q_proj.bias", (H,)),
              (pre + "self_attn.k_proj.weight", (H, H)), (pre + "self_attn.k_proj.bias", (H,)),
              (pre + "self_attn.v_proj.weight", (H, H)), (pre + "self_attn.v_proj.bias", (H,)),
              (pre + "self_attn.o_proj.weight", (H, H)),
              (pre + "mlp.gate_proj.weight", (F, H)), (pre + "mlp.up_proj.weight", (F, H)),
              (pre + "mlp.down_proj.weight", (H, F)),
              (pre + "input_layernorm.weight", (H,)), (pre + "post_attention_layernorm.weight", (H,))]
specs += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]

# huggingface_hub's greedy split, on sizes only.
shards, cur, cur_size = [], [], 0
for name, shape in specs:
    size = int(np.prod(shape)) * 2
    if size > args.shard_size:
        shards.append([(name, shape)])
        continue
    if cur and cur_size + size > args.shard_size:
        shards.append(cur)
        cur, cur_size = [], 0
    cur.append((name, shape))
    cur_size += size
if cur:
    shards.append(cur)

os.makedirs(args.model, exist_ok=True)
weight_map, total = {}, 0
for k, shard in enumerate(shards):
    fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
    tensors = {}
    for name, shape in shard:
        r = rng.integers(0, 65536, size=shape, dtype=np.uint16)
        bits = (r & 0x807F) | 0x3C00          # sign and 7 mantissa bits random, exponent 2^-7
        tensors[name] = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)
        weight_map[name] = fname
        total += bits.nbytes
    save_file(tensors, os.path.join(args.model, fname), metadata={"format": "pt"})
    del tensors
    print("wrote", fname, flush=True)
with open(os.path.join(args.model, "model.safetensors.index.json"), "w") as f:
    f.write(json.dumps({"metadata": {"total_parameters": total // 2, "total_size": total}, "weight_map": weight_map},
                       indent=2, sort_keys=True) + "\n")
config = {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
          "dtype": "bfloat16", "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": H,
          "initializer_range": 0.02, "intermediate_size": F, "layer_types": ["full_attention"] * L,
          "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen2",
          "num_attention_heads": NH, "num_hidden_layers": L, "num_key_value_heads": NH, "rms_norm_eps": 1e-06,
          "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "sliding_window": None,
          "tie_word_embeddings": False, "transformers_version": "5.17.0", "use_cache": True,
          "use_sliding_window": False, "vocab_size": V}
with open(os.path.join(args.model, "config.json"), "w") as f:
    f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
with open(os.path.join(args.model, "generation_config.json"), "w") as f:
    f.write(json.dumps({"bos_token_id": 151643, "eos_token_id": 151643, "transformers_version": "5.17.0"},
                       indent=2, sort_keys=True) + "\n")

from peft import LoraConfig
os.makedirs(args.adapter, exist_ok=True)
cfg = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
d = cfg.to_dict()
d["inference_mode"] = True
d["target_modules"] = sorted(d["target_modules"])
d["base_model_name_or_path"] = os.path.abspath(args.model)
d["peft_type"] = "LORA"
with open(os.path.join(args.adapter, "adapter_config.json"), "w") as f:
    f.write(json.dumps(d, indent=2, sort_keys=True))
lora = {}
for i in range(L):
    for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
        key = f"base_model.model.model.layers.{i}.self_attn.{m}"
        lora[key + ".lora_A.weight"] = torch.from_numpy(rng.standard_normal((8, H), dtype=np.float32) * 0.01)
        lora[key + ".lora_B.weight"] = torch.from_numpy(rng.standard_normal((H, 8), dtype=np.float32) * 0.01)
save_file(lora, os.path.join(args.adapter, "adapter_model.safetensors"), metadata={"format": "pt"})
print("total", total, "bytes in", len(shards), "shards")
