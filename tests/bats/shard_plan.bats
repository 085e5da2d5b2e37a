#!/usr/bin/env bats
# tools/shard-plan and train --plan on the CPU machine: plans, refusals, and
# the launcher's error path (the GPU side is tests/gpu/dp_gpu.bats).
load helpers

M="$FIX/train/untied-qkvo/model"

# The Qwen1.5-7B shape (config only: shard-plan reads nothing else).
q7_config() {
    mkdir -p "$BATS_TEST_TMPDIR/q7"
    cat > "$BATS_TEST_TMPDIR/q7/config.json" <<'J'
{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 4096,
 "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
 "vocab_size": 151936, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": false,
 "torch_dtype": "bfloat16", "use_sliding_window": false}
J
}

# What every plan with stages must hold (jq, given $cap in bytes): one entry per (replica, stage) on its
# own GPU, each replica's stages contiguous over [0, layers) and cut alike, the embedding on stage 0 only,
# the head on the last only, every stage under the cap, memory_per_gpu the worst stage's.
STAGED='.stages_per_replica as $S | .model.layers as $L
  | (.placement | length) == .replicas * $S
  and ([.placement[].gpu] | unique | length) == (.placement | length)
  and all(.placement[]; .embedding == (.stage == 0) and .head == (.stage == $S - 1)
                        and .layers[0] < .layers[1] and .memory.total < $cap)
  and (.placement | group_by(.replica) | map(sort_by(.stage) | map(.layers)) | unique | length) == 1
  and ([.placement[] | select(.replica == 0)] | sort_by(.stage) | . as $p
       | $p[0].layers[0] == 0 and $p[-1].layers[1] == $L
       and all(range(1; length); $p[.].layers[0] == $p[. - 1].layers[1]))
  and .memory_per_gpu.total == ([.placement[].memory.total] | max)
  and .memory_per_gpu.total == ([.placement[] | select(.head)][0].memory.total)
  and ([.placement[] | select(.head)][0].memory.logits_chunk > 0)
  and ([.placement[] | select(.head | not)] | all(.memory.logits_chunk == 0))
  and .predicted_tokens_per_s > 0'

setup() {
    "$BIN/pack" --batch-size 2 --accum 4 --epochs 1 --keep-empty -o "$BATS_TEST_TMPDIR/u.pack" "$FIX/train/untied-qkvo/data.jsonl" 2>/dev/null
}

@test "shard-plan: --help, usage errors" {
    run "$BIN/shard-plan" --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"--memory-cap"* ]]
    run "$BIN/shard-plan"
    [ "$status" -eq 2 ]
    run "$BIN/shard-plan" --model "$M" --gpus 2xlots
    [ "$status" -eq 2 ]
    run "$BIN/shard-plan" --model "$M" --gpus 2x24GiB --recompute maybe
    [ "$status" -eq 2 ]
}

@test "shard-plan: a plan for two GPUs, with the memory broken down and a prediction" {
    "$BIN/shard-plan" --model "$M" --gpus 2x24GiB --pack "$BATS_TEST_TMPDIR/u.pack" -o "$BATS_TEST_TMPDIR/p.json" 2> "$BATS_TEST_TMPDIR/why"
    jq -e '.format == "lorapipe-plan" and .version == 1 and .replicas == 2 and .stages_per_replica == 1
           and (.placement | length) == 2 and .placement[1].gpu == 1 and .placement[0].layers == [0, 2]
           and .memory_per_gpu.frozen_weights > 0 and .memory_per_gpu.lora_optimizer > 0
           and .memory_per_gpu.activations > 0 and .memory_per_gpu.logits_chunk > 0
           and .memory_per_gpu.total > .memory_per_gpu.allocated and .predicted_tokens_per_s > 0
           and .accum == 4 and .model.fingerprint == "qwen2 L=2 H=64 F=128 V=96 heads=4/2 d=16 tied=0"' "$BATS_TEST_TMPDIR/p.json"
    grep -q "data-parallel" "$BATS_TEST_TMPDIR/why"
}

