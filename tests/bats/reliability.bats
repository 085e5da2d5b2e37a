#!/usr/bin/env bats
# Bad input and interruptions across tools (docs/RELIABILITY.md, bad-input
# table): train and shard-plan refusals, limits found by fuzzing, a full disk
# (a real tmpfs), SIGINT, and kill -9 while checkpoints are being written.
load helpers

GOLD="$FIX/train"
M="$GOLD/untied-qkvo/model"
TINY="$FIX/tiny-models"

setup() {
    S=$(scratch)
    FULL="$S/full"
}

teardown() {
    if [ -n "${FULL:-}" ] && mountpoint -q "$FULL" 2> /dev/null; then umount "$FULL"; fi
}

# Progress and information lines of the tools (not errors).
INFO='^(tokenize: default system turn|train: (cpu backend|[0-9]+ optimizer|memory|start-up|step |resuming|--resume|removed))'

# A failed run: status 1, its last line names $1, no other line is an error,
# and $2 (the output) does not exist.
refused() {
    local what=$1 out=${2:-}
    [ "$status" -eq 1 ] || { echo "status $status: $output"; return 1; }
    [[ "${lines[-1]}" == *"$what"* ]] || { echo "expected '$what' in the last line: $output"; return 1; }
    [ "$(printf '%s\n' "$output" | grep -cvE "$INFO")" -eq 1 ] ||
        { echo "expected a one-line error: $output"; return 1; }
    [ -z "$out" ] || [ ! -e "$out" ] || { echo "$out was left behind"; return 1; }
}

small_pack() {  # out.pack [pack options]
    local o=$1; shift
    "$BIN/pack" --batch-size 2 --accum 1 --keep-empty "$@" -o "$o" "$GOLD/untied-qkvo/data.jsonl" 2> /dev/null
}

# ---- train and shard-plan: bad input ------------------------------------

@test "train: a pack of another format version is refused, naming the file and versions" {
    small_pack "$S/u.pack"
    cp "$S/u.pack" "$S/v2.pack"
    printf '\x02' | dd of="$S/v2.pack" bs=1 seek=8 conv=notrunc status=none     # version_major = 2
    run "$BIN/train" --device cpu --model "$M" --data "$S/v2.pack" --out "$S/o"
    refused "v2.pack" "$S/o/adapter_model.safetensors"
    [[ "$output" == *"version 2"* ]]
}

@test "train: a truncated pack and an empty file are one-line errors" {
    small_pack "$S/u.pack"
    head -c 1000 "$S/u.pack" > "$S/cut.pack"
    run "$BIN/train" --device cpu --model "$M" --data "$S/cut.pack" --out "$S/o"
    refused "cut.pack" "$S/o/adapter_model.safetensors"
    : > "$S/empty.pack"
    run "$BIN/train" --device cpu --model "$M" --data "$S/empty.pack" --out "$S/o"
    refused "empty.pack" "$S/o/adapter_model.safetensors"
}

@test "train: records with no target token at all are refused (nothing to train on)" {
    printf '{"input_ids":[1,2,3],"labels":[-100,-100,-100]}\n{"input_ids":[4,5],"labels":[4,-100]}\n' > "$S/e.jsonl"
    # position 0 is never a target (no token predicts it): the second record has none either
    "$BIN/pack" --keep-empty --batch-size 1 -o "$S/e.pack" "$S/e.jsonl" 2> /dev/null
    run "$BIN/train" --device cpu --model "$M" --data "$S/e.pack" --out "$S/o" --quiet
    refused "none of the 2 samples has a target token" "$S/o/adapter_model.safetensors"
}

@test "train: a model whose config.json is malformed, of another type or absurdly sized is refused" {
    small_pack "$S/u.pack"
    cp -r "$M" "$S/m"
    printf '{"model_type": "qwen2", ' > "$S/m/config.json"
    run "$BIN/train" --device cpu --model "$S/m" --data "$S/u.pack" --out "$S/o"
    refused "config.json" "$S/o/adapter_model.safetensors"
    jq '.model_type = "llama"' "$M/config.json" > "$S/m/config.json"
    run "$BIN/train" --device cpu --model "$S/m" --data "$S/u.pack" --out "$S/o"
    refused 'model_type "llama" is not supported'
    jq '.hidden_size = 1099511627776' "$M/config.json" > "$S/m/config.json"
    run "$BIN/train" --device cpu --model "$S/m" --data "$S/u.pack" --out "$S/o"
    refused '"hidden_size" = 1099511627776 is beyond the largest supported'
}

