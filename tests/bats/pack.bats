#!/usr/bin/env bats
# tools/pack: token JSONL -> .pack, and the readers (--info, --dump, --batches, --schedule).
load helpers

PACK="$BIN/pack"
SMALL="$FIX/pack/small.jsonl"
GOLDEN="$FIX/pack/order_golden.json"

setup() { D=$(scratch); }

# Input records that pack keeps by default: labels[1:] holds a target.
kept() { jq -c 'select(.labels[1:] | any(. != -100)) | {input_ids, labels}' "$1"; }

@test "pack --help: usage on stdout, exit 0" {
    run "$PACK" --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage: pack"* ]]
    [[ "$output" == *"--batch-tokens"* ]]
}

@test "round trip: --dump gives back the kept records in input order" {
    "$PACK" --batch-size 4 -o "$D/a.pack" "$SMALL" 2>/dev/null
    "$PACK" --dump "$D/a.pack" > "$D/dump.jsonl"
    kept "$SMALL" > "$D/want.jsonl"
    cmp "$D/want.jsonl" "$D/dump.jsonl"
    [ "$(wc -l < "$D/dump.jsonl")" -eq 35 ]
    # packed mode stores the same samples
    "$PACK" --mode packed --row-tokens 64 -o "$D/b.pack" "$SMALL" 2>/dev/null
    "$PACK" --dump "$D/b.pack" | cmp "$D/want.jsonl" -
}

@test "round trip with --keep-empty: every record back, dropped count 0" {
    "$PACK" --keep-empty -o "$D/a.pack" "$SMALL"
    "$PACK" --dump "$D/a.pack" | cmp <(jq -c '{input_ids, labels}' "$SMALL") -
    [ "$("$PACK" --info "$D/a.pack" | jq .dropped_no_target)" -eq 0 ]
}

@test "records without a target token are dropped, counted and reported" {
    run "$PACK" -o "$D/a.pack" "$SMALL"
    [ "$status" -eq 0 ]
    [[ "$output" == *"dropped 5 of 40 records"* ]]
    run "$PACK" --info "$D/a.pack"
    [ "$(jq .records <<< "$output")" -eq 40 ]
    [ "$(jq .dropped_no_target <<< "$output")" -eq 5 ]
    [ "$(jq .samples <<< "$output")" -eq 35 ]
}

@test "identical input and options give a byte-identical file; committed fixtures rebuild exactly" {
    "$PACK" --mode packed --row-tokens 48 -o "$D/1.pack" "$SMALL" 2>/dev/null
    "$PACK" --mode packed --row-tokens 48 -o "$D/2.pack" < "$SMALL" 2>/dev/null
    cmp "$D/1.pack" "$D/2.pack"
    "$PACK" --batch-size 3 --accum 2 --epochs 2 -o "$D/f1" "$SMALL" 2>/dev/null
    cmp "$D/f1" "$FIX/pack/small-pad.pack"
    "$PACK" --batch-tokens 96 --epochs 2 --keep-empty --seed 7 -o "$D/f2" "$SMALL"
    cmp "$D/f2" "$FIX/pack/small-budget.pack"
    "$PACK" --mode packed --row-tokens 48 --batch-tokens 96 --epochs 2 --keep-empty -o "$D/f3" "$SMALL"
    cmp "$D/f3" "$FIX/pack/small-packed.pack"
    "$PACK" --mode packed --row-tokens 64 --packing next-fit --order sequential --epochs 1 -o "$D/f4" "$SMALL" 2>/dev/null
    cmp "$D/f4" "$FIX/pack/small-nextfit.pack"
    # a different seed gives a different order
    "$PACK" --batch-size 3 --accum 2 --epochs 2 --seed 43 -o "$D/f5" "$SMALL" 2>/dev/null
    ! cmp -s "$D/f5" "$FIX/pack/small-pad.pack"
}

@test "-o - writes the same bytes to stdout; stdin works" {
    "$PACK" --batch-size 2 -o "$D/a.pack" "$SMALL" 2>/dev/null
    "$PACK" --batch-size 2 -o - < "$SMALL" 2>/dev/null > "$D/b.pack"
    cmp "$D/a.pack" "$D/b.pack"
    cat "$SMALL" | "$PACK" --batch-size 2 2>/dev/null > "$D/c.pack"
    cmp "$D/a.pack" "$D/c.pack"
}

