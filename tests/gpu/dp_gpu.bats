#!/usr/bin/env bats
# Data parallelism (train --plan with several replicas) on the tiny golden model:
# the same global batch on 1 and 2 GPUs gives the same training, a killed rank
# stops the others, and a run interrupted on 2 GPUs resumes on 1.
load ../bats/helpers

GOLD="$FIX/train"

setup() {
    n=$(nvidia-smi -L 2>/dev/null | wc -l)
    [ "$n" -ge 2 ] || skip "needs 2 GPUs (found $n)"
    export NCCL_NVLS_ENABLE=0
    # 4 micro-batches per step: 2 per rank on 2 GPUs
    "$BIN/pack" --batch-size 2 --accum 4 --epochs 2 --seed 42 --keep-empty -o "$BATS_TEST_TMPDIR/u.pack" "$GOLD/untied-qkvo/data.jsonl"
    "$BIN/shard-plan" --model "$GOLD/untied-qkvo/model" --pack "$BATS_TEST_TMPDIR/u.pack" -o "$BATS_TEST_TMPDIR/plan.json"
    args=(--device cuda --model "$GOLD/untied-qkvo/model" --data "$BATS_TEST_TMPDIR/u.pack" --init-adapter "$GOLD/untied-qkvo/init_adapter" --lora-dropout 0 --lr 2e-3 --quiet)
}

@test "dp: the plan uses both GPUs" {
    jq -e '.replicas == 2' "$BATS_TEST_TMPDIR/plan.json"
}

@test "dp: 2 GPUs follow the 1-GPU run (same global batch)" {
    "$BIN/train" "${args[@]}" --out "$BATS_TEST_TMPDIR/one"
    "$BIN/train" "${args[@]}" --out "$BATS_TEST_TMPDIR/two" --plan "$BATS_TEST_TMPDIR/plan.json"
    [ "$(jq -s length "$BATS_TEST_TMPDIR/two/metrics.jsonl")" -eq "$(jq -s length "$BATS_TEST_TMPDIR/one/metrics.jsonl")" ]
    jq -s -e --slurpfile b "$BATS_TEST_TMPDIR/two/metrics.jsonl" '. as $a | [range(0; $a | length) | (($a[.].loss - $b[.].loss) / $a[.].loss | fabs)] | max < 1e-3' "$BATS_TEST_TMPDIR/one/metrics.jsonl"
    "$ROOT/build/test-tools/st_diff" "$BATS_TEST_TMPDIR/two/adapter_model.safetensors" "$BATS_TEST_TMPDIR/one/adapter_model.safetensors" --atol 2e-3 --rtol 2e-2
}

@test "dp: interrupted on 2 GPUs, resumed on 1" {
    run "$BIN/train" "${args[@]}" --out "$BATS_TEST_TMPDIR/cut" --plan "$BATS_TEST_TMPDIR/plan.json" --interrupt-after 4
    [ "$status" -eq 130 ]
    [ -d "$BATS_TEST_TMPDIR/cut/checkpoint-4" ]
    "$BIN/train" "${args[@]}" --out "$BATS_TEST_TMPDIR/cut" --resume
    "$BIN/train" "${args[@]}" --out "$BATS_TEST_TMPDIR/one"
    "$ROOT/build/test-tools/st_diff" "$BATS_TEST_TMPDIR/cut/adapter_model.safetensors" "$BATS_TEST_TMPDIR/one/adapter_model.safetensors" --atol 2e-3 --rtol 2e-2
}

@test "dp: a rank that dies stops the others with a clear message" {
    "$BIN/pack" --batch-size 2 --accum 2 --epochs 3000 --seed 1 --keep-empty -o "$BATS_TEST_TMPDIR/long.pack" "$GOLD/untied-qkvo/data.jsonl"
    "$BIN/train" --device cuda --model "$GOLD/untied-qkvo/model" --data "$BATS_TEST_TMPDIR/long.pack" --out "$BATS_TEST_TMPDIR/k" \
        --plan "$BATS_TEST_TMPDIR/plan.json" --quiet --save-steps 50 2> "$BATS_TEST_TMPDIR/err" & pid=$!
    sleep 5
    victim=$(pgrep -P $pid | tail -n 1)
    [ -n "$victim" ] || skip "the run ended before a rank could be killed"
    kill -9 "$victim"
    st=0; wait $pid || st=$?
    [ "$st" -eq 1 ]
    grep -q "rank .* failed" "$BATS_TEST_TMPDIR/err"
}
