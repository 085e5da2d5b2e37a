#!/usr/bin/env bats
# Data-parallel CPU ranks (tools/train/host_comm.c): started by a torchrun-style
# environment, by Slurm's variables with --rendezvous FILE, and by train --ranks;
# checked against one rank with the same global batch, for determinism, for a
# rank killed mid-run (and --resume on another rank count), and for mismatched
# ranks.
#
# Tolerances. Rank 0 adds the ranks' gradients in rank order; one rank adds its
# micro-batches' gradients in window order. Rank r's slot k is micro-batch
# k*R + r of the window, so with 4 ranks x 1 micro-batch the two orders coincide
# and the numbers are bit-identical (measured: 0 difference); with 2 ranks x 2
# micro-batches, (g0 + g2) + (g1 + g3) replaces ((g0 + g1) + g2) + g3, which
# changes only fp32 rounding. Measured against one rank (untied-qkvo, 4
# micro-batches per step): 9 steps: loss 1.5e-8 and grad norm 1.2e-7 relative,
# adapter 3.0e-8 absolute; 180 steps: 6.4e-8, 3.7e-7 and 1.7e-7. The bars (loss
# 1e-6 and grad norm 1e-5 relative, adapter 1e-6 absolute) leave a margin of 6x or
# more and are far below what one missing rank's gradient changes (measured:
# the grad norm by 30% at step 1, the loss by 2.3e-4 relative at step 3).
load helpers
load ranks

GOLD="$FIX/train"
DIFF="$ROOT/build/test-tools/st_diff"
CASE="$GOLD/untied-qkvo"
export LORAPIPE_COMM_TIMEOUT=20

setup() {
    clear_rank_env
    T="$BATS_TEST_TMPDIR"
    # The golden case's settings, with 4 micro-batches per step (a multiple of 1, 2 and 4 ranks).
    ARGS=(--device cpu --model "$CASE/model" --init-adapter "$CASE/init_adapter" --lora-dropout 0 --lr 0.002
          --schedule cosine --warmup-ratio 0.1 --weight-decay 0.1 --max-grad-norm 0.5 --seed 42 --threads 1 --quiet)
}

pack_dp() {  # out.pack epochs
    "$BIN/pack" --batch-size 2 --accum 4 --epochs "$2" --seed 42 --order group_by_length --keep-empty -o "$1" \
        "$CASE/data.jsonl"
}

# Wait for the pids; "r=status" per rank in STATUS (ordered by rank).
wait_all() {
    STATUS=""
    local i=0 st
    for p in "$@"; do
        st=0; wait "$p" || st=$?
        STATUS="$STATUS $i=$st"; i=$((i + 1))
    done
    STATUS="${STATUS# }"
}

# Two "hosts" (folders a and b, each with its own copy of the pack) x two ranks,
# torchrun's variables; rank 0 writes into $1/a/out. Extra args go to every rank.
run_torchrun() {  # dir pack [args]
    local d=$1 pack=$2 try port pids r h; shift 2
    mkdir -p "$d/a" "$d/b"
    cp "$pack" "$d/a/u.pack"; cp "$pack" "$d/b/u.pack"
    for try in 1 2 3; do
        port=$(free_port)
        pids=()
        for r in 0 1 2 3; do
            h=$([ $r -lt 2 ] && echo a || echo b)
            RANK=$r WORLD_SIZE=4 LOCAL_RANK=$((r % 2)) GROUP_RANK=$((r / 2)) LOCAL_WORLD_SIZE=2 \
                MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
                "$BIN/train" "${ARGS[@]}" --data "$d/$h/u.pack" --out "$d/$h/out" "$@" 2>"$d/err.$r" &
            pids+=($!)
        done
        wait_all "${pids[@]}"
        grep -q "cannot listen" "$d/err.0" || return 0   # another process took the port: try another
    done
}