@test "orders equal the real Trainer's (golden from tests/golden/pack_order.py)" {
    n=$(jq '.configs | length' "$GOLDEN")
    [ "$n" -ge 5 ]
    for i in $(seq 0 $((n - 1))); do
        c=$(jq -c ".configs[$i]" "$GOLDEN")
        jq -c '.lengths[] | [range(.) | 1] | {input_ids: ., labels: .}' <<< "$c" > "$D/g.jsonl"
        "$PACK" --keep-empty --pad-multiple 1 --batch-size "$(jq .batch <<< "$c")" --accum "$(jq .accum <<< "$c")" \
            --seed "$(jq .seed <<< "$c")" --epochs "$(jq .epochs <<< "$c")" --order "$(jq -r .order <<< "$c")" \
            -o "$D/g.pack" "$D/g.jsonl"
        "$PACK" --batches "$D/g.pack" | jq -sc 'group_by(.epoch) | map([.[].rows[][]])' > "$D/got.json"
        jq -c '.order_per_epoch' <<< "$c" > "$D/want.json"
        cmp "$D/want.json" "$D/got.json" || { echo "config $(jq -r .name <<< "$c") differs"; return 1; }
        # micro-batch k = consecutive batch-size items; rows padded to nothing here (multiple 1)
        "$PACK" --batches "$D/g.pack" | jq -se --argjson b "$(jq .batch <<< "$c")" \
            'group_by(.epoch) | all(.[:-1] | all(.rows | length == $b))' > /dev/null
    done
}

@test "pad mode: rows padded to a multiple of 8 of the batch's longest sample" {
    "$PACK" --batch-size 4 -o "$D/a.pack" "$SMALL" 2>/dev/null
    "$PACK" --dump "$D/a.pack" | jq -c '.input_ids | length' > "$D/len"
    "$PACK" --batches "$D/a.pack" | jq -c '[.row_len, .rows]' | while read -r b; do
        rl=$(jq '.[0]' <<< "$b")
        mx=0
        for s in $(jq '.[1][][]' <<< "$b"); do l=$(sed -n "$((s + 1))p" "$D/len"); [ "$l" -gt "$mx" ] && mx=$l; done
        [ "$rl" -eq $(( (mx + 7) / 8 * 8 )) ] || { echo "row_len $rl for longest $mx"; return 1; }
    done
}

@test "pad mode by token budget: rows x padded length <= budget" {
    "$PACK" --batch-tokens 96 --keep-empty -o "$D/a.pack" "$SMALL"
    "$PACK" --batches "$D/a.pack" | jq -se 'all(.[]; (.rows | length) * .row_len <= 96)'
}

@test "packed mode: rows within capacity, every sample once per epoch, no padding inside rows" {
    "$PACK" --mode packed --row-tokens 50 --batch-tokens 100 --epochs 3 --keep-empty -o "$D/a.pack" "$SMALL"
    run "$PACK" --info "$D/a.pack"
    [ "$(jq -r .mode <<< "$output")" = packed ]
    [ "$(jq .epochs <<< "$output")" -eq 3 ]
    "$PACK" --dump "$D/a.pack" | jq -sc 'map(.input_ids | length)' > "$D/len.json"
    "$PACK" --batches "$D/a.pack" | jq -se --slurpfile len "$D/len.json" '
        ($len[0]) as $l
        | all(.[]; .row_len == 50 and (.rows | length) <= 2
                   and all(.rows[]; (map($l[.]) | add) <= 50)
                   and .tokens == ([.rows[][] | $l[.]] | add))
        and (group_by(.epoch) | all(.[]; ([.[].rows[][]] | sort) == [range($l | length)]))'
}

@test "--schedule: each micro-batch once, round-robin over ranks, empties only closing an epoch" {
    "$PACK" --batch-size 2 --epochs 2 -o "$D/a.pack" "$SMALL" 2>/dev/null
    nb=$("$PACK" --info "$D/a.pack" | jq .batches)
    "$PACK" --schedule "$D/a.pack" --world 3 --accum 2 > "$D/s.jsonl"
    jq -se --argjson nb "$nb" '
        ([.[].ranks[][] | select(. >= 0)] | sort) == [range($nb)]
        and all(.[]; (.ranks | length) == 3 and all(.ranks[]; length == 2))
        and all(.[]; .ranks[0][0] as $f | .micro_batches as $m
                     | [range(2) as $k | range(3) as $r
                        | ($k * 3 + $r) as $j | .ranks[$r][$k] == (if $j < $m then $f + $j else -1 end)] | all)' \
        "$D/s.jsonl"
    # window targets add up to all targets of both epochs
    t=$("$PACK" --info "$D/a.pack" | jq '.targets * .epochs')
    [ "$(jq -s 'map(.targets) | add' "$D/s.jsonl")" -eq "$t" ]
    # short windows (with -1) only as the last step of an epoch
    jq -se '[.[] | {epoch, short: (.micro_batches < 6)}] as $s
            | [range($s | length) as $i
               | (($s[$i].short | not) or $i == ($s | length) - 1 or $s[$i + 1].epoch != $s[$i].epoch)] | all' \
        "$D/s.jsonl"
}

