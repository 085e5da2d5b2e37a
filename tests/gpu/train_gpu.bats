#!/usr/bin/env bats
# The CUDA backend against the CPU reference and the Trainer goldens (tiny
# models, fp32 files: the GPU computes in bf16, so tolerances are bf16's).
load ../bats/helpers

GOLD="$FIX/train"
DIFF="$ROOT/build/test-tools/st_diff"

setup() {
    nvidia-smi -L >/dev/null 2>&1 || skip "no NVIDIA GPU visible"
}

pack_case() {
    local c=$1 s
    s=$(jq -c .settings "$GOLD/$c/expected.json")
    "$BIN/pack" --batch-size "$(jq .bs <<<"$s")" --accum "$(jq .ga <<<"$s")" --epochs "$(jq .epochs <<<"$s")" \
        --seed "$(jq .seed <<<"$s")" --order "$(jq -r .sampling <<<"$s")" --keep-empty -o "$2" "$GOLD/$c/data.jsonl"
}

train_case() {  # case device pack out [extra]
    local c=$1 dev=$2 p=$3 o=$4 s; shift 4
    s=$(jq -c .settings "$GOLD/$c/expected.json")
    local warm; warm=$(jq -r 'if .warmup < 1 then "--warmup-ratio \(.warmup)" else "--warmup-steps \(.warmup)" end' <<<"$s")
    "$BIN/train" --device "$dev" --model "$GOLD/$c/model" --data "$p" --out "$o" --init-adapter "$GOLD/$c/init_adapter" \
        --lora-dropout 0 --lr "$(jq .lr <<<"$s")" --schedule "$(jq -r .sched <<<"$s")" $warm \
        --weight-decay "$(jq .wd <<<"$s")" --max-grad-norm "$(jq .clip <<<"$s")" --seed "$(jq .seed <<<"$s")" "$@"
}

# Largest relative differences of loss and grad_norm over the steps; fails above 2% / 5%.
compare_curves() {
    jq -s -e --slurpfile g "$2" '
        [ .[] | select(.loss != null) ] as $m
        | [range(0; $g | length) | {l: (($m[.].loss - $g[.].loss) / $g[.].loss | fabs),
                                   n: (($m[.].grad_norm - $g[.].grad_norm) / $g[.].grad_norm | fabs)}]
        | (map(.l) | max) as $l | (map(.n) | max) as $n
        | ("max rel loss diff \($l), max rel grad_norm diff \($n)" | stderr) | $l <= 0.02 and $n <= 0.05' "$1"
}

@test "gpu: CUDA trainer follows the Trainer golden (untied q/k/v/o) within bf16 tolerance" {
    for c in untied-qkvo tied-all-rslora; do
        pack_case $c "$BATS_TEST_TMPDIR/$c.pack"
        train_case $c cuda "$BATS_TEST_TMPDIR/$c.pack" "$BATS_TEST_TMPDIR/$c-gpu" --debug-grads "$BATS_TEST_TMPDIR/$c-g.safetensors"
        compare_curves "$BATS_TEST_TMPDIR/$c-gpu/metrics.jsonl" "$GOLD/$c/steps.jsonl"
        # First-step gradients: bf16 activations give each tensor a relative error of a few 1e-3
        # (per element it is unbounded where a gradient is near zero), so compare tensor norms.
        "$DIFF" "$BATS_TEST_TMPDIR/$c-g.safetensors" "$GOLD/$c/grads_step1.safetensors" --norm-rtol 3e-2
        # The final adapter: Adam turns bf16 noise in near-zero gradients into steps of up to lr (1e-3 and
        # 2e-3 here) in either direction, so after the run's steps the bound is a few lr, not a bf16 ulp.
        "$DIFF" "$BATS_TEST_TMPDIR/$c-gpu/adapter_model.safetensors" "$GOLD/$c/final_adapter/adapter_model.safetensors" --atol 1e-2 --rtol 5e-2
    done
}

@test "gpu: CUDA and CPU backends agree on packed rows with dropout" {
    "$BIN/pack" --mode packed --row-tokens 64 --batch-tokens 128 --epochs 2 --seed 3 -o "$BATS_TEST_TMPDIR/p.pack" "$GOLD/untied-qkvo/data.jsonl"
    a=(--model "$GOLD/untied-qkvo/model" --data "$BATS_TEST_TMPDIR/p.pack" --lora-dropout 0.1 --seed 5 --quiet --accum 2)
    "$BIN/train" --device cpu "${a[@]}" --out "$BATS_TEST_TMPDIR/cpu"
    "$BIN/train" --device cuda "${a[@]}" --out "$BATS_TEST_TMPDIR/gpu"
    compare_curves "$BATS_TEST_TMPDIR/gpu/metrics.jsonl" <(jq -c '{step, loss, grad_norm, learning_rate: .lr}' "$BATS_TEST_TMPDIR/cpu/metrics.jsonl")
}

@test "gpu: runs are deterministic, and --recompute changes no bit" {
    pack_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack"
    train_case untied-qkvo cuda "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/a" --quiet
    train_case untied-qkvo cuda "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/b" --quiet
    train_case untied-qkvo cuda "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/r" --quiet --recompute
    cmp "$BATS_TEST_TMPDIR/a/adapter_model.safetensors" "$BATS_TEST_TMPDIR/b/adapter_model.safetensors"
    cmp "$BATS_TEST_TMPDIR/a/adapter_model.safetensors" "$BATS_TEST_TMPDIR/r/adapter_model.safetensors"
}