@test "dp_cpu: two hosts x two ranks (torchrun variables) match one rank; two runs are byte-identical" {
    pack_dp "$T/u.pack" 3
    "$BIN/train" "${ARGS[@]}" --data "$T/u.pack" --out "$T/one"
    run_torchrun "$T/x" "$T/u.pack"
    [ "$STATUS" = "0=0 1=0 2=0 3=0" ] || { cat "$T"/x/err.*; false; }
    # only rank 0 writes outputs
    [ -e "$T/x/a/out/adapter_model.safetensors" ] && [ ! -e "$T/x/b/out/adapter_model.safetensors" ]
    [ ! -e "$T/x/b/out/metrics.jsonl" ]
    [ "$(jq -s length "$T/x/a/out/metrics.jsonl")" -eq 9 ]
    same_steps "$T/x/a/out/metrics.jsonl" "$T/one/metrics.jsonl"
    "$DIFF" "$T/x/a/out/adapter_model.safetensors" "$T/one/adapter_model.safetensors" --atol 1e-6
    # the summation order is fixed (rank order): a second run gives the same bytes
    run_torchrun "$T/y" "$T/u.pack"
    [ "$STATUS" = "0=0 1=0 2=0 3=0" ] || { cat "$T"/y/err.*; false; }
    cmp "$T/x/a/out/adapter_model.safetensors" "$T/y/a/out/adapter_model.safetensors"
    diff <(jq -c '{step, loss, grad_norm}' "$T/x/a/out/metrics.jsonl") <(jq -c '{step, loss, grad_norm}' "$T/y/a/out/metrics.jsonl")
}

@test "dp_cpu: Slurm variables with --rendezvous FILE give the torchrun run's adapter" {
    pack_dp "$T/u.pack" 3
    run_torchrun "$T/x" "$T/u.pack"
    [ "$STATUS" = "0=0 1=0 2=0 3=0" ] || { cat "$T"/x/err.*; false; }
    pids=()
    for r in 0 1 2 3; do
        SLURM_PROCID=$r SLURM_NTASKS=4 SLURM_LOCALID=$((r % 2)) \
            "$BIN/train" "${ARGS[@]}" --data "$T/u.pack" --out "$T/s$r" --rendezvous "$T/rdzv" 2>"$T/err.$r" &
        pids+=($!)
    done
    wait_all "${pids[@]}"
    [ "$STATUS" = "0=0 1=0 2=0 3=0" ] || { cat "$T"/err.*; false; }
    "$BIN/train" "${ARGS[@]}" --data "$T/u.pack" --out "$T/one"
    same_steps "$T/s0/metrics.jsonl" "$T/one/metrics.jsonl"
    cmp "$T/x/a/out/adapter_model.safetensors" "$T/s0/adapter_model.safetensors"
    [ ! -e "$T/s1/adapter_model.safetensors" ]
    # rank 0 removes the rendezvous file once every rank has joined
    [ ! -e "$T/rdzv" ]
    no_leftovers "$T"
}

@test "dp_cpu: train --ranks 2 matches one rank; usage errors" {
    pack_dp "$T/u.pack" 3
    "$BIN/train" "${ARGS[@]}" --data "$T/u.pack" --out "$T/one"
    run "$BIN/train" "${ARGS[@]}" --data "$T/u.pack" --out "$T/two" --ranks 2
    [ "$status" -eq 0 ]
    same_steps "$T/two/metrics.jsonl" "$T/one/metrics.jsonl"
    "$DIFF" "$T/two/adapter_model.safetensors" "$T/one/adapter_model.safetensors" --atol 1e-6
    [ -z "$(ls -A "$T/two" | grep rendezvous)" ]
    # 4 micro-batches per step do not split over 3 ranks
    run "$BIN/train" "${ARGS[@]}" --data "$T/u.pack" --out "$T/three" --ranks 3
    [ "$status" -eq 1 ]
    [[ "$output" == *"do not split evenly over 3 ranks"* ]]
    run "$BIN/train" --help
    [[ "$output" == *"--ranks N"* ]]
    run "$BIN/train" "${ARGS[@]}" --data "$T/u.pack" --out "$T/z" --ranks 0
    [ "$status" -eq 2 ]
    run "$BIN/train" "${ARGS[@]}" --data "$T/u.pack" --out "$T/z" --ranks 2 --device cuda
    [ "$status" -eq 2 ]
    [[ "$output" == *"--ranks starts CPU ranks"* ]]
}

