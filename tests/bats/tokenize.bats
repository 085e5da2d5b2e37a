#!/usr/bin/env bats
# bin/tokenize: ids against Hugging Face goldens, formats, inputs, options, bad input.
load helpers

TF="$ROOT/tests/fixtures/tokenize"

setup() {
    T="$BIN/tokenize"
    D="$(scratch)"
}

# Compare two JSONL files' values of a jq path line by line; name the first difference.
same_lines() {  # file_a filter_a file_b filter_b
    local a b
    a=$(jq -c "$2" "$1") || return 1
    b=$(jq -c "$4" "$3") || return 1
    [ "$(printf '%s\n' "$a" | wc -l)" = "$(printf '%s\n' "$b" | wc -l)" ] || { echo "record counts differ"; return 1; }
    local n
    n=$(diff <(printf '%s\n' "$a") <(printf '%s\n' "$b") | sed -n 's/^\([0-9]*\)[acd].*/\1/p' | head -n1)
    [ -z "$n" ] || { echo "first differing record: $n"; return 1; }
}

# A tokenizer folder with the Qwen tokenizer.json and a given chat template.
tok_with_template() {  # dir template-file
    mkdir -p "$1"
    ln -sf "$QWEN_TOK/tokenizer.json" "$1/tokenizer.json"
    jq -Rs '{chat_template: .}' "$2" > "$1/tokenizer_config.json"
}

# ---- usage -----------------------------------------------------------------
@test "--help prints the usage and exits 0" {
    run "$T" --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"--tokenizer PATH"* ]]
    [[ "$output" == *"--max-len N"* ]]
}

@test "usage errors exit 2" {
    run "$T"; [ "$status" -eq 2 ]
    run "$T" -t "$QWEN_TOK" --format yaml; [ "$status" -eq 2 ]; [[ "$output" == *"unknown --format"* ]]
    run "$T" -t "$QWEN_TOK" --max-len -3; [ "$status" -eq 2 ]
    run "$T" -t "$QWEN_TOK" --max-len abc; [ "$status" -eq 2 ]
    run "$T" -t "$QWEN_TOK" --train-on some; [ "$status" -eq 2 ]
    run "$T" -t "$QWEN_TOK" --system x --no-system; [ "$status" -eq 2 ]
    run "$T" -t "$QWEN_TOK" -j 0; [ "$status" -eq 2 ]
    run "$T" --bogus; [ "$status" -eq 2 ]
}

# ---- ids identical to Hugging Face -------------------------------------------
@test "hard-strings corpus: ids identical to HF tokenizers (489 strings)" {
    [ "$(wc -l < "$TF/hard_strings.jsonl")" -ge 200 ]
    "$T" -q -t "$QWEN_TOK" -f text "$TF/hard_strings.jsonl" > "$D/out.jsonl"
    same_lines "$D/out.jsonl" .input_ids "$TF/hard_strings_expected.jsonl" .ids
    same_lines "$D/out.jsonl" .labels "$TF/hard_strings_expected.jsonl" .ids
}

@test "hard-strings corpus with --special-as-text: ids identical to HF split_special_tokens" {
    "$T" -q -t "$QWEN_TOK" -f text --special-as-text "$TF/hard_strings.jsonl" > "$D/out.jsonl"
    same_lines "$D/out.jsonl" .input_ids "$TF/hard_strings_expected.jsonl" .ids_split_special
}

@test "the comparison fails on a changed id (the test can fail)" {
    "$T" -q -t "$QWEN_TOK" -f text "$TF/hard_strings.jsonl" | sed '7s/\[\([0-9]\)/[9\1/' > "$D/out.jsonl"
    run same_lines "$D/out.jsonl" .input_ids "$TF/hard_strings_expected.jsonl" .ids
    [ "$status" -ne 0 ]
    [[ "$output" == *"first differing record: 7"* ]]
}

