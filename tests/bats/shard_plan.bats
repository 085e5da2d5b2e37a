#!/usr/bin/env bats
# tools/shard-plan and train --plan on the CPU machine: plans, refusals, and
# the launcher's error path (the GPU side is tests/gpu/dp_gpu.bats).
load helpers

M="$FIX/train/untied-qkvo/model"

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
    mkdir -p "$BATS_TEST_TMPDIR/q7"
    cat > "$BATS_TEST_TMPDIR/q7/config.json" <<'J'
{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 4096,
 "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
 "vocab_size": 151936, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": false,
 "torch_dtype": "bfloat16", "use_sliding_window": false}
J
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
    [ "$(printf '%s\n' "$output" | wc -l)" -eq 1 ]
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

@test "train --plan: several replicas on the CPU fail cleanly through the launcher" {
    "$BIN/shard-plan" --model "$M" --gpus 2x24GiB --pack "$BATS_TEST_TMPDIR/u.pack" -o "$BATS_TEST_TMPDIR/p.json" 2>/dev/null
    run timeout 60 "$BIN/train" --device cpu --model "$M" --data "$BATS_TEST_TMPDIR/u.pack" --out "$BATS_TEST_TMPDIR/o" --plan "$BATS_TEST_TMPDIR/p.json"
    [ "$status" -eq 1 ]
    [[ "$output" == *"needs --device cuda"* ]]
    [[ "$output" == *"rank "*" failed"* ]]
    [ -z "$(ls -A "$BATS_TEST_TMPDIR/o")" ]
}