@test "shard-plan: replicas follow the optimizer window" {
    "$BIN/pack" --batch-size 2 --accum 3 --epochs 1 --keep-empty -o "$BATS_TEST_TMPDIR/a3.pack" "$FIX/train/untied-qkvo/data.jsonl" 2>/dev/null
    "$BIN/shard-plan" --model "$M" --gpus 2x24GiB --pack "$BATS_TEST_TMPDIR/a3.pack" -o "$BATS_TEST_TMPDIR/p.json" 2>/dev/null
    jq -e '.replicas == 1' "$BATS_TEST_TMPDIR/p.json"
    run "$BIN/shard-plan" --model "$M" --gpus 2x24GiB --pack "$BATS_TEST_TMPDIR/a3.pack" --replicas 2
    [ "$status" -eq 1 ]
}

@test "shard-plan: the 7B shape on small cards chooses recompute, then host offload, and refuses what cannot fit" {
    q7_config
    "$BIN/shard-plan" --model "$BATS_TEST_TMPDIR/q7" --gpus 1x80GB --tokens 2048 --max-len 128 -o "$BATS_TEST_TMPDIR/a.json" 2>/dev/null
    # measured on an H200 (2026-11-29, 2,048-token windows): 23.82 GiB allocated, 24.41 GiB in use with the context
    jq -e '.recompute == false and (.memory_per_gpu.total / 1073741824) > 23.5 and (.memory_per_gpu.total / 1073741824) < 25.5' "$BATS_TEST_TMPDIR/a.json"
    "$BIN/shard-plan" --model "$BATS_TEST_TMPDIR/q7" --gpus 1x20GB --tokens 2048 --max-len 128 -o "$BATS_TEST_TMPDIR/b.json" 2>/dev/null
    jq -e '.recompute == true and .embedding_on_host == true' "$BATS_TEST_TMPDIR/b.json"
    # 8 GiB cards: the layers stay in host memory and stream through two device slots
    "$BIN/shard-plan" --model "$BATS_TEST_TMPDIR/q7" --gpus 2x8GiB --tokens 2048 --max-len 128 -o "$BATS_TEST_TMPDIR/c.json" 2>/dev/null
    jq -e '.recompute == true and .host_offload == true and .memory_per_gpu.total < 8 * 1073741824
           and .host_memory_bytes > 13 * 1073741824 and .predicted_tokens_per_s > 0' "$BATS_TEST_TMPDIR/c.json"
    run "$BIN/shard-plan" --model "$BATS_TEST_TMPDIR/q7" --gpus 2x3GiB --tokens 2048 --max-len 128
    [ "$status" -eq 1 ]
    [[ "$output" == *"does not fit"*"smallest memory that works is"* ]]
    [[ "$output" != *"not implemented"* ]]
    [ "$(printf '%s\n' "$output" | wc -l)" -eq 1 ]
    # without recompute, two 5 GiB cards cannot hold the 7B whole, nor cut in two: the refusal names the stages
    run "$BIN/shard-plan" --model "$BATS_TEST_TMPDIR/q7" --gpus 2x5GiB --tokens 2048 --max-len 128 --recompute off
    [ "$status" -eq 1 ]
    [[ "$output" == *"smallest memory that works is 1"*" GiB per GPU in 2 pipeline stages" ]]
}

