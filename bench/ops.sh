#!/bin/sh
# Benchmark: `graft prune` (magnitude 50 %, 2:4) and `graft quantize` (int8, int4) of a ~1 GB BF16
# LLaMA-layout model from `graft synth` against the I/O floor (cat of the input + cp of it), warm page
# cache, 2 threads, median of RUNS (default 5). Each timed run starts clean (previous output deleted and
# written back, untimed). Throughput as a fraction of the floor's: floor / graft (target ≥ 0.5).
# Usage: bench/ops.sh [WORKDIR]   (reuses bench/merge.sh's models when present)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench-merge"}
RUNS=${RUNS:-5}
mkdir -p "$W"
cd "$W"
if [ ! -f m1g/base/model.safetensors ]; then
    mkdir -p m1g
    "$G" synth m1g/base --layers 8 --hidden 2048 --intermediate 5504 --heads 16 --kv-heads 16 --vocab 32000 --dtype bf16 --seed 1 --force --threads 2
fi
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
clean() { rm -rf ops_out cp_out; sync; }
timeit() { clean; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'; }
floor_run() { cat m1g/base/*.safetensors > /dev/null; cp -r m1g/base cp_out; }
cat m1g/base/*.safetensors > /dev/null
floor=$(for i in $(seq $RUNS); do timeit floor_run; done | median)
echo "one BF16 model of $(du -sbL m1g/base | cut -f1) bytes, 2 threads, warm page cache, median of $RUNS"
echo "floor (cat + cp): ${floor}s"
run() { # LABEL ARGS...
    label=$1; shift
    t=$(for i in $(seq $RUNS); do timeit "$G" "$@" --threads 2; done | median)
    awk -v l="$label" -v t="$t" -v f="$floor" 'BEGIN { printf "%-24s %8.3fs   %.2f of the floor'"'"'s throughput\n", l, t, f / t }'
}
run "prune --sparsity 0.5" prune m1g/base ops_out --sparsity 0.5
run "prune --scope global" prune m1g/base ops_out --sparsity 0.5 --scope global
run "prune --nm 2:4" prune m1g/base ops_out --nm 2:4
run "quantize int8" quantize m1g/base ops_out --scheme int8
run "quantize int4" quantize m1g/base ops_out --scheme int4
clean
