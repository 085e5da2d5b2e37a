#!/usr/bin/env bats
# The embedded default (bin/demo-init), the loss plot (bin/plot-loss) and
# pipelines/finetune.mk run on them: every stage's output, the loss falling,
# the exported folder usable, and Make's dependency tracking.
load helpers

PIPE() { make --no-print-directory -C "$ROOT" -f pipelines/finetune.mk "$@"; }

# One pipeline run for the whole file, shorter than `make demo` (3 epochs).
setup_file() {
    export D="$BATS_FILE_TMPDIR/demo" R="$BATS_FILE_TMPDIR/run"
    "$ROOT/bin/demo-init" --out "$D" 2>/dev/null
    export SET="MODEL=$D/model DATA=$D/data.json OUT=$R DEVICE=cpu LR=3e-3 LORA_R=16 TARGET=all EPOCHS=3 BATCH=4 ACCUM=2 SAVE_STEPS=0"
    make --no-print-directory -C "$ROOT" -f pipelines/finetune.mk $SET > "$BATS_FILE_TMPDIR/first.log" 2>&1
}

# png_ok FILE W H: PNG signature, then an IHDR chunk of W x H.
png_ok() {
    [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || { echo "$1: no PNG signature"; return 1; }
    [ "$(dd if="$1" bs=1 skip=12 count=4 2>/dev/null)" = IHDR ] || { echo "$1: no IHDR"; return 1; }
    local w h
    w=$((16#$(dd if="$1" bs=1 skip=16 count=4 2>/dev/null | od -An -tx1 | tr -d ' \n')))
    h=$((16#$(dd if="$1" bs=1 skip=20 count=4 2>/dev/null | od -An -tx1 | tr -d ' \n')))
    [ "$w" -eq "$2" ] && [ "$h" -eq "$3" ] || { echo "$1: ${w}x${h}, expected $2x$3"; return 1; }
}

@test "demo-init: --help, usage errors, an existing --out" {
    run "$BIN/demo-init" --help
    [ "$status" -eq 0 ] && [[ "$output" == *"--seed N"* ]]
    run "$BIN/demo-init"
    [ "$status" -eq 2 ] && [[ "$output" == *"--out DIR is required"* ]]
    run "$BIN/demo-init" --out x --hidden 60 --heads 8
    [ "$status" -eq 2 ]
    run "$BIN/demo-init" --out x --dtype fp8
    [ "$status" -eq 2 ]
    run "$BIN/demo-init" --out "$D"
    [ "$status" -eq 1 ] && [[ "$output" == *"already exists"* ]]
    # a trailing slash names the same folder; its parents are created
    "$BIN/demo-init" --out "$(scratch)/a/b/" --records 10 2>/dev/null
    [ -s "$(scratch)/a/b/data.json" ] && [ -s "$(scratch)/a/b/model/model.safetensors" ]
    no_leftovers "$(scratch)/a"
}

@test "demo-init: the same seed gives byte-identical files, another seed other ones" {
    S=$(scratch)
    "$BIN/demo-init" --out "$S/a" 2>/dev/null
    diff -r "$S/a" "$D"
    "$BIN/demo-init" --out "$S/b" --seed 7 2>/dev/null
    ! cmp -s "$S/b/data.json" "$D/data.json"
    ! cmp -s "$S/b/model/model.safetensors" "$D/model/model.safetensors"
    no_leftovers "$S"
}

@test "demo-init: a Qwen2 folder the tools accept; the tokenizer round-trips the data" {
    [ "$(jq -r '.model_type, .tie_word_embeddings, .vocab_size' "$D/model/config.json" | tr '\n' ' ')" = "qwen2 true 512 " ]
    [ "$(jq length "$D/data.json")" -eq 320 ]
    [ "$(jq -r '.[0] | keys | join(",")' "$D/data.json")" = "input,instruction,output" ]
    # every model token and special in the tokenizer, ChatML specials last
    [ "$(jq -r '.added_tokens | map(.content) | join(" ")' "$D/model/tokenizer.json")" = "<|endoftext|> <|im_start|> <|im_end|>" ]
    [ "$(jq '.added_tokens[-1].id' "$D/model/tokenizer.json")" -eq 511 ]
    # tokenize -> decode gives the ChatML text back, with the template's default system turn
    run bash -c "'$BIN/tokenize' -q --tokenizer '$D/model' '$D/data.json' | head -n 1 | '$BIN/tokenize' --tokenizer '$D/model' --decode | jq -r .text"
    [ "$status" -eq 0 ]
    [[ "$output" == "<|im_start|>system"*"You are a helpful assistant.<|im_end|>"* ]]
    [[ "$output" == *"<|im_start|>assistant"* ]]
    run "$BIN/shard-plan" --model "$D/model" --gpus 1x24GiB
    [ "$status" -eq 0 ]
}

@test "demo-init --untied: a separate lm_head the trainer loads" {
    S=$(scratch)
    "$BIN/demo-init" --out "$S/u" --untied --dtype fp32 --records 40 2>/dev/null
    [ "$(jq .tie_word_embeddings "$S/u/model/config.json")" = false ]
    [ "$(jq -r .torch_dtype "$S/u/model/config.json")" = float32 ]
    "$BIN/tokenize" -q -t "$S/u/model" "$S/u/data.json" | "$BIN/pack" --batch-size 4 -o "$S/u.pack"
    "$BIN/train" --device cpu --model "$S/u/model" --data "$S/u.pack" --out "$S/run" --max-steps 2 --quiet
    [ "$(wc -l < "$S/run/metrics.jsonl")" -eq 2 ]
}

@test "demo tokenizer: bin/tokenize gives Hugging Face tokenizers' ids (data records, hard-text corpus)" {
    # reference: tests/golden/tokenize_demo.py (the Rust library on the same tokenizer.json)
    S=$(scratch)
    { "$BIN/tokenize" -q -t "$D/model" "$D/data.json"
      "$BIN/tokenize" -q -t "$D/model" -f text "$FIX/tokenize/hard_strings.jsonl"; } | jq -c '{input_ids, labels}' > "$S/ours.jsonl"
    zstd -dc "$FIX/tokenize/demo_expected.jsonl.zst" > "$S/hf.jsonl"
    [ "$(wc -l < "$S/hf.jsonl")" -eq 809 ]
    cmp "$S/ours.jsonl" "$S/hf.jsonl" || { diff <(head -c 2000 "$S/ours.jsonl") <(head -c 2000 "$S/hf.jsonl"); false; }
}

@test "plot-loss: a valid PNG, the summary, bad input" {
    S=$(scratch)
    printf '%s\n' '{"step":1,"loss":6.5}' '{"step":2,"loss":5.0}' '{"step":2,"eval_loss":5.5}' '{"step":3,"loss":2.25}' > "$S/m.jsonl"
    run "$BIN/plot-loss" "$S/m.jsonl" -o "$S/l.png" --width 640 --height 360
    [ "$status" -eq 0 ]
    [[ "$output" == *"3 steps; loss 6.5 at step 1 -> 2.25 at step 3"* ]]
    png_ok "$S/l.png" 640 360
    # standard input, default size
    run bash -c "'$BIN/plot-loss' -o '$S/s.png' < '$S/m.jsonl'"
    [ "$status" -eq 0 ]
    png_ok "$S/s.png" 800 480
    if command -v file >/dev/null; then [[ "$(file "$S/l.png")" == *"PNG image data, 640 x 360"* ]]; fi
    run "$BIN/plot-loss" --help
    [ "$status" -eq 0 ]
    run "$BIN/plot-loss" --width 10 "$S/m.jsonl"
    [ "$status" -eq 2 ]
    printf '{"step":1,"loss":1}\nnot json\n' > "$S/bad.jsonl"
    run "$BIN/plot-loss" "$S/bad.jsonl" -o "$S/bad.png"
    [ "$status" -eq 1 ] && [[ "$output" == *"bad.jsonl: line 2"* ]]
    echo '{"step":1,"eval_loss":1}' > "$S/noloss.jsonl"
    run "$BIN/plot-loss" "$S/noloss.jsonl" -o "$S/bad.png"
    [ "$status" -eq 1 ]
    [ ! -e "$S/bad.png" ]
    no_leftovers "$S"
}

@test "pipeline on the demo: every stage's output and log, the summary" {
    cat "$BATS_FILE_TMPDIR/first.log"
    for s in tokenize pack shard-plan train merge export plot-loss; do
        grep -q "^\[finetune\] $s -> " "$BATS_FILE_TMPDIR/first.log"
        [ -e "$R/logs/$s.log" ]
    done
    [ -s "$R/tokens.jsonl" ] && [ -s "$R/train.pack" ] && [ -s "$R/plan.json" ] && [ -s "$R/merged.safetensors" ]
    [ -s "$R/adapter/adapter_model.safetensors" ] && [ -s "$R/adapter/adapter_config.json" ]
    [ "$(jq -r .r "$R/adapter/adapter_config.json")" -eq 16 ]
    [ "$(wc -l < "$R/tokens.jsonl")" -eq 320 ]
    [ "$(jq -r .format "$R/plan.json")" = lorapipe-plan ]
    grep -q "loss curve  $R/loss.png" "$BATS_FILE_TMPDIR/first.log"
    grep -q "^  loss        .* at step 1 -> .* at step 120" "$BATS_FILE_TMPDIR/first.log"
    png_ok "$R/loss.png" 800 480
    no_leftovers "$R"
}

@test "pipeline on the demo: the loss falls clearly" {
    # mean of the first 5 steps vs the last 10: at least 40 % lower
    jq -s -e '[.[] | .loss // empty] as $l | ($l[-10:] | add / length) < 0.6 * ($l[0:5] | add / length)' \
        "$R/adapter/metrics.jsonl" || { jq -c '[.step, .loss]' "$R/adapter/metrics.jsonl" | head -n 20; false; }
    run "$BIN/plot-loss" "$R/adapter/metrics.jsonl" -o "$(scratch)/l.png"
    [[ "$output" == *"120 steps"* ]]
}

@test "pipeline on the demo: the exported folder is a model the tools load" {
    ls "$R/hf"
    [ -s "$R/hf/model.safetensors" ] && [ -s "$R/hf/tokenizer.json" ] && [ -s "$R/hf/generation_config.json" ]
    cmp "$R/hf/tokenizer.json" "$D/model/tokenizer.json"
    [ "$(jq -r .torch_dtype "$R/hf/config.json")" = bfloat16 ]
    # the merged weights differ from the base where LoRA applied
    run "$ROOT/build/test-tools/st_diff" "$R/hf/model.safetensors" "$D/model/model.safetensors"
    [ "$status" -ne 0 ]
    # train loads it (two steps) and the adapter merges into it again
    "$BIN/train" --device cpu --model "$R/hf" --data "$R/train.pack" --out "$(scratch)/t" --max-steps 2 --quiet
    [ "$(wc -l < "$(scratch)/t/metrics.jsonl")" -eq 2 ]
    "$BIN/merge" --model "$R/hf" --adapter "$R/adapter" -o "$(scratch)/m.safetensors"
    "$BIN/shard-plan" --model "$R/hf" --gpus 1x24GiB -o "$(scratch)/p.json" 2>/dev/null
}

@test "pipeline on the demo: a rerun does nothing; a new LR reruns train and what follows only" {
    run PIPE $SET
    [ "$status" -eq 0 ]
    ! grep -E '^\[finetune\] [a-z-]+ -> ' <<<"$output"
    PIPE -q $SET "$R/hf/config.json" "$R/loss.png"
    sleep 1   # mtime granularity
    run PIPE $SET LR=2e-3
    [ "$status" -eq 0 ]
    echo "$output"
    [[ "$output" != *"[finetune] tokenize"* && "$output" != *"[finetune] pack"* && "$output" != *"[finetune] shard-plan"* ]]
    [[ "$output" == *"[finetune] train"* && "$output" == *"[finetune] merge"* && "$output" == *"[finetune] export"* && "$output" == *"[finetune] plot-loss"* ]]
    grep -q -- "--lr 2e-3" "$R/params/train"
    # a new batch size repacks but does not retokenize
    run PIPE $SET LR=2e-3 BATCH=8 MAX_STEPS=3
    [[ "$output" != *"[finetune] tokenize"* && "$output" == *"[finetune] pack"* && "$output" == *"[finetune] train"* ]]
}

@test "pipeline: missing MODEL or DATA is a one-line usage error; help lists the settings" {
    run make --no-print-directory -C "$ROOT" -f pipelines/finetune.mk DATA=x
    [ "$status" -ne 0 ] && [[ "$output" == *"MODEL is not set"* ]]
    run PIPE help
    [ "$status" -eq 0 ] && [[ "$output" == *"LORA_ALPHA = 32"* ]] && [[ "$output" == *"ACCUM = 16"* ]]
}