@test "huanhuan: identical to the tutorial's process_func, all 3,729 records" {
    need_shared data/huanhuan.json
    need_shared qwen-tokenizer/tokenizer.json
    "$T" -q -t "$SHARED/qwen-tokenizer" --system "现在你要扮演皇帝身边的女人--甄嬛" --max-len 128 \
        -o "$D/hh.jsonl" "$SHARED/data/huanhuan.json"
    zstd -d -q -c "$TF/huanhuan_expected.jsonl.zst" > "$D/want.jsonl"
    [ "$(wc -l < "$D/hh.jsonl")" -eq 3729 ]
    same_lines "$D/hh.jsonl" . "$D/want.jsonl" .
}

@test "multi-turn alpaca/messages/sharegpt/text: ids and labels identical to the HF golden" {
    "$T" -q -t "$QWEN_TOK" --no-system "$TF/chat_records.jsonl" > "$D/a.jsonl"
    same_lines "$D/a.jsonl" . "$TF/chat_expected_nosys.jsonl" .
    "$T" -q -t "$QWEN_TOK" --no-system --train-on last "$TF/chat_records.jsonl" > "$D/b.jsonl"
    same_lines "$D/b.jsonl" . "$TF/chat_expected_nosys_last.jsonl" .
}

@test "default system turn comes from the chat template (Qwen1.5, Qwen2, Qwen2.5; none for the shared one)" {
    for v in qwen1.5 qwen2 qwen2.5; do
        tok_with_template "$D/$v" "$TF/templates/$v.jinja"
        want=$(jq -r --arg v "$v" '.[$v]' "$TF/templates/expected_default_system.json")
        run "$T" -t "$D/$v" -o "$D/$v.jsonl" "$TF/chat_records.jsonl"
        [ "$status" -eq 0 ]
        [[ "$output" == *"default system turn: \"$want\""* ]]
        # The first record has no system message: it starts with the default turn.
        got=$(head -n1 "$D/$v.jsonl" | "$T" -t "$D/$v" --decode | jq -r .text)
        [[ "$got" == "<|im_start|>system"$'\n'"$want<|im_end|>"$'\n'"<|im_start|>user"* ]]
    done
    # Against the HF golden rendered with the Qwen2 template's default.
    same_lines "$D/qwen2.jsonl" . "$TF/chat_expected_qwen2.jsonl" .
    run "$T" -t "$QWEN_TOK" -o "$D/none.jsonl" "$TF/chat_records.jsonl"
    [[ "$output" == *"default system turn: none (the chat template"* ]]
    cmp "$D/none.jsonl" "$TF/chat_expected_nosys.jsonl"
}

@test "--system overrides the default; a record's own system message wins" {
    tok_with_template "$D/q2" "$TF/templates/qwen2.jinja"
    echo '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}' > "$D/r.jsonl"
    echo '{"messages":[{"role":"system","content":"own"},{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}' >> "$D/r.jsonl"
    "$T" -q -t "$D/q2" --system "Custom sys" "$D/r.jsonl" | "$T" -q -t "$D/q2" --decode > "$D/d.jsonl"
    [ "$(sed -n 1p "$D/d.jsonl" | jq -r .text | head -n2 | tail -n1)" = "Custom sys<|im_end|>" ]
    [ "$(sed -n 2p "$D/d.jsonl" | jq -r .text | head -n2 | tail -n1)" = "own<|im_end|>" ]
    "$T" -q -t "$D/q2" --no-system "$D/r.jsonl" | head -n1 | "$T" -q -t "$D/q2" --decode > "$D/n.jsonl"
    [ "$(jq -r .text "$D/n.jsonl" | head -n1)" = "<|im_start|>user" ]
}

@test "labels: -100 on the prompt, ids on reply + <|im_end|>, no trailing newline" {
    echo '{"instruction":"Hi","input":"","output":"Hello"}' | "$T" -q -t "$QWEN_TOK" --no-system > "$D/o.jsonl"
    # <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n | Hello<|im_end|>
    jq -e '.input_ids == [151644,872,198,13048,151645,198,151644,77091,198,9707,151645]' "$D/o.jsonl"
    jq -e '.labels == [-100,-100,-100,-100,-100,-100,-100,-100,-100,9707,151645]' "$D/o.jsonl"
}

