#!/usr/bin/env bats
# tools/train (CPU reference) against transformers' Trainer + PEFT goldens
# (tests/golden/train_tiny.py -> tests/fixtures/train/<case>/), plus resume,
# interruption and bad input.
load helpers

GOLD="$FIX/train"
DIFF="$ROOT/build/test-tools/st_diff"

# pack a golden case's data the way its Trainer run batched it
pack_case() {  # case out.pack
    local c=$1 s
    s=$(jq -c .settings "$GOLD/$c/expected.json")
    "$BIN/pack" --batch-size "$(jq .bs <<<"$s")" --accum "$(jq .ga <<<"$s")" --epochs "$(jq .epochs <<<"$s")" \
        --seed "$(jq .seed <<<"$s")" --order "$(jq -r .sampling <<<"$s")" --keep-empty -o "$2" "$GOLD/$c/data.jsonl"
}

train_case() {  # case pack out [extra args]
    local c=$1 p=$2 o=$3 s; shift 3
    s=$(jq -c .settings "$GOLD/$c/expected.json")
    local warm; warm=$(jq -r 'if .warmup < 1 then "--warmup-ratio \(.warmup)" else "--warmup-steps \(.warmup)" end' <<<"$s")
    "$BIN/train" --device cpu --model "$GOLD/$c/model" --data "$p" --out "$o" --init-adapter "$GOLD/$c/init_adapter" \
        --lora-dropout 0 --lr "$(jq .lr <<<"$s")" --schedule "$(jq -r .sched <<<"$s")" $warm \
        --weight-decay "$(jq .wd <<<"$s")" --max-grad-norm "$(jq .clip <<<"$s")" --seed "$(jq .seed <<<"$s")" \
        --quiet "$@"
}

# Per-step loss (1e-5 relative, the fp32 bar), grad_norm (1e-5 relative), lr (1e-9 relative).
compare_steps() {  # metrics.jsonl golden_steps.jsonl
    jq -s -e --slurpfile g "$2" '
        [ .[] | select(.loss != null) ] as $m
        | ($m | length) == ($g | length) and
          all(range(0; $m | length);
              ($m[.].loss - $g[.].loss | fabs) <= 1e-5 * ($g[.].loss | fabs) and
              ($m[.].grad_norm - $g[.].grad_norm | fabs) <= 1e-5 * ($g[.].grad_norm | fabs) + 1e-7 and
              ($m[.].lr - $g[.].learning_rate | fabs) <= 1e-9 * ($g[.].learning_rate | fabs) + 1e-15)' "$1" \
      || { paste <(jq -c '{step, loss, grad_norm, lr}' "$1") <(jq -c . "$2"); return 1; }
}

@test "train: --help and usage errors" {
    run "$BIN/train" --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"--init-adapter"* ]]
    run "$BIN/train" --model x
    [ "$status" -eq 2 ]
    run "$BIN/train" --model x --data y --out z --lora-dropout 2
    [ "$status" -eq 2 ]
    run "$BIN/train" --model x --data y --out z --target q_proj,lm_head
    [ "$status" -eq 2 ]
    [[ "$output" == *lm_head* ]]
}

@test "train: the pack holds the Trainer's group_by_length batches" {
    pack_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack"
    run bash -c "'$BIN/pack' --batches '$BATS_TEST_TMPDIR/u.pack' | jq -c '[.rows[][]]' | jq -s -c ."
    [ "$status" -eq 0 ]
    [ "$output" = "$(jq -c . "$GOLD/untied-qkvo/order.json")" ]
}

