#!/usr/bin/env bats
# README's commands, run as written: every ```sh block that follows a
# "<!-- test: NAME -->" line.  They run in the project root and write under
# build/ only (build/demo, build/runs/mine, build/stages), as they would for a
# new user after a fresh clone.  The tutorial's block needs a Qwen1.5-7B-Chat
# folder, huanhuan.json and a GPU: it is checked with `make -n` (the commands
# and flags each stage would run) and skipped for real with a message.
load helpers

# block NAME: the shell block after "<!-- test: NAME -->" in README.md.
block() {
    awk -v name="$1" '
        $0 == "<!-- test: " name " -->" { want = 1; next }
        want && /^```/ { if (inside) exit; inside = 1; next }
        inside { print }' "$ROOT/README.md"
}

@test "README: every test marker is followed by a shell block" {
    for n in demo pipeline tutorial stages tokenize-shared pack train-example shard-plan-example merge-export; do
        [ -n "$(block $n)" ] || { echo "no block '$n' in README.md"; false; }
    done
}

@test "README: 'make demo' as written (and the outputs it lists)" {
    # the "Two commands" block; `make test` is what is running this file
    cmd=$(block demo | grep '^make demo')
    [ -n "$cmd" ]
    cd "$ROOT"
    before=$(git status --porcelain --untracked-files=all -- . ':!build' ':!bin' 2>/dev/null || true)
    run bash -c "$cmd"
    echo "$output" | tail -n 12
    [ "$status" -eq 0 ]
    # every path README says it lists is printed and exists
    for p in build/demo/run/tokens.jsonl build/demo/run/train.pack build/demo/run/plan.json build/demo/run/adapter/ \
             build/demo/run/adapter/metrics.jsonl build/demo/run/merged.safetensors build/demo/run/hf/ build/demo/run/loss.png; do
        [[ "$output" == *" $p"* ]] || { echo "not listed: $p"; false; }
        [ -e "$p" ]
    done
    [ -s build/demo/input/data.json ] && [ -s build/demo/input/model/tokenizer.json ]
    [[ "$output" =~ loss\ +([0-9.]+)\ at\ step\ 1\ -\>\ .*mean\ of\ the\ last\ 10\ steps:\ ([0-9.]+) ]]
    awk -v a="${BASH_REMATCH[1]}" -v b="${BASH_REMATCH[2]}" 'BEGIN { exit !(b < 0.6 * a) }'
    # nothing was written outside the build area
    after=$(git status --porcelain --untracked-files=all -- . ':!build' ':!bin' 2>/dev/null || true)
    [ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after"); false; }
    # a second run does nothing
    run bash -c "$cmd"
    [ "$status" -eq 0 ]
    ! grep -E '^\[finetune\] [a-z-]+ -> ' <<<"$output"
}

@test "README: the pipeline on the demo's files, as written" {
    cd "$ROOT"
    [ -s build/demo/input/data.json ] || make demo >/dev/null
    rm -rf build/runs/mine
    run bash -e -c "$(block pipeline)"
    echo "$output" | tail -n 20
    [ "$status" -eq 0 ]
    # first command: all stages; second: nothing; third (LR=1e-3): train and later only
    [ "$(grep -c '^\[finetune\] tokenize -> ' <<<"$output")" -eq 1 ]
    [ "$(grep -c '^\[finetune\] pack -> ' <<<"$output")" -eq 1 ]
    [ "$(grep -c '^\[finetune\] train -> ' <<<"$output")" -eq 2 ]
    [ "$(grep -c '^\[finetune\] export -> ' <<<"$output")" -eq 2 ]
    grep -q -- "--lr 1e-3" build/runs/mine/params/train
    [ -s build/runs/mine/hf/model.safetensors ] && [ -s build/runs/mine/loss.png ]
}

@test "README: each stage alone, in a shell pipeline, as written" {
    cd "$ROOT"
    [ -s build/demo/input/data.json ] || make demo >/dev/null
    run bash -e -o pipefail -c "$(block stages)"
    echo "$output" | tail -n 20
    [ "$status" -eq 0 ]
    [[ "$output" == *'"samples":320'* ]]
    [ -s build/stages/plan.json ] && [ -s build/stages/run/adapter_model.safetensors ]
    [ -s build/stages/hf/model.safetensors ] && [ -s build/stages/hf/tokenizer.json ] && [ -s build/stages/loss.png ]
    [[ "$output" == *"plot-loss: 120 steps"* ]]
}

@test "README: the tutorial's run (Qwen1.5-7B-Chat + huanhuan.json): each stage's command and flags" {
    # make -n in a scratch folder holding stand-ins for the model folder and the data file
    S=$(scratch)
    cd "$S"
    ln -s "$ROOT/bin" bin && ln -s "$ROOT/pipelines" pipelines
    mkdir Qwen1.5-7B-Chat && echo '[]' > huanhuan.json
    cmd=$(block tutorial | sed 's/^make /make -n /')
    run bash -c "$cmd"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"bin/tokenize --tokenizer 'Qwen1.5-7B-Chat' --format auto --max-len 128 --system '现在你要扮演皇帝身边的女人--甄嬛'"* ]]
    [[ "$output" == *"bin/pack --mode pad --batch-size 1 --accum 16 --epochs 3 --seed 42 --keep-empty"* ]]
    [[ "$output" == *"bin/shard-plan --model 'Qwen1.5-7B-Chat'"*"--lora-r 8 --target q_proj,k_proj,v_proj,o_proj"* ]]
    [[ "$output" == *"bin/train --model 'Qwen1.5-7B-Chat'"*"--lr 1e-4 --lora-r 8 --lora-alpha 32 --lora-dropout 0.1 --target q_proj,k_proj,v_proj,o_proj"*"--save-steps 100"* ]]
    [[ "$output" == *"bin/merge --model 'Qwen1.5-7B-Chat'"* && "$output" == *"bin/export --model 'Qwen1.5-7B-Chat'"* ]]
    # the real run: only with the model, the data and a GPU
    M="${LORAPIPE_QWEN7B:-$SHARED/Qwen1.5-7B-Chat}"
    [ -e "$M/config.json" ] && [ -e "$SHARED/data/huanhuan.json" ] && nvidia-smi -L >/dev/null 2>&1 \
        || skip "the real run needs a Qwen1.5-7B-Chat folder (LORAPIPE_QWEN7B), ../shared/data/huanhuan.json and a GPU"
    cd "$ROOT"
    block tutorial | sed "s#MODEL=Qwen1.5-7B-Chat#MODEL=$M#; s#DATA=huanhuan.json#DATA=$SHARED/data/huanhuan.json#" | bash -e
}

@test "README: tokenize on ../shared's Qwen tokenizer and huanhuan.json, as written" {
    need_shared qwen-tokenizer/tokenizer.json
    need_shared data/huanhuan.json
    # ../shared seen from a scratch working folder, as from a checkout beside it
    S=$(scratch)
    mkdir "$S/work" && ln -s "$SHARED" "$S/shared" && ln -s "$ROOT/bin" "$S/work/bin"
    cd "$S/work"
    run bash -e -c "$(block tokenize-shared)"   # (head closes the pipe early: no pipefail)
    [ "$status" -eq 0 ]
    [[ "$output" == *"现在你要扮演皇帝身边的女人--甄嬛"* ]]
    [ "$(wc -l < train.jsonl)" -eq "$(jq length "$SHARED/data/huanhuan.json")" ]
}

@test "README: pack's examples on the demo's data, as written" {
    cd "$ROOT"
    [ -s build/demo/run/tokens.jsonl ] || make demo >/dev/null
    run bash -e -o pipefail -c "$(block pack)"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *'"samples": 320'* ]]
    [[ "$output" == *'"ranks":[['* ]]
    rm -f build/data.pack build/packed.pack
}

# A scratch working folder where the tool sections' Qwen names stand for the
# demo's files: Qwen1.5-7B(-Chat) -> the demo model, huanhuan.json -> its data.
standins() {
    cd "$ROOT"
    [ -s build/demo/run/adapter/adapter_model.safetensors ] || make demo >/dev/null
    S=$(scratch)
    ln -s "$ROOT/bin" "$S/bin"
    ln -s "$ROOT/build/demo/input/model" "$S/Qwen1.5-7B"
    ln -s "$ROOT/build/demo/input/model" "$S/Qwen1.5-7B-Chat"
    ln -s "$ROOT/build/demo/input/data.json" "$S/huanhuan.json"
    mkdir "$S/run" && ln -s "$ROOT/build/demo/run/adapter" "$S/run/adapter"
    cd "$S"
}

@test "README: train's example as written (the demo's model and data standing in for Qwen1.5-7B-Chat)" {
    standins
    run bash -e -o pipefail -c "$(block train-example)"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ -s run1/adapter_model.safetensors ] && [ -s run1/metrics.jsonl ]
    [ "$(jq -r .r run1/adapter_config.json)" -eq 8 ]
}

@test "README: the pipeline-stage example as written: two stages give train's example adapter" {
    standins
    run bash -e -o pipefail -c "$(block train-example); $(block pipeline-example)"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ "$(jq .stages_per_replica plan2.json)" -eq 2 ]
    [[ "$output" == *"rank 1: pipeline stage 1 of 2"* ]]
    # the two stage processes share the cores (half the threads each): BLAS sums in another order
    "$ROOT/build/test-tools/st_diff" run2/adapter_model.safetensors run1/adapter_model.safetensors --atol 1e-6
}

@test "README: shard-plan's example as written (needs a GPU for --gpus auto)" {
    nvidia-smi -L >/dev/null 2>&1 || skip "shard-plan's example plans for the GPUs of the machine (--gpus auto): none here"
    standins
    bin/tokenize -q -t Qwen1.5-7B-Chat huanhuan.json | bin/pack --batch-size 16 -o hh.pack
    run bash -e -c "$(block shard-plan-example)"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
}

@test "README: merge and export's examples as written (the demo's model and adapter standing in)" {
    standins
    run bash -e -o pipefail -c "$(block merge-export)"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ -s merged/model.safetensors ] && [ -s merged/config.json ] && [ -s merged.safetensors ] && [ -s merged.tar.zst ]
    [ -s adapter-bf16/adapter_model.safetensors ]
    cmp merged/model.safetensors merged.safetensors || "$ROOT/build/test-tools/st_diff" merged/model.safetensors merged.safetensors
}
