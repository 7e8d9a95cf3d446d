#!/bin/sh
# Benchmark: the research merges (iso_c, iso_cts, tsv, pcb) on 3 task vectors of a `graft synth` Llama
# with hidden 2048 and intermediate 5632 (LAYERS, default 4; vocabulary VOCAB, default 8192; BF16),
# 2 threads, against task_arithmetic (what reading and writing the same models costs) and against one
# LAPACK sgesdd per 2-D task matrix (bench/sgesdd.c, embeddings included, single-threaded BLAS on the
# same 2 threads). Per method: wall time and peak anonymous memory. Target: ≤ 3× the baseline.
# Usage: bench/research.sh [WORKDIR]
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench-research"}
L=${LAYERS:-4}
V=${VOCAB:-8192}
mkdir -p "$W"
cc -O2 -I"$ROOT/include" -o "$W/sgesdd" "$ROOT/bench/sgesdd.c" "$ROOT/build/libgraft.a" -ljansson -lyaml -lpcre2-8 -lutf8proc -llapacke -lopenblas -lz -lm -pthread
cc -O2 -o "$W/peakrss" "$ROOT/bench/peakrss.c"
cd "$W"
if [ ! -f base/model.safetensors ]; then
    "$G" synth base --layers $L --hidden 2048 --intermediate 5632 --heads 16 --kv-heads 4 --vocab $V --dtype bf16 --seed 1 --force >/dev/null
    for i in 1 2 3; do "$G" synth ft$i --like base --delta 0.01 --seed $((i + 1)) --force >/dev/null; done
fi
echo "model: $L layers, hidden 2048, intermediate 5632, vocab $V, BF16 ($(du -sbL base/model.safetensors | cut -f1) bytes); 3 task vectors; 2 threads"
base_s=$(./sgesdd base ft1 2 all)
echo "baseline: one sgesdd per 2-D task matrix: ${base_s}s"
printf '%-16s %9s %10s %12s\n' method seconds "x sgesdd" "peak anon"
for m in task_arithmetic iso_c iso_cts tsv pcb; do
    w=''
    [ $m = task_arithmetic ] && w='\n    parameters: {weight: 1.0}'
    printf "merge_method: $m\nbase_model: base\nmodels:\n  - model: ft1$w\n  - model: ft2$w\n  - model: ft3$w\ndtype: bfloat16\n" > $m.yml
    rm -rf out
    ./peakrss "$G" merge $m.yml out --threads 2 2> rss.txt >/dev/null
    secs=$(sed -n 's/.*wall_s=\([0-9.]*\).*/\1/p' rss.txt)
    anon=$(sed -n 's/.*rssanon_kib=\([0-9]*\).*/\1/p' rss.txt)
    awk -v m=$m -v s="$secs" -v b="$base_s" -v a="$anon" 'BEGIN { printf "%-16s %9.2f %10.2f %9.0f MB\n", m, s, s / b, a / 1024 }'
done