@test "--info: statistics for jq" {
    "$PACK" --batch-size 4 -o "$D/a.pack" "$SMALL" 2>/dev/null
    run "$PACK" --info "$D/a.pack"
    [ "$status" -eq 0 ]
    toks=$(kept "$SMALL" | jq -s 'map(.input_ids | length) | add')
    tgts=$(kept "$SMALL" | jq -s 'map(.labels[1:] | map(select(. != -100)) | length) | add')
    [ "$(jq .tokens <<< "$output")" -eq "$toks" ]
    [ "$(jq .targets <<< "$output")" -eq "$tgts" ]
    jq -e '.padding_fraction > 0 and .padding_fraction < 1 and (.length_histogram | map(.count) | add) == .samples
           and .batches == (.batches_per_epoch | add) and .epochs == 3 and .order == "group_by_length"' <<< "$output"
}

# ---- bad input: one line naming file and line, exit 1, no output file ----
bad_input() {   # $1 = content, $2 = expected message part, rest = options
    local content=$1 want=$2; shift 2
    printf '%s' "$content" > "$D/in.jsonl"
    run "$PACK" "$@" -o "$D/out.pack" "$D/in.jsonl"
    [ "$status" -eq 1 ] || { echo "status $status: $output"; return 1; }
    [ "${#lines[@]}" -eq 1 ] || { echo "not one line: $output"; return 1; }
    [[ "$output" == *"$D/in.jsonl"* ]] || { echo "no file name: $output"; return 1; }
    [[ "$output" == *"$want"* ]] || { echo "expected '$want': $output"; return 1; }
    [ ! -e "$D/out.pack" ]
    no_leftovers "$D"
}

@test "bad input: not JSON" {
    bad_input $'{"input_ids":[1,2],"labels":[1,2]}\n{"input_ids":[1,2],"labels":[1,2\n' "line 2: not valid JSON"
}
@test "bad input: missing input_ids / labels" {
    bad_input $'{"labels":[1,2]}\n' 'line 1: missing "input_ids"'
    bad_input $'{"input_ids":[1,2]}\n' 'line 1: missing "labels"'
}
@test "bad input: labels of another length" {
    bad_input $'{"input_ids":[1,2,3],"labels":[-100,2]}\n' '"labels" has 2 entries, "input_ids" has 3'
}
@test "bad input: negative id, fractional id, label neither -100 nor an id" {
    bad_input $'{"input_ids":[1,-2],"labels":[1,2]}\n' 'input_ids[1] = -2 is negative'
    bad_input $'{"input_ids":[1,2.5],"labels":[1,2]}\n' 'input_ids[1] is not an integer'
    bad_input $'{"input_ids":[1,2],"labels":[1,-5]}\n' 'labels[1] = -5 is neither -100 nor a token id'
}
@test "bad input: empty input, empty input_ids, duplicate key" {
    bad_input '' 'no records (empty input)'
    bad_input $'\n\n' 'no records (empty input)'
    bad_input $'{"input_ids":[],"labels":[]}\n' '"input_ids" is empty'
    bad_input $'{"input_ids":[1],"input_ids":[2],"labels":[1]}\n' 'duplicate'
}
@test "bad input: a sample longer than the row without --truncate; --truncate cuts it" {
    bad_input $'{"input_ids":[1,2,3,4,5],"labels":[1,2,3,4,5]}\n' 'line 1: 5 tokens do not fit a row of 4' \
        --mode packed --row-tokens 4
    bad_input $'{"input_ids":[1,2,3,4,5,6,7,8,9],"labels":[1,2,3,4,5,6,7,8,9]}\n' 'micro-batch budget of 8' \
        --batch-tokens 12
    printf '%s\n' '{"input_ids":[1,2,3,4,5],"labels":[1,2,3,4,5]}' > "$D/t.jsonl"
    "$PACK" --mode packed --row-tokens 4 --truncate -o "$D/t.pack" "$D/t.jsonl"
    [ "$("$PACK" --dump "$D/t.pack")" = '{"input_ids":[1,2,3,4],"labels":[1,2,3,4]}' ]
    [ "$("$PACK" --info "$D/t.pack" | jq .truncated)" -eq 1 ]
}
@test "bad input: all records without a target" {
    bad_input $'{"input_ids":[1,2],"labels":[-100,-100]}\n' 'none of the 1 records has a target token'
}

