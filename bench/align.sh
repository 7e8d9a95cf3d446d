#!/bin/sh
# Figures for graft align (docs/quantize-prune.md): perplexity per byte of a 50/50 linear merge of two
# models, without and with aligning the second to the first, on the demo family's held-out texts.
#   A  = demo/family/base (trained by scripts/train-demo-family.py)
#   A' = A with every layer's MLP neurons and heads shuffled (tests/ref/align_ref.py permute): the same
#        function, unrelated unit order — the case weight matching undoes exactly
#   B  = a second base trained the same way from another initialisation and batch order
#        (bench/align-train.py, about 10 minutes on 2 cores; kept in WORKDIR)
# Usage: bench/align.sh [WORKDIR]
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench-align"}
PY=${PYTHON:-/usr/bin/python3}
F="$ROOT/demo/family"
mkdir -p "$W"
cd "$W"
[ -f base2/model.safetensors ] || "$PY" "$ROOT/bench/align-train.py" base2 7 2
rm -rf perm && "$PY" "$ROOT/tests/ref/align_ref.py" permute "$F/base" perm 5 >/dev/null
# (the permuted copy is written in f32 by the reference; the merges below store bf16 as the base does)
ppl() { for t in c docs python; do "$G" eval "$1" --text "$F/eval/$t.txt" --ctx 256 --threads 2 --json 2>/dev/null | sed 's/.*"perplexity": \([0-9.]*\).*/\1/'; done | tr '\n' ' '; }
merge() { printf 'merge_method: linear\ndtype: bfloat16\nmodels:\n  - model: %s\n    parameters: {weight: 0.5}\n  - model: %s\n    parameters: {weight: 0.5}\n' "$1" "$2" > m.yml
          rm -rf "$3" && "$G" merge m.yml "$3" --threads 2 >/dev/null 2>&1; }
printf '%-40s %8s %8s %8s %8s\n' model c docs python mean
for m in "$F/base" base2; do echo "$(basename "$m") $(ppl "$m")"; done
for pair in "perm" "base2"; do
    merge "$F/base" $pair mx-$pair
    echo "A + $pair (linear 0.5/0.5)                 $(ppl mx-$pair)"
    for mode in layers residual; do
        rm -rf al-$pair-$mode && "$G" align $pair --to "$F/base" al-$pair-$mode --json --threads 2 $([ $mode = layers ] && echo --no-residual) \
            > al-$pair-$mode.json 2>/dev/null
        merge "$F/base" al-$pair-$mode ma-$pair-$mode
        echo "A + $pair aligned, $mode (linear 0.5/0.5)   $(ppl ma-$pair-$mode)"
        echo "  $("$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); print("cosine to A: MLP %.4f -> %.4f, attention %.4f -> %.4f; %d rounds, %d residual channels moved" % (r["mlp_before"], r["mlp_after"], r["attn_before"], r["attn_after"], r["iterations"], r["residual_moved"]))' al-$pair-$mode.json)"
    done
done
