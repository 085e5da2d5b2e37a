# pipelines/finetune.mk: the whole chain as a Makefile, with Make's dependency
# tracking: tokenize -> pack -> shard-plan -> train -> merge -> export (+ plot).
#
#   make -f pipelines/finetune.mk MODEL=DIR DATA=FILE [VAR=value ...] [target]
#
# Every stage writes one real file (or folder) under $(OUT) and one log,
# $(OUT)/logs/STAGE.log.  A stage reruns when one of its inputs is newer, or
# when one of the settings it uses changed: each stage keeps the settings it
# ran with in $(OUT)/params/STAGE, rewritten (and so made newer) only when
# they differ.  Changing LR reruns train, merge, export and the plot; it does
# not retokenize or repack.
#
# Targets: all (default: every stage, then a summary), tokens, pack, plan,
# train, merge, export, plot, summary, clean (removes $(OUT)), help.
# Run from the project root (or set BIN to the folder of the tools).

# ---- settings (all overridable: make -f pipelines/finetune.mk LR=2e-4) ------
MODEL        ?=
DATA         ?=
TOKENIZER    ?= $(MODEL)
NAME         ?= $(basename $(notdir $(firstword $(DATA))))
OUT          ?= build/runs/$(NAME)
BIN          ?= bin
# tokenize: SYSTEM empty = the chat template's default system turn
SYSTEM       ?=
FORMAT       ?= auto
MAX_LEN      ?= 128
TOKENIZE_FLAGS ?=
# pack: per_device_train_batch_size, gradient_accumulation_steps, epochs
MODE         ?= pad
BATCH        ?= 1
ACCUM        ?= 16
EPOCHS       ?= 3
SEED         ?= 42
PACK_FLAGS   ?=
# shard-plan: GPUS=auto plans for the GPUs found; without a GPU the plan is
# made for CPU_PLAN_GPUS (what the run would need on such a card) and train
# runs on the CPU without it.
GPUS         ?= auto
CPU_PLAN_GPUS ?= 1x24GiB
PLAN_FLAGS   ?=
# train: LoraConfig and TrainingArguments
DEVICE       ?= auto
LR           ?= 1e-4
LORA_R       ?= 8
LORA_ALPHA   ?= 32
LORA_DROPOUT ?= 0.1
TARGET       ?= q_proj,k_proj,v_proj,o_proj
SCHEDULE     ?= cosine
WARMUP_RATIO ?= 0.03
WEIGHT_DECAY ?= 0.01
MAX_GRAD_NORM ?= 0.3
SAVE_STEPS   ?= 100
MAX_STEPS    ?=
THREADS      ?=
TRAIN_FLAGS  ?=
# merge / export
DTYPE        ?=
MAX_SHARD_SIZE ?= 5GB

ifeq ($(strip $(MODEL)),)
ifeq ($(filter help,$(MAKECMDGOALS)),)
$(error MODEL is not set: make -f pipelines/finetune.mk MODEL=DIR DATA=FILE (see 'make -f pipelines/finetune.mk help'))
endif
endif
ifeq ($(strip $(DATA)),)
ifeq ($(filter help,$(MAKECMDGOALS)),)
$(error DATA is not set: make -f pipelines/finetune.mk MODEL=DIR DATA=FILE)
endif
endif

SHELL := /bin/bash
.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules

# DEVICE=auto: CUDA when the machine shows a GPU and bin/train was built with
# CUDA (it then carries the CUDA runtime, linked statically); else the CPU.
HAVE_GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU' && grep -q cudaGetDeviceCount $(BIN)/train 2>/dev/null \
                    && echo yes)
RUN_DEVICE := $(if $(filter auto,$(DEVICE)),$(if $(HAVE_GPU),cuda,cpu),$(DEVICE))
PLAN_GPUS := $(if $(filter cpu,$(RUN_DEVICE)),$(if $(filter auto,$(GPUS)),$(CPU_PLAN_GPUS),$(GPUS)),$(GPUS))

# Shell-quote a value: 'x', with ' inside written '\''.
q = '$(subst ','\'',$(1))'