@test "train: truncated, lying or overlapping model safetensors are refused naming the tensor" {
    small_pack "$S/u.pack"
    cp -r "$M" "$S/m"
    f="$S/m/model.safetensors"
    head -c $(( $(stat -c %s "$M/model.safetensors") - 100 )) "$M/model.safetensors" > "$f"
    run "$BIN/train" --device cpu --model "$S/m" --data "$S/u.pack" --out "$S/o"
    refused "model.safetensors" "$S/o/adapter_model.safetensors"
    # overlapping offsets: the second tensor's data_offsets start inside the first's
    n=$(od -An -t u8 -N 8 "$M/model.safetensors" | tr -d ' ')
    hdr=$(dd if="$M/model.safetensors" bs=1 skip=8 count="$n" status=none)
    first=$(jq -r 'to_entries | map(select(.key != "__metadata__")) | sort_by(.value.data_offsets[0]) | .[1].key' <<< "$hdr")
    new=$(jq -c --arg k "$first" '.[$k].data_offsets |= [.[0] - 4, .[1] - 4]' <<< "$hdr")
    while [ ${#new} -lt "$n" ]; do new+=" "; done
    { dd if="$M/model.safetensors" bs=8 count=1 status=none; printf '%s' "$new";
      dd if="$M/model.safetensors" bs=1 skip=$((8 + n)) status=none; } > "$f"
    run "$BIN/train" --device cpu --model "$S/m" --data "$S/u.pack" --out "$S/o"
    refused "$first" "$S/o/adapter_model.safetensors"
}

@test "shard-plan: a malformed config, a model without weights and a pack that is not one are one-line errors" {
    mkdir -p "$S/m"
    printf '{"model_type": ' > "$S/m/config.json"
    run "$BIN/shard-plan" --model "$S/m" --gpus 1x24GiB -o "$S/p.json"
    refused "config.json" "$S/p.json"
    run "$BIN/shard-plan" --model "$S/nowhere" --gpus 1x24GiB -o "$S/p.json"
    refused "nowhere" "$S/p.json"
    echo garbage > "$S/x.pack"
    run "$BIN/shard-plan" --model "$M" --gpus 1x24GiB --pack "$S/x.pack" -o "$S/p.json"
    refused "x.pack" "$S/p.json"
    no_leftovers "$S"
}

@test "train --plan: a plan that is not JSON or lacks keys is refused naming the file" {
    small_pack "$S/u.pack"
    echo '{"format": "lorapipe-plan", "version": 1' > "$S/bad.json"
    run "$BIN/train" --device cpu --model "$M" --data "$S/u.pack" --out "$S/o" --plan "$S/bad.json"
    refused "bad.json" "$S/o/adapter_model.safetensors"
    echo '{"format": "lorapipe-plan", "version": 1, "model": {"fingerprint": "x"}}' > "$S/keys.json"
    run "$BIN/train" --device cpu --model "$M" --data "$S/u.pack" --out "$S/o" --plan "$S/keys.json"
    refused '"replicas" is missing'
}

# ---- limits found by fuzzing (docs/RELIABILITY.md, Fuzzing) ---------------

@test "tokenize: token ids of 2^24 or more in tokenizer.json are refused (no huge allocation)" {
    jq -c '.added_tokens[0].id = 2147483646' "$FIX/tokenize/tiny/tokenizer.json" > "$S/tokenizer.json"
    echo '{"text":"hi"}' > "$S/d.jsonl"
    run "$BIN/tokenize" --tokenizer "$S/tokenizer.json" -o "$S/out.jsonl" "$S/d.jsonl"
    refused "added_tokens[0] has id 2147483646 (ids must be below 16777216)" "$S/out.jsonl"
    jq -c '.model.vocab["!"] = 16777216' "$FIX/tokenize/tiny/tokenizer.json" > "$S/tokenizer.json"
    run "$BIN/tokenize" --tokenizer "$S/tokenizer.json" -o "$S/out.jsonl" "$S/d.jsonl"
    refused "has id 16777216" "$S/out.jsonl"
}

@test "tokenize: a Split regex that backtracks catastrophically fails fast with an error" {
    jq -c '.pre_tokenizer.pretokenizers[0].pattern.Regex = "(a|a)+$"' "$FIX/tokenize/tiny/tokenizer.json" > "$S/tokenizer.json"
    printf '{"text":"%sb"}\n' "$(printf 'a%.0s' $(seq 60))" > "$S/d.jsonl"
    run timeout 60 "$BIN/tokenize" --tokenizer "$S/tokenizer.json" -o "$S/out.jsonl" "$S/d.jsonl"
    refused "d.jsonl: line 1: the tokenizer's Split regex gives up on this record's text (over the match limit" "$S/out.jsonl"
    # The limit grows with the text: Qwen's pattern on a 2 MB run of spaces is one long match, not a refusal.
    { printf '{"text":"'; head -c 2000000 /dev/zero | tr '\0' ' '; printf 'x"}\n'; } > "$S/spaces.jsonl"
    "$BIN/tokenize" --tokenizer "$QWEN_TOK" -q -o "$S/spaces.out" "$S/spaces.jsonl"
    [ "$(jq '.input_ids | length' "$S/spaces.out")" -gt 1 ]
}

@test "merge: an adapter_config.json regex that backtracks catastrophically is refused at once" {
    cp -r "$TINY/lora-qkvo-r8" "$S/a"
    jq '.target_modules = "(.|.)*[!?]"' "$TINY/lora-qkvo-r8/adapter_config.json" > "$S/a/adapter_config.json"
    run timeout 20 "$BIN/merge" --model "$TINY/qwen2-tiny-untied-bf16" --adapter "$S/a" -o "$S/m.safetensors"
    refused 'target_modules regex "(.|.)*[!?]" backtracks catastrophically' "$S/m.safetensors"
    jq '.rank_pattern = {"(q": 4}' "$TINY/lora-qkvo-r8/adapter_config.json" > "$S/a/adapter_config.json"
    run "$BIN/merge" --model "$TINY/qwen2-tiny-untied-bf16" --adapter "$S/a" -o "$S/m.safetensors"
    refused 'rank_pattern regex "(q" does not compile' "$S/m.safetensors"
}

# ---- a full disk ----------------------------------------------------------

# Mount a 256 KiB tmpfs at $FULL, leaving $1 KiB free (skip where not permitted).
small_disk() {
    mkdir -p "$FULL"
    mount -t tmpfs -o size=256k tmpfs "$FULL" 2> /dev/null ||
        skip "cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN); the full-disk test did not run"
    local fill=$((256 - $1))
    [ "$fill" -le 0 ] || head -c "${fill}k" /dev/zero > "$FULL/.fill" 2> /dev/null || true
}

# The tool failed on the full disk: exit 1, one line "... FILE ...: No space
# left on device" (or the pattern $2), and no temporary left in $FULL.
disk_full() {  # name-in-message [pattern]
    local pat=${2:-No space left on device}
    [ "$status" -eq 1 ] || { echo "status $status: $output"; return 1; }
    [ "$(printf '%s\n' "$output" | grep -cE "$pat")" -eq 1 ] || { echo "$output"; return 1; }
    [[ "$(printf '%s\n' "$output" | grep -E "$pat")" == *"$1"* ]] || { echo "expected $1 in: $output"; return 1; }
    no_leftovers "$FULL"
}

@test "disk full: tokenize, pack, merge and export exit 1 naming the file and leave nothing partial" {
    small_disk 4
    run "$BIN/tokenize" --tokenizer "$QWEN_TOK" -o "$FULL/tok.jsonl" "$FIX/tokenize/hard_strings.jsonl"
    disk_full "tok.jsonl"
    [ ! -e "$FULL/tok.jsonl" ]
    run "$BIN/pack" --batch-size 2 -o "$FULL/x.pack" "$FIX/pack/small.jsonl"
    [ ! -e "$FULL/x.pack" ]
    disk_full "x.pack"
    run "$BIN/merge" --model "$TINY/qwen2-tiny-untied-bf16" --adapter "$TINY/lora-qkvo-r8" -o "$FULL/m.safetensors"
    disk_full "m.safetensors"
    [ ! -e "$FULL/m.safetensors" ]
    "$BIN/merge" --model "$TINY/qwen2-tiny-untied-bf16" --adapter "$TINY/lora-qkvo-r8" -o "$S/m.safetensors"
    # export measures the space first and refuses before writing; from a pipe
    # (size unknown until the end) it meets the full disk while writing.
    for out in "$FULL/folder" "$FULL/a.tar"; do
        run "$BIN/export" --model "$TINY/qwen2-tiny-untied-bf16" --weights "$S/m.safetensors" --out "$out"
        disk_full "$(basename "$out")" "not enough free space|No space left on device"
        [ ! -e "$out" ]
        run bash -c "cat '$S/m.safetensors' | '$BIN/export' --model '$TINY/qwen2-tiny-untied-bf16' --out '$out'"
        disk_full "$(basename "$out")" "not enough free space|No space left on device"
        [ ! -e "$out" ]
    done
    # Room for the weights' estimate but not for every file: export meets the
    # full disk while writing, names the file and removes its temporary folder.
    rm -f "$FULL/.fill"; head -c 26k /dev/zero > "$FULL/.fill"
    run "$BIN/export" --model "$TINY/qwen2-tiny-untied-bf16" --weights "$S/m.safetensors" --out "$FULL/folder"
    disk_full "folder"
    [ ! -e "$FULL/folder" ]
    [ "$(ls -A "$FULL")" = ".fill" ]
}

@test "disk full: train exits 1 naming the file; only whole checkpoints remain and --resume continues" {
    small_pack "$S/u.pack" --epochs 3
    mkdir -p "$S/o"
    # Room for one checkpoint (about 108 KiB on a tmpfs) but not two.
    small_disk 150
    args=(--device cpu --model "$M" --data "$S/u.pack" --quiet --save-steps 1 --save-total-limit 0)
    run "$BIN/train" "${args[@]}" --out "$FULL/run"
    disk_full "$FULL/run"
    [ ! -e "$FULL/run/adapter_model.safetensors" ]
    # The checkpoints left are complete; resuming from a copy elsewhere continues from the last one.
    n=0
    for c in "$FULL"/run/checkpoint-*; do
        [ -e "$c" ] || continue
        n=$((n + 1))
        for f in adapter_model.safetensors adapter_config.json optimizer.safetensors trainer_state.json; do
            [ -s "$c/$f" ] || { echo "$c/$f missing"; return 1; }
        done
    done
    [ "$n" -ge 1 ] || { echo "no checkpoint fitted: $(ls -A "$FULL/run")"; return 1; }
    cp -r "$FULL/run" "$S/resumed"
    run "$BIN/train" "${args[@]}" --out "$S/resumed" --resume
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
    [[ "$output" == *"resuming from $S/resumed/checkpoint-"* ]]
    [ -s "$S/resumed/adapter_model.safetensors" ]
}

# ---- interruptions --------------------------------------------------------

@test "train: SIGINT writes a checkpoint and exits 130; --resume finishes bit for bit" {
    small_pack "$S/long.pack" --epochs 100 --seed 1
    args=(--device cpu --model "$M" --data "$S/long.pack" --lora-dropout 0.1 --quiet --save-steps 0)
    "$BIN/train" "${args[@]}" --out "$S/full"
    train_interrupted "$S/cut" 1 INT
    [ "$(ls "$S/cut" | grep -c '^checkpoint-')" -eq 1 ]
    [ ! -e "$S/cut/adapter_model.safetensors" ]
    "$BIN/train" "${args[@]}" --out "$S/cut" --resume
    cmp "$S/full/adapter_model.safetensors" "$S/cut/adapter_model.safetensors"
}

@test "train: SIGINT while a checkpoint is being written (one every step) ends with a whole one; resume is identical" {
    small_pack "$S/long.pack" --epochs 20 --seed 1
    args=(--device cpu --model "$M" --data "$S/long.pack" --lora-dropout 0.1 --quiet --save-steps 1 --save-total-limit 2)
    "$BIN/train" "${args[@]}" --out "$S/full"
    train_interrupted "$S/cut" 0.7 INT
    [ -z "$(ls -A "$S/cut" | grep -E '\.tmp\.|\.old\.')" ]
    last=$(ls "$S/cut" | sed -n 's/^checkpoint-\([0-9]*\)$/\1/p' | sort -n | tail -n1)
    for f in adapter_model.safetensors adapter_config.json optimizer.safetensors trainer_state.json; do
        [ -s "$S/cut/checkpoint-$last/$f" ]
    done
    "$BIN/train" "${args[@]}" --out "$S/cut" --resume
    cmp "$S/full/adapter_model.safetensors" "$S/cut/adapter_model.safetensors"
}

@test "train: kill -9 at random moments while checkpoints are written; the last whole one always resumes" {
    small_pack "$S/long.pack" --epochs 20 --seed 1
    args=(--device cpu --model "$M" --data "$S/long.pack" --lora-dropout 0.1 --quiet --save-steps 1 --save-total-limit 2)
    "$BIN/train" "${args[@]}" --out "$S/full"
    RANDOM=7
    killed=0
    for round in 1 2 3 4 5 6; do
        "$BIN/train" "${args[@]}" --out "$S/cut" --resume 2> /dev/null & pid=$!
        sleep "0.$((RANDOM % 6 + 2))"
        kill -9 $pid 2> /dev/null && killed=$((killed + 1))
        wait $pid 2> /dev/null || true
        # No folder that looks like a checkpoint is incomplete.
        for c in "$S"/cut/checkpoint-*; do
            [ -e "$c" ] || continue
            [[ "$(basename "$c")" =~ ^checkpoint-[0-9]+$ ]] || continue
            for f in adapter_model.safetensors adapter_config.json optimizer.safetensors trainer_state.json; do
                [ -s "$c/$f" ] || { echo "round $round: $c/$f missing"; return 1; }
            done
        done
    done
    [ "$killed" -gt 0 ] || skip "every run finished before kill -9"
    # The next run removes what the killed ones left half-written, resumes from
    # the newest whole checkpoint and ends where the uninterrupted run ended.
    run "$BIN/train" "${args[@]}" --out "$S/cut" --resume
    [ "$status" -eq 0 ] || { echo "$output"; return 1; }
    [ -z "$(ls -A "$S/cut" | grep -E '\.tmp\.|\.old\.')" ]
    cmp "$S/full/adapter_model.safetensors" "$S/cut/adapter_model.safetensors"
    diff <(jq -c '{step, loss}' "$S/full/metrics.jsonl") <(jq -c '{step, loss}' "$S/cut/metrics.jsonl")
}

@test "train: a NaN after a checkpoint stops with a clear message; that checkpoint still resumes" {
    small_pack "$S/u.pack" --epochs 3
    # A learning rate this large makes step 2's loss non-finite after a normal step 1.
    run "$BIN/train" --device cpu --model "$M" --data "$S/u.pack" --out "$S/o" --quiet --save-steps 1 --lr 1e30 \
        --max-grad-norm 0 --warmup-steps 0 --schedule constant
    [ "$status" -eq 1 ]
    [[ "${lines[-1]}" == *"step 2: "*"stopping without applying it (last checkpoint: kept in --out)"* ]]
    [ -d "$S/o/checkpoint-1" ]
    [ ! -e "$S/o/adapter_model.safetensors" ]
    run "$BIN/train" --device cpu --model "$M" --data "$S/u.pack" --out "$S/o" --quiet --save-steps 1 --lr 1e30 \
        --max-grad-norm 0 --warmup-steps 0 --schedule constant --resume
    [[ "$output" == *"resuming from $S/o/checkpoint-1"* ]]
}