@test "shard-plan: a 7B that fits no 12 GiB card alone is cut into pipeline stages" {
    q7_config
    local q="$BATS_TEST_TMPDIR/q7" cap=$((12 * 1073741824))
    "$BIN/shard-plan" --model "$q" --gpus 2x12GiB --tokens 2048 --max-len 128 --accum 4 -o "$BATS_TEST_TMPDIR/two.json" 2> "$BATS_TEST_TMPDIR/why"
    jq -e --argjson cap $cap "$STAGED"' and .replicas == 1 and .stages_per_replica == 2 and .host_offload == false
        and .placement[0].gpu == 0 and .placement[1].gpu == 1' "$BATS_TEST_TMPDIR/two.json"
    grep -q "chose 2 pipeline stages (layers 0-" "$BATS_TEST_TMPDIR/why"
    grep -q "one replica does not fit one GPU" "$BATS_TEST_TMPDIR/why"
    # the plan is one train accepts: shard-plan --check loads it as train --plan does
    run "$BIN/shard-plan" --check "$BATS_TEST_TMPDIR/two.json"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 1 ]
    jq -e --argjson p "$(cat "$BATS_TEST_TMPDIR/two.json")" '.replicas == 1 and .stages == 2 and .layers == 32
        and .bounds == [0, $p.placement[1].layers[0], 32] and .gpus == [0, 1]' <<< "$output"
    # four cards: more stages or more replicas, never slower than two
    "$BIN/shard-plan" --model "$q" --gpus 4x12GiB --tokens 2048 --max-len 128 --accum 4 -o "$BATS_TEST_TMPDIR/four.json" 2>/dev/null
    jq -e --argjson cap $cap --argjson two "$(jq .predicted_tokens_per_s "$BATS_TEST_TMPDIR/two.json")" "$STAGED"'
        and .stages_per_replica >= 2 and .replicas * .stages_per_replica <= 4 and .predicted_tokens_per_s > $two' "$BATS_TEST_TMPDIR/four.json"
    # where recompute makes it fit one 16 GiB card, the plan stays whole-model replicas
    "$BIN/shard-plan" --model "$q" --gpus 2x16GiB --tokens 2048 --max-len 128 --accum 4 -o "$BATS_TEST_TMPDIR/w.json" 2>/dev/null
    jq -e '.stages_per_replica == 1 and .replicas == 2 and .recompute == true and (.placement | length) == 2
        and .placement[1].memory == .memory_per_gpu' "$BATS_TEST_TMPDIR/w.json"
}

@test "shard-plan: --stages forces a pipeline, and more stages than GPUs or layers is a usage error" {
    q7_config
    local q="$BATS_TEST_TMPDIR/q7" cap=$((80 * 1000000000))
    "$BIN/shard-plan" --model "$q" --gpus 2x80GB --tokens 2048 --max-len 128 --stages 2 -o "$BATS_TEST_TMPDIR/s.json" 2> "$BATS_TEST_TMPDIR/why"
    jq -e --argjson cap $cap "$STAGED"' and .replicas == 1 and .stages_per_replica == 2 and .recompute == false' "$BATS_TEST_TMPDIR/s.json"
    grep -q -- "--stages 2" "$BATS_TEST_TMPDIR/why"
    "$BIN/shard-plan" --model "$q" --gpus 4x80GB --tokens 2048 --max-len 128 --accum 4 --stages 2 -o "$BATS_TEST_TMPDIR/s4.json" 2>/dev/null
    jq -e --argjson cap $cap "$STAGED"' and .replicas == 2 and .stages_per_replica == 2
        and [.placement[] | [.replica, .stage, .gpu]] == [[0, 0, 0], [0, 1, 1], [1, 0, 2], [1, 1, 3]]' "$BATS_TEST_TMPDIR/s4.json"
    run "$BIN/shard-plan" --model "$q" --gpus 2x80GB --stages 3
    [ "$status" -eq 2 ]
    [[ "$output" == *"--stages 3 but only 2 GPU(s)"* ]]
    run "$BIN/shard-plan" --model "$q" --gpus 40x80GB --stages 33
    [ "$status" -eq 2 ]
    [[ "$output" == *"only 32 layers"* ]]
    run "$BIN/shard-plan" --model "$q" --gpus 2x80GB --stages 0
    [ "$status" -eq 2 ]
    # two stages that cannot fit 3 GiB cards are refused with what the worst stage needs
    run "$BIN/shard-plan" --model "$q" --gpus 2x3GiB --tokens 2048 --max-len 128 --stages 2
    [ "$status" -eq 1 ]
    [[ "$output" == *"does not fit in 2 pipeline stages: the worst stage needs 3.19 GiB per GPU (with recompute and host offload"* ]]
}