@test "dp_cpu: SIGTERM to train --ranks 2 writes a checkpoint on every rank's step; one rank resumes it" {
    pack_dp "$T/long.pack" 60
    args=(--data "$T/long.pack" --save-steps 0)
    "$BIN/train" "${ARGS[@]}" "${args[@]}" --out "$T/full"
    "$BIN/train" "${ARGS[@]}" "${args[@]}" --out "$T/cut" --ranks 2 2>"$T/err" & pid=$!
    for _ in $(seq 1000); do [ -s "$T/cut/metrics.jsonl" ] && break; sleep 0.01; done
    kill -TERM $pid
    st=0; wait $pid || st=$?
    [ "$st" -eq 143 ] || { [ -e "$T/cut/adapter_model.safetensors" ] && skip "the run finished before the signal"; cat "$T/err"; false; }
    ls "$T/cut" | grep -q '^checkpoint-' || { cat "$T/err"; false; }
    grep -q "interrupted by SIGTERM" "$T/err"
    [ -z "$(ls -A "$T/cut" | grep rendezvous)" ]
    "$BIN/train" "${ARGS[@]}" "${args[@]}" --out "$T/cut" --resume
    same_steps "$T/cut/metrics.jsonl" "$T/full/metrics.jsonl"
    "$DIFF" "$T/cut/adapter_model.safetensors" "$T/full/adapter_model.safetensors" --atol 1e-6
}

@test "dp_cpu: a rank killed mid-run stops the others with one line; --resume on 2 ranks matches an uninterrupted run" {
    pack_dp "$T/long.pack" 60
    args=(--data "$T/long.pack" --save-steps 10 --save-total-limit 0)
    "$BIN/train" "${ARGS[@]}" "${args[@]}" --out "$T/full"
    steps=$(jq -s length "$T/full/metrics.jsonl")
    port=$(free_port)
    pids=()
    for r in 0 1 2 3; do
        RANK=$r WORLD_SIZE=4 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
            "$BIN/train" "${ARGS[@]}" "${args[@]}" --out "$T/cut" 2>"$T/err.$r" &
        pids+=($!)
    done
    for _ in $(seq 1000); do [ -d "$T/cut/checkpoint-10" ] && break; sleep 0.01; done
    [ -d "$T/cut/checkpoint-10" ] || { cat "$T"/err.*; false; }
    kill -KILL "${pids[3]}"
    t0=$(date +%s%N)
    wait_all "${pids[@]:0:3}"
    took_ms=$((($(date +%s%N) - t0) / 1000000))
    wait "${pids[3]}" || true
    [ ! -e "$T/cut/adapter_model.safetensors" ] || skip "the run finished before the kill"
    [ "$took_ms" -lt 5000 ] || { echo "the ranks took $took_ms ms to stop"; false; }
    [ "$STATUS" = "0=1 1=1 2=1" ]
    for r in 0 1 2; do
        # one line, the last (rank 0 also reports its start-up)
        [ "$(grep -c "lost rank" "$T/err.$r")" -eq 1 ] || { cat "$T/err.$r"; false; }
        tail -n 1 "$T/err.$r" | grep -Eq "^train: rank $r: lost rank 3 \((connection closed|connection reset)(, seen by rank 0)?\) during the (gradient|loss) all-reduce of step [0-9]+; " \
            || { cat "$T/err.$r"; false; }
    done
    grep -q "checkpoint in $T/cut is intact" "$T/err.0"
    no_leftovers "$T/cut"
    run "$BIN/train" "${ARGS[@]}" "${args[@]}" --out "$T/cut" --resume --ranks 2
    [ "$status" -eq 0 ]
    [ "$(jq -s 'map(.step) | max' "$T/cut/metrics.jsonl")" -eq "$steps" ]
    same_steps "$T/cut/metrics.jsonl" "$T/full/metrics.jsonl"
    "$DIFF" "$T/cut/adapter_model.safetensors" "$T/full/adapter_model.safetensors" --atol 1e-6
}

@test "dp_cpu: a rank that stops answering is reported after LORAPIPE_COMM_TIMEOUT" {
    pack_dp "$T/long.pack" 60
    port=$(free_port)
    pids=()
    for r in 0 1; do
        LORAPIPE_COMM_TIMEOUT=2 RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
            "$BIN/train" "${ARGS[@]}" --data "$T/long.pack" --save-steps 10 --out "$T/o" 2>"$T/err.$r" &
        pids+=($!)
    done
    for _ in $(seq 1000); do [ -d "$T/o/checkpoint-10" ] && break; sleep 0.01; done
    kill -STOP "${pids[1]}"
    t0=$(date +%s%N)
    wait_all "${pids[0]}"
    took_ms=$((($(date +%s%N) - t0) / 1000000))
    kill -KILL "${pids[1]}"; wait "${pids[1]}" || true
    [ ! -e "$T/o/adapter_model.safetensors" ] || skip "the run finished before the stop"
    [ "$STATUS" = "0=1" ]
    tail -n 1 "$T/err.0" | grep -Eq "^train: rank 0: lost rank 1 \(no answer within 2 s\) during the (gradient|loss) all-reduce of step [0-9]+; " \
        || { cat "$T/err.0"; false; }
    [ "$took_ms" -ge 1000 ] && [ "$took_ms" -lt 6000 ] || { echo "rank 0 took $took_ms ms"; false; }
}