@test "gpu: --resume on the GPU is bit-exact" {
    pack_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack"
    train_case untied-qkvo cuda "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/full" --quiet
    run train_case untied-qkvo cuda "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/cut" --quiet --interrupt-after 7
    [ "$status" -eq 130 ]
    train_case untied-qkvo cuda "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/cut" --quiet --resume
    cmp "$BATS_TEST_TMPDIR/full/adapter_model.safetensors" "$BATS_TEST_TMPDIR/cut/adapter_model.safetensors"
}

@test "gpu: --offload (layers streamed from host memory) changes no bit, also on tied weights" {
    for c in untied-qkvo tied-all-rslora; do
        pack_case $c "$BATS_TEST_TMPDIR/$c.pack"
        train_case $c cuda "$BATS_TEST_TMPDIR/$c.pack" "$BATS_TEST_TMPDIR/$c-r" --quiet --recompute
        run train_case $c cuda "$BATS_TEST_TMPDIR/$c.pack" "$BATS_TEST_TMPDIR/$c-o" --offload
        [ "$status" -eq 0 ]
        [[ "$output" == *"2 layer slots; 2 layers in pinned host memory"* ]]
        cmp "$BATS_TEST_TMPDIR/$c-r/adapter_model.safetensors" "$BATS_TEST_TMPDIR/$c-o/adapter_model.safetensors"
    done
    run "$BIN/train" --device cpu --offload --model "$GOLD/untied-qkvo/model" --data "$BATS_TEST_TMPDIR/untied-qkvo.pack" --out "$BATS_TEST_TMPDIR/x"
    [ "$status" -eq 2 ]
}

@test "gpu: --offload streams layers through the two slots bit-exactly (5-layer GQA model)" {
    python3 -c 'import torch, transformers' 2>/dev/null || skip "torch + transformers not installed (they make the model)"
    python3 "$ROOT/bench/make_random_model.py" "$BATS_TEST_TMPDIR/m5" --shape qwen2.5-0.5b --layers 5 >/dev/null 2>&1
    pack_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack"
    for mode in recompute offload; do
        "$BIN/train" --device cuda --model "$BATS_TEST_TMPDIR/m5" --data "$BATS_TEST_TMPDIR/u.pack" \
            --out "$BATS_TEST_TMPDIR/$mode" --max-steps 4 --save-steps 0 --quiet --lora-dropout 0.1 --$mode 2> "$BATS_TEST_TMPDIR/$mode.log"
    done
    grep -q "5 layers in pinned host memory" "$BATS_TEST_TMPDIR/offload.log"
    cmp "$BATS_TEST_TMPDIR/recompute/adapter_model.safetensors" "$BATS_TEST_TMPDIR/offload/adapter_model.safetensors"
}

@test "gpu: --share-prefix computes a shared system prompt once and follows the full computation" {
    # every record behind the same 12 prompt tokens (no targets among them), 4 sequences per micro-batch
    jq -c '{input_ids: ([7,7,3,9,1,2,5,8,4,6,3,2] + .input_ids), labels: ([range(12) | -100] + .labels)}' \
        "$GOLD/untied-qkvo/data.jsonl" > "$BATS_TEST_TMPDIR/sys.jsonl"
    "$BIN/pack" --batch-size 4 --accum 2 --epochs 2 --seed 3 -o "$BATS_TEST_TMPDIR/sys.pack" "$BATS_TEST_TMPDIR/sys.jsonl"
    a=(--device cuda --model "$GOLD/untied-qkvo/model" --data "$BATS_TEST_TMPDIR/sys.pack" --lora-dropout 0 --seed 5)
    "$BIN/train" "${a[@]}" --quiet --out "$BATS_TEST_TMPDIR/full"
    "$BIN/train" "${a[@]}" --share-prefix --out "$BATS_TEST_TMPDIR/shared" 2> "$BATS_TEST_TMPDIR/shared.err"
    # the same sums in another order (the shared rows' gradients are added before their products): bf16 noise
    compare_curves "$BATS_TEST_TMPDIR/shared/metrics.jsonl" \
        <(jq -c '{step, loss, grad_norm, learning_rate: .lr}' "$BATS_TEST_TMPDIR/full/metrics.jsonl")
    grep -E "shared prefixes: [0-9]+ of the batches' [0-9]+ rows computed" "$BATS_TEST_TMPDIR/shared.err"
    read -r done all < <(sed -nE "s/.*shared prefixes: ([0-9]+) of the batches' ([0-9]+) rows.*/\1 \2/p" "$BATS_TEST_TMPDIR/shared.err")
    [ "$done" -lt "$all" ]
    # recompute, dropout and the host embedding path too: runs, and --recompute changes no bit
    "$BIN/train" "${a[@]}" --share-prefix --quiet --lora-dropout 0.1 --out "$BATS_TEST_TMPDIR/d1"
    "$BIN/train" "${a[@]}" --share-prefix --quiet --lora-dropout 0.1 --recompute --out "$BATS_TEST_TMPDIR/d2"
    cmp "$BATS_TEST_TMPDIR/d1/adapter_model.safetensors" "$BATS_TEST_TMPDIR/d2/adapter_model.safetensors"
}