@test "shard-plan: where neither one GPU with host offload nor a plain cut fits, the stages stream their own layers" {
    q7_config
    local q="$BATS_TEST_TMPDIR/q7" cap=$((4 * 1073741824))
    # one card with host offload needs 4.05 GiB (4.02 GiB seen on an H200); two 4 GiB cards take it in two
    # stages that each stream only their own layers
    "$BIN/shard-plan" --model "$q" --gpus 2x4GiB --tokens 2048 --max-len 128 --accum 4 -o "$BATS_TEST_TMPDIR/so.json" 2> "$BATS_TEST_TMPDIR/why"
    jq -e --argjson cap $cap "$STAGED"' and .replicas == 1 and .stages_per_replica == 2 and .host_offload == true
        and .recompute == true and .host_memory_bytes > 6 * 1073741824 and .host_memory_bytes < 8 * 1073741824' \
        "$BATS_TEST_TMPDIR/so.json"
    grep -q "one replica does not fit one GPU even with host offload; recompute, each stage's layers streamed from host memory" \
        "$BATS_TEST_TMPDIR/why"
    run "$BIN/shard-plan" --check "$BATS_TEST_TMPDIR/so.json"
    [ "$status" -eq 0 ]
    jq -e '.stages == 2 and .host_offload == true' <<< "$output"
    # four cards: more stages or more replicas of them, faster than two
    "$BIN/shard-plan" --model "$q" --gpus 4x4GiB --tokens 2048 --max-len 128 --accum 4 -o "$BATS_TEST_TMPDIR/so4.json" 2>/dev/null
    jq -e --argjson cap $cap --argjson two "$(jq .predicted_tokens_per_s "$BATS_TEST_TMPDIR/so.json")" "$STAGED"'
        and .host_offload == true and .stages_per_replica >= 2 and .replicas * .stages_per_replica <= 4
        and .predicted_tokens_per_s > $two' "$BATS_TEST_TMPDIR/so4.json"
    # where one card with host offload fits, the plan stays whole-model replicas
    "$BIN/shard-plan" --model "$q" --gpus 2x5GiB --tokens 2048 --max-len 128 --accum 4 -o "$BATS_TEST_TMPDIR/w.json" 2>/dev/null
    jq -e '.stages_per_replica == 1 and .replicas == 2 and .host_offload == true' "$BATS_TEST_TMPDIR/w.json"
    # and the refusal below that names the combination
    run "$BIN/shard-plan" --model "$q" --gpus 2x3GiB --tokens 2048 --max-len 128
    [ "$status" -eq 1 ]
    [[ "$output" == *"smallest memory that works is 3.19 GiB per GPU in 2 pipeline stages with recompute and host offload"* ]]
}

@test "train --plan and shard-plan --check: a broken placement is refused in one line naming the file and entry" {
    q7_config
    "$BIN/shard-plan" --model "$BATS_TEST_TMPDIR/q7" --gpus 4x80GB --tokens 2048 --max-len 128 --accum 4 --stages 2 \
        -o "$BATS_TEST_TMPDIR/p.json" 2>/dev/null
    local b="$BATS_TEST_TMPDIR/bad.json"
    refuse() {  # jq edit, expected message
        jq "$1" "$BATS_TEST_TMPDIR/p.json" > "$b"
        run "$BIN/train" --device cpu --model "$M" --data "$BATS_TEST_TMPDIR/u.pack" --out "$BATS_TEST_TMPDIR/o" --plan "$b"
        [ "$status" -eq 1 ] || { echo "train accepted '$1': $output"; return 1; }
        [[ "$output" == *"bad.json: "*"$2"* ]] || { echo "'$1': $output"; return 1; }
        [ "${#lines[@]}" -eq 1 ]
        run "$BIN/shard-plan" --check "$b"
        [ "$status" -eq 1 ]
        [[ "$output" == *"bad.json: "*"$2"* ]]
        [ ! -e "$BATS_TEST_TMPDIR/o/adapter_model.safetensors" ]
    }
    refuse '.placement[1].layers[0] += 1' '"placement"[1] (replica 0, stage 1): layers start at'
    refuse '.placement[1].stage = 0' '"placement"[1]: replica 0, stage 0 appears twice (also "placement"[0])'
    refuse '.placement[0].head = true' '"placement"[0] (replica 0, stage 0): "head" is true; only the last stage'
    refuse '.placement[1].embedding = true' '"embedding" is true; only stage 0 holds the embedding'
    refuse '.placement[3].layers = [.placement[3].layers[0] + 1, 32] | .placement[2].layers[1] += 1' \
        'every replica is cut alike'
    refuse 'del(.placement[3])' '"placement" has 3 entries'
    refuse '.placement[3].gpu = 4' '"gpu" must be an index into "gpus"'
    refuse '.placement[3].layers[1] = 31' 'the last stage ends at layer 31'
    refuse '.stages_per_replica = 3' '"placement" has 4 entries; 2 replicas x 3 stages'
    refuse '.model.layers = 31' '"model"."layers" is 31 but the fingerprint says L=32'
    refuse 'del(.model.layers)' '"model"."layers" is missing'
}

