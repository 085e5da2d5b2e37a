#!/usr/bin/env python3
"""Golden sample orders for tools/pack, taken from the real transformers Trainer.

For each configuration below a tiny Trainer (a one-parameter dummy model on the CPU, no
dropout, so nothing but the data pipeline draws from the CPU generator) is trained for a
few epochs; the collator records the sample indices of every micro-batch. The script also
checks that the recorded order equals
  * group_by_length: transformers' get_length_grouped_indices driven by a torch.Generator
    seeded once with `seed`, where each epoch first consumes one int64 draw (the
    DataLoader's base seed: two 32-bit outputs) and then randperm(n);
  * random: torch.randperm(n) from a generator seeded with seed + epoch;
and fails loudly if not. The orders go to tests/fixtures/pack/order_golden.json.

usage: python3 tests/golden/pack_order.py [OUT.json]   (transformers 5.x, torch, accelerate)
"""
import json
import os
import random
import sys

import torch
import transformers
from transformers import Trainer, TrainingArguments
from transformers.trainer_pt_utils import get_length_grouped_indices

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "fixtures", "pack", "order_golden.json")


def lengths_for(n, seed, pool):
    # Lengths drawn from a small pool so that ties (stable-sort order) and several
    # megabatches sharing the global maximum (argmax tie) both occur.
    r = random.Random(seed)
    return [r.choice(pool) for _ in range(n)]


CONFIGS = [
    # name, n, lengths seed, pool, batch, accum, seed, epochs, order
    dict(name="gbl_b4_a2", n=103, lseed=1, pool=[3, 7, 8, 9, 16, 17, 40, 41, 64, 100, 130],
         batch=4, accum=2, seed=42, epochs=3, order="group_by_length"),
    dict(name="gbl_b2_mult50", n=1000, lseed=2, pool=list(range(1, 60)) + [300, 300],
         batch=2, accum=1, seed=7, epochs=2, order="group_by_length"),
    dict(name="gbl_tiny_mult1", n=37, lseed=3, pool=[5, 5, 9, 12, 12, 33],
         batch=3, accum=4, seed=1234, epochs=2, order="group_by_length"),
    dict(name="random_b4", n=103, lseed=4, pool=[3, 7, 8, 9, 16, 17, 40],
         batch=4, accum=1, seed=42, epochs=2, order="random"),
    dict(name="sequential_b5", n=23, lseed=5, pool=[4, 9, 15],
         batch=5, accum=1, seed=3, epochs=2, order="sequential"),
]


class Dummy(torch.nn.Module):
    """One parameter, no randomness: the loss only has to be differentiable."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kw):
        return {"loss": (self.w * input_ids.float().mean()).sum()}


def trainer_order(cfg, lengths):
    ds = [{"input_ids": [1] * L, "labels": [1] * L, "idx": i} for i, L in enumerate(lengths)]
    order = []

    def collate(feats):
        order.append([f["idx"] for f in feats])
        L = max(len(f["input_ids"]) for f in feats)
        ids = torch.tensor([f["input_ids"] + [0] * (L - len(f["input_ids"])) for f in feats])
        return {"input_ids": ids}

    args = TrainingArguments(
        output_dir="/tmp/pack-golden", per_device_train_batch_size=cfg["batch"],
        gradient_accumulation_steps=cfg["accum"], num_train_epochs=cfg["epochs"], seed=cfg["seed"],
        train_sampling_strategy=cfg["order"], learning_rate=1e-3, report_to="none",
        save_strategy="no", logging_strategy="no", remove_unused_columns=False, use_cpu=True,
        dataloader_pin_memory=False, disable_tqdm=True)
    Trainer(model=Dummy(), args=args, train_dataset=ds, data_collator=collate).train()
    per_epoch = -(-len(lengths) // cfg["batch"])
    assert len(order) == per_epoch * cfg["epochs"], (len(order), per_epoch)
    return [order[e * per_epoch:(e + 1) * per_epoch] for e in range(cfg["epochs"])]


def emulated_order(cfg, lengths):
    n, out = len(lengths), []
    if cfg["order"] == "group_by_length":
        g = torch.Generator().manual_seed(cfg["seed"])
        for _ in range(cfg["epochs"]):
            torch.empty((), dtype=torch.int64).random_(generator=g)   # DataLoader base seed
            out.append(get_length_grouped_indices(lengths, cfg["batch"] * cfg["accum"], generator=g))
    elif cfg["order"] == "random":
        for e in range(cfg["epochs"]):
            g = torch.Generator().manual_seed(cfg["seed"] + e)
            out.append(torch.randperm(n, generator=g).tolist())
    else:
        out = [list(range(n)) for _ in range(cfg["epochs"])]
    return out


result = {"generator": "tests/golden/pack_order.py",
          "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
          "configs": []}
for cfg in CONFIGS:
    lengths = lengths_for(cfg["n"], cfg["lseed"], cfg["pool"])
    batches = trainer_order(cfg, lengths)
    flat = [[i for b in ep for i in b] for ep in batches]
    emu = emulated_order(cfg, lengths)
    if flat != emu:
        sys.exit(f"{cfg['name']}: the Trainer's order differs from the emulation")
    print(f"{cfg['name']}: Trainer order == emulation for {cfg['epochs']} epochs", file=sys.stderr)
    c = {k: cfg[k] for k in ("name", "batch", "accum", "seed", "epochs", "order")}
    c["lengths"] = lengths
    c["order_per_epoch"] = flat
    result["configs"].append(c)

with open(OUT, "w") as f:
    json.dump(result, f, separators=(",", ":"))
    f.write("\n")
print(f"wrote {OUT}", file=sys.stderr)
