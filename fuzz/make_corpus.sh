#!/usr/bin/env bash
# fuzz/make_corpus.sh: (re)build the committed seed corpora fuzz/corpus/<name>/
# from the test fixtures and, where present, ../shared.  Small on purpose (a
# few KB per seed): libFuzzer mutates small inputs fastest, and the large real
# files can be added at run time (fuzz/run.sh adds them as extra seeds).
# Needs bin/ built (pack, shard-plan) and zstd, gzip, bsdtar.
set -euo pipefail
cd "$(dirname "$0")/.."
C=fuzz/corpus
F=tests/fixtures
SHARED=${LORAPIPE_SHARED:-../shared}
rm -rf "$C"; mkdir -p "$C"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# tokenizer_json: the three tiny tokenizers, and refusals of each kind.
d=$C/tokenizer_json; mkdir -p $d
cp $F/tokenize/tiny/tokenizer.json $d/tiny.json
cp $F/tokenize/tiny-gpt2/tokenizer.json $d/tiny-gpt2.json
cp $F/tokenize/tiny-quirk/tokenizer.json $d/tiny-quirk.json
jq -c '.model.type="WordPiece"' $F/tokenize/tiny-quirk/tokenizer.json > $d/wordpiece.json
jq -c '.normalizer={"type":"NFKC"}' $F/tokenize/tiny-quirk/tokenizer.json > $d/nfkc.json
jq -c '.pre_tokenizer.pretokenizers[0].pattern.Regex="(a+)+$"' $F/tokenize/tiny/tokenizer.json > $d/backtrack.json 2>/dev/null || true

# records_json / records_jsonl: chat records of every format, huanhuan's first records.
d=$C/records_jsonl; mkdir -p $d
i=0; while IFS= read -r l; do i=$((i + 1)); printf '%s\n' "$l" > $d/chat$i.jsonl; done < $F/tokenize/chat_records.jsonl
cp $F/tokenize/chat_records.jsonl $d/all.jsonl
printf '{"text":"plain text, every token trained"}\n\n{"text":"second"}\r\n' > $d/text.jsonl
d=$C/records_json; mkdir -p $d
jq -s -c '.' $F/tokenize/chat_records.jsonl > $d/chat.json
jq -s '.[0:2]' $F/tokenize/chat_records.jsonl > $d/chat-indented.json
printf '\xef\xbb\xbf[{"instruction":"a","output":"b"}]' > $d/bom.json
if [ -e "$SHARED/data/huanhuan.json" ]; then jq '.[0:3]' "$SHARED/data/huanhuan.json" > $d/huanhuan3.json; fi

# records_archive: the same records in every container tokenize reads.
d=$C/records_archive; mkdir -p $d
mkdir -p $tmp/ar/data; head -n 3 $F/tokenize/chat_records.jsonl > $tmp/ar/data/a.jsonl
jq -s '.[3:5]' $F/tokenize/chat_records.jsonl > $tmp/ar/data/b.json; echo 'not data' > $tmp/ar/data/readme.txt
(cd $tmp/ar && bsdtar -cf - data) > $d/a.tar
(cd $tmp/ar && bsdtar -czf - data) > $d/a.tar.gz
(cd $tmp/ar && bsdtar --zstd -cf - data) > $d/a.tar.zst
(cd $tmp/ar && bsdtar --format zip -cf - data) > $d/a.zip
gzip -c $tmp/ar/data/a.jsonl > $d/a.jsonl.gz
zstd -q -c $tmp/ar/data/a.jsonl > $d/a.jsonl.zst
xz -c $tmp/ar/data/b.json > $d/b.json.xz 2>/dev/null || true

# token_record: tokenize's output lines.
d=$C/token_record; mkdir -p $d
head -n 2 $F/tokenize/chat_expected_qwen2.jsonl > $d/chat.jsonl
head -n 4 $F/pack/small.jsonl > $d/small.jsonl
printf '{"labels":[-100,5,6],"input_ids":[4,5,6],"extra":{"k":"v"}}\n{"input_ids":[1],"labels":[1]}\n' > $d/shapes.jsonl

# pack: small packs of each mode, from the first records of the pack fixture.
d=$C/pack; mkdir -p $d
head -n 6 $F/pack/small.jsonl > $tmp/s.jsonl
bin/pack --batch-size 2 --epochs 2 -o $d/pad.pack $tmp/s.jsonl 2>/dev/null
bin/pack --mode packed --row-tokens 256 --batch-size 2 -o $d/packed.pack $tmp/s.jsonl 2>/dev/null
bin/pack --mode packed --packing next-fit --row-tokens 256 --order sequential -o $d/nextfit.pack $tmp/s.jsonl 2>/dev/null
bin/pack --batch-tokens 512 --keep-empty --accum 2 -o $d/budget.pack $tmp/s.jsonl 2>/dev/null