@test "--input-sep joins alpaca instruction and input" {
    echo '{"instruction":"A","input":"B","output":"C"}' > "$D/r.jsonl"
    "$T" -q -t "$QWEN_TOK" --no-system --input-sep $'\n' "$D/r.jsonl" | "$T" -q -t "$QWEN_TOK" --decode > "$D/d.jsonl"
    [[ "$(jq -r .text "$D/d.jsonl")" == *$'user\nA\nB<|im_end|>'* ]]
    "$T" -q -t "$QWEN_TOK" --no-system "$D/r.jsonl" | "$T" -q -t "$QWEN_TOK" --decode > "$D/e.jsonl"
    [[ "$(jq -r .text "$D/e.jsonl")" == *$'user\nAB<|im_end|>'* ]]
}

@test "--special-as-text: specials in content are text, the template's stay special" {
    sed -n 9p "$TF/chat_records.jsonl" > "$D/r.jsonl"
    n_def=$("$T" -q -t "$QWEN_TOK" --no-system "$D/r.jsonl" | jq '[.input_ids[] | select(. == 151645)] | length')
    n_txt=$("$T" -q -t "$QWEN_TOK" --no-system --special-as-text "$D/r.jsonl" | jq '[.input_ids[] | select(. == 151645)] | length')
    [ "$n_def" -eq 4 ]
    [ "$n_txt" -eq 2 ]
    "$T" -q -t "$QWEN_TOK" --no-system --special-as-text "$D/r.jsonl" | "$T" -q -t "$QWEN_TOK" --decode > "$D/d.jsonl"
    [[ "$(jq -r .text "$D/d.jsonl")" == *"Echo <|im_end|> and <|im_start|>please"* ]]
}

# ---- --max-len ---------------------------------------------------------------
@test "--max-len keeps the first N tokens; records without targets are written and counted" {
    "$T" -q -t "$QWEN_TOK" --no-system "$TF/chat_records.jsonl" > "$D/full.jsonl"
    run "$T" -t "$QWEN_TOK" --no-system --max-len 12 --stats "$D/st.json" -o "$D/cut.jsonl" "$TF/chat_records.jsonl"
    [ "$status" -eq 0 ]
    [ "$(wc -l < "$D/cut.jsonl")" -eq 13 ]
    jq -e '(.input_ids | length) <= 12 and (.labels | length) == (.input_ids | length)' "$D/cut.jsonl" > /dev/null
    same_lines "$D/cut.jsonl" '.input_ids' "$D/full.jsonl" '.input_ids[:12]'
    same_lines "$D/cut.jsonl" '.labels' "$D/full.jsonl" '.labels[:12]'
    want=$(jq -s '[.[] | select([.labels[] | select(. != -100)] | length == 0)] | length' "$D/cut.jsonl")
    [ "$(jq .records_without_targets "$D/st.json")" -eq "$want" ]
    [[ "$output" == *"$want with no trained token left"* ]]
    [ "$(jq .records "$D/st.json")" -eq 13 ]
}

# ---- threads and input forms -------------------------------------------------
@test "-j N keeps the input order (output identical to -j 1)" {
    for i in 1 2 3 4 5 6; do cat "$TF/hard_strings.jsonl"; done > "$D/big.jsonl"
    "$T" -q -t "$QWEN_TOK" -f text -j 1 "$D/big.jsonl" > "$D/j1.jsonl"
    "$T" -q -t "$QWEN_TOK" -f text -j 4 "$D/big.jsonl" > "$D/j4.jsonl"
    cmp "$D/j1.jsonl" "$D/j4.jsonl"
    [ "$(wc -l < "$D/j1.jsonl")" -eq "$(wc -l < "$D/big.jsonl")" ]
}