# ---- the settings each stage depends on ----------------------------------
TOKENIZE_ARGS = --tokenizer $(call q,$(TOKENIZER)) --format $(FORMAT) --max-len $(MAX_LEN) \
                $(if $(SYSTEM),--system $(call q,$(SYSTEM))) $(TOKENIZE_FLAGS)
PACK_ARGS     = --mode $(MODE) --batch-size $(BATCH) --accum $(ACCUM) --epochs $(EPOCHS) --seed $(SEED) $(PACK_FLAGS)
PLAN_ARGS     = --gpus $(PLAN_GPUS) --lora-r $(LORA_R) --target $(TARGET) --lora-dropout $(LORA_DROPOUT) $(PLAN_FLAGS)
TRAIN_ARGS    = --device $(RUN_DEVICE) --lr $(LR) --lora-r $(LORA_R) --lora-alpha $(LORA_ALPHA) \
                --lora-dropout $(LORA_DROPOUT) --target $(TARGET) --schedule $(SCHEDULE) \
                --warmup-ratio $(WARMUP_RATIO) --weight-decay $(WEIGHT_DECAY) --max-grad-norm $(MAX_GRAD_NORM) \
                --seed $(SEED) --save-steps $(SAVE_STEPS) $(if $(MAX_STEPS),--max-steps $(MAX_STEPS)) \
                $(if $(THREADS),--threads $(THREADS)) $(TRAIN_FLAGS)
MERGE_ARGS    = $(if $(DTYPE),--dtype $(DTYPE))
EXPORT_ARGS   = --max-shard-size $(MAX_SHARD_SIZE)

# Parameter stamps, refreshed while the Makefile is read: a file whose content
# is the stage's settings, touched only when they changed.
P := $(OUT)/params
define stamp
$(shell mkdir -p $(call q,$(P)) && printf '%s\n' $(call q,$(2)) | cmp -s - $(call q,$(P)/$(1)) \
        || printf '%s\n' $(call q,$(2)) > $(call q,$(P)/$(1)))
endef
ifneq ($(filter-out help clean,$(or $(MAKECMDGOALS),all)),)
$(call stamp,tokenize,$(TOKENIZE_ARGS))
$(call stamp,pack,$(PACK_ARGS))
$(call stamp,plan,$(PLAN_ARGS))
$(call stamp,train,$(TRAIN_ARGS) $(if $(filter cuda,$(RUN_DEVICE)),--plan))
$(call stamp,merge,$(MERGE_ARGS))
$(call stamp,export,$(EXPORT_ARGS))
endif

