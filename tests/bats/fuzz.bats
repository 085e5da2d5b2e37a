#!/usr/bin/env bats
# fuzz/: every libFuzzer target builds, replays its regression inputs (each a
# crash the campaigns found, fixed since) and its seeds, and fuzzes for a
# second, so that a parser change that crashes shows up in CI.
load helpers

@test "fuzz-smoke: every target builds, replays fuzz/regressions, fuzzes 1 s without a crash" {
    command -v clang > /dev/null || skip "clang is not installed (make deps installs it)"
    printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' > "$BATS_TEST_TMPDIR/t.c"
    clang -fsanitize=fuzzer,address,undefined "$BATS_TEST_TMPDIR/t.c" -o "$BATS_TEST_TMPDIR/t" 2> /dev/null ||
        skip "this clang has no libFuzzer (-fsanitize=fuzzer)"
    run make -C "$ROOT" --no-print-directory fuzz-smoke
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"total"* ]]
    # Every target with regression inputs replayed them.
    for d in "$ROOT"/fuzz/regressions/*/; do
        [[ "$output" == *"$(basename "$d"): "*" regression input(s) replayed: ok"* ]] || { echo "no replay for $d"; return 1; }
    done
    # Every target ran and none crashed.
    for src in "$ROOT"/fuzz/fuzz_*.c; do
        name=$(basename "$src" .c); name=${name#fuzz_}
        [[ "$output" == *"$name "*" ok"* ]] || { echo "target $name did not run cleanly"; return 1; }
    done
}

@test "fuzz: regression inputs exist for the crashes recorded in docs/RELIABILITY.md" {
    # Each finding in the Fuzzing section names its input under fuzz/regressions/.
    grep -o 'fuzz/regressions/[a-z_]*/[A-Za-z0-9_.-]*' "$ROOT/docs/RELIABILITY.md" | sed 's/\.$//' | sort -u | while read -r f; do
        [ -s "$ROOT/$f" ] || { echo "missing $f"; return 1; }
    done
}
