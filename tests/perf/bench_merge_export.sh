#!/usr/bin/env bash
# tests/perf/bench_merge_export.sh MODEL ADAPTER OUT: time `merge | export` on a
# model folder (e.g. one made by make_random_model.py) with the page cache for
# the model's files dropped first (cold read), and measure the disk in the same
# run: sequential write of 2 GiB of random bytes with fdatasync, and a cold read.
# The closest ceiling for a job that reads and writes the same disk is a plain
# copy of the model's shard files (cold cache, fdatasync): timed in the same run.
# Prints wall time, throughput (model bytes / wall time) and peak RSS of each tool.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=$1 adapter=$2 out=$3
work=$(dirname "$out")
bytes=$(jq '.metadata.total_size' "$model/model.safetensors.index.json" 2>/dev/null || stat -c %s "$model/model.safetensors")

disk_reference() {
    head -c 2G /dev/urandom > /dev/shm/lorapipe-dd.bin
    w=$(dd if=/dev/shm/lorapipe-dd.bin of="$work/dd.bin" bs=16M conv=fdatasync 2>&1 | sed -n 's/.*, \([0-9.]* [MG]B\/s\)$/\1/p')
    dd if="$work/dd.bin" iflag=nocache count=0 status=none
    r=$(dd if="$work/dd.bin" of=/dev/null bs=16M 2>&1 | sed -n 's/.*, \([0-9.]* [MG]B\/s\)$/\1/p')
    rm -f "$work/dd.bin" /dev/shm/lorapipe-dd.bin
    echo "disk: write $w (dd, random data, fdatasync), cold read $r"
}

drop_cache() { for f in "$model"/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done; }

copy_reference() {
    rm -rf "$work/copy" && mkdir "$work/copy"
    drop_cache
    local t0 t1
    t0=$(date +%s.%N)
    cp "$model"/*.safetensors "$work/copy/"
    sync -d "$work/copy"/*
    t1=$(date +%s.%N)
    rm -rf "$work/copy"
    awk -v b="$bytes" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "reference: cp of the shards (cold read, fdatasync) %.1f s = %.0f MB/s\n", t1 - t0, b / (t1 - t0) / 1e6 }'
}

rm -rf "$out"
disk_reference
copy_reference
drop_cache
if command -v fincore >/dev/null; then
    echo "model pages in the page cache before the run: $(fincore -b -n -o RES "$model"/*.safetensors | awk '{s += $1} END {print s + 0}') bytes"
fi
t0=$(date +%s.%N)
/usr/bin/time -v -o "$work/merge.time" bin/merge --model "$model" --adapter "$adapter" |
    /usr/bin/time -v -o "$work/export.time" bin/export --model "$model" --out "$out"
t1=$(date +%s.%N)
rss() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
awk -v b="$bytes" -v t0="$t0" -v t1="$t1" -v rm="$(rss "$work/merge.time")" -v re="$(rss "$work/export.time")" 'BEGIN {
    t = t1 - t0
    printf "merge | export: %.3f GB in %.1f s = %.0f MB/s; peak RSS merge %.0f MiB, export %.0f MiB\n", b / 1e9, t, b / t / 1e6, rm / 1024, re / 1024 }'
grep -E "Elapsed|Percent of CPU" "$work/merge.time" "$work/export.time" | sed 's/^/  /'
copy_reference
disk_reference