# The model's files: a new config or new weights rerun what reads them.
MODEL_FILES := $(wildcard $(MODEL)/config.json $(MODEL)/*.safetensors $(MODEL)/model.safetensors.index.json)
# TOKENIZER: a folder (its tokenizer.json and tokenizer_config.json) or a tokenizer.json file.
TOK_FILES   := $(or $(wildcard $(TOKENIZER)/tokenizer.json $(TOKENIZER)/tokenizer_config.json),$(TOKENIZER))

TOKENS  := $(OUT)/tokens.jsonl
PACK    := $(OUT)/train.pack
PLAN    := $(OUT)/plan.json
ADAPTER := $(OUT)/adapter/adapter_model.safetensors
METRICS := $(OUT)/adapter/metrics.jsonl
MERGED  := $(OUT)/merged.safetensors
HF      := $(OUT)/hf/config.json
PNG     := $(OUT)/loss.png
L       := $(OUT)/logs

.PHONY: all tokens pack plan train merge export plot summary clean help
all: $(TOKENS) $(PACK) $(PLAN) $(ADAPTER) $(MERGED) $(HF) $(PNG)
	@$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) summary
tokens: $(TOKENS)
pack: $(PACK)
plan: $(PLAN)
train: $(ADAPTER)
merge: $(MERGED)
export: $(HF)
plot: $(PNG)

# Run a stage: its stderr into the log; on failure, show the log's end.
# $(1) stage name, $(2) command.
run = @mkdir -p $(call q,$(L)) && echo "[finetune] $(1) -> $@" && \
      { $(2); } 2> $(call q,$(L)/$(1).log) || { tail -n 20 $(call q,$(L)/$(1).log) >&2; exit 1; }

$(TOKENS): $(DATA) $(TOK_FILES) $(P)/tokenize $(BIN)/tokenize
	$(call run,tokenize,$(BIN)/tokenize $(TOKENIZE_ARGS) -o $(call q,$@) $(foreach d,$(DATA),$(call q,$(d))))

$(PACK): $(TOKENS) $(P)/pack $(BIN)/pack
	$(call run,pack,$(BIN)/pack $(PACK_ARGS) -o $(call q,$@) $(call q,$<) && $(BIN)/pack --info $(call q,$@) >&2)

$(PLAN): $(PACK) $(MODEL_FILES) $(P)/plan $(BIN)/shard-plan
	$(call run,shard-plan,$(BIN)/shard-plan --model $(call q,$(MODEL)) --pack $(call q,$<) $(PLAN_ARGS) -o $(call q,$@))

# train refuses an existing --out (it would resume or mix runs): a rerun starts clean.
$(ADAPTER): $(PACK) $(PLAN) $(MODEL_FILES) $(P)/train $(BIN)/train
	@rm -rf $(call q,$(OUT)/adapter)
	$(call run,train,$(BIN)/train --model $(call q,$(MODEL)) --data $(call q,$(PACK)) --out $(call q,$(OUT)/adapter) \
	    $(TRAIN_ARGS) $(if $(filter cuda,$(RUN_DEVICE)),--plan $(call q,$(PLAN))))

$(MERGED): $(ADAPTER) $(MODEL_FILES) $(P)/merge $(BIN)/merge
	$(call run,merge,$(BIN)/merge --model $(call q,$(MODEL)) --adapter $(call q,$(OUT)/adapter) $(MERGE_ARGS) -o $(call q,$@))

$(HF): $(MERGED) $(MODEL_FILES) $(TOK_FILES) $(P)/export $(BIN)/export
	$(call run,export,$(BIN)/export --model $(call q,$(MODEL)) --weights $(call q,$<) --out $(call q,$(OUT)/hf) \
	    --force $(EXPORT_ARGS))

$(PNG): $(ADAPTER) $(BIN)/plot-loss
	$(call run,plot-loss,$(BIN)/plot-loss $(call q,$(METRICS)) -o $(call q,$@))

summary:
	@echo "[finetune] outputs of $(OUT) (logs: $(L)/STAGE.log):"
	@echo "  tokens      $(TOKENS)"
	@echo "  pack        $(PACK)"
	@echo "  plan        $(PLAN)$(if $(filter cpu,$(RUN_DEVICE)),   (for $(PLAN_GPUS); this run trained on the CPU))"
	@echo "  adapter     $(OUT)/adapter/   (adapter_model.safetensors, adapter_config.json)"
	@echo "  metrics     $(METRICS)"
	@echo "  merged      $(MERGED)"
	@echo "  HF model    $(OUT)/hf/"
	@echo "  loss curve  $(PNG)"
	@jq -s -r '[.[] | select(.loss != null)] as $$m | "  loss        \($$m[0].loss | .*1000 | round / 1000) at step \($$m[0].step) -> \($$m[-1].loss | .*1000 | round / 1000) at step \($$m[-1].step) (mean of the last 10 steps: \([$$m[-10:][].loss] | add / length | .*1000 | round / 1000))"' \
	    $(call q,$(METRICS)) 2>/dev/null || sed 's/^/  /' $(call q,$(L)/plot-loss.log) 2>/dev/null || true

clean:
	rm -rf $(call q,$(OUT))

help:
	@sed -n '1,/^$$/{/^#/p}' $(firstword $(MAKEFILE_LIST)) | sed 's/^# \{0,1\}//'
	@echo
	@echo "Settings (current values):"
	@$(foreach v,MODEL DATA TOKENIZER OUT SYSTEM FORMAT MAX_LEN MODE BATCH ACCUM EPOCHS SEED GPUS DEVICE LR LORA_R \
	    LORA_ALPHA LORA_DROPOUT TARGET SCHEDULE WARMUP_RATIO WEIGHT_DECAY MAX_GRAD_NORM SAVE_STEPS MAX_STEPS THREADS \
	    DTYPE MAX_SHARD_SIZE TOKENIZE_FLAGS PACK_FLAGS PLAN_FLAGS TRAIN_FLAGS,echo $(call q,  $(v) = $($(v)));)