@test "stdin, JSON array, JSONL, several files, .gz/.zst, .tar/.tar.gz/.tar.zst/.zip all give the same records" {
    "$T" -q -t "$QWEN_TOK" --no-system "$TF/chat_records.jsonl" > "$D/want.jsonl"
    jq -s . "$TF/chat_records.jsonl" > "$D/arr.json"
    "$T" -q -t "$QWEN_TOK" --no-system < "$D/arr.json" | cmp - "$D/want.jsonl"
    "$T" -q -t "$QWEN_TOK" --no-system - < "$TF/chat_records.jsonl" | cmp - "$D/want.jsonl"
    head -n 5 "$TF/chat_records.jsonl" > "$D/p1.jsonl"; tail -n +6 "$TF/chat_records.jsonl" | jq -s . > "$D/p2.json"
    "$T" -q -t "$QWEN_TOK" --no-system "$D/p1.jsonl" "$D/p2.json" | cmp - "$D/want.jsonl"
    gzip -c "$D/arr.json" > "$D/arr.json.gz"; zstd -q -c "$TF/chat_records.jsonl" > "$D/r.jsonl.zst"
    "$T" -q -t "$QWEN_TOK" --no-system "$D/arr.json.gz" | cmp - "$D/want.jsonl"
    "$T" -q -t "$QWEN_TOK" --no-system "$D/r.jsonl.zst" | cmp - "$D/want.jsonl"
    mkdir -p "$D/a/data"; cp "$D/p1.jsonl" "$D/a/data/1.jsonl"; cp "$D/p2.json" "$D/a/data/2.json"
    echo "not data" > "$D/a/data/README.txt"
    (cd "$D/a" && tar cf ../x.tar data/1.jsonl data/README.txt data/2.json && tar czf ../x.tar.gz data/1.jsonl data/2.json \
        && tar cf - data/1.jsonl data/2.json | zstd -q -c > ../x.tar.zst && bsdtar -a -cf ../x.zip data/1.jsonl data/2.json)
    for f in x.tar x.tar.gz x.tar.zst x.zip; do
        "$T" -q -t "$QWEN_TOK" --no-system "$D/$f" | cmp - "$D/want.jsonl"
    done
    run "$T" -t "$QWEN_TOK" --no-system -o "$D/o.jsonl" "$D/x.tar"
    [[ "$output" == *"skipping member data/README.txt"* ]]
}

@test "--decode of the hard-strings ids gives HF's decode, string for string" {
    jq -c '{input_ids: .ids}' "$TF/hard_strings_expected.jsonl" | "$T" -t "$QWEN_TOK" --decode > "$D/d.jsonl"
    same_lines "$D/d.jsonl" .text "$TF/hard_strings_expected.jsonl" .decoded
    jq -c '{input_ids: .ids}' "$TF/hard_strings_expected.jsonl" | "$T" -t "$QWEN_TOK" --decode --skip-special > "$D/s.jsonl"
    same_lines "$D/s.jsonl" .text "$TF/hard_strings_expected.jsonl" .decoded_skip
}

@test "--decode turns ids back into text; --skip-special drops specials" {
    printf '%s\n' '{"text":"Hello world, 你好！ 👍🏽"}' > "$D/t.jsonl"
    "$T" -q -t "$QWEN_TOK" -f text "$D/t.jsonl" | "$T" -t "$QWEN_TOK" --decode > "$D/d.jsonl"
    [ "$(jq -r .text "$D/d.jsonl")" = "Hello world, 你好！ 👍🏽" ]
    echo '{"input_ids":[151644,872,198,108386,151645,198]}' | "$T" -t "$QWEN_TOK" --decode --skip-special > "$D/s.jsonl"
    jq -e '.text == "user\n你好\n"' "$D/s.jsonl"
    run "$T" -t "$QWEN_TOK" --decode <<< '{"input_ids":[1,999999]}'
    [ "$status" -eq 1 ]
    [[ "$output" == *"<stdin>: line 1: input_ids[1] = 999999 is not an id"* ]]
}

