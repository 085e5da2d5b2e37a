#!/usr/bin/env bash
# bench/device_run.sh: what one call on the GPU machine runs, from the repo root.
#   bench/device_run.sh STAGE...     stages: info tests model curve prof speed anchor quick bench multi offload pipe pipeoff dptest
# Inputs (built and gathered on the CPU machine, carried in .carry/ and bin/, build/):
#   .carry/hh.jsonl           tokenize's output for huanhuan (tutorial system prompt, --max-len 128)
#   .carry/hh_b1a16.pack      pack --batch-size 1 --accum 16 --seed 42 --keep-empty (the tutorial's batches)
#   .carry/hh_b16.pack        pack --batch-size 16 --accum 1 ... (the same windows as one micro-batch each)
#   .carry/hf_seed.py, .carry/huanhuan.json, .carry/tok/   the anchor and what it reads
#   .carry/tools/             bats and jq for the test suites (the image has neither)
# Logs and results go to $LOGS; at the end they are packed into $OUT/logs.tgz
# (the device tool brings back a few files only) beside $OUT/summary.txt.
set -u
RESULT=${OUT:-/tmp/lorapipe-out}; mkdir -p "$RESULT"
OUT=/tmp/lorapipe-logs; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export PATH="$PWD/.carry/tools/bin:$PATH" LD_LIBRARY_PATH="$PWD/.carry/tools/lib:${LD_LIBRARY_PATH:-}"
MODEL=${MODEL:-/tmp/q7}
STEPS=${STEPS:-20}
log() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
# SM clock and board power through the whole call; each timed run records its window
# (bench/power_summary.py reads both at the end): a card at its power cap runs below its top clock.
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,utilization.gpu,clocks_event_reasons.active \
    --format=csv,noheader -lms 200 > "$OUT/smi.csv" 2>/dev/null &
SMI_PID=$!
echo "run,start,end" > "$OUT/windows.csv"

ours() {  # name pack [extra train args]: one timed run of our trainer on the 7B shape
    local name=$1 pack=$2; shift 2
    rm -rf "/tmp/run-$name"
    local t0; t0=$(date +%s.%N)
    /usr/bin/time -v bin/train --device cuda --model "$MODEL" --data "$pack" --out "/tmp/run-$name" \
        --max-steps "$STEPS" --save-steps 0 --quiet "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "ours-$name,$t0,$(date +%s.%N)" >> "$OUT/windows.csv"
    cp "/tmp/run-$name/metrics.jsonl" "$OUT/$name.metrics.jsonl" 2>/dev/null
    # tokens/s as the anchor counts them: real tokens after the first 3 optimizer steps
    local tps
    tps=$(jq -s '[.[] | select(.loss != null)] as $m | ($m[3:] | map(.tokens) | add) / ($m[-1].elapsed_s - $m[2].elapsed_s)' \
          "/tmp/run-$name/metrics.jsonl" 2>/dev/null)
    local rss; rss=$(grep "Maximum resident" "$OUT/$name.log" | awk '{print $6}')
    log "ours $name rc=$rc tokens/s=$tps $(grep -E 'start-up took|arenas' "$OUT/$name.log" | tr '\n' ' ') host_rss_kb=$rss"
}

anchor() {  # variant
    local v=$1 t0 rc
    t0=$(date +%s.%N); ANCHOR_RUNS=$((${ANCHOR_RUNS:-0} + 1))
    timeout 400 python3 .carry/hf_seed.py .carry/tok .carry/huanhuan.json "$v" "$STEPS" > "$OUT/anchor-$v.log" 2>&1
    rc=$?
    echo "anchor-$v-$ANCHOR_RUNS,$t0,$(date +%s.%N)" >> "$OUT/windows.csv"
    log "anchor $v rc=$rc $(grep RESULT "$OUT/anchor-$v.log" | cut -c1-600)"
}

stages_on_one_gpu() {  # name gpus: shard-plan's stages for those GPUs, every place moved to this GPU; each
    # stage's memory against the plan's, and the adapter after the same steps against the one-process run's
    # (with the plan's recompute choice, in memory): it must be identical.
    local name=$1 gpus=$2 plan=/tmp/plan-$1.json
    bin/shard-plan --model "$MODEL" --gpus "$gpus" --pack .carry/hh_b16.pack -o "$plan" 2> "$OUT/shard-plan-$name.log"
    cat "$OUT/shard-plan-$name.log" >> "$OUT/summary.txt"; cp "$plan" "$OUT/"
    jq -c '{replicas, stages_per_replica, recompute, host_offload, host_memory_bytes, predicted_tokens_per_s,
            placement: [.placement[] | {stage, layers, allocated: .memory.allocated, total: .memory.total}]}' \
        "$plan" | tee -a "$OUT/summary.txt"
    jq '.placement |= map(.gpu = 0) | .gpus |= map(.usable_bytes = .memory_bytes)' "$plan" > "$plan.1gpu"
    STEPS=${PIPE_STEPS:-8} ours "${name}2" .carry/hh_b16.pack --plan "$plan.1gpu"
    grep "rank .*layers" "$OUT/${name}2.log" | tee -a "$OUT/summary.txt"
    STEPS=${PIPE_STEPS:-8} ours "${name}1" .carry/hh_b16.pack $(jq -r 'if .recompute then "--recompute" else "" end' "$plan")
    cmp "/tmp/run-${name}2/adapter_model.safetensors" "/tmp/run-${name}1/adapter_model.safetensors" \
        && log "$name: 2-stage adapter identical to the one-process run" \
        || log "$name: 2-stage adapter DIFFERS from the one-process run"
}