@test "train: untied q/k/v/o case matches the Trainer step for step (loss, grad_norm, lr, gradients, adapter)" {
    pack_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack"
    train_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/out" --debug-grads "$BATS_TEST_TMPDIR/g1.safetensors"
    compare_steps "$BATS_TEST_TMPDIR/out/metrics.jsonl" "$GOLD/untied-qkvo/steps.jsonl"
    "$DIFF" "$BATS_TEST_TMPDIR/g1.safetensors" "$GOLD/untied-qkvo/grads_step1.safetensors" --atol 1e-6 --rtol 1e-4
    "$DIFF" "$BATS_TEST_TMPDIR/out/adapter_model.safetensors" "$GOLD/untied-qkvo/final_adapter/adapter_model.safetensors" --atol 1e-6 --rtol 1e-4
    # adapter_config.json: PEFT's keys and values, except the base path we record
    diff <(jq 'del(.base_model_name_or_path) | .target_modules |= sort' "$BATS_TEST_TMPDIR/out/adapter_config.json") \
         <(jq 'del(.base_model_name_or_path) | .target_modules |= sort' "$GOLD/untied-qkvo/final_adapter/adapter_config.json")
}

@test "train: tied, all projections, rsLoRA, linear schedule, random order matches the Trainer" {
    pack_case tied-all-rslora "$BATS_TEST_TMPDIR/t.pack"
    train_case tied-all-rslora "$BATS_TEST_TMPDIR/t.pack" "$BATS_TEST_TMPDIR/out" --debug-grads "$BATS_TEST_TMPDIR/g1.safetensors"
    compare_steps "$BATS_TEST_TMPDIR/out/metrics.jsonl" "$GOLD/tied-all-rslora/steps.jsonl"
    "$DIFF" "$BATS_TEST_TMPDIR/g1.safetensors" "$GOLD/tied-all-rslora/grads_step1.safetensors" --atol 1e-6 --rtol 1e-4
    "$DIFF" "$BATS_TEST_TMPDIR/out/adapter_model.safetensors" "$GOLD/tied-all-rslora/final_adapter/adapter_model.safetensors" --atol 1e-6 --rtol 1e-4
}

@test "train: evaluation loss of the final adapter matches" {
    pack_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack"
    "$BIN/pack" --batch-size 2 --epochs 1 --order sequential --keep-empty -o "$BATS_TEST_TMPDIR/e.pack" "$GOLD/untied-qkvo/eval.jsonl"
    train_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/out" --eval-data "$BATS_TEST_TMPDIR/e.pack"
    want=$(jq .eval_loss "$GOLD/untied-qkvo/expected.json")
    jq -s -e --argjson w "$want" '[.[] | select(.eval_loss)] | last | (.eval_loss - $w | fabs) <= 1e-5 * $w' "$BATS_TEST_TMPDIR/out/metrics.jsonl"
}

@test "train: --resume after an interruption gives the same adapter, bit for bit" {
    pack_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack"
    train_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/full"
    run train_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/cut" --interrupt-after 5
    [ "$status" -eq 130 ]
    [ -d "$BATS_TEST_TMPDIR/cut/checkpoint-5" ]
    [ ! -e "$BATS_TEST_TMPDIR/cut/adapter_model.safetensors" ]
    train_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack" "$BATS_TEST_TMPDIR/cut" --resume
    cmp "$BATS_TEST_TMPDIR/full/adapter_model.safetensors" "$BATS_TEST_TMPDIR/cut/adapter_model.safetensors"
    # metrics continue as if uninterrupted
    [ "$(jq -s length "$BATS_TEST_TMPDIR/cut/metrics.jsonl")" -eq 12 ]
    diff <(jq -c '{step, loss, grad_norm, lr}' "$BATS_TEST_TMPDIR/full/metrics.jsonl") \
         <(jq -c '{step, loss, grad_norm, lr}' "$BATS_TEST_TMPDIR/cut/metrics.jsonl")
}

@test "train: a real SIGTERM writes a checkpoint and exits; resume finishes identically" {
    # A long run (many epochs of the tiny data) so that the signal lands mid-way.
    "$BIN/pack" --batch-size 2 --accum 1 --epochs 100 --seed 1 --keep-empty -o "$BATS_TEST_TMPDIR/long.pack" "$GOLD/untied-qkvo/data.jsonl"
    args=(--device cpu --model "$GOLD/untied-qkvo/model" --data "$BATS_TEST_TMPDIR/long.pack" --lora-dropout 0.1 --quiet --save-steps 0)
    "$BIN/train" "${args[@]}" --out "$BATS_TEST_TMPDIR/full"
    train_interrupted "$BATS_TEST_TMPDIR/cut" 1 TERM
    ls "$BATS_TEST_TMPDIR/cut" | grep -q '^checkpoint-'
    "$BIN/train" "${args[@]}" --out "$BATS_TEST_TMPDIR/cut" --resume
    cmp "$BATS_TEST_TMPDIR/full/adapter_model.safetensors" "$BATS_TEST_TMPDIR/cut/adapter_model.safetensors"
}

