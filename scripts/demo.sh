#!/bin/sh
# `make demo`: what merging does, on a small trained family the repository ships (demo/family, made by
# scripts/train-demo-family.py): a byte-level Llama base and three fine-tunes on this repository's C
# sources, docs and Python references. Merges them with linear, TIES, DARE-TIES and RegMean (Grams from
# `graft eval --collect gram`), runs a short `graft evolve`, measures kinship (`graft analyze`), an
# extract-lora round trip and a GGUF conversion, then prints each model's perplexity on held-out text
# of each domain. Every number comes from this run.
set -eu
G="$PWD/build/graft"
F="$PWD/demo/family"
D="$PWD/build/demo"
T=${DEMO_THREADS:-$(nproc)}
rm -rf "$D" && mkdir -p "$D" && cd "$D"
step() { printf '\n$ %s\n' "$(echo "$*" | sed "s|$G|graft|g; s|$F/|family/|g; s|$F|family|g")"; "$@"; }
q() { "$@" > /dev/null 2> "$D/err" || { cat "$D/err" >&2; exit 1; }; } # quiet step: its output shows in the table

step "$G" inspect "$F/base"
step "$G" analyze --base "$F/base" "$F/c" "$F/docs" "$F/python" --threads "$T"

# merge configs: the experts with equal weights, and TIES / DARE-TIES over task vectors from the base
printf 'merge_method: linear\nmodels:\n' > linear.yml
printf 'merge_method: ties\nbase_model: %s/base\nmodels:\n' "$F" > ties.yml
printf 'merge_method: dare_ties\nbase_model: %s/base\nmodels:\n' "$F" > dare_ties.yml
printf 'merge_method: regmean\nmodels:\n' > regmean.yml
for e in c docs python; do
    printf '  - model: %s/%s\n    parameters: {weight: 1.0}\n' "$F" $e >> linear.yml
    printf '  - model: %s/%s\n    parameters: {weight: 1.0, density: 0.5}\n' "$F" $e >> ties.yml
    printf '  - model: %s/%s\n    parameters: {weight: 0.33, density: 0.5}\n' "$F" $e >> dare_ties.yml # MergeKit does not normalise dare_ties weights
    printf '  - model: %s/%s\n    parameters: {gram: %s.gram.safetensors}\n' "$F" $e $e >> regmean.yml
done
echo 'dtype: bfloat16' | tee -a linear.yml ties.yml dare_ties.yml regmean.yml > /dev/null
step cat ties.yml
step "$G" merge ties.yml ties --dry-run
step "$G" merge ties.yml ties --threads "$T"
step "$G" convert ties ties-f16 --dtype f16 --out-shard-size 600K
step ls ties-f16
step "$G" verify ties-f16
q "$G" merge linear.yml linear --threads "$T"
q "$G" merge dare_ties.yml dare_ties --threads "$T"
# RegMean: each expert's Gram matrices of its linear layers' inputs, over text of its own domain
for e in c docs python; do
    step "$G" eval "$F/$e" --text "$F/calib/$e.txt" --ctx 256 --collect gram $e.gram.safetensors --threads "$T"
done
step "$G" merge regmean.yml regmean --threads "$T"
# evolve: per-expert weights of a task-arithmetic merge, scored on the calibration texts (not the
# held-out ones the table uses)
cat > genome.yml <<YML
merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/c
    parameters: {weight: {search: [0, 1.5]}}
  - model: $F/docs
    parameters: {weight: {search: [0, 1.5]}}
  - model: $F/python
    parameters: {weight: {search: [0, 1.5]}}
dtype: bfloat16
YML
step "$G" evolve genome.yml --eval "$F/calib/c.txt" --eval "$F/calib/docs.txt" --eval "$F/calib/python.txt" --budget 70 --ctx 256 \
    --max-tokens 2048 --seed 1 evolved --threads "$T"
step cat evolved/mergekit_config.yml
# LoRA: the C expert as a rank-16 adapter on the base, applied back
step "$G" extract-lora --base "$F/base" --model "$F/c" c-lora --rank 16 --threads "$T"
q "$G" apply-lora "$F/base" c-lora c-lora-applied
# GGUF for llama.cpp: the TIES merge as Q8_0, scored from the GGUF file itself
step "$G" convert ties ties-q8_0.gguf --type q8_0
step "$G" verify ties-q8_0.gguf

# the table: perplexity (bytes) on held-out text of each domain; lower is better
ppl() { "$G" eval "$1" --text "$F/eval/$2.txt" --ctx 256 --threads "$T" --json 2> "$D/err" | sed 's/.*"perplexity": \([0-9.]*\).*/\1/'; }
printf '\nperplexity per byte on held-out text (lower is better)\n'
printf '%-30s %8s %8s %8s %8s\n' model c docs python mean
for m in "$F/base:base" "$F/c:expert c" "$F/docs:expert docs" "$F/python:expert python" linear:linear ties:ties dare_ties:dare_ties \
         regmean:regmean evolved:"evolve (task arithmetic)" c-lora-applied:"base + c LoRA r16" ties-q8_0.gguf:"ties, GGUF q8_0"; do
    path=${m%%:*} name=${m#*:}
    a=$(ppl "$path" c) b=$(ppl "$path" docs) c=$(ppl "$path" python)
    awk -v n="$name" -v a="$a" -v b="$b" -v c="$c" 'BEGIN { printf "%-30s %8.3f %8.3f %8.3f %8.3f\n", n, a, b, c, (a + b + c) / 3 }'
done
printf '\ndemo: all outputs are in %s\n' "$D"
