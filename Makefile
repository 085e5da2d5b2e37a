# lorapipe: LoRA fine-tuning of Qwen-family models as a pipeline of small C tools.
#
#   make            build every tool into bin/ (CUDA parts where nvcc is found)
#   make test       build and run every CPU test (C unit tests plain and under
#                   ASan+UBSan, bats suites); closes with "N passed, N failed"
#   make test-gpu   GPU tests (on a machine with a CUDA GPU)
#   make deps       install the Debian packages the project needs (idempotent)
#   make demo       the whole chain on the embedded default model and data
#                   (build/demo; DEMO_ARGS='LR=1e-3 ...' passes settings on)
#   make fuzz       run every libFuzzer target for FUZZ_SECONDS each (default 60)
#   make fuzz-smoke build the fuzz targets, run each briefly, replay fuzz/regressions
#
# Settings (make VAR=value): CUDA=auto|0|1, CUDA_ARCH (default 90a; a list
# such as "90a 80" builds machine code for each plus PTX for the lowest),
# NVCC, CUDA_HOME, BLAS=auto|0|1, OPT (default -O2); for make fuzz,
# FUZZ_SECONDS and FUZZ_TARGETS="pack plan:30" (a target, or target:seconds).

SHELL := /bin/bash
.DEFAULT_GOAL := all
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules

CC        ?= cc
OPT       ?= -O2
WARN      := -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g $(WARN) -fopenmp -MMD -MP -Ilib

# ---- Debian packages and pkg-config -------------------------------------
# Why each is here: docs/DEPENDENCIES.md.
DEB_BUILD := build-essential pkg-config libjansson-dev libpcre2-dev libutf8proc-dev \
             libarchive-dev libopenblas-dev libpng-dev
DEB_TEST  := bats jq zstd libarchive-tools clang python3
DEB_PKGS  := $(DEB_BUILD) $(DEB_TEST)
PKGS      := jansson libpcre2-8 libutf8proc libarchive libpng

ifneq ($(filter-out deps clean,$(or $(MAKECMDGOALS),all)),)
PKG_OK := $(shell pkg-config --exists $(PKGS) && echo yes)
ifneq ($(PKG_OK),yes)
$(error missing development packages ($(PKGS)); run 'make deps' first)
endif
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

BLAS ?= auto
ifneq ($(BLAS),0)
BLAS_FOUND := $(shell pkg-config --exists openblas && echo yes)
ifeq ($(BLAS_FOUND),yes)
BLAS_CFLAGS := -DLORAPIPE_BLAS $(shell pkg-config --cflags openblas)
BLAS_LIBS   := $(shell pkg-config --libs openblas)
else ifeq ($(BLAS),1)
$(error BLAS=1 but OpenBLAS (pkg-config openblas) was not found; run 'make deps')
endif
endif

CFLAGS  := $(CFLAGS_BASE) $(OPT) $(PKG_CFLAGS) $(BLAS_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS  := -Wl,--as-needed $(PKG_LIBS) $(BLAS_LIBS) -lm -lpthread

# ---- CUDA ----------------------------------------------------------------
CUDA      ?= auto
CUDA_HOME ?= $(or $(patsubst %/bin/nvcc,%,$(realpath $(shell command -v nvcc 2>/dev/null))),/usr/local/cuda)
NVCC      ?= $(if $(wildcard $(CUDA_HOME)/bin/nvcc),$(CUDA_HOME)/bin/nvcc,)
CUDA_ARCH ?= 90a
ifeq ($(CUDA),0)
  USE_CUDA :=
else ifneq ($(NVCC),)
  USE_CUDA := 1
else ifeq ($(CUDA),1)
  $(error CUDA=1 but nvcc was not found (set NVCC or CUDA_HOME))
endif

ifdef USE_CUDA
  # Fail loudly on a bad explicit arch instead of building for the wrong target.
  NVCC_ARCHES := $(shell $(NVCC) --list-gpu-arch 2>/dev/null)
  $(foreach a,$(CUDA_ARCH),$(if $(filter compute_$(patsubst %a,%,$(patsubst %f,%,$(a))),$(NVCC_ARCHES)),,\
      $(error CUDA_ARCH=$(a) is not supported by $(NVCC) (supported: $(NVCC_ARCHES)))))
  PTX_ARCH := $(firstword $(sort $(patsubst %a,%,$(CUDA_ARCH))))
  GENCODE  := $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
              -gencode arch=compute_$(PTX_ARCH),code=compute_$(PTX_ARCH)
  NCCL_INC := $(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h))
  NCCL_LIBDIR := $(patsubst %/,%,$(dir $(firstword $(wildcard $(CUDA_HOME)/lib/libnccl.so \
                 $(CUDA_HOME)/lib64/libnccl.so /usr/lib/x86_64-linux-gnu/libnccl.so))))
  CUBLAS_LIB := $(firstword $(wildcard $(CUDA_HOME)/lib64/libcublasLt.so $(CUDA_HOME)/lib/libcublasLt.so))
  ifeq ($(CUBLAS_LIB),)
    $(error nvcc found at $(NVCC) but cuBLASLt was not found under $(CUDA_HOME))
  endif
  NVCCFLAGS := -std=c++17 -O3 -g -lineinfo $(GENCODE) -Xcompiler -fopenmp -Ilib -Ikernels \
               --expt-relaxed-constexpr -MMD -MP $(EXTRA_NVCCFLAGS)
  ifneq ($(NCCL_INC),)
    NVCCFLAGS += -DLORAPIPE_NCCL
    NCCL_LIBS := -L$(NCCL_LIBDIR) -Wl,-rpath,$(NCCL_LIBDIR) -lnccl
  endif
  # cudart is linked statically so that binaries carry no toolkit-version pin
  # beyond the driver; cuBLAS(Lt) and NCCL come from the machine.
  CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas \
               $(NCCL_LIBS) -lcudart_static -lstdc++ -ldl -lrt