@test "train: seeded PEFT init and dropout are reproducible" {
    "$BIN/pack" --batch-size 4 --epochs 1 -o "$BATS_TEST_TMPDIR/p.pack" "$GOLD/untied-qkvo/data.jsonl"
    a=(--device cpu --model "$GOLD/untied-qkvo/model" --data "$BATS_TEST_TMPDIR/p.pack" --quiet --lora-dropout 0.2 --seed 3)
    "$BIN/train" "${a[@]}" --out "$BATS_TEST_TMPDIR/a"
    "$BIN/train" "${a[@]}" --out "$BATS_TEST_TMPDIR/b"
    cmp "$BATS_TEST_TMPDIR/a/adapter_model.safetensors" "$BATS_TEST_TMPDIR/b/adapter_model.safetensors"
    jq -e '.r == 8 and .lora_alpha == 32 and .lora_dropout == 0.2 and .peft_type == "LORA"' "$BATS_TEST_TMPDIR/a/adapter_config.json"
}

@test "train: token ids beyond the vocabulary are refused before training" {
    echo '{"input_ids":[1,2,500],"labels":[-100,2,500]}' > "$BATS_TEST_TMPDIR/big.jsonl"
    "$BIN/pack" --batch-size 1 --epochs 1 -o "$BATS_TEST_TMPDIR/big.pack" "$BATS_TEST_TMPDIR/big.jsonl"
    run "$BIN/train" --device cpu --model "$GOLD/untied-qkvo/model" --data "$BATS_TEST_TMPDIR/big.pack" --out "$BATS_TEST_TMPDIR/o"
    [ "$status" -eq 1 ]
    [[ "$output" == *"token id 500"*"vocabulary"* ]]
    [ ! -e "$BATS_TEST_TMPDIR/o/adapter_model.safetensors" ]
}

@test "train: a NaN loss stops with a clear message and keeps the last checkpoint" {
    cp -r "$GOLD/untied-qkvo/model" "$BATS_TEST_TMPDIR/m"
    f="$BATS_TEST_TMPDIR/m/model.safetensors"
    # model.norm.weight is the last tensor of the file: make it all NaN (0xff bytes)
    n=$(( $(stat -c %s "$f") - 256 ))
    head -c 256 /dev/zero | tr '\0' '\377' | dd of="$f" bs=1 seek=$n conv=notrunc status=none
    pack_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack"
    run "$BIN/train" --device cpu --model "$BATS_TEST_TMPDIR/m" --data "$BATS_TEST_TMPDIR/u.pack" --out "$BATS_TEST_TMPDIR/o" --quiet
    [ "$status" -eq 1 ]
    [[ "$output" == *"step 1"*"NaN"* ]]
    [ ! -e "$BATS_TEST_TMPDIR/o/adapter_model.safetensors" ]
}

@test "train: a pack that is not a pack, and a missing model, are one-line errors" {
    echo garbage > "$BATS_TEST_TMPDIR/x.pack"
    run "$BIN/train" --device cpu --model "$GOLD/untied-qkvo/model" --data "$BATS_TEST_TMPDIR/x.pack" --out "$BATS_TEST_TMPDIR/o"
    [ "$status" -eq 1 ]
    [[ "$output" == *x.pack* ]]
    [ "$(printf '%s\n' "$output" | wc -l)" -eq 1 ]
    pack_case untied-qkvo "$BATS_TEST_TMPDIR/u.pack"
    run "$BIN/train" --device cpu --model "$BATS_TEST_TMPDIR/nowhere" --data "$BATS_TEST_TMPDIR/u.pack" --out "$BATS_TEST_TMPDIR/o"
    [ "$status" -eq 1 ]
    [[ "$output" == *nowhere* ]]
}