# safetensors_header: a small file of every dtype, and the tiny models' headers
# (the 8-byte length and the header: st_open refuses them for the missing
# data, the stream path reads them whole).
d=$C/safetensors_header; mkdir -p $d
cp $F/safetensors/mixed.safetensors $d/mixed.safetensors
for m in qwen2-tiny-tied-fp32 qwen2-tiny-untied-bf16 lora-qkvo-r8; do
    f=$F/tiny-models/$m/model.safetensors; [ -e $f ] || f=$F/tiny-models/$m/adapter_model.safetensors
    n=$(od -An -t u8 -N 8 $f | tr -d ' ')
    head -c $((8 + n)) $f > $d/$m.header
done

# safetensors_index: indexes for the fuzz target's folder (two copies of the
# tiny tied model's weights, model-0000{1,2}-of-00002.safetensors).
d=$C/safetensors_index; mkdir -p $d
f=$F/tiny-models/qwen2-tiny-tied-fp32/model.safetensors
n=$(od -An -t u8 -N 8 $f | tr -d ' ')
names=$(dd if=$f bs=1 skip=8 count=$n 2>/dev/null | jq -c '[keys[] | select(. != "__metadata__")]')
jq -n --argjson k "$names" '{metadata:{total_size:381000}, weight_map:($k | map({(.):"model-00001-of-00002.safetensors"}) | add)}' > $d/one-shard.json
jq -n --argjson k "$names" '{metadata:{}, weight_map:($k | to_entries | map({(.value):("model-0000" + (if .key % 2 == 0 then "1" else "2" end) + "-of-00002.safetensors")}) | add)}' > $d/two-shards.json
printf '{"weight_map":{"model.norm.weight":"../x.safetensors"}}' > $d/escape.json

# hf_config: the tiny configs (transformers 4 and 5 spellings).
d=$C/hf_config; mkdir -p $d
for m in qwen2-tiny-tied-fp32 qwen2-tiny-untied-bf16; do cp $F/tiny-models/$m/config.json $d/$m.json; done
jq 'del(.rope_parameters, .dtype) + {torch_dtype:"bfloat16", rope_theta:1000000.0, head_dim:16}' \
    $F/tiny-models/qwen2-tiny-untied-bf16/config.json > $d/v4.json

# adapter_config: the fixture adapters (lists, regexes, patterns, rsLoRA).
d=$C/adapter_config; mkdir -p $d
for m in lora-qkvo-r8 lora-pattern lora-all-rslora; do cp $F/tiny-models/$m/adapter_config.json $d/$m.json; done
jq '.target_modules=".*\\.(q|v)_proj" | .layers_to_transform=[0] | .layers_pattern=["layers"] | .exclude_modules=["k_proj"]' \
    $F/tiny-models/lora-qkvo-r8/adapter_config.json > $d/regex.json

# plan: placement files of the shape shard-plan writes (docs/FORMATS.md).
d=$C/plan; mkdir -p $d
cat > $d/two.json <<'PLAN'
{"format": "lorapipe-plan", "version": 1,
 "model": {"config": "tests/fixtures/tiny-models/qwen2-tiny-tied-fp32/config.json",
           "fingerprint": "qwen2 L=2 H=64 F=128 V=320 heads=4/2 d=16 tied=1", "parameters": 115008},
 "lora": {"r": 8, "targets": ["q_proj", "v_proj"], "parameters": 4096},
 "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_bytes": 25769803776, "usable_bytes": 25769803776},
          {"index": 1, "name": "NVIDIA H200", "memory_bytes": 25769803776, "usable_bytes": 25769803776}],
 "memory_cap_bytes": 0, "micro_batch_tokens": 512, "max_sequence": 128, "accum": 2,
 "recompute": false, "embedding_on_host": false, "host_offload": false,
 "replicas": 2, "stages_per_replica": 1,
 "placement": [{"replica": 0, "stage": 0, "gpu": 0, "layers": [0, 2], "embedding": true, "head": true},
               {"replica": 1, "stage": 0, "gpu": 1, "layers": [0, 2], "embedding": true, "head": true}],
 "predicted_tokens_per_s": 1.5e9}
PLAN
jq -c '.replicas=1 | .gpus=.gpus[0:1] | .placement=.placement[0:1] | .recompute=true | .memory_cap_bytes=8000000000' \
    $d/two.json > $d/one.json
du -sh "$C"/*
