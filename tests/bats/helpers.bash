# tests/bats/helpers.bash: shared setup for every bats suite.
# load 'helpers' at the top of a suite.

ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
BIN="$ROOT/bin"
FIX="$ROOT/tests/fixtures"
# The real Qwen tokenizer, unpacked from tests/fixtures by `make test`.
QWEN_TOK="$ROOT/build/fixtures/qwen-tokenizer"
SHARED="${LORAPIPE_SHARED:-$ROOT/../shared}"

# Skip (with a reason) when ../shared is absent, as on a user's fresh clone.
need_shared() {
    local f="$SHARED/${1:-}"
    [ -e "$f" ] || skip "needs $f (the shared folder beside the checkout is absent)"
}

# A scratch folder per test, removed by bats.
scratch() { echo "$BATS_TEST_TMPDIR"; }

# Assert that a folder holds no temporary or partial outputs.
no_leftovers() {
    local d=$1
    run bash -c "ls -A '$d' | grep -E '\\.tmp\\.' || true"
    [ -z "$output" ] || { echo "leftover temporary files in $d: $output"; return 1; }
}

# Run "$BIN/train" with the caller's args array and --out DIR in the background,
# send it SIGNAL after DELAY seconds, and skip the test when the run finished
# before the signal landed (it must exit 128 + the signal's number otherwise).
train_interrupted() {  # dir delay signal(INT|TERM)
    local pid st=0 want
    "$BIN/train" "${args[@]}" --out "$1" & pid=$!
    sleep "$2"
    kill "-$3" $pid
    wait $pid || st=$?
    want=$((128 + $(kill -l "$3")))
    [ "$st" -eq "$want" ] || skip "the run finished before the signal (status $st)"
}