endif

ifeq ($(MAKELEVEL),0)
ifneq ($(filter-out deps clean help,$(or $(MAKECMDGOALS),all)),)
ifdef USE_CUDA
  $(info [lorapipe] nvcc $(NVCC) ($(shell $(NVCC) --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')), $(GENCODE))
  $(info [lorapipe] cuBLASLt $(CUBLAS_LIB); NCCL $(if $(NCCL_INC),$(NCCL_LIBDIR),not found (multi-GPU disabled)))
else
  $(info [lorapipe] nvcc not found: building the CPU tools only (train --device cuda will refuse))
endif
  $(info [lorapipe] BLAS: $(if $(BLAS_LIBS),OpenBLAS,none (plain loops)))
endif
endif

# ---- sources -------------------------------------------------------------
LIB_SRC   := $(wildcard lib/*.c)
LIB_OBJ   := $(LIB_SRC:%.c=build/%.o)
KERN_SRC  := $(wildcard kernels/*.cu)
KERN_OBJ  := $(KERN_SRC:%.cu=build/%.o)
TOOLS     := $(notdir $(patsubst %/,%,$(dir $(wildcard tools/*/main.c))))
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=build/tests/%)
ASAN_BIN  := $(UNIT_SRC:tests/unit/%.c=build/asan/tests/%)
TTOOL_SRC := $(wildcard tests/tools/*.c)
TTOOL_BIN := $(TTOOL_SRC:tests/tools/%.c=build/test-tools/%)
ASAN_LIB_OBJ := $(LIB_SRC:%.c=build/asan/%.o)
SANFLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

BINS := $(TOOLS:%=bin/%)
all: $(BINS)

build/liblorapipe.a: $(LIB_OBJ)
	@rm -f $@; ar rcs $@ $^
build/asan/liblorapipe.a: $(ASAN_LIB_OBJ)
	@rm -f $@; ar rcs $@ $^

build/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(if $(USE_CUDA),$(if $(filter tools/train/% tools/shard-plan/%,$<),-DLORAPIPE_CUDA -I$(CUDA_HOME)/include),) -c $< -o $@
build/asan/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SANFLAGS) -O1 -c $< -o $@

ifdef USE_CUDA
build/%.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@
build/libkernels.a: $(KERN_OBJ)
	@rm -f $@; ar rcs $@ $^
CUDA_TOOLS := train shard-plan
GPU_TEST_SRC := $(wildcard tests/gpu/*.cu)
GPU_TEST_BIN := $(GPU_TEST_SRC:tests/gpu/%.cu=build/gpu-tests/%)
build/gpu-tests/%: tests/gpu/%.cu build/libkernels.a build/liblorapipe.a
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -o $@ $< build/libkernels.a build/liblorapipe.a -Xlinker --as-needed $(PKG_LIBS) $(BLAS_LIBS) -lm \
	    -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lgomp
# Kernel benchmarks (bench/*_bench.cu), run by hand or by bench/device_run.sh.
BENCH_BIN := $(patsubst bench/%.cu,build/bench/%,$(wildcard bench/*_bench.cu))
build/bench/%: bench/%.cu build/libkernels.a build/liblorapipe.a
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -o $@ $< build/libkernels.a build/liblorapipe.a -Xlinker --as-needed $(PKG_LIBS) $(BLAS_LIBS) -lm \
	    -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lgomp
# CPU CI compiles every CUDA source, GPU tests and benchmarks included.
all: $(GPU_TEST_BIN) $(BENCH_BIN)
endif

# Each tools/<name>/*.c (and *.cu with CUDA) links into bin/<name>.
define TOOL_RULE
$(1)_OBJ := $$(patsubst %.c,build/%.o,$$(wildcard tools/$(1)/*.c)) \
            $$(if $$(and $$(USE_CUDA),$$(filter $(1),$$(CUDA_TOOLS))),$$(patsubst %.cu,build/%.o,$$(wildcard tools/$(1)/*.cu)) build/libkernels.a)
bin/$(1): $$($(1)_OBJ) build/liblorapipe.a
	@mkdir -p bin
	$$(CC) $$(CFLAGS) -o $$@ $$($(1)_OBJ) build/liblorapipe.a $$(LDLIBS) \
	    $$(if $$(and $$(USE_CUDA),$$(filter $(1),$$(CUDA_TOOLS))),$$(CUDA_LIBS))
endef
$(foreach t,$(TOOLS),$(eval $(call TOOL_RULE,$(t))))

# A unit test of a tool's own module also links that module's objects
# (UNIT_TOOL_OBJ_<test>: paths relative to build/ and build/asan/) and sees
# tools/train's headers.
UNIT_TOOL_OBJ_test_host_comm := tools/train/host_comm.o tools/train/tcp.o
build/tests/test_host_comm: $(addprefix build/,$(UNIT_TOOL_OBJ_test_host_comm))
build/asan/tests/test_host_comm: $(addprefix build/asan/,$(UNIT_TOOL_OBJ_test_host_comm))
build/tests/%: tests/unit/%.c build/liblorapipe.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests/unit -Itools/train -o $@ $< $(filter build/tools/%.o,$^) build/liblorapipe.a $(LDLIBS)
build/test-tools/%: tests/tools/%.c build/liblorapipe.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< build/liblorapipe.a $(LDLIBS)
build/asan/tests/%: tests/unit/%.c build/asan/liblorapipe.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SANFLAGS) -O1 -Itests/unit -Itools/train -o $@ $< $(filter build/asan/tools/%.o,$^) \
	    build/asan/liblorapipe.a $(LDLIBS)

# ---- tests ---------------------------------------------------------------
.PHONY: fixtures all test test-unit test-bats test-gpu deps demo fuzz fuzz-build fuzz-smoke clean help
# The real Qwen tokenizer, committed compressed (tests/fixtures/qwen-tokenizer).
QWEN_FIX := build/fixtures/qwen-tokenizer/tokenizer.json
$(QWEN_FIX): tests/fixtures/qwen-tokenizer/tokenizer.json.zst tests/fixtures/qwen-tokenizer/tokenizer_config.json
	@mkdir -p $(@D)
	zstd -d -q -f $< -o $@
	cp tests/fixtures/qwen-tokenizer/tokenizer_config.json $(@D)/
fixtures: $(QWEN_FIX)

test: all fixtures $(UNIT_BIN) $(ASAN_BIN) $(TTOOL_BIN)
	@tests/run.sh all
test-unit: $(UNIT_BIN) $(ASAN_BIN)
	@tests/run.sh unit
test-bats: all fixtures $(TTOOL_BIN)
	@tests/run.sh bats
test-gpu: all fixtures $(TTOOL_BIN)
	@tests/gpu/run.sh

# ---- demo: the embedded default through pipelines/finetune.mk -------------
# bin/demo-init writes a tiny Qwen2 model, its tokenizer and an instruction
# dataset into build/demo/input; the pipeline runs on it into build/demo/run.
# The settings differ from the tutorial's where a 100k-parameter random model
# needs them to learn in seconds: a higher learning rate, LoRA r=16 on every
# projection, 8 epochs of micro-batches of 4 x 2 accumulation steps.
DEMO_DIR      ?= build/demo
DEMO_SEED     ?= 42
DEMO_SETTINGS := LR=3e-3 LORA_R=16 LORA_ALPHA=32 TARGET=all EPOCHS=8 BATCH=4 ACCUM=2 SAVE_STEPS=0 SEED=$(DEMO_SEED)
DEMO_ARGS     ?=
# The tools build with one job per core unless make was given -j.
DEMO_JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
.PHONY: demo-build
demo-build: $(BINS) $(DEMO_DIR)/input/data.json
$(DEMO_DIR)/input/data.json: bin/demo-init
	bin/demo-init --out $(DEMO_DIR)/input --seed $(DEMO_SEED) --force
demo:
	@$(MAKE) --no-print-directory $(if $(filter -j%,$(MAKEFLAGS)),,-j$(DEMO_JOBS)) demo-build
	@$(MAKE) --no-print-directory -f pipelines/finetune.mk MODEL=$(DEMO_DIR)/input/model \
	    DATA=$(DEMO_DIR)/input/data.json OUT=$(DEMO_DIR)/run DEVICE=auto $(DEMO_SETTINGS) $(DEMO_ARGS)

# ---- fuzzing (docs/RELIABILITY.md "Fuzzing") ------------------------------
# libFuzzer targets fuzz/fuzz_<name>.c, linked against the library built a
# third time with clang and the same sanitizers (build/fuzz/).  OpenMP and
# BLAS are left out: the parsers use neither.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SRC     := $(wildcard fuzz/fuzz_*.c)
FUZZ_NAMES   := $(FUZZ_SRC:fuzz/fuzz_%.c=%)
FUZZ_BIN     := $(FUZZ_NAMES:%=build/fuzz/fuzz_%)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=build/fuzz/%.o)
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wno-unused-parameter -Wno-sign-compare \
                -Wno-missing-field-initializers -Wno-unknown-pragmas -Ilib $(PKG_CFLAGS) \
                -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -DFUZZ_ROOT='"$(CURDIR)"'

# Whether $(FUZZ_CC) links libFuzzer (evaluated only where used).
FUZZ_OK = $(shell printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' | \
            $(FUZZ_CC) -x c -fsanitize=fuzzer - -o /dev/null 2>/dev/null && echo yes)

build/fuzz/lib/%.o: lib/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
build/fuzz/liblorapipe.a: $(FUZZ_LIB_OBJ)
	@rm -f $@; ar rcs $@ $^
build/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h fuzz/fuzz_records.inc fuzz/fuzz_tiny_config.h build/fuzz/liblorapipe.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build/fuzz/liblorapipe.a $(PKG_LIBS) -lm -lpthread

fuzz-build: $(FUZZ_BIN)
# make test builds the targets with the rest (in parallel) where clang has
# libFuzzer; tests/bats/fuzz.bats runs them (and skips, saying why, elsewhere).
ifneq ($(filter test,$(MAKECMDGOALS)),)
test: $(if $(FUZZ_OK),$(FUZZ_BIN))
endif
# make fuzz FUZZ_SECONDS=600 [FUZZ_TARGETS="pack plan"]: each target in turn.
fuzz: fuzz-build fixtures
	@fuzz/run.sh campaign $(FUZZ_SECONDS) $(or $(FUZZ_TARGETS),$(FUZZ_NAMES))
# What CI runs (tests/bats/fuzz.bats): a few seconds each, plus every regression input.
fuzz-smoke: fuzz-build fixtures
	@fuzz/run.sh smoke $(or $(FUZZ_SMOKE_SECONDS),1) $(FUZZ_NAMES)

# ---- deps: install what is missing, nothing else -------------------------
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "[lorapipe] all Debian packages present"; exit 0; fi; \
	echo "[lorapipe] installing:$$missing"; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends $$missing

clean:
	rm -rf build bin

help:
	@sed -n '2,/^$$/p' Makefile | sed 's/^# \{0,1\}//'

-include $(LIB_OBJ:.o=.d) $(ASAN_LIB_OBJ:.o=.d) $(addprefix build/asan/,$(UNIT_TOOL_OBJ_test_host_comm:.o=.d)) $(FUZZ_LIB_OBJ:.o=.d) $(KERN_OBJ:.o=.d) $(foreach t,$(TOOLS),$(patsubst %.o,%.d,$(filter %.o,$($(t)_OBJ))))