@test "shard-plan --check: two stages on one GPU (a pipeline tried on one card) load" {
    q7_config
    "$BIN/shard-plan" --model "$BATS_TEST_TMPDIR/q7" --gpus 2x80GB --tokens 2048 --max-len 128 --stages 2 -o "$BATS_TEST_TMPDIR/p.json" 2>/dev/null
    jq '.placement[1].gpu = 0 | .gpus = [.gpus[0]]' "$BATS_TEST_TMPDIR/p.json" > "$BATS_TEST_TMPDIR/one.json"
    run "$BIN/shard-plan" --check "$BATS_TEST_TMPDIR/one.json"
    [ "$status" -eq 0 ]
    jq -e '.stages == 2 and .replicas == 1 and .gpus == [0, 0] and .bounds[0] == 0 and .bounds[2] == 32' <<< "$output"
    run "$BIN/shard-plan" --check "$BATS_TEST_TMPDIR/missing.json"
    [ "$status" -eq 1 ]
    [[ "$output" == *"missing.json"* ]]
}

@test "train --plan: a plan for another model, or of another version, is refused" {
    "$BIN/shard-plan" --model "$FIX/train/tied-all-rslora/model" --gpus 1x24GiB -o "$BATS_TEST_TMPDIR/other.json" 2>/dev/null
    run "$BIN/train" --device cpu --model "$M" --data "$BATS_TEST_TMPDIR/u.pack" --out "$BATS_TEST_TMPDIR/o" --plan "$BATS_TEST_TMPDIR/other.json"
    [ "$status" -eq 1 ]
    [[ "$output" == *"plan is for another model"* ]]
    "$BIN/shard-plan" --model "$M" --gpus 1x24GiB -o "$BATS_TEST_TMPDIR/p.json" 2>/dev/null
    jq '.version = 2' "$BATS_TEST_TMPDIR/p.json" > "$BATS_TEST_TMPDIR/v2.json"
    run "$BIN/train" --device cpu --model "$M" --data "$BATS_TEST_TMPDIR/u.pack" --out "$BATS_TEST_TMPDIR/o" --plan "$BATS_TEST_TMPDIR/v2.json"
    [ "$status" -eq 1 ]
    [[ "$output" == *"version 2"* ]]
}

@test "train --plan: one replica trains as without a plan" {
    "$BIN/shard-plan" --model "$M" --gpus 1x24GiB --pack "$BATS_TEST_TMPDIR/u.pack" -o "$BATS_TEST_TMPDIR/p.json" 2>/dev/null
    "$BIN/train" --device cpu --model "$M" --data "$BATS_TEST_TMPDIR/u.pack" --out "$BATS_TEST_TMPDIR/a" --quiet --seed 3
    "$BIN/train" --device cpu --model "$M" --data "$BATS_TEST_TMPDIR/u.pack" --out "$BATS_TEST_TMPDIR/b" --quiet --seed 3 --plan "$BATS_TEST_TMPDIR/p.json"
    cmp "$BATS_TEST_TMPDIR/a/adapter_model.safetensors" "$BATS_TEST_TMPDIR/b/adapter_model.safetensors"
}

@test "train --plan: several replicas with --device cpu run as CPU ranks (the --ranks adapter bit for bit)" {
    "$BIN/shard-plan" --model "$M" --gpus 2x24GiB --pack "$BATS_TEST_TMPDIR/u.pack" -o "$BATS_TEST_TMPDIR/p.json" 2>/dev/null
    [ "$(jq .replicas "$BATS_TEST_TMPDIR/p.json")" -eq 2 ]
    run timeout 120 "$BIN/train" --device cpu --model "$M" --data "$BATS_TEST_TMPDIR/u.pack" --out "$BATS_TEST_TMPDIR/o" \
        --plan "$BATS_TEST_TMPDIR/p.json" --quiet --seed 3
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    "$BIN/train" --device cpu --model "$M" --data "$BATS_TEST_TMPDIR/u.pack" --out "$BATS_TEST_TMPDIR/r" --ranks 2 --quiet --seed 3
    cmp "$BATS_TEST_TMPDIR/o/adapter_model.safetensors" "$BATS_TEST_TMPDIR/r/adapter_model.safetensors"
}
