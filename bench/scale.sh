#!/bin/sh
# Benchmark at real scale: two Llama-3.1-8B-shaped BF16 models (16.06 GB each in 4 shards, written by
# `graft synth --like-config tests/configs/llama-3.1-8b.json`, the second a fine-tune-like derivative),
# merged with linear, SLERP, TIES and DARE-TIES (density 0.5), against the synced I/O floor: cat of both
# inputs, cp of one model and sync. Each run, floor or merge, starts with a cold page cache
# (drop_caches: two inputs of 32 GB do not fit this machine's RAM anyway, so a "warm" run would be
# half cold), after the previous output is deleted and synced, untimed. Wall time: median of RUNS;
# peak RssAnon (what graft allocates, not the mapped input pages) of the first run.
# Then extract-lora's exact and randomized SVD routes, convert --to gguf --type q8_0 of one model, and
# (section research) iso_cts / tsv on one 8B-shaped layer against one sgesdd per matrix.
# Then (section eval, when LLAMA_CPP_BIN names a llama.cpp build/bin) graft eval against llama.cpp's
# llama-perplexity on the same Llama-3.2-1B-shaped BF16 and Q8_0 GGUF files, same tokens, ctx and threads.
# Usage: bench/scale.sh [WORKDIR]   (needs ~50 GB free, root for drop_caches; figures: docs/benchmarks.md)
#        SECTIONS="merge lora convert research eval" (default: all) picks parts; RUNS (3), THREADS (2),
#        TASKS (research: task vectors, 2), RESEARCH (its merges: "iso_cts tsv iso_cts:r tsv:r", :r = randomized)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench-scale"}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
SECTIONS=${SECTIONS:-merge lora convert research eval}
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
mkdir -p "$W"
cc -O2 -o "$W/peakrss" "$ROOT/bench/peakrss.c"
cd "$W"
if want merge || want lora || want convert; then
if [ ! -f a/model.safetensors.index.json ]; then
    echo "generating two 8B models..." >&2
    "$G" synth a --like-config "$ROOT/tests/configs/llama-3.1-8b.json" --seed 1 --threads "$THREADS" --force
fi
[ -f b/model.safetensors.index.json ] || "$G" synth b --like a --delta 0.002 --seed 2 --threads "$THREADS" --force
fi
cat > linear.yml <<'EOF'
merge_method: linear
models:
  - {model: a, parameters: {weight: 0.5}}
  - {model: b, parameters: {weight: 0.5}}
