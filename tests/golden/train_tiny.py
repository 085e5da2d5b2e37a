#!/usr/bin/env python3
"""Goldens for the CPU reference trainer: tiny Qwen2 models trained by transformers' Trainer + PEFT.

usage: python3 tests/golden/train_tiny.py [OUTDIR]   (default tests/fixtures/train)

For each case it writes OUTDIR/<case>/:
  model/                 the base model (save_pretrained, fp32)
  init_adapter/          the adapter training starts from (PEFT files; B non-zero so every gradient is live)
  data.jsonl             the samples, as tokenize writes them ({"input_ids", "labels"})
  eval.jsonl             held-out samples
  order.json             sample indices of every micro-batch, in the order the Trainer fed them
  steps.jsonl            per optimizer step: loss, grad_norm, learning_rate (Trainer log_history)
  grads_step1.safetensors  LoRA gradients of step 1 before clipping (PEFT key names)
  final_adapter/         adapter after training (PeftModel.save_pretrained)
  expected.json          the settings, and the token-mean eval loss of the final adapter
Run with: torch 2.11, transformers 5.17, peft 0.21 (CPU is enough). Everything is fp32 and uses eager
attention, so the C reference must agree to float32 rounding.
"""
import json, math, os, random, shutil, sys

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from safetensors.torch import save_file
from transformers import (DataCollatorForSeq2Seq, Qwen2Config, Qwen2ForCausalLM, Trainer,
                          TrainerCallback, TrainingArguments)

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/train"
PAD = 0  # pad id for the tiny vocabulary (never a real token in the data)

CASES = {
    # The tutorial's shape of run: q/k/v/o, cosine with warm-up ratio, weight decay, clipping, 3 epochs,
    # GA 3 with an uneven last window (11 micro-batches per epoch -> windows 3,3,3,2), group_by_length.
    "untied-qkvo": dict(tie=False, targets=["q_proj", "k_proj", "v_proj", "o_proj"], r=4, alpha=8,
                        rslora=False, bs=2, ga=3, epochs=3, lr=2e-3, sched="cosine", warmup=0.1,
                        wd=0.1, clip=0.5, n=21, sampling="group_by_length", seed=42),
    # Tied embeddings, every projection adapted, rsLoRA, linear schedule with warm-up steps, random order,
    # GA 4 (13 micro-batches per epoch -> 4,4,4,1).
    "tied-all-rslora": dict(tie=True, targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                               "up_proj", "down_proj"], r=8, alpha=16, rslora=True,
                            bs=2, ga=4, epochs=3, lr=1e-3, sched="linear", warmup=2, wd=0.05,
                            clip=1.0, n=25, sampling="random", seed=7),
}


def make_samples(rng, n, vocab):
    """Chat-like samples: a masked prompt then a trained reply; a few plain-LM rows whose first label is
    not -100 (they pin the shifted target count), one row with no target at all."""
    out = []
    for i in range(n):
        plen = rng.randint(2, 20)
        rlen = rng.randint(1, 24)
        ids = [rng.randint(1, vocab - 1) for _ in range(plen + rlen)]
        if i % 7 == 3:
            labels = list(ids)                      # plain LM: every label live
        elif i == 5:
            labels = [-100] * len(ids)              # no target token
        else:
            labels = [-100] * plen + ids[plen:]
        out.append({"input_ids": ids, "labels": labels})
    return out


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"input_ids": r["input_ids"], "labels": r["labels"]}, separators=(",", ":")) + "\n")


class Recorder(TrainerCallback):
    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        # Called after clipping; the pre-clip gradients are the clipped ones divided by the clip factor,
        # which is recomputed from the logged norm. Keep the clipped ones and the factor.
        if state.global_step == 0 and self.grads is None:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
                          if p.requires_grad and p.grad is not None}


def peft_key(name):
    # live name base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight -> file key
    return name.replace(".default", "")


