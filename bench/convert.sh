#!/bin/sh
# Benchmark: `graft convert --dtype f16` of a ~2 GB BF16 model against the I/O floor (cat of the input
# + cp of it), warm page cache, median of 5 runs each, 2 threads. Also the floor plus `sync` (graft
# fsyncs its output; cp does not), and graft's peak RSS.
# Usage: bench/convert.sh [WORKDIR]   (needs ~8 GB free; `make bench` runs it)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench"}
RUNS=${RUNS:-5}
mkdir -p "$W"
cc -O2 -o "$W/peakrss" "$ROOT/bench/peakrss.c"
cd "$W"
if [ ! -f in/model.safetensors.index.json ] && [ ! -f in/model.safetensors ]; then
    echo "generating ~2 GB BF16 model..." >&2
    "$G" synth in --layers 16 --hidden 2048 --intermediate 5504 --heads 16 --kv-heads 16 --vocab 32000 --dtype bf16 --seed 1 --force
fi
bytes=$(du -sb in | cut -f1)
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
timeit() { # prints seconds for one run of "$@"
    t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
    echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'
}
cat in/*.safetensors > /dev/null # warm the page cache
floor_run() { cat in/*.safetensors > /dev/null; rm -rf cp_out; cp -r in cp_out; }
floor_sync_run() { floor_run; sync; }
graft_run() { rm -rf out; "$G" convert in out --dtype f16 --threads 2; }
floor=$(for i in $(seq $RUNS); do timeit floor_run; done | median)
floor_sync=$(for i in $(seq $RUNS); do timeit floor_sync_run; done | median)
rm -rf cp_out
graft=$(for i in $(seq $RUNS); do timeit graft_run; done | median)
"$W/peakrss" "$G" convert in out --dtype f16 --threads 2 --force 2> rss.txt >/dev/null || true
rss=$(grep -o 'peakrss_kib=[0-9]*' rss.txt | cut -d= -f2)
echo "input: $bytes bytes BF16 → F16, 2 threads, median of $RUNS"
echo "floor (cat + cp):         ${floor}s"
echo "floor (cat + cp + sync):  ${floor_sync}s"
echo "graft convert:            ${graft}s"
awk -v g="$graft" -v f="$floor" -v s="$floor_sync" -v b="$bytes" 'BEGIN {
    printf "ratio to floor:           %.2fx\nratio to floor+sync:      %.2fx\nthroughput:               %.0f MB/s read\n", g / f, g / s, b / g / 1e6 }'
echo "graft peak RSS:           $((rss / 1024)) MiB"
rm -rf out
