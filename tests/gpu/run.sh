#!/usr/bin/env bash
# tests/gpu/run.sh: the GPU tests (make test-gpu): every kernel against a CPU
# version, then the trainer's CUDA backend against the CPU reference
# (tests/gpu/*.bats). Skips, with a message, where no GPU is visible.
set -u
cd "$(dirname "$0")/../.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "no NVIDIA GPU visible: GPU tests skipped"
    echo "0 passed, 0 failed, 0 skipped"
    exit 0
fi
pass=0; fail=0
for t in build/gpu-tests/*; do
    [ -x "$t" ] || continue
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' | tail -n1)
    f=$(printf '%s\n' "$out" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' | tail -n1)
    p=${p:-0}; f=${f:-0}; [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    pass=$((pass + p)); fail=$((fail + f))
done
for b in tests/gpu/*.bats; do
    [ -e "$b" ] || continue
    out=$(bats --tap "$b" 2>&1)
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | grep -c '^ok '); f=$(printf '%s\n' "$out" | grep -c '^not ok')
    pass=$((pass + p)); fail=$((fail + f))
done
echo "$pass passed, $fail failed, 0 skipped"
[ "$fail" -eq 0 ]