dtype: bfloat16
EOF
cat > slerp.yml <<'EOF'
merge_method: slerp
base_model: a
models: [{model: a}, {model: b}]
parameters: {t: 0.5}
dtype: bfloat16
EOF
for m in ties dare_ties; do
    printf 'merge_method: %s\nbase_model: a\nmodels:\n  - {model: b, parameters: {weight: 1.0, density: 0.5}}\ndtype: bfloat16\n' $m > $m.yml
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cold() { rm -rf out cp_out; sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
timeit() { cold; t0=$(now); "$@" >/dev/null 2>rss.txt; t1=$(now); echo "$t0 $t1" | awk '{printf "%.2f\n", $2 - $1}'; }
floor_run() { cat a/*.safetensors b/*.safetensors > /dev/null; cp -r a cp_out; sync; }
if want merge; then
bytes_in=$(cat a/*.safetensors b/*.safetensors | wc -c)
floor=$(for i in $(seq "$RUNS"); do timeit floor_run; done | median)
echo "two Llama-3.1-8B-shaped BF16 models ($bytes_in input bytes), $THREADS threads, cold page cache; median of $RUNS"
echo "floor (cat both inputs + cp one model + sync): ${floor}s"
printf '%-10s %9s %8s %14s\n' method graft/s xfloor "peak RssAnon"
for m in linear slerp ties dare_ties; do
    g=$(for i in $(seq "$RUNS"); do timeit "$W/peakrss" "$G" merge $m.yml out --threads "$THREADS"; done | median)
    cold
    "$W/peakrss" "$G" merge $m.yml out --threads "$THREADS" >/dev/null 2>rss.txt
    a=$(grep -o 'rssanon_kib=[0-9]*' rss.txt | cut -d= -f2)
    awk -v m=$m -v g="$g" -v f="$floor" -v a="$a" 'BEGIN { printf "%-10s %9.2f %7.2fx %10d MiB\n", m, g, g / f, a / 1024 }'
done
cold
fi

# ---- extract-lora --rank 64: exact (Gram) route vs --svd randomized (oversample 10, 2 power iterations),
# on a pair with every 8B matrix shape (2 decoder layers of Llama-3.1-8B; the full model has 16 times
# the work in the same shapes) whose deltas are low-rank plus noise (tests/ref/lowrank.py: rank 256,
# s_j = 0.97^j, noise 1e-4), warm page cache; the decoder layers' modules only (--include 'layers\.'):
# the input embedding and lm_head are copied whole either way, 2 GB of I/O that is not the SVD's; the
# error of each module from both reports
if want lora; then
if [ ! -f l2/model.safetensors ]; then
    "$G" synth l2 --like-config "$ROOT/tests/configs/llama-3.1-8b.json" --layers 2 --seed 3 --threads "$THREADS" --force
    rm -rf l2ft && /usr/bin/python3 "$ROOT/tests/ref/lowrank.py" l2 l2ft 256 1.0 0.0001 4 0.97
fi
cat l2/*.safetensors l2ft/*.safetensors > /dev/null
lora_run() { rm -rf lo; "$G" extract-lora --base l2 --model l2ft lo --rank 64 --threads "$THREADS" --include 'layers\.' --json "$@" > "lo$#.json" 2>/dev/null; }
t_exact=$( { t0=$(now); lora_run; t1=$(now); echo "$t0 $t1"; } | awk '{printf "%.2f\n", $2 - $1}'); cp lo0.json exact.json
t_rand=$( { t0=$(now); lora_run --svd randomized; t1=$(now); echo "$t0 $t1"; } | awk '{printf "%.2f\n", $2 - $1}'); cp lo2.json rand.json
rm -rf lo
/usr/bin/python3 - "$t_exact" "$t_rand" <<'PY'
import json, sys
e = {m["name"]: m for m in json.load(open("exact.json"))["modules"] if m["kind"] == "lora"}
r = {m["name"]: m for m in json.load(open("rand.json"))["modules"] if m["kind"] == "lora"}
te, tr = float(sys.argv[1]), float(sys.argv[2])
print("extract-lora --rank 64, 2 layers of 8B shapes (%d low-rank modules): exact %.2f s, randomized %.2f s: %.1fx" % (len(e), te, tr, te / tr))
print("%-36s %14s %10s %10s %9s" % ("module", "shape", "exact err", "rand err", "extra"))
worst = 0
for n in sorted(e):
    x = (r[n]["rel_error"] - e[n]["rel_error"]) / e[n]["rel_error"]
    worst = max(worst, x)
    print("%-36s %14s %10.6f %10.6f %8.4f%%" % (n, "%dx%d" % tuple(e[n]["shape"]), e[n]["rel_error"], r[n]["rel_error"], 100 * x))
print("worst extra relative error: %.4f %%" % (100 * worst))
PY
fi

# ---- convert --to gguf --type q8_0 of one 8B model, cold, against its floor: cat the input, write as
# many bytes as the GGUF file holds, sync
if want convert; then
gguf_run() { "$G" convert a out.gguf --type q8_0 --threads "$THREADS"; }
cold; gguf_run >/dev/null 2>&1; gsize=$(wc -c < out.gguf); rm -f out.gguf
gfloor_run() { cat a/*.safetensors > /dev/null; head -c "$gsize" /dev/zero > out.gguf; sync; }
gfloor=$(for i in $(seq "$RUNS"); do rm -f out.gguf; timeit gfloor_run; done | median)
gt=$(for i in $(seq "$RUNS"); do rm -f out.gguf; timeit gguf_run; done | median)
rm -f out.gguf
awk -v g="$gt" -v f="$gfloor" -v s="$gsize" 'BEGIN { printf "convert --to gguf --type q8_0 (%.2f GB out): %.2f s, floor %.2f s: %.2fx\n", s / 1e9, g, f, g / f }'
cold
fi

# ---- iso_cts / tsv on 8B shapes: one transformer layer of the Llama-3.1-8B config (synth --like-config
# --layers 1; vocabulary 256 so that the embedding and lm_head, tall matrices like gate/up, do not
# dominate one layer's figure) and TASKS fine-tune-like derivatives, against the baseline of one
# single-threaded LAPACK sgesdd per 2-D task matrix spread over THREADS threads (bench/sgesdd.c), warm
# page cache: the exact routes (what the references compute) and `randomized_svd: true`.
if want research; then
TASKS=${TASKS:-2}
if [ ! -f r1/model.safetensors ]; then
    "$G" synth r1 --like-config "$ROOT/tests/configs/llama-3.1-8b.json" --layers 1 --vocab 256 --seed 11 --threads "$THREADS" --force >/dev/null 2>&1
    for i in $(seq "$TASKS"); do "$G" synth rt$i --like r1 --delta 0.01 --seed $((11 + i)) --threads "$THREADS" --force >/dev/null 2>&1; done
fi
cc -O2 -I"$ROOT/include" -o sgesdd "$ROOT/bench/sgesdd.c" "$ROOT/build/libgraft.a" -ljansson -lyaml -lpcre2-8 -lutf8proc -llapacke -lopenblas -lz -lm -pthread
cat r1/*.safetensors rt*/*.safetensors > /dev/null
base_s=$(./sgesdd r1 rt1 "$THREADS" all)
echo "iso_cts / tsv: one Llama-3.1-8B layer (q/o 4096x4096, k/v 1024x4096, gate/up 14336x4096, down 4096x14336), $TASKS task vectors, $THREADS threads"
echo "baseline: one sgesdd per 2-D task matrix: ${base_s}s"
for spec in ${RESEARCH:-iso_cts tsv iso_cts:r tsv:r}; do
    m=${spec%:r} extra=""
    [ "$spec" != "$m" ] && extra="parameters: {randomized_svd: true}"
    { printf 'merge_method: %s\nbase_model: r1\nmodels:\n' "$m"; for i in $(seq "$TASKS"); do echo "  - model: rt$i"; done; echo "dtype: bfloat16"; echo "$extra"; } > r.yml
    rm -rf rout
    ./peakrss "$G" merge r.yml rout --threads "$THREADS" 2> rss.txt >/dev/null
    secs=$(sed -n 's/.*wall_s=\([0-9.]*\).*/\1/p' rss.txt) anon=$(sed -n 's/.*rssanon_kib=\([0-9]*\).*/\1/p' rss.txt)
    awk -v m="$m${extra:+ (randomized_svd)}" -v s="$secs" -v b="$base_s" -v a="$anon" 'BEGIN { printf "%-26s %8.1f s %6.2fx sgesdd   peak RssAnon %6.0f MB\n", m, s, s / b, a / 1024 }'
done
rm -rf rout
fi

# ---- graft eval vs llama.cpp's llama-perplexity: a Llama-3.2-1B-shaped model (synth --like-config;
# tied embeddings, vocabulary 128256) with a small byte-level BPE tokenizer (tests/ref/tok_ref.py), as
# BF16 and Q8_0 GGUF files; both tools score the same 4 windows of 512 tokens (llama-perplexity's
# chunks, tokenized by llama.cpp from the same text; graft gets those ids) with THREADS threads, warm
# page cache, one window per pass (graft --batch 1, llama.cpp -b 512) and four (graft --batch 4,
# llama.cpp's default -b 2048). llama.cpp's time: from its "calculating perplexity" log line to its
# "Final estimate" line (its log timestamps); graft's: tokens_per_second of --json (windows × ctx /
# forward-pass seconds; for BF16 both --matmul f32 and --matmul bf16). OpenBLAS picks its own kernels
# for graft (OPENBLAS_CORETYPE unset, as a user's environment has it; EVAL_CORETYPE=name forces one).
# Median of RUNS.
if want eval; then
if [ -z "${LLAMA_CPP_BIN:-}" ]; then echo "eval: skipped (set LLAMA_CPP_BIN to a llama.cpp build/bin)"; else
if [ ! -f e1b/model.safetensors ]; then
    "$G" synth e1b --like-config "$ROOT/tests/configs/llama-3.2-1b.json" --seed 5 --threads "$THREADS" --force >/dev/null
    /usr/bin/python3 "$ROOT/tests/ref/tok_ref.py" make llama3 e1b
fi
/usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import tok_ref; open("e1b.txt", "w").write(tok_ref.CORPUS * 40)' "$ROOT/tests/ref"
ge() { if [ -n "${EVAL_CORETYPE:-}" ]; then OPENBLAS_CORETYPE=$EVAL_CORETYPE "$G" "$@"; else env -u OPENBLAS_CORETYPE "$G" "$@"; fi; }
for t in bf16 q8_0; do
    [ -f e1b-$t.gguf ] || "$G" convert e1b e1b-$t.gguf --type $t --threads "$THREADS" >/dev/null 2>&1
    # llama.cpp's own chunks: its tokens, the first of each chunk replaced by BOS as llama-perplexity does
    "$LLAMA_CPP_BIN/llama-tokenize" -m e1b-$t.gguf -f e1b.txt --ids --log-disable 2>/dev/null > lc.ids
    /usr/bin/python3 -c 'import ast; a = ast.literal_eval(open("lc.ids").read().strip()); n = 512
w = [a[c * n:(c + 1) * n] for c in range(4)]
for c in w: c[0] = a[0]
open("e1b.ids", "w").write("\n".join(" ".join(map(str, c)) for c in w))'
    for nb in 1 4; do
        lc=$(for i in $(seq "$RUNS"); do "$LLAMA_CPP_BIN/llama-perplexity" -m e1b-$t.gguf -f e1b.txt -c 512 -b $((512 * nb)) --chunks 4 -t "$THREADS" > lp.txt 2>&1
            awk '/calculating perplexity/ || /Final estimate/ { split($1, p, "."); t = p[1] * 60 + p[2] + p[3] / 1e3 + p[4] / 1e6; if (/Final/) e = t; else s = t }
                 END { printf "%.2f\n", 2048 / (e - s) }' lp.txt; done | median)
        for mm in f32 $([ $t = bf16 ] && echo bf16); do # BF16 weights: f32 products, and bf16 ones as llama.cpp
            gr=$(for i in $(seq "$RUNS"); do ge eval e1b-$t.gguf --tokens e1b.ids --ctx 512 --no-bos --batch $nb --matmul $mm --threads "$THREADS" --json 2>/dev/null |
                sed 's/.*"tokens_per_second": \([0-9.]*\).*/\1/'; done | median)
            awk -v t=$t -v b=$nb -v g="$gr" -v l="$lc" -v mm=$mm 'BEGIN { printf "eval %-4s (Llama-3.2-1B shape, ctx 512, 4 windows, %d per pass): graft --matmul %-4s %.1f tokens/s, llama.cpp %.1f tokens/s: %.2fx\n", t, b, mm, g, l, g / l }'
        done
    done
done
fi
fi