@test "the fast parser and jansson agree on odd but valid lines" {
    printf '%s\n' ' { "x" : [1, {"a": 2}], "input_ids" : [ 5 , 6 ] , "labels":[-100,6], "s":"\u00e9\n" } ' \
        '{"labels":[7,8],"input_ids":[7,8]}' '{"input_ids":[0,10],"labels":[-100,10],"n":-1.5e3,"t":true,"z":null}' \
        > "$D/in.jsonl"
    "$PACK" --keep-empty -o "$D/a.pack" "$D/in.jsonl"
    run "$PACK" --dump "$D/a.pack"
    [ "${lines[0]}" = '{"input_ids":[5,6],"labels":[-100,6]}' ]
    [ "${lines[1]}" = '{"input_ids":[7,8],"labels":[7,8]}' ]
    [ "${lines[2]}" = '{"input_ids":[0,10],"labels":[-100,10]}' ]
}

@test "bad options exit 2" {
    run "$PACK" --mode bogus -o "$D/x" "$SMALL"; [ "$status" -eq 2 ]
    run "$PACK" --mode packed --order group_by_length -o "$D/x" "$SMALL"; [ "$status" -eq 2 ]
    run "$PACK" --batch-size 2 --batch-tokens 64 -o "$D/x" "$SMALL"; [ "$status" -eq 2 ]
    run "$PACK" --batch-size 0 -o "$D/x" "$SMALL"; [ "$status" -eq 2 ]
    run "$PACK" --epochs x -o "$D/x" "$SMALL"; [ "$status" -eq 2 ]
    [ ! -e "$D/x" ]
}

# ---- corrupted packs: refused by every reader ----
@test "corrupted packs are refused by --info, --dump, --batches, --schedule" {
    "$PACK" --batch-size 4 -o "$D/a.pack" "$SMALL" 2>/dev/null
    size=$(stat -c %s "$D/a.pack")
    head -c $((size - 10)) "$D/a.pack" > "$D/trunc.pack"
    head -c 1000 "$D/a.pack" > "$D/short.pack"
    cp "$D/a.pack" "$D/magic.pack"; printf 'X' | dd of="$D/magic.pack" bs=1 seek=0 conv=notrunc 2>/dev/null
    cp "$D/a.pack" "$D/newer.pack"; printf '\002' | dd of="$D/newer.pack" bs=1 seek=8 conv=notrunc 2>/dev/null
    for f in trunc short magic newer; do
        for r in --info --dump --batches --schedule; do
            run "$PACK" "$r" "$D/$f.pack"
            [ "$status" -eq 1 ] || { echo "$r $f: status $status"; return 1; }
            [ "${#lines[@]}" -eq 1 ] && [[ "$output" == *"$D/$f.pack"* ]] || { echo "$r $f: $output"; return 1; }
        done
    done
    run "$PACK" --info "$D/trunc.pack"; [[ "$output" == *"truncated"* ]]
    run "$PACK" --info "$D/short.pack"; [[ "$output" == *"truncated"* ]]
    run "$PACK" --info "$D/magic.pack"; [[ "$output" == *"not a .pack file"* ]]
    run "$PACK" --info "$D/newer.pack"; [[ "$output" == *"newer than this reader"* ]]
}

@test "SIGTERM while reading leaves no partial output" {
    mkfifo "$D/fifo"
    "$PACK" -o "$D/out.pack" "$D/fifo" 2>/dev/null &
    pid=$!
    exec 5> "$D/fifo"
    printf '%s\n' '{"input_ids":[1,2],"labels":[1,2]}' >&5
    sleep 0.3
    ls -A "$D" | grep -q '\.tmp\.'   # the temporary output exists while working
    kill -TERM "$pid"
    wait "$pid" || true
    exec 5>&-
    [ ! -e "$D/out.pack" ]
    no_leftovers "$D"
}
