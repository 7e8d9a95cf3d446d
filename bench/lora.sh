#!/bin/sh
# Benchmark: `graft extract-lora --rank 64` on a hidden-2048, 4-layer BF16 model from `graft synth`
# (base + a fine-tune-like copy), 2 threads, against the baseline of one full thin SVD (sgesdd) per
# weight delta on the same threads (bench/sgesdd.c) — what MergeKit's extraction computes; also
# `graft apply-lora` of the result and its peak RssAnon. graft: median of RUNS (default 3); the
# baseline (minutes): BASE_RUNS (default 1).
# Usage: bench/lora.sh [WORKDIR]
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench-lora"}
RUNS=${RUNS:-3}
mkdir -p "$W"
cc -O2 -I"$ROOT/include" -o "$W/sgesdd" "$ROOT/bench/sgesdd.c" "$ROOT/build/libgraft.a" -ljansson -lyaml -lpcre2-8 -lutf8proc -llapacke -lopenblas -lz -lm -pthread
cc -O2 -o "$W/peakrss" "$ROOT/bench/peakrss.c"
cd "$W"
if [ ! -f base/model.safetensors ]; then
    "$G" synth base --layers 4 --hidden 2048 --intermediate 5504 --heads 16 --kv-heads 16 --vocab 32000 --dtype bf16 --seed 1 --force --threads 2
    "$G" synth ft --like base --delta 0.002 --seed 2 --force --threads 2
fi
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
# timeit DIR CMD...: DIR (the command's output) removed and everything written back first, untimed
timeit() { rm -rf "$1"; shift; sync; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'; }
base_s=$(for i in $(seq ${BASE_RUNS:-1}); do ./sgesdd base ft 2; done | median)
ext_s=$(for i in $(seq $RUNS); do timeit out "$G" extract-lora --base base --model ft out --rank 64 --threads 2; done | median)
rm -rf out
"$G" extract-lora --base base --model ft out --rank 64 --threads 2 --json > report.json 2>/dev/null
app_s=$(for i in $(seq $RUNS); do timeit applied "$G" apply-lora base out applied --threads 2; done | median)
rm -rf applied
"$W/peakrss" "$G" apply-lora base out applied --threads 2 2> rss.txt >/dev/null || true
a=$(grep -o 'rssanon_kib=[0-9]*' rss.txt | cut -d= -f2)
echo "hidden 2048, 4 layers, 28 weight deltas (2048×2048 and 2048×5504), 2 threads, median of $RUNS"
echo "sgesdd per matrix (baseline):   ${base_s}s"
echo "graft extract-lora --rank 64:   ${ext_s}s   ($(echo "$base_s $ext_s" | awk '{printf "%.1f", $1 / $2}')x faster)"
echo "graft apply-lora:               ${app_s}s   (peak RssAnon $((a / 1024)) MiB)"
echo "largest relative error of a rank-64 module: $(sed -n 's/.*"max_rel_error": \([0-9.e+-]*\).*/\1/p' report.json)"
rm -rf out applied