for stage in "$@"; do
case $stage in
info)
    log info
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee -a "$OUT/summary.txt"
    python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' | tee -a "$OUT/summary.txt"
    ldd bin/train | grep -E "not found" | tee -a "$OUT/summary.txt"
    ;;
tests)
    log "kernel tests"
    build/gpu-tests/test_kernels 2>&1 | tee "$OUT/kernels.log" | tail -n 25
    log "trainer GPU tests"
    timeout 300 bats --tap tests/gpu/train_gpu.bats > "$OUT/train_gpu.tap" 2>&1
    grep -E "^(ok|not ok)|max rel|worst|FAIL" "$OUT/train_gpu.tap" | tee -a "$OUT/summary.txt"
    ;;
model)
    log "random Qwen1.5-7B-shaped model -> $MODEL"
    [ -e "$MODEL/config.json" ] || python3 bench/make_random_model.py "$MODEL" --shape qwen1.5-7b 2>&1 | tail -n 2 | tee -a "$OUT/summary.txt"
    ;;
curve)
    log "loss curve: transformers + PEFT vs ours, $STEPS steps, dropout 0, same batches and initial adapter"
    timeout 400 python3 bench/hf_curve.py "$MODEL" .carry/hh.jsonl /tmp/init-adapter "$STEPS" > "$OUT/hf_curve.log" 2>&1
    grep '^{' "$OUT/hf_curve.log" > "$OUT/hf_curve.jsonl"; grep RESULT "$OUT/hf_curve.log" | tee -a "$OUT/summary.txt"
    ours curve .carry/hh_b1a16.pack --init-adapter /tmp/init-adapter --lora-dropout 0
    jq -s -r --slurpfile h "$OUT/hf_curve.jsonl" '[.[] | select(.loss != null)] as $m
        | [range(0; [$m, $h] | map(length) | min) | {s: (.+1), ours: $m[.].loss, hf: $h[.].loss,
           rel: (($m[.].loss - $h[.].loss) / $h[.].loss | fabs)}]
        | (map(.rel) | max) as $w | (.[] | "\(.s) \(.ours) \(.hf) \(.rel)"), "max rel diff \($w)"' \
        "$OUT/curve.metrics.jsonl" | tee "$OUT/curve_compare.txt" | tail -n 3 | tee -a "$OUT/summary.txt"
    ;;
prof)
    # Where the time goes: phase totals (LORAPIPE_PROFILE=1) and, where nsys exists, per-kernel totals.
    LORAPIPE_PROFILE=1 STEPS=8 ours prof .carry/hh_b16.pack
    grep -A40 "train: profile" "$OUT/prof.log" | tee -a "$OUT/summary.txt"
    NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -n1)
    if [ -n "$NSYS" ]; then
        rm -rf /tmp/run-nsys
        timeout 240 "$NSYS" profile -o /tmp/nsys-train --force-overwrite true bin/train --device cuda --model "$MODEL" \
            --data .carry/hh_b16.pack --out /tmp/run-nsys --max-steps 6 --save-steps 0 --quiet > "$OUT/nsys.log" 2>&1
        "$NSYS" stats --report cuda_gpu_kern_sum --format csv /tmp/nsys-train.nsys-rep > "$OUT/nsys_kern.csv" 2>>"$OUT/nsys.log"
        head -n 40 "$OUT/nsys_kern.csv" | cut -c1-220 | tee -a "$OUT/summary.txt"
    else
        log "nsys not found"
    fi
    ;;
speed)
    ours fast .carry/hh_b16.pack
    ours lean .carry/hh_b16.pack --recompute
    ;;
anchor)
    anchor tuned-nockpt
    ;;
