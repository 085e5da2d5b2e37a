#!/usr/bin/env bash
# tests/run.sh: run every test and print one closing "N passed, N failed" line.
#   C unit tests: build/tests/test_* (plain) and build/asan/tests/test_* (ASan+UBSan)
#   bats suites:  tests/bats/*.bats (TAP output; skips are counted apart)
# Exit status 0 only when nothing failed.
set -u
cd "$(dirname "$0")/.."
pass=0; fail=0; skip=0; failed=()
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

only=${1:-all}

run_unit() {
    local t=$1 out rc p f
    out=$("$t" 2>&1); rc=$?
    p=$(printf '%s\n' "$out" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' | tail -n1)
    f=$(printf '%s\n' "$out" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' | tail -n1)
    p=${p:-0}; f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed or sanitizer report
    pass=$((pass + p)); fail=$((fail + f))
    if [ "$f" -ne 0 ]; then failed+=("$t"); printf '%s\n' "$out" | grep -v '^ok' | tail -n 40; fi
    printf '%-50s %4d passed, %d failed\n' "$t" "$p" "$f"
}

if [ "$only" = all ] || [ "$only" = unit ]; then
    for t in build/tests/test_* build/asan/tests/test_*; do
        [ -x "$t" ] && run_unit "$t"
    done
fi

if [ "$only" = all ] || [ "$only" = bats ]; then
    for b in tests/bats/*.bats; do
        [ -e "$b" ] || continue
        out=$(bats --tap "$b" 2>&1)
        p=$(printf '%s\n' "$out" | grep -c '^ok .*' ); s=$(printf '%s\n' "$out" | grep -c '^ok .* # skip')
        f=$(printf '%s\n' "$out" | grep -c '^not ok')
        p=$((p - s))
        if ! printf '%s\n' "$out" | grep -q '^1\.\.'; then f=$((f + 1)); fi   # bats itself failed
        pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
        [ "$f" -ne 0 ] && { failed+=("$b"); printf '%s\n' "$out" | grep -v '^ok' | head -n 60; }
        printf '%s\n' "$out" | grep '^ok .* # skip' | sed 's/^/  /' | head -n 5
        printf '%-50s %4d passed, %d failed, %d skipped\n' "$b" "$p" "$f" "$s"
    done
fi

[ ${#failed[@]} -ne 0 ] && printf 'failed: %s\n' "${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