@test "--stats writes JSON for jq" {
    "$T" -q -t "$QWEN_TOK" --no-system --stats "$D/s.json" -o "$D/o.jsonl" "$TF/chat_records.jsonl"
    jq -e '.records == 13 and .formats.alpaca == 3 and .formats.messages == 7 and .formats.sharegpt == 2 and .formats.text == 1' "$D/s.json"
    tokens=$(jq -s 'map(.input_ids | length) | add' "$D/o.jsonl")
    [ "$(jq .tokens "$D/s.json")" -eq "$tokens" ]
}

# ---- bad input: one line naming file and record, exit 1, no output left ------
bad_input() {  # file expected-substring [extra options]
    local f=$1 want=$2; shift 2
    run "$T" -q -t "$QWEN_TOK" --no-system "$@" -o "$D/out.jsonl" "$f"
    [ "$status" -eq 1 ] || { echo "status $status: $output"; return 1; }
    [ "$(printf '%s\n' "$output" | wc -l)" -eq 1 ] || { echo "not one line: $output"; return 1; }
    [[ "$output" == *"$want"* ]] || { echo "got: $output"; return 1; }
    [ ! -e "$D/out.jsonl" ] || { echo "output left behind"; return 1; }
    no_leftovers "$D"
}

@test "bad input: not JSON, naming the line" {
    printf '%s\n' '{"text":"ok"}' '{"text": oops}' > "$D/b.jsonl"
    bad_input "$D/b.jsonl" "b.jsonl: line 2: not valid JSON"
    echo 'hello there' > "$D/c.json"
    bad_input "$D/c.json" "c.json: not JSON"
    printf '[{"text":"a"},\n{"text":]\n' > "$D/d.json"
    bad_input "$D/d.json" "d.json: line 2: not valid JSON"
    printf '\n\n[{"text":"a"},\n{"text":]\n' > "$D/e.json"
    bad_input "$D/e.json" "e.json: line 4: not valid JSON"
    printf '\n  \n{"text":"ok"}\n\n{"text" "x"}\n' > "$D/f.jsonl"
    bad_input "$D/f.jsonl" "f.jsonl: line 5: not valid JSON"
}

@test "bad input: missing or mistyped fields, unknown roles, undetectable format" {
    printf '%s\n' '{"instruction":"a","output":"b"}' '{"instruction":"a","output":3}' > "$D/m.jsonl"
    bad_input "$D/m.jsonl" 'm.jsonl: line 2: field "output" is a number, not a string'
    echo '[{"instruction":"a","output":"b"},{"instruction":"a"}]' > "$D/n.json"
    bad_input "$D/n.json" 'n.json: record 2: field "output" is missing'
    echo '{"messages":[{"role":"wizard","content":"x"}]}' > "$D/r.jsonl"
    bad_input "$D/r.jsonl" 'r.jsonl: line 1: messages[0]: role "wizard" is not a known role'
    echo '{"messages":[{"role":"user","content":null}]}' > "$D/c.jsonl"
    bad_input "$D/c.jsonl" 'c.jsonl: line 1: messages[0]: field "content" is missing'
    echo '{"prompt":"x","completion":"y"}' > "$D/u.jsonl"
    bad_input "$D/u.jsonl" "u.jsonl: line 1: cannot tell the record's format"
    echo '{"text":"x"}' > "$D/t.jsonl"
    bad_input "$D/t.jsonl" 't.jsonl: line 1: field "instruction" is missing' --format alpaca
    echo '[1, 2]' > "$D/i.json"
    bad_input "$D/i.json" "i.json: record 1: the record is a number, not an object"
    echo '{"instruction":"a","output":"b","history":[["only one"]]}' > "$D/h.jsonl"
    bad_input "$D/h.jsonl" "h.jsonl: line 1: history[0] is not a [user, reply] pair"
}

