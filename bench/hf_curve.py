#!/usr/bin/env python3
"""The reference loss curve: transformers Trainer + PEFT on a saved model folder, the tutorial's recipe
(bf16, LoRA q/k/v/o r=8 alpha=32, batch 1 x accumulation 16, group_by_length, seed 42, cosine, warm-up 0.03,
weight decay 0.01, clip 0.3, lr 1e-4), dropout 0 so that both sides compute the same function, from the
initial adapter this script saves (PEFT's default init under torch.manual_seed(SEED)).

usage: python3 bench/hf_curve.py MODEL_DIR DATA.jsonl ADAPTER_OUT_DIR STEPS [SEED]
  DATA.jsonl: tokenize's output (input_ids, labels per line) -- the same records our pack holds.
Prints one JSON line per optimizer step (step, loss, grad_norm, learning_rate) and a RESULT line.
"""
import json, sys, time
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

model_dir, data, adapter_out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 42
rows = [json.loads(l) for l in open(data)]
ds = [dict(input_ids=r["input_ids"], attention_mask=[1] * len(r["input_ids"]), labels=r["labels"]) for r in rows]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map={"": 0})
model.enable_input_require_grads()
torch.manual_seed(seed)
model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, target_modules=["q_proj", "k_proj", "v_proj",
                       "o_proj"], r=8, lora_alpha=32, lora_dropout=0.0, bias="none"))
model.save_pretrained(adapter_out)


class Tok:   # padding as Qwen's tokenizer pads: <|endoftext|> on the right
    pad_token_id = 151643
    padding_side = "right"
    model_input_names = ["input_ids", "attention_mask"]

    def pad(self, feats, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt"):
        T = max(len(f["input_ids"]) for f in feats)
        if pad_to_multiple_of:
            T = (T + pad_to_multiple_of - 1) // pad_to_multiple_of * pad_to_multiple_of
        ids = [list(f["input_ids"]) + [self.pad_token_id] * (T - len(f["input_ids"])) for f in feats]
        am = [[1] * len(f["input_ids"]) + [0] * (T - len(f["input_ids"])) for f in feats]
        out = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(am)}
        if "labels" in feats[0]:
            out["labels"] = torch.tensor([list(f["labels"]) for f in feats])
        return out


args = TrainingArguments(output_dir="/tmp/hf-curve", per_device_train_batch_size=1, gradient_accumulation_steps=16,
                         max_steps=steps, learning_rate=1e-4, bf16=True, logging_steps=1, optim="adamw_torch",
                         report_to="none", remove_unused_columns=False, lr_scheduler_type="cosine",
                         warmup_steps=0.03, max_grad_norm=0.3, weight_decay=0.01, save_strategy="no", seed=seed,
                         train_sampling_strategy="group_by_length", dataloader_num_workers=0)
tr = Trainer(model=model, args=args, train_dataset=ds,
             data_collator=DataCollatorForSeq2Seq(tokenizer=Tok(), padding=True, pad_to_multiple_of=8,
                                                  return_tensors="pt"))
t0 = time.time()
tr.train()
log = [h for h in tr.state.log_history if "loss" in h and "grad_norm" in h]
for h in log:
    print(json.dumps(dict(step=h["step"], loss=float(h["loss"]), grad_norm=float(h["grad_norm"]),
                          learning_rate=h["learning_rate"])))
print("RESULT", json.dumps(dict(steps=len(log), seconds=time.time() - t0, peak_gib=torch.cuda.max_memory_allocated() / 2**30)))
