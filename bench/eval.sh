#!/bin/sh
# Benchmark: `graft eval` prompt processing on a `graft synth` Llama (hidden 1024, 8 layers,
# intermediate 2816, 16 heads / 4 KV heads, vocabulary 32000, BF16), ctx 512, 2 threads: tokens/s
# and the fraction of OpenBLAS's own sgemm throughput on the same products (bench/sgemm.c, f32
# weights, OpenBLAS threads; target ≥ 60 %), median of RUNS (default 3); peak memory against the
# size of the weights' mapping. Debian's OpenBLAS 0.3.21 may not know a newer CPU and fall back to
# its generic "Prescott" kernels (6× slower here); when the CPU has AVX-512 the runs are repeated with
# OPENBLAS_CORETYPE=SkylakeX, baseline included.
# Usage: bench/eval.sh [WORKDIR]
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench-eval"}
RUNS=${RUNS:-3}
mkdir -p "$W"
cc -O2 -I"$ROOT/include" -o "$W/sgemm" "$ROOT/bench/sgemm.c" "$ROOT/build/libgraft.a" -ljansson -lyaml -lpcre2-8 -lutf8proc -llapacke -lopenblas -lz -lm -pthread
cc -O2 -o "$W/peakrss" "$ROOT/bench/peakrss.c"
cd "$W"
[ -f m/model.safetensors ] || "$G" synth m --layers 8 --hidden 1024 --intermediate 2816 --heads 16 --kv-heads 4 --vocab 32000 --dtype bf16 --seed 1 --force >/dev/null
/usr/bin/python3 -c 'import random; random.seed(1); print(" ".join(str(random.randrange(32000)) for _ in range(4 * 512)))' > ids.txt
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "model: $(du -sbL m/model.safetensors | cut -f1) bytes BF16, 2048 tokens in windows of 512, 2 threads"
cores="default"
grep -q avx512f /proc/cpuinfo && [ -z "${OPENBLAS_CORETYPE:-}" ] && cores="default SkylakeX"
for core in $cores; do
    [ $core = default ] || export OPENBLAS_CORETYPE=$core
    for batch in 1 4; do
        blas=$(./sgemm m $((512 * batch)) 2)
        for i in $(seq $RUNS); do "$G" eval m --tokens ids.txt --ctx 512 --no-bos --batch $batch --threads 2 --json; done > runs.json
        tps=$(sed 's/.*"tokens_per_second": \([0-9.]*\).*/\1/' runs.json | median)
        gf=$(sed 's/.*"gflop_per_second": \([0-9.]*\).*/\1/' runs.json | median)
        awk -v c=$core -v b=$batch -v t=$tps -v g=$gf -v s=$blas 'BEGIN { printf "OpenBLAS kernels %-9s --batch %d: %7.1f tokens/s, %6.1f GFLOP/s; OpenBLAS sgemm on the same products %6.1f GFLOP/s: %.0f %%\n", c, b, t, g, s, 100 * g / s }'
    done
done
./peakrss "$G" eval m --tokens ids.txt --ctx 512 --no-bos --batch 4 --threads 2 2> rss.txt >/dev/null
echo "peak memory (--batch 4): $(cat rss.txt)"