@test "bad input: empty input, empty file" {
    : > "$D/e.jsonl"
    bad_input "$D/e.jsonl" "e.jsonl: empty input"
    printf '\n  \n' > "$D/w.jsonl"
    bad_input "$D/w.jsonl" "w.jsonl: empty input"
    echo '[]' > "$D/a.json"
    bad_input "$D/a.json" "a.json: empty input"
    run bash -c '"$0" -q -t "$1" < /dev/null' "$T" "$QWEN_TOK"
    [ "$status" -eq 1 ]; [[ "$output" == *"<stdin>: empty input"* ]]
}

@test "bad input: invalid UTF-8 names the record and byte" {
    printf '{"text":"ok"}\n{"text":"a\xffb"}\n' > "$D/u.jsonl"
    bad_input "$D/u.jsonl" "u.jsonl: line 2: invalid UTF-8 at byte 11 of the line"
    printf '[{"text":"ok"},\n {"text":"\xc3("}]' > "$D/u.json"
    bad_input "$D/u.json" "u.json: record 2: invalid UTF-8 at byte"
    mkdir -p "$D/m"; printf '{"text":"x"}\n{"text":"y"}\n{"text":"\xed\xa0\x80"}\n' > "$D/m/a.jsonl"
    (cd "$D/m" && tar czf ../m.tar.gz a.jsonl)
    bad_input "$D/m.tar.gz" "m.tar.gz: member a.jsonl: line 3: invalid UTF-8"
}

@test "bad input: unreadable archive member, corrupt archive" {
    mkdir -p "$D/a"; for i in $(seq 1 3000); do echo "{\"text\":\"line $i $RANDOM$RANDOM\"}"; done > "$D/a/big.jsonl"
    (cd "$D/a" && tar czf ../t.tar.gz big.jsonl)
    head -c 20000 "$D/t.tar.gz" > "$D/cut.tar.gz"
    bad_input "$D/cut.tar.gz" "cut.tar.gz: member big.jsonl: cannot read"
    printf 'PK\003\004garbage' > "$D/z.zip"
    bad_input "$D/z.zip" "z.zip: cannot read"
    bad_input "$D/missing.json" "missing.json: cannot read"
}

# ---- unsupported tokenizers ------------------------------------------------
@test "tokenizers that are not byte-level BPE are refused as unsupported" {
    base="$TF/tiny/tokenizer.json"
    echo '{"text":"x"}' > "$D/r.jsonl"
    check_unsupported() {  # jq-edit expected
        jq "$1" "$base" > "$D/tok.json"
        run "$T" -t "$D/tok.json" -o "$D/o.jsonl" "$D/r.jsonl"
        [ "$status" -eq 1 ] || { echo "accepted: $1"; return 1; }
        [[ "$output" == *"unsupported tokenizer: $2"* ]] || { echo "got: $output"; return 1; }
        [ ! -e "$D/o.jsonl" ]
    }
    check_unsupported '.model.type = "WordPiece"' "model type WordPiece"
    check_unsupported '.model = {"type":"Unigram","vocab":[["a",0]]}' "model type Unigram"
    check_unsupported '.normalizer = {"type":"Lowercase"}' "normalizer Lowercase"
    check_unsupported '.normalizer = {"type":"Sequence","normalizers":[{"type":"NFKC"}]}' "normalizer NFKC"
    check_unsupported '.pre_tokenizer = {"type":"Whitespace"}' "pre-tokenizer Whitespace"
    check_unsupported '.pre_tokenizer.pretokenizers[0].behavior = "Removed"' "Split behavior Removed"
    check_unsupported '.pre_tokenizer.pretokenizers[1].add_prefix_space = true' "ByteLevel add_prefix_space"
    check_unsupported '.pre_tokenizer = .pre_tokenizer.pretokenizers[0]' "no ByteLevel pre-tokenizer"
    check_unsupported '.model.dropout = 0.1' "BPE dropout"
    check_unsupported '.model.continuing_subword_prefix = "##"' "BPE continuing_subword_prefix"
    check_unsupported '.decoder = {"type":"WordPiece"}' "decoder WordPiece"
    check_unsupported 'del(.model.vocab["a"])' "the vocabulary has no token for byte 0x61"
    run "$T" -t "$D/nowhere" "$D/r.jsonl"
    [ "$status" -eq 1 ]; [[ "$output" == *"cannot open tokenizer"* ]]
}

