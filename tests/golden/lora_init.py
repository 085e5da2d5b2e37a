#!/usr/bin/env python3
"""Golden for PEFT's default LoRA initialisation from a seed (lib/lora.c lora_init_peft).

usage: python3 tests/golden/lora_init.py   (writes tests/fixtures/train/lora_init/)
For the tiny untied model of train_tiny.py: torch.manual_seed(SEED) right before get_peft_model, r=4,
every projection targeted; once with an fp32 base (fp32.safetensors) and once with a bf16 base
(bf16.safetensors, where PEFT rounds A through bf16). Keys as PEFT saves them.
"""
import os
import torch
from peft import LoraConfig, TaskType, get_peft_model
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

OUT = "tests/fixtures/train/lora_init"
SEED = 1234
os.makedirs(OUT, exist_ok=True)
cfg = Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    model = Qwen2ForCausalLM(cfg).to(dtype)
    torch.manual_seed(SEED)
    pm = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8,
                                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                          "gate_proj", "up_proj", "down_proj"]))
    sd = {k.replace(".default", ""): v.detach().float().contiguous()
          for k, v in pm.named_parameters() if "lora_" in k}
    save_file(sd, os.path.join(OUT, name + ".safetensors"), metadata={"format": "pt", "seed": str(SEED)})
    print(name, len(sd), "tensors")