multi)
    # Data parallelism on every GPU of this machine against one GPU, same global batch
    # (16 samples per step as 2 micro-batches of 8), and the tutorial's device_map split.
    ngpu=$(nvidia-smi -L | wc -l)
    bin/shard-plan --model "$MODEL" --pack .carry/hh_b8a2.pack -o /tmp/plan.json 2> "$OUT/shard-plan.log"
    cat "$OUT/shard-plan.log" >> "$OUT/summary.txt"; cp /tmp/plan.json "$OUT/plan.json"
    jq -c '{replicas, recompute, memory_per_gpu, predicted_tokens_per_s}' /tmp/plan.json | tee -a "$OUT/summary.txt"
    for round in 1 2; do
        ours "dp1-$round" .carry/hh_b8a2.pack
        ours "dp$ngpu-$round" .carry/hh_b8a2.pack --plan /tmp/plan.json
    done
    jq -s -r --slurpfile b "$OUT/dp$ngpu-1.metrics.jsonl" '[.[] | select(.loss != null)] as $a
        | [range(0; $a | length) | (($a[.].loss - $b[.].loss) / $a[.].loss | fabs)] | "max rel loss diff 1 vs N GPUs: \(max)"' \
        "$OUT/dp1-1.metrics.jsonl" | tee -a "$OUT/summary.txt"
    nvidia-smi --query-gpu=index,memory.used --format=csv >> "$OUT/summary.txt"
    timeout 300 python3 .carry/hf_seed.py .carry/tok .carry/huanhuan.json seed-devmap 6 > "$OUT/anchor-seed-devmap.log" 2>&1
    log "anchor seed-devmap rc=$? $(grep -E 'RESULT|device map' "$OUT/anchor-seed-devmap.log" | cut -c1-700)"
    ;;
offload)
    # Host offload: the 7B shape on a GPU capped at 8 GiB by the plan, against the in-memory lean run;
    # the adapters after the same steps must be identical.
    bin/shard-plan --model "$MODEL" --memory-cap 8GiB --pack .carry/hh_b16.pack -o /tmp/plan8.json 2> "$OUT/shard-plan8.log"
    cat "$OUT/shard-plan8.log" >> "$OUT/summary.txt"; cp /tmp/plan8.json "$OUT/plan8.json"
    jq -c '{recompute, host_offload, memory_per_gpu, host_memory_bytes, predicted_tokens_per_s}' /tmp/plan8.json | tee -a "$OUT/summary.txt"
    STEPS=${OFFLOAD_STEPS:-8} ours off8 .carry/hh_b16.pack --plan /tmp/plan8.json
    STEPS=${OFFLOAD_STEPS:-8} ours lean8 .carry/hh_b16.pack --recompute
    cmp /tmp/run-off8/adapter_model.safetensors /tmp/run-lean8/adapter_model.safetensors && log "offload adapter identical to the in-memory run"
    ;;
pipe)
    # Pipeline stages on one GPU: the GPU tests, then the 7B shape cut by shard-plan for two 12 GiB GPUs.
    timeout 300 bats --tap tests/gpu/pipeline_gpu.bats > "$OUT/pipeline_gpu.tap" 2>&1
    grep -E "^(ok|not ok)|#" "$OUT/pipeline_gpu.tap" | head -40 | tee -a "$OUT/summary.txt"
    stages_on_one_gpu pipe 2x12GiB
    ;;
pipeoff)
    # Stages that stream their own layers from host memory: the plan shard-plan makes for two 4 GiB GPUs.
    stages_on_one_gpu pipeoff 2x4GiB
    ;;
dptest)
    timeout 300 bats --tap tests/gpu/dp_gpu.bats > "$OUT/dp_gpu.tap" 2>&1
    grep -E "^(ok|not ok)|#" "$OUT/dp_gpu.tap" | head -40 | tee -a "$OUT/summary.txt"
    ;;
quick)
    # The default setting against the anchor's fastest variant, alternating, three times (the anchor's
    # first run on a fresh machine is slow); the lean setting once; then the default over 100 steps, which
    # shows the sustained rate at the card's power cap (20 steps are about a second of training).
    for round in 1 2 3; do
        anchor tuned-nockpt
        ours "fast-$round" .carry/hh_b16.pack
    done
    ours lean .carry/hh_b16.pack --recompute
    STEPS=100 ours fast-100 .carry/hh_b16.pack
    ;;
bench)
    # A kernel that failed its test must not be timed: fall back to the cuBLAS path.
    if grep -q "FAILED.*lora" "$OUT/kernels.log" 2>/dev/null; then export LORAPIPE_LORA=gemm; log "LoRA kernels failed: LORAPIPE_LORA=gemm"; fi
    if grep -q "FAILED.*batched GEMM" "$OUT/kernels.log" 2>/dev/null; then export LORAPIPE_ATTENTION=kernel; log "GEMM attention failed: LORAPIPE_ATTENTION=kernel"; fi
    if grep -q "FAILED.*short" "$OUT/kernels.log" 2>/dev/null && [ -z "${LORAPIPE_ATTENTION:-}" ]; then export LORAPIPE_ATTENTION=gemm; log "short attention failed: LORAPIPE_ATTENTION=gemm"; fi
    # alternate, twice each: the anchor's first run on a fresh machine is slow
    for round in 1 2; do
        anchor tuned-nockpt
        ours "fast-$round" .carry/hh_b16.pack
        anchor tuned
        ours "lean-$round" .carry/hh_b16.pack --recompute
    done
    ;;
esac
done
kill "$SMI_PID" 2>/dev/null
python3 bench/power_summary.py "$OUT/smi.csv" "$OUT/windows.csv" | tee -a "$OUT/summary.txt"
log done
cp "$OUT/summary.txt" "$RESULT/"
tar czf "$RESULT/logs.tgz" -C "$OUT" .
