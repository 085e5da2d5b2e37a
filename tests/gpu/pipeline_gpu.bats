#!/usr/bin/env bats
# Pipelined layer stages on the CUDA backend. Two or three stages may share one
# GPU (a plan may place them so), which lets a one-GPU machine run the stage
# code: the stages' messages and collectives go through host memory either way.
# A stage runs the whole model's arithmetic on its layers and the bf16 stage
# input crosses the wire unchanged, so the adapter must equal the one-process
# run's bit for bit (cmp), as on the CPU (tests/bats/pipeline_cpu.bats).
load ../bats/helpers
load ../bats/ranks

GOLD="$FIX/train"
M4="$GOLD/pipeline-4layer"
DIFF="$ROOT/build/test-tools/st_diff"
export LORAPIPE_COMM_TIMEOUT=60

setup() {
    nvidia-smi -L >/dev/null 2>&1 || skip "no NVIDIA GPU visible"
    clear_rank_env
    T="$BATS_TEST_TMPDIR"
    "$BIN/pack" --batch-size 2 --accum 4 --epochs 3 --seed 42 --order group_by_length --keep-empty -o "$T/u.pack" \
        "$GOLD/untied-qkvo/data.jsonl"
}

# R replicas cut at BOUNDS, every place on GPU 0.
make_plan() {  # out replicas bounds model
    "$BIN/shard-plan" --model "$4" --gpus 1x80GiB -o "$T/base.json" 2>/dev/null
    jq --argjson R "$2" --argjson B "[$3]" '
        ($B | length - 1) as $S
        | .replicas = $R | .stages_per_replica = $S | .memory_cap_bytes = 0
        | .gpus = [range(0; $R * $S) | {index: ., name: "shared", memory_bytes: 85899345920, usable_bytes: 85899345920}]
        | .placement = [range(0; $R) as $r | range(0; $S) as $s
                        | {replica: $r, stage: $s, gpu: 0, layers: [$B[$s], $B[$s + 1]],
                           embedding: ($s == 0), head: ($s == $S - 1)}]' "$T/base.json" > "$1"
}

@test "gpu pipeline: 2 and 3 stages on one GPU give the one-process adapter bit for bit, with dropout and evaluation" {
    "$BIN/pack" --batch-size 2 --seed 1 --keep-empty -o "$T/ev.pack" "$GOLD/untied-qkvo/eval.jsonl"
    a=(--device cuda --model "$M4" --data "$T/u.pack" --lora-dropout 0.1 --seed 7 --quiet --eval-data "$T/ev.pack"
       --eval-steps 3)
    "$BIN/train" "${a[@]}" --out "$T/one"
    [ "$(jq -s '[.[] | select(.eval_loss != null)] | length' "$T/one/metrics.jsonl")" -ge 2 ]
    for b in "0,2,4" "0,1,3,4"; do
        make_plan "$T/p.json" 1 "$b" "$M4"
        run "$BIN/train" "${a[@]}" --out "$T/st" --plan "$T/p.json"
        [ "$status" -eq 0 ] || { echo "$output"; false; }
        cmp "$T/st/adapter_model.safetensors" "$T/one/adapter_model.safetensors"
        diff <(jq -c 'del(.tokens_per_s, .elapsed_s)' "$T/st/metrics.jsonl") \
             <(jq -c 'del(.tokens_per_s, .elapsed_s)' "$T/one/metrics.jsonl")
        rm -rf "$T/st"
    done
}

@test "gpu pipeline: recompute, and a tied model (the last stage keeps its own lm_head copy)" {
    "$BIN/pack" --batch-size 2 --accum 2 --seed 1 --keep-empty -o "$T/t.pack" "$GOLD/tied-all-rslora/data.jsonl"
    a=(--device cuda --model "$GOLD/tied-all-rslora/model" --data "$T/t.pack" --target all --quiet --recompute)
    "$BIN/train" "${a[@]}" --out "$T/one"
    make_plan "$T/p.json" 1 "0,1,2" "$GOLD/tied-all-rslora/model"
    run "$BIN/train" "${a[@]}" --out "$T/st" --plan "$T/p.json"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    cmp "$T/st/adapter_model.safetensors" "$T/one/adapter_model.safetensors"
}

@test "gpu pipeline: CUDA stages follow the CPU stages within bf16 tolerance" {
    make_plan "$T/p.json" 1 "0,2,4" "$M4"
    a=(--model "$M4" --data "$T/u.pack" --lora-dropout 0 --quiet --plan "$T/p.json")
    "$BIN/train" --device cuda "${a[@]}" --out "$T/gpu"
    "$BIN/train" --device cpu --threads 2 "${a[@]}" --out "$T/cpu"
    "$DIFF" "$T/gpu/adapter_model.safetensors" "$T/cpu/adapter_model.safetensors" --atol 1e-2 --rtol 5e-2
}

@test "gpu pipeline: stages with host offload (each stage streams its own layers) give the one-process adapter bit for bit" {
    a=(--device cuda --model "$M4" --data "$T/u.pack" --lora-dropout 0.1 --seed 3 --quiet)
    "$BIN/train" "${a[@]}" --out "$T/one"
    # a one-layer stage (one slot), stages starting on odd layers (slot parity), three stages
    for b in "0,1,4" "0,3,4" "0,1,3,4"; do
        make_plan "$T/p.json" 1 "$b" "$M4"
        run "$BIN/train" "${a[@]}" --out "$T/st" --plan "$T/p.json" --offload
        [ "$status" -eq 0 ] || { echo "$output"; false; }
        cmp "$T/st/adapter_model.safetensors" "$T/one/adapter_model.safetensors"
        rm -rf "$T/st"
    done
    # the plan may say so itself
    make_plan "$T/p.json" 1 "0,2,4" "$M4"
    jq '.host_offload = true | .recompute = true' "$T/p.json" > "$T/po.json"
    run "$BIN/train" "${a[@]}" --out "$T/st" --plan "$T/po.json"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    cmp "$T/st/adapter_model.safetensors" "$T/one/adapter_model.safetensors"
}