def run_case(name, c):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    vocab = 96
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=c["tie"],
                      attn_implementation="eager", pad_token_id=None)
    torch.manual_seed(1234)
    model = Qwen2ForCausalLM(cfg).to(torch.float32)
    # Larger weights than the 0.02 init so the loss and gradients are not all near-uniform.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
            elif "norm" in n:
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 0.05)
    model.save_pretrained(os.path.join(d, "model"), safe_serialization=True)

    rng = random.Random(c["seed"])
    samples = make_samples(rng, c["n"], vocab)
    evals = make_samples(rng, 6, vocab)
    write_jsonl(os.path.join(d, "data.jsonl"), samples)
    write_jsonl(os.path.join(d, "eval.jsonl"), evals)

    model.config.use_cache = False
    lcfg = LoraConfig(task_type=TaskType.CAUSAL_LM, target_modules=c["targets"], r=c["r"],
                      lora_alpha=c["alpha"], lora_dropout=0.0, use_rslora=c["rslora"], bias="none")
    pm = get_peft_model(model, lcfg)
    torch.manual_seed(99)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.05)
    pm.save_pretrained(os.path.join(d, "init_adapter"))

    order = []

    class Collator(DataCollatorForSeq2Seq):
        def __call__(self, feats, return_tensors=None):
            order.append([f["idx"] for f in feats])
            feats = [{k: v for k, v in f.items() if k != "idx"} for f in feats]
            return super().__call__(feats, return_tensors)

    class Tok:  # the smallest tokenizer-like object DataCollatorForSeq2Seq needs for padding
        pad_token_id = PAD
        padding_side = "right"
        model_input_names = ["input_ids", "attention_mask"]

        def pad(self, feats, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt"):
            T = max(len(f["input_ids"]) for f in feats)
            if pad_to_multiple_of:
                T = (T + pad_to_multiple_of - 1) // pad_to_multiple_of * pad_to_multiple_of
            out = {"input_ids": [], "attention_mask": []}
            for f in feats:
                L = len(f["input_ids"])
                out["input_ids"].append(list(f["input_ids"]) + [PAD] * (T - L))
                out["attention_mask"].append([1] * L + [0] * (T - L))
            res = {k: torch.tensor(v) for k, v in out.items()}
            if "labels" in feats[0]:
                res["labels"] = torch.tensor([list(f["labels"]) for f in feats])
            return res

    ds = [dict(idx=i, input_ids=s["input_ids"], attention_mask=[1] * len(s["input_ids"]),
               labels=s["labels"]) for i, s in enumerate(samples)]
    args = TrainingArguments(
        output_dir=os.path.join("/tmp", "lorapipe-golden-" + name), per_device_train_batch_size=c["bs"],
        gradient_accumulation_steps=c["ga"], num_train_epochs=c["epochs"], learning_rate=c["lr"],
        lr_scheduler_type=c["sched"], warmup_steps=c["warmup"], weight_decay=c["wd"],
        max_grad_norm=c["clip"], logging_steps=1, optim="adamw_torch", report_to="none",
        remove_unused_columns=False, save_strategy="no", seed=c["seed"], use_cpu=True,
        train_sampling_strategy=c["sampling"], dataloader_num_workers=0, bf16=False, fp16=False)
    rec = Recorder()
    tr = Trainer(model=pm, args=args, train_dataset=ds,
                 data_collator=Collator(tokenizer=Tok(), padding=True, pad_to_multiple_of=8,
                                        return_tensors="pt"),
                 callbacks=[rec])
    tr.train()

    steps = [h for h in tr.state.log_history if "loss" in h and "grad_norm" in h]
    with open(os.path.join(d, "steps.jsonl"), "w") as f:
        for h in steps:
            f.write(json.dumps({"step": h["step"], "loss": h["loss"], "grad_norm": float(h["grad_norm"]),
                                "learning_rate": h["learning_rate"]}) + "\n")
    with open(os.path.join(d, "order.json"), "w") as f:
        json.dump(order, f)
    # Pre-clip gradients of step 1: undo the clip factor the Trainer applied.
    g1 = float(steps[0]["grad_norm"])
    coef = min(c["clip"] / (g1 + 1e-6), 1.0)
    save_file({peft_key(n): (g / coef).contiguous() for n, g in rec.grads.items()},
              os.path.join(d, "grads_step1.safetensors"), metadata={"format": "pt"})
    pm.save_pretrained(os.path.join(d, "final_adapter"))

    # Token-mean loss of the final adapter on the eval samples (sum of target losses / target count).
    pm.eval()
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for s in evals:
            ids = torch.tensor([s["input_ids"]])
            lab = torch.tensor([s["labels"]])
            logits = pm(input_ids=ids).logits.float()
            lp = torch.log_softmax(logits[0, :-1], -1)
            y = lab[0, 1:]
            m = y != -100
            tot += float(-lp[m].gather(1, y[m][:, None]).sum())
            cnt += int(m.sum())
    exp = dict(case=name, settings=c, eval_loss=tot / cnt, eval_targets=cnt,
               global_steps=tr.state.global_step, versions=dict(
                   torch=torch.__version__, transformers=__import__("transformers").__version__,
                   peft=__import__("peft").__version__))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
    for sub in ("model", "init_adapter", "final_adapter"):
        rm = os.path.join(d, sub, "README.md")
        if os.path.exists(rm):
            os.remove(rm)
    print(name, "steps", tr.state.global_step, "losses", [round(h["loss"], 4) for h in steps])


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    for n, c in CASES.items():
        run_case(n, c)