@test "malformed tokenizer.json files are refused naming the problem" {
    base="$TF/tiny/tokenizer.json"
    echo '{"text":"x"}' > "$D/r.jsonl"
    check_malformed() {  # jq-edit expected
        jq "$1" "$base" > "$D/tok.json"
        run "$T" -t "$D/tok.json" -o "$D/o.jsonl" "$D/r.jsonl"
        [ "$status" -eq 1 ] || { echo "accepted: $1"; return 1; }
        [[ "$output" == *"$2"* ]] || { echo "got: $output"; return 1; }
    }
    check_malformed '.model.merges[0] = "a b c"' "malformed tokenizer: merge 0"
    check_malformed '.model.merges[3] = 7' "malformed tokenizer: merge 3 is neither"
    check_malformed '.model.vocab["a"] = -1' 'vocab entry "a" has no valid id'
    check_malformed '.model.merges[1] = "zz q"' "merge 1 uses a token that is not in the vocabulary"
    check_malformed 'del(.model.vocab["aa"])' "merge 0 makes a token that is not in the vocabulary"
    check_malformed 'del(.model)' 'no "model" object'
    head -c 3000 "$base" > "$D/tok.json"
    run "$T" -t "$D/tok.json" "$D/r.jsonl"
    [ "$status" -eq 1 ]; [[ "$output" == *"tok.json: line"*"not valid JSON"* ]]
    # Escapes in vocab keys and merges go through the fast path unchanged.
    jq '.' "$base" | sed 's/"a": /"\\u0061": /' > "$D/tok.json"
    grep -q '"\\u0061": ' "$D/tok.json"
    "$T" -q -t "$TF/tiny" -f text "$TF/hard_strings.jsonl" > "$D/want.jsonl"
    "$T" -q -t "$D/tok.json" -f text "$TF/hard_strings.jsonl" | cmp - "$D/want.jsonl"
}

@test "-o onto a FIFO writes into it instead of replacing it" {
    mkfifo "$D/p"
    cat "$D/p" > "$D/got.jsonl" &
    "$T" -q -t "$QWEN_TOK" --no-system -o "$D/p" "$TF/chat_records.jsonl"
    wait
    [ -p "$D/p" ]
    cmp "$D/got.jsonl" "$TF/chat_expected_nosys.jsonl"
}

@test "an error deep in the input with -j 4 still exits 1 and leaves no output" {
    for i in $(seq 1 5000); do echo "{\"text\":\"hello $i\"}"; done > "$D/late.jsonl"
    echo '{"text": 5}' >> "$D/late.jsonl"
    for i in $(seq 1 100); do echo '{"text":"x"}'; done >> "$D/late.jsonl"
    run "$T" -q -t "$QWEN_TOK" -j 4 -o "$D/out.jsonl" "$D/late.jsonl"
    [ "$status" -eq 1 ]
    [[ "$output" == *"late.jsonl: line 5001: field \"text\" is a number, not a string"* ]]
    [ ! -e "$D/out.jsonl" ]
    no_leftovers "$D"
}

@test "SIGTERM or SIGINT during a run leaves neither the output nor a temporary file" {
    for i in $(seq 1 300); do cat "$TF/hard_strings.jsonl"; done > "$D/big.jsonl"
    for sig in TERM INT; do
        "$T" -q -t "$QWEN_TOK" -f text -j 1 -o "$D/out.jsonl" "$D/big.jsonl" &
        pid=$!
        sleep 0.6
        kill -s "$sig" "$pid"
        run wait "$pid"
        [ "$status" -ne 0 ]
        [ ! -e "$D/out.jsonl" ]
        no_leftovers "$D"
    done
}
