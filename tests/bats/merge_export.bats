#!/usr/bin/env bats
# merge and export: byte-identity with PEFT merge_and_unload + save_pretrained
# (goldens made by tests/golden/make_tiny_models.py), archives, adapter export,
# and bad input (one line, exit 1, nothing left behind).
load helpers

T="$FIX/tiny-models"

setup() {
    S=$(scratch)
}

# le64 N: 8 bytes, little-endian.
le64() {
    local n=$1 i s=""
    for i in 0 1 2 3 4 5 6 7; do s+=$(printf '\\x%02x' $(((n >> (8 * i)) & 255))); done
    printf "$s"
}
# mk_st FILE HEADER DATA_BYTES [N]: a safetensors file with zeroed data
# (N overrides the stored header length).
mk_st() { { le64 "${4:-${#2}}"; printf '%s' "$2"; head -c "$3" /dev/zero; } > "$1"; }

# Every file of folder $1 equals the same file in $2 (and no file is missing).
same_folder() {
    local a=$1 b=$2 f
    [ "$(ls "$a" | sort)" = "$(ls "$b" | sort)" ] || { echo "files differ: $(ls "$a") vs $(ls "$b")"; return 1; }
    for f in "$b"/*; do cmp "$a/$(basename "$f")" "$f" || return 1; done
}

# A failed run: status 1, one line naming $1, and no output or temporaries in $S.
failed_cleanly() {
    [ "$status" -eq 1 ] || { echo "status $status: $output"; return 1; }
    [ "${#lines[@]}" -eq 1 ] || { echo "expected one line: $output"; return 1; }
    [[ "$output" == *"$1"* ]] || { echo "expected '$1' in: $output"; return 1; }
    [ ! -e "$S/out" ] || { echo "output left behind"; return 1; }
    no_leftovers "$S"
}

@test "merge and export: --help, usage errors" {
    run "$BIN/merge" --help
    [ "$status" -eq 0 ] && [[ "$output" == *"--adapter DIR"* ]]
    run "$BIN/export" --help
    [ "$status" -eq 0 ] && [[ "$output" == *"--max-shard-size"* ]]
    run "$BIN/merge" --model x
    [ "$status" -eq 2 ] && [[ "$output" == *"--adapter DIR is required"* ]]
    run "$BIN/merge" --model x --adapter y --dtype fp8
    [ "$status" -eq 2 ]
    run "$BIN/export" --model x --out y --max-shard-size 5XB
    [ "$status" -eq 2 ]
    run "$BIN/export" --model x --out y --dtype bf16
    [ "$status" -eq 2 ]
}

@test "merge | export = PEFT merge_and_unload + save_pretrained (bf16, untied, 3 shards), byte for byte" {
    run bash -c "'$BIN/merge' --model '$T/qwen2-tiny-untied-bf16' --adapter '$T/lora-qkvo-r8' |
                 '$BIN/export' --model '$T/qwen2-tiny-untied-bf16' --out '$S/out' --max-shard-size 100KB"
    [ "$status" -eq 0 ]
    same_folder "$S/out" "$T/merged-untied-bf16-qkvo"
    no_leftovers "$S"
}

@test "merge | export = PEFT (fp32, tied, rsLoRA on all 7 projections)" {
    run bash -c "'$BIN/merge' --model '$T/qwen2-tiny-tied-fp32' --adapter '$T/lora-all-rslora' |
                 '$BIN/export' --model '$T/qwen2-tiny-tied-fp32' --out '$S/out'"
    [ "$status" -eq 0 ]
    same_folder "$S/out" "$T/merged-tied-fp32-all-rslora"
}

@test "merge | export = PEFT (bf16, tied, rank_pattern and alpha_pattern)" {
    run bash -c "'$BIN/merge' --model '$T/qwen2-tiny-tied-bf16' --adapter '$T/lora-pattern' |
                 '$BIN/export' --model '$T/qwen2-tiny-tied-bf16' --out '$S/out'"
    [ "$status" -eq 0 ]
    same_folder "$S/out" "$T/merged-tied-bf16-pattern"
    # config.json equals the reference modulo transformers_version (here also that).
    diff <(jq -S 'del(.transformers_version)' "$S/out/config.json") \
         <(jq -S 'del(.transformers_version)' "$T/merged-tied-bf16-pattern/config.json")
}

@test "merge -o FILE, export --weights FILE; a sharded base model" {
    run "$BIN/merge" --model "$T/qwen2-tiny-untied-bf16" --adapter "$T/lora-qkvo-r8" -o "$S/m.safetensors"
    [ "$status" -eq 0 ]
    run "$BIN/export" --model "$T/qwen2-tiny-untied-bf16" --weights "$S/m.safetensors" --out "$S/out" -s 100KB
    [ "$status" -eq 0 ]
    same_folder "$S/out" "$T/merged-untied-bf16-qkvo"
    # The merged (sharded) folder is itself a valid base: merge reads shards.
    run bash -c "'$BIN/merge' --model '$T/merged-untied-bf16-qkvo' --adapter '$T/lora-qkvo-r8' |
                 '$BIN/export' --model '$T/merged-untied-bf16-qkvo' --out '$S/twice'"
    [ "$status" -eq 0 ]
    [ -f "$S/twice/model.safetensors" ] && ! cmp -s "$S/twice/model.safetensors" "$S/m.safetensors"
}

@test "merge --dtype fp32: config dtype follows the weights" {
    run bash -c "'$BIN/merge' --model '$T/qwen2-tiny-untied-bf16' --adapter '$T/lora-qkvo-r8' --dtype fp32 |
                 '$BIN/export' --model '$T/qwen2-tiny-untied-bf16' --out '$S/out'"
    [ "$status" -eq 0 ]
    [ "$(jq -r .dtype "$S/out/config.json")" = float32 ]
    # Twice the bytes of the bf16 file, give or take the header.
    a=$(stat -c %s "$S/out/model.safetensors"); b=$(stat -c %s "$T/qwen2-tiny-untied-bf16/model.safetensors")
    [ $((a - 2 * b)) -lt 4096 ] && [ $((2 * b - a)) -lt 4096 ]
}

@test "export copies tokenizer and generation files from the base folder" {
    [ -f "$QWEN_TOK/tokenizer.json" ] || skip "run make fixtures"
    cp -r "$T/qwen2-tiny-untied-bf16" "$S/base"
    cp "$QWEN_TOK/tokenizer.json" "$QWEN_TOK/tokenizer_config.json" "$S/base/"
    run bash -c "'$BIN/merge' --model '$S/base' --adapter '$T/lora-qkvo-r8' | '$BIN/export' --model '$S/base' --out '$S/out'"
    [ "$status" -eq 0 ]
    cmp "$S/out/tokenizer.json" "$QWEN_TOK/tokenizer.json"
    cmp "$S/out/tokenizer_config.json" "$QWEN_TOK/tokenizer_config.json"
    cmp "$S/out/generation_config.json" "$T/qwen2-tiny-untied-bf16/generation_config.json"
}

@test "export to .tar (stream), .tar.zst (file) and .zip (stream): same files as the folder" {
    "$BIN/merge" --model "$T/qwen2-tiny-untied-bf16" --adapter "$T/lora-qkvo-r8" -o "$S/m.safetensors"
    run bash -c "'$BIN/export' --model '$T/qwen2-tiny-untied-bf16' -s 100KB --out '$S/a.tar' < '$S/m.safetensors'"
    [ "$status" -eq 0 ]
    run bash -c "cat '$S/m.safetensors' | '$BIN/export' --model '$T/qwen2-tiny-untied-bf16' -s 100KB --out '$S/b.tar'"
    [ "$status" -eq 0 ]
    run "$BIN/export" --model "$T/qwen2-tiny-untied-bf16" -s 100KB --weights "$S/m.safetensors" --out "$S/c.tar.zst"
    [ "$status" -eq 0 ]
    run bash -c "cat '$S/m.safetensors' | '$BIN/export' --model '$T/qwen2-tiny-untied-bf16' -s 100KB --out '$S/d.zip'"
    [ "$status" -eq 0 ]
    for a in a.tar b.tar c.tar.zst d.zip; do
        mkdir "$S/x-$a"
        bsdtar -xf "$S/$a" -C "$S/x-$a"
        stem=${a%%.*}
        same_folder "$S/x-$a/$stem" "$T/merged-untied-bf16-qkvo"
    done
    no_leftovers "$S"
}

@test "export --adapter: validated copy, bf16 conversion, archive" {
    run "$BIN/export" --adapter "$T/lora-qkvo-r8" --model "$T/qwen2-tiny-untied-bf16" --out "$S/a"
    [ "$status" -eq 0 ]
    cmp "$S/a/adapter_model.safetensors" "$T/lora-qkvo-r8/adapter_model.safetensors"
    cmp "$S/a/adapter_config.json" "$T/lora-qkvo-r8.config-sorted.json"
    run "$BIN/export" --adapter "$T/lora-qkvo-r8" --dtype bf16 --out "$S/b.zip"
    [ "$status" -eq 0 ]
    bsdtar -xf "$S/b.zip" -C "$S"
    [ "$(stat -c %s "$S/b/adapter_model.safetensors")" -lt "$(stat -c %s "$S/a/adapter_model.safetensors")" ]
    # The bf16 copy still merges.
    run bash -c "'$BIN/merge' --model '$T/qwen2-tiny-untied-bf16' --adapter '$S/b' | wc -c"
    [ "$status" -eq 0 ] && [ "$output" -gt 200000 ]
    mkdir -p "$S/bigger"
    jq '.hidden_size = 128 | .head_dim = 16' "$T/qwen2-tiny-untied-bf16/config.json" > "$S/bigger/config.json"
    run "$BIN/export" --adapter "$T/lora-qkvo-r8" --model "$S/bigger" --out "$S/out"
    failed_cleanly "adapter for another model"
}

@test "export: an existing --out is refused unless --force" {
    mkdir "$S/out"
    run bash -c "'$BIN/merge' --model '$T/qwen2-tiny-tied-bf16' --adapter '$T/lora-pattern' |
                 '$BIN/export' --model '$T/qwen2-tiny-tied-bf16' --out '$S/out'"
    [ "$status" -eq 1 ] && [[ "$output" == *"already exists"* ]]
    run bash -c "'$BIN/merge' --model '$T/qwen2-tiny-tied-bf16' --adapter '$T/lora-pattern' |
                 '$BIN/export' --model '$T/qwen2-tiny-tied-bf16' --out '$S/out' --force"
    [ "$status" -eq 0 ]
    same_folder "$S/out" "$T/merged-tied-bf16-pattern"
    no_leftovers "$S"
}

# ---- bad input ---------------------------------------------------------------

@test "bad adapter: shape mismatch (adapter for a wider model)" {
    mkdir "$S/ad"
    jq '.target_modules = ["model.layers.0.self_attn.q_proj"]' "$T/lora-qkvo-r8/adapter_config.json" > "$S/ad/adapter_config.json"
    k=base_model.model.model.layers.0.self_attn.q_proj
    mk_st "$S/ad/adapter_model.safetensors" \
        "{\"$k.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[8,128],\"data_offsets\":[0,4096]},\"$k.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[64,8],\"data_offsets\":[4096,6144]}}" 6144
    run "$BIN/merge" --model "$T/qwen2-tiny-untied-bf16" --adapter "$S/ad" -o "$S/out"
    failed_cleanly "lora_A is [8, 128]"
}

@test "bad adapter: layer out of range, unknown target module" {
    mkdir "$S/ad"
    jq '.target_modules = ["model.layers.5.self_attn.q_proj"]' "$T/lora-qkvo-r8/adapter_config.json" > "$S/ad/adapter_config.json"
    k=base_model.model.model.layers.5.self_attn.q_proj
    mk_st "$S/ad/adapter_model.safetensors" \
        "{\"$k.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[8,64],\"data_offsets\":[0,2048]},\"$k.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[64,8],\"data_offsets\":[2048,4096]}}" 4096
    run "$BIN/merge" --model "$T/qwen2-tiny-untied-bf16" --adapter "$S/ad" -o "$S/out"
    failed_cleanly "layer 5 is out of range"
    cp -r "$T/lora-qkvo-r8" "$S/gpt2"
    jq '.target_modules = ["c_attn"]' "$T/lora-qkvo-r8/adapter_config.json" > "$S/gpt2/adapter_config.json"
    run "$BIN/merge" --model "$T/qwen2-tiny-untied-bf16" --adapter "$S/gpt2" -o "$S/out"
    failed_cleanly "is not targeted by adapter_config.json"
    jq '.target_modules = ["q_proj","k_proj","v_proj","o_proj","c_attn"]' "$T/lora-qkvo-r8/adapter_config.json" > "$S/gpt2/adapter_config.json"
    run "$BIN/merge" --model "$T/qwen2-tiny-untied-bf16" --adapter "$S/gpt2" -o "$S/out"
    failed_cleanly "'c_attn' matches no linear layer"
}

@test "bad input: missing folders and files" {
    run "$BIN/merge" --model "$S/none" --adapter "$T/lora-qkvo-r8" -o "$S/out"
    failed_cleanly "$S/none"
    mkdir "$S/m" && cp "$T/qwen2-tiny-untied-bf16/config.json" "$S/m/"
    run "$BIN/merge" --model "$S/m" --adapter "$T/lora-qkvo-r8" -o "$S/out"
    failed_cleanly "no model.safetensors"
    mkdir "$S/ad" && cp "$T/lora-qkvo-r8/adapter_config.json" "$S/ad/"
    run "$BIN/merge" --model "$T/qwen2-tiny-untied-bf16" --adapter "$S/ad" -o "$S/out"
    failed_cleanly "no adapter_model.safetensors"
    run "$BIN/export" --model "$S/none" --weights "$T/qwen2-tiny-untied-bf16/model.safetensors" --out "$S/out"
    failed_cleanly "$S/none/config.json"
    run "$BIN/export" --model "$T/qwen2-tiny-untied-bf16" --weights "$S/none.safetensors" --out "$S/out"
    failed_cleanly "$S/none.safetensors"
    # An index that names a shard that is not there.
    cp -r "$T/merged-untied-bf16-qkvo" "$S/sh" && rm "$S/sh/model-00002-of-00003.safetensors"
    run "$BIN/merge" --model "$S/sh" --adapter "$T/lora-qkvo-r8" -o "$S/out"
    failed_cleanly "model-00002-of-00003.safetensors: cannot open"
}

@test "bad input: truncated and lying base safetensors" {
    cp -r "$T/qwen2-tiny-untied-bf16" "$S/m"
    truncate -s -100 "$S/m/model.safetensors"
    run "$BIN/merge" --model "$S/m" --adapter "$T/lora-qkvo-r8" -o "$S/out"
    failed_cleanly "$S/m/model.safetensors: tensors need 230528 data bytes but the file holds only 230428"
    t='"model.norm.weight":{"dtype":"BF16","shape":[64],"data_offsets"'
    mk_st "$S/m/model.safetensors" "{$t:[0,4096]}}" 128
    run "$BIN/merge" --model "$S/m" --adapter "$T/lora-qkvo-r8" -o "$S/out"
    failed_cleanly "model.norm.weight"
    mk_st "$S/m/model.safetensors" "{$t:[0,128]},\"lm_head.weight\":{\"dtype\":\"BF16\",\"shape\":[64],\"data_offsets\":[64,192]}}" 192
    run "$BIN/merge" --model "$S/m" --adapter "$T/lora-qkvo-r8" -o "$S/out"
    failed_cleanly "overlap"
    mk_st "$S/m/model.safetensors" "{}" 0 1099511627776
    run "$BIN/merge" --model "$S/m" --adapter "$T/lora-qkvo-r8" -o "$S/out"
    failed_cleanly "header length 1099511627776 exceeds the limit"
    printf 'not a safetensors file at all' > "$S/m/model.safetensors"
    run "$BIN/merge" --model "$S/m" --adapter "$T/lora-qkvo-r8" -o "$S/out"
    failed_cleanly "$S/m/model.safetensors"
    cp "$T/lora-qkvo-r8/adapter_model.safetensors" "$S/m/model.safetensors"
    run "$BIN/merge" --model "$S/m" --adapter "$T/lora-qkvo-r8" -o "$S/out"
    failed_cleanly "unexpected tensor"
}

@test "bad input: export of a truncated, foreign or garbage stream" {
    "$BIN/merge" --model "$T/qwen2-tiny-untied-bf16" --adapter "$T/lora-qkvo-r8" -o "$S/m.safetensors"
    run bash -c "head -c 100000 '$S/m.safetensors' | '$BIN/export' --model '$T/qwen2-tiny-untied-bf16' --out '$S/out'"
    failed_cleanly "<stdin>: input ends inside tensor"
    run bash -c "head -c 100000 '$S/m.safetensors' | '$BIN/export' --model '$T/qwen2-tiny-untied-bf16' --out '$S/out.tar.zst'"
    [ "$status" -eq 1 ] && [ ! -e "$S/out.tar.zst" ]
    no_leftovers "$S"
    run bash -c "(cat '$S/m.safetensors'; echo extra) | '$BIN/export' --model '$T/qwen2-tiny-untied-bf16' --out '$S/out'"
    failed_cleanly "bytes follow the last tensor"
    run bash -c "echo hello | '$BIN/export' --model '$T/qwen2-tiny-untied-bf16' --out '$S/out'"
    failed_cleanly "<stdin>"
    run bash -c "'$BIN/merge' --model '$T/qwen2-tiny-tied-bf16' --adapter '$T/lora-pattern' |
                 '$BIN/export' --model '$T/qwen2-tiny-untied-bf16' --out '$S/out'"
    failed_cleanly "missing tensor 'lm_head.weight'"
    head -c 100000 "$S/m.safetensors" > "$S/short.safetensors"
    run "$BIN/export" --model "$T/qwen2-tiny-untied-bf16" --weights "$S/short.safetensors" --out "$S/out.zip"
    failed_cleanly "truncated"
}

@test "export interrupted by SIGTERM leaves nothing behind" {
    "$BIN/merge" --model "$T/qwen2-tiny-untied-bf16" --adapter "$T/lora-qkvo-r8" -o "$S/m.safetensors"
    mkfifo "$S/fifo"
    "$BIN/export" --model "$T/qwen2-tiny-untied-bf16" --weights "$S/fifo" --out "$S/out" 2>/dev/null &
    pid=$!
    exec 7>"$S/fifo"
    head -c 150000 "$S/m.safetensors" >&7
    sleep 0.5
    ls -A "$S" | grep -q '\.tmp\.'   # the temporary folder exists while it works
    kill -TERM "$pid"
    wait "$pid" || true
    exec 7>&-
    [ ! -e "$S/out" ]
    no_leftovers "$S"
}
