#!/bin/sh
# Benchmark: `graft merge` of three ~1 GB BF16 LLaMA-layout models (a base and two fine-tunes from
# `graft synth`) against the I/O floor (cat of the three inputs + cp of one), warm page cache, 2
# threads, median of RUNS runs each: linear, task_arithmetic, ties (density 0.5), dare_ties (0.5).
# Also the floor plus `sync` (graft fsyncs its output; cp does not), a NumPy baseline of the same
# methods (bench/numpy_merge.py, per tensor as MergeKit does with torch), and graft's peak RssAnon
# (anonymous memory: what graft allocates, excluding the mapped input pages) on 1 GB and 4 GB models.
# Usage: bench/merge.sh [WORKDIR]   (needs ~35 GB free with the 4 GB models; BIG=0 skips them)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench-merge"}
RUNS=${RUNS:-5}
NP_RUNS=${NP_RUNS:-3}
BIG=${BIG:-1}
PY=${PYTHON:-/usr/bin/python3}
mkdir -p "$W"
cc -O2 -o "$W/peakrss" "$ROOT/bench/peakrss.c"
cd "$W"
gen() { # DIR LAYERS: base + two fine-tunes of ~LAYERS×100 MB + 260 MB
    if [ ! -f "$1/base/model.safetensors" ] && [ ! -f "$1/base/model.safetensors.index.json" ]; then
        echo "generating $1 models..." >&2
        mkdir -p "$1"
        "$G" synth "$1/base" --layers "$2" --hidden 2048 --intermediate 5504 --heads 16 --kv-heads 16 --vocab 32000 --dtype bf16 --seed 1 --force --threads 2
        "$G" synth "$1/ft1" --like "$1/base" --delta 0.002 --seed 2 --force --threads 2
        "$G" synth "$1/ft2" --like "$1/base" --delta 0.002 --seed 3 --force --threads 2
    fi
    for m in linear task_arithmetic ties dare_ties; do
        case $m in
        linear) p='{weight: 1.0}' ;;
        task_arithmetic) p='{weight: 1.0}' ;;
        *) p='{density: 0.5, weight: 1.0}' ;;
        esac
        base="base_model: base"
        [ $m = linear ] && base=""
        {
            echo "merge_method: $m"
            [ -n "$base" ] && echo "$base"
            echo "models:"
            [ $m = linear ] && echo "  - model: base" && echo "    parameters: $p"
            echo "  - model: ft1"; echo "    parameters: $p"
            echo "  - model: ft2"; echo "    parameters: $p"
            case $m in ties|dare_ties) echo "parameters: {normalize: true}" ;; esac
            echo "dtype: bfloat16"
        } > "$1/$m.yml"
    done
}
gen m1g 8
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
# Every timed run starts from the same state: the previous run's output deleted and all dirty pages
# written back, untimed — deleting an fsynced 1 GB file costs ~0.3 s, deleting cp's never-written
# copy almost nothing, and neither belongs to the run being measured.
clean() { rm -rf out cp_out np_out.safetensors; sync; }
timeit() { clean; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'; }
warm() { cat "$1"/base/*.safetensors "$1"/ft1/*.safetensors "$1"/ft2/*.safetensors > /dev/null; }
floor_run() { warm m1g; cp -r m1g/base cp_out; }
floor_sync_run() { floor_run; sync; }
graft_run() { "$G" merge "m1g/$1.yml" out --threads 2; }
np_run() { "$PY" "$ROOT/bench/numpy_merge.py" "$1" np_out.safetensors m1g/base m1g/ft1 m1g/ft2; }
bytes=$(du -sbL m1g/base | cut -f1)
warm m1g
floor=$(for i in $(seq $RUNS); do timeit floor_run; done | median)
floor_sync=$(for i in $(seq $RUNS); do timeit floor_sync_run; done | median)
rm -rf cp_out
echo "three BF16 models of $bytes bytes each, 2 threads, warm page cache; median of $RUNS (NumPy: of $NP_RUNS)"
echo "floor (cat 3 inputs + cp 1):   ${floor}s"
echo "floor + sync:                  ${floor_sync}s"
printf '%-16s %9s %9s %9s %12s %10s\n' method graft/s xfloor xfloor+sync numpy/s speedup
for m in linear task_arithmetic ties dare_ties; do
    g=$(for i in $(seq $RUNS); do timeit graft_run $m; done | median)
    np=-
    if [ "${NUMPY:-1}" = 1 ] && "$PY" -c 'import numpy' 2>/dev/null; then
        np=$(for i in $(seq $NP_RUNS); do timeit np_run $m; done | median)
    fi
    awk -v m=$m -v g="$g" -v f="$floor" -v s="$floor_sync" -v n="$np" 'BEGIN {
        printf "%-16s %9.3f %8.2fx %10.2fx %12s %10s\n", m, g, g / f, g / s, n, n == "-" ? "-" : sprintf("%.1fx", n / g) }'
done
# the non-finite checks (graft_count_nonfinite over every output chunk as stored, and over every input
# chunk as read: one warning per input tensor that holds NaN/Inf), timed alone over the linear merge's
# inputs and output, chunk by chunk in cache as the engine runs them, against that merge's time (goal: < 3 %)
cc -O2 -I"$ROOT/include" -o "$W/nonfinite" "$ROOT/bench/nonfinite.c" "$ROOT/build/libgraft.a" -ljansson -lyaml -lpcre2-8 -lutf8proc -llapacke -lopenblas -lz -lm -pthread
rm -rf out; graft_run linear
lin=$(for i in $(seq $RUNS); do timeit graft_run linear; done | median)
set -- $("$W/nonfinite" out/*.safetensors m1g/base/*.safetensors m1g/ft1/*.safetensors m1g/ft2/*.safetensors)
awk -v b="$1" -v s="$2" -v g="$lin" 'BEGIN { printf "non-finite checks of the linear merge (output and inputs, %.0f MB): %.4f s on one thread = %.2f %% of the merge (%.3f s), %.2f %% over its 2 threads\n", b / 1e6, s, 100 * s / g, g, 50 * s / g }'
rm -rf out np_out.safetensors
rss() { # DIR METHOD → "peak RssAnon MiB, peak RSS MiB"
    rm -rf out
    "$W/peakrss" "$G" merge "$1/$2.yml" out --threads 2 2> rss.txt >/dev/null
    a=$(grep -o 'rssanon_kib=[0-9]*' rss.txt | cut -d= -f2); r=$(grep -o 'peakrss_kib=[0-9]*' rss.txt | cut -d= -f2)
    echo "$((a / 1024)) MiB RssAnon, $((r / 1024)) MiB RSS"
    rm -rf out
}
echo "memory (2 threads, chunk 64 Ki elements: work buffers 2 × (2 × 3 inputs + 5) × chunk floats ≈ $((2 * 11 * 65536 * 4 / 1048576)) MiB):"
for m in linear ties dare_ties; do echo "  1 GB models, $m: $(rss m1g $m)"; done
if [ "$BIG" = 1 ]; then
    gen m4g 36
    for m in linear ties dare_ties; do echo "  4 GB models, $m: $(rss m4g $m)"; done
fi