@test "dp_cpu: ranks with different settings are refused with a clear message" {
    pack_dp "$T/u.pack" 3
    base=(--device cpu --model "$CASE/model" --data "$T/u.pack" --threads 1 --quiet)
    port=$(free_port)
    MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=0 WORLD_SIZE=2 "$BIN/train" "${base[@]}" --out "$T/o0" --lora-r 4 2>"$T/err.0" & p0=$!
    MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=1 WORLD_SIZE=2 "$BIN/train" "${base[@]}" --out "$T/o1" --lora-r 8 2>"$T/err.1" & p1=$!
    wait_all $p0 $p1
    [ "$STATUS" = "0=1 1=1" ] || { cat "$T"/err.*; false; }
    for r in 0 1; do
        [ "$(wc -l < "$T/err.$r")" -eq 1 ] || { cat "$T/err.$r"; false; }
        grep -q "3584 floats on rank 0, 7168 on rank 1; lora-r=4 on rank 0, lora-r=8 on rank 1" "$T/err.$r" || { cat "$T/err.$r"; false; }
    done
    grep -q "^train: rank 0: refusing rank 1: " "$T/err.0"
    grep -q "^train: rank 1: rank 0 refused this rank: " "$T/err.1"
    [ ! -e "$T/o0/adapter_model.safetensors" ]
    # a world size that does not agree
    port=$(free_port)
    MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=0 WORLD_SIZE=2 "$BIN/train" "${base[@]}" --out "$T/o0" 2>"$T/err.0" & p0=$!
    MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=1 WORLD_SIZE=4 "$BIN/train" "${base[@]}" --out "$T/o1" 2>"$T/err.1" & p1=$!
    wait_all $p0 $p1
    [ "$STATUS" = "0=1 1=1" ] || { cat "$T"/err.*; false; }
    grep -q "world size 4 there, 2 here" "$T/err.0"
}

@test "dp_cpu: --resume refuses ranks that found different checkpoints in their own --out" {
    pack_dp "$T/u.pack" 3
    run_torchrun "$T/x" "$T/u.pack" --interrupt-after 2
    [ "$STATUS" = "0=130 1=130 2=130 3=130" ] || { cat "$T"/x/err.*; false; }
    [ -d "$T/x/a/out/checkpoint-2" ] && [ ! -e "$T/x/b/out/checkpoint-2" ]
    run_torchrun "$T/x" "$T/u.pack" --resume
    [ "$STATUS" = "0=1 1=1 2=1 3=1" ] || { cat "$T"/x/err.*; false; }
    grep -q "rank 2 starts at step 0 and rank 0 at step 2: --resume reads the newest checkpoint in each rank's own --out" "$T/x/err.0" \
        || { cat "$T/x/err.0"; false; }
    [ "$(grep -c "" "$T/x/err.0")" -eq 2 ]   # "resuming from ...", then the refusal
    [ -d "$T/x/a/out/checkpoint-2" ] && no_leftovers "$T/x/a/out"
}

@test "dp_cpu: with dropout, two ranks draw the masks one rank draws (the same curve)" {
    # The mask key names the micro-batch's place in the global window, not in the rank's share.
    pack_dp "$T/u.pack" 1
    "$BIN/train" "${ARGS[@]}" --lora-dropout 0.1 --data "$T/u.pack" --out "$T/one"
    "$BIN/train" "${ARGS[@]}" --lora-dropout 0.1 --ranks 2 --data "$T/u.pack" --out "$T/two"
    same_steps "$T/two/metrics.jsonl" "$T/one/metrics.jsonl"
    "$DIFF" "$T/two/adapter_model.safetensors" "$T/one/adapter_model.safetensors" --atol 1e-6
}
