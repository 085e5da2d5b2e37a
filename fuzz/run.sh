#!/usr/bin/env bash
# fuzz/run.sh: run the libFuzzer targets built in build/fuzz/ (make fuzz-build).
#
#   fuzz/run.sh campaign SECONDS NAME...   each target for SECONDS in turn (NAME:S
#                                          gives one target S seconds); new
#                                          inputs go to build/fuzz/corpus/NAME,
#                                          crashes to build/fuzz/artifacts/NAME/
#   fuzz/run.sh smoke SECONDS NAME...      replay fuzz/regressions/NAME/* and the
#                                          seeds, then fuzz SECONDS each (CI)
#
# Prints one line per target (executions, seconds, exec/s, crashes) and a total;
# exits 1 when any target crashed or a regression input fails.
set -u
cd "$(dirname "$0")/.."
mode=$1 secs=$2; shift 2
SHARED=${LORAPIPE_SHARED:-../shared}
ASAN_BASE=${ASAN_OPTIONS:-abort_on_error=0:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
nice=""; [ "$mode" = campaign ] && nice="nice -n 19"

# Per-target options.  Targets whose parser die()s (longjmp out of it) leave
# that input's allocations behind, so leak detection is off for them only.
opts_for() {
    case $1 in
    tokenizer_json) echo "-detect_leaks=0 -max_len=65536 -timeout=20 -rss_limit_mb=4096" ;;
    records_*) echo "-max_len=16384 -timeout=10" ;;
    pack) echo "-max_len=32768 -timeout=10" ;;
    safetensors_*|hf_config|adapter_config|plan|token_record) echo "-max_len=16384 -timeout=10" ;;
    *) echo "-timeout=10" ;;
    esac
}
# Real files, when present, as extra read-only seeds (the committed corpora
# hold small samples of them); the fuzzer truncates them to -max_len.
extra_seeds() {
    case $1 in
    tokenizer_json) [ -e build/fixtures/qwen-tokenizer/tokenizer.json ] && echo build/fixtures/qwen-tokenizer ;;
    records_json) [ -e "$SHARED/data/huanhuan.json" ] && echo "$SHARED/data" ;;
    esac
}

total=0; total_s=0; bad=0
printf '%-20s %12s %8s %10s %s\n' target executions seconds exec/s result
for arg in "$@"; do
    name=${arg%%:*} t=$secs
    [ "$name" = "$arg" ] || t=${arg#*:}
    bin=build/fuzz/fuzz_$name
    [ -x "$bin" ] || { echo "$bin: not built (make fuzz-build)"; bad=1; continue; }
    art=build/fuzz/artifacts/$name; mkdir -p "$art"
    # Logs per mode: a smoke run (make test) beside a campaign must not write into the campaign's logs.
    log=build/fuzz/logs/$mode/$name.log; mkdir -p "$(dirname "$log")"
    dict=""; [ -e fuzz/$name.dict ] && dict="-dict=fuzz/$name.dict"
    leaks=1; case " $(opts_for $name) " in *" -detect_leaks=0 "*) leaks=0 ;; esac
    export ASAN_OPTIONS=$ASAN_BASE:detect_leaks=$leaks
    # shellcheck disable=SC2046
    if [ "$mode" = smoke ] && [ -d fuzz/regressions/$name ] && [ -n "$(ls -A fuzz/regressions/$name)" ]; then
        # Files (not folders) given to a libFuzzer binary are each run once.
        nreg=$(ls fuzz/regressions/$name | wc -l)
        if "$bin" $(opts_for $name) fuzz/regressions/$name/* > "$log.regress" 2>&1; then
            echo "$name: $nreg regression input(s) replayed: ok"
        else
            echo "$name: a regression input fails:"; grep -E 'ERROR|Running:|SUMMARY' "$log.regress" | tail -n 8
            bad=1
        fi
    fi
    work=build/fuzz/corpus/$name; mkdir -p "$work"
    start=$(date +%s%N)
    # shellcheck disable=SC2046
    $nice "$bin" $(opts_for $name) $dict -max_total_time="$t" -print_final_stats=1 \
        -artifact_prefix="$art/" -close_fd_mask=1 "$work" fuzz/corpus/$name $(extra_seeds $name) > "$log" 2>&1
    rc=$?
    end=$(date +%s%N)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    runs=${runs:-0}
    el=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    result=ok
    if [ $rc -ne 0 ]; then
        result="CRASH (rc $rc): $(grep -m1 -E '^==[0-9]+==ERROR|^SUMMARY|runtime error|ERROR: libFuzzer' "$log" | cut -c1-100); see $log"
        bad=1
    fi
    printf '%-20s %12d %8.1f %10.0f %s\n' "$name" "$runs" "$el" "$(awk -v r="$runs" -v e="$el" 'BEGIN { print (e > 0 ? r / e : 0) }')" "$result"
    total=$((total + runs)); total_s=$(awk -v a="$total_s" -v b="$el" 'BEGIN { print a + b }')
done
printf '%-20s %12d %8.1f\n' total "$total" "$total_s"
exit $bad
