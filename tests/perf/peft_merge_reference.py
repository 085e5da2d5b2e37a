#!/usr/bin/env python3
"""The reference stack doing what `merge | export` does, for docs/PERF.md:
PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(out).

usage: peft_merge_reference.py MODEL ADAPTER OUT   (prints the time of each phase)
"""
import sys
import time

import torch
from transformers import AutoModelForCausalLM
from peft import PeftModel

model, adapter, out = sys.argv[1:4]
t0 = time.time()
base = AutoModelForCausalLM.from_pretrained(model)          # file dtype (bf16)
t1 = time.time()
merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
t2 = time.time()
merged.save_pretrained(out, max_shard_size="5GB")
t3 = time.time()
print(f"load {t1 - t0:.1f} s, merge {t2 - t1:.1f} s, save {t3 - t2:.1f} s, total {t3 - t0:.1f} s; torch threads "
      f"{torch.get_num_threads()}")
