#!/bin/sh
# Figures for graft evolve (docs/eval.md): hand recipes against searched merges of the demo family's
# three experts (demo/family/{c,docs,python}, fine-tuned from demo/family/base on disjoint domains by
# scripts/train-demo-family.py). Every search scores on the calibration texts (demo/family/calib, the
# first 4096 bytes of each, windows of 256) and every figure is the mean NLL per byte on the held-out
# texts (demo/family/eval, all of each), mean over the three domains, and the perplexity exp(mean NLL).
# Budget 150 evaluations (whole generations: 143 or 144), seeds 1, 2, 3 for each search.
# Usage: bench/evolve-family.sh [WORKDIR]
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench-evolve"}
F="$ROOT/demo/family"
mkdir -p "$W"
cd "$W"
for m in base c docs python; do ln -sfn "$F/$m" $m; done
CAL="--eval $F/calib/c.txt --eval $F/calib/docs.txt --eval $F/calib/python.txt --ctx 256 --max-tokens 4096 --threads 2"
score() { # mean NLL on each held-out text, their mean and exp(mean)
    for t in c docs python; do "$G" eval "$1" --text "$F/eval/$t.txt" --ctx 256 --threads 2 --json 2>/dev/null | sed 's/.*"nll": \([0-9.e-]*\).*/\1/'; done |
        awk '{ s += $1; printf "%.4f ", $1 } END { printf "%.4f %.3f\n", s / NR, exp(s / NR) }'
}
models() { # models: entries with parameters $1 (sed-substituted per model)
    for m in c docs python; do printf '  - model: %s\n    parameters: %s\n' $m "$1"; done
}
# hand recipes
{ echo "merge_method: linear"; echo "models:"; models "{weight: 1}"; echo "dtype: bfloat16"; } > avg.yml
{ echo "merge_method: task_arithmetic"; echo "base_model: base"; echo "models:"; models "{weight: 1}"; echo "dtype: bfloat16"; } > ta1.yml
{ echo "merge_method: task_arithmetic"; echo "base_model: base"; echo "models:"; models "{weight: 0.5}"; echo "dtype: bfloat16"; } > ta05.yml
{ echo "merge_method: ties"; echo "base_model: base"; echo "models:"; models "{weight: 1, density: 0.5}"; echo "dtype: bfloat16"; } > ties.yml
for m in c docs python; do
    [ -f gram-$m.safetensors ] || "$G" eval $m --text "$F/calib/$m.txt" --ctx 256 --threads 2 --collect gram gram-$m.safetensors >/dev/null 2>&1
done
{ echo "merge_method: regmean"; echo "models:"; for m in c docs python; do printf '  - model: %s\n    parameters: {gram: gram-%s.safetensors}\n' $m $m; done
  echo "dtype: bfloat16"; } > regmean.yml
# the other methods at the defaults a user would start from (weight 1 where a method takes one)
{ echo "merge_method: dare_ties"; echo "base_model: base"; echo "models:"; models "{weight: 1, density: 0.5}"; echo "dtype: bfloat16"; } > dare_ties.yml
{ echo "merge_method: della"; echo "base_model: base"; echo "models:"; models "{weight: 1, density: 0.5, epsilon: 0.1}"; echo "dtype: bfloat16"; } > della.yml
for y in pcb sce; do { echo "merge_method: $y"; echo "base_model: base"; echo "models:"; models "{weight: 1}"; echo "dtype: bfloat16"; } > $y.yml; done
for y in model_stock tsv iso_c iso_cts; do { echo "merge_method: $y"; echo "base_model: base"; echo "models:"; models "{}"; echo "dtype: bfloat16"; } > $y.yml; done
{ echo "merge_method: tsv"; echo "base_model: base"; echo "models:"; models "{}"; echo "parameters: {scaling_factor: 0.5}"; echo "dtype: bfloat16"; } > tsv05.yml
{ echo "merge_method: karcher"; echo "models:"; models "{}"; echo "dtype: bfloat16"; } > karcher.yml
printf '%-44s %7s %7s %7s %7s %7s\n' recipe c docs python mean ppl
for m in base c docs python; do printf '%-44s %s\n' "$m" "$(score $m)"; done
for y in avg ta1 ta05 ties dare_ties della pcb sce model_stock karcher tsv tsv05 iso_c iso_cts regmean; do
    rm -rf m-$y && "$G" merge $y.yml m-$y --threads 2 >/dev/null 2>&1
    printf '%-44s %s\n' "$y" "$(score m-$y)"
done
# genomes: task arithmetic with per-model weights over 4 layer groups (the issue's run); per model,
# attention and MLP apart (2 layer groups each) plus the rest, weights in [0, 2]; the same with the
# method a choice and densities searched
{ echo "merge_method: task_arithmetic"; echo "base_model: base"; echo "models:"; models "{weight: {search: [0, 1.2], groups: 4}}"; echo "dtype: bfloat16"; } > g-layers.yml
mods='
      weight:
        - filter: self_attn
          value: {search: [0, 2], groups: 2}
        - filter: mlp
          value: {search: [0, 2], groups: 2}
        - value: {search: [0, 2]}'
{ echo "merge_method: task_arithmetic"; echo "base_model: base"; echo "models:"; models "$mods"; echo "dtype: bfloat16"; } > g-modules.yml
{ echo "merge_method: {choice: [task_arithmetic, ties, dare_ties]}"; echo "base_model: base"; echo "models:"
  models "
      density: {search: [0.3, 1], init: 1}$mods"; echo "dtype: bfloat16"; } > g-methods.yml
for spec in "g-layers" "g-modules" "g-modules --race" "g-methods"; do
    set -- $spec
    g=$1; shift
    for seed in 1 2 3; do
        o=o-$g$(echo "$*" | tr -d ' -')-$seed
        start=$(date +%s)
        "$G" evolve $g.yml $CAL --budget 150 --seed $seed --force "$@" $o >/dev/null 2>$o.err
        end=$(date +%s)
        saved=$(sed -n 's/.*racing evaluated \([0-9]*\) of \([0-9]*\) windows.*/ (\1 of \2 windows)/p' $o.err)
        printf '%-44s %s\n' "$g $* seed $seed, $((end - start)) s$saved" "$(score $o)"
    done
done
# the data-flow space alone (the experts' layers, twice, with scales; starts from the first expert)
# and both spaces in sequence as the paper does: the parameters (g-modules, 75 evaluations), then the
# data flow over [that merge, c, docs, python] (one repeat, with scales, 75 evaluations)
printf 'dataflow:\n  models: [c, docs, python]\n  repeats: 2\ndtype: bfloat16\n' > g-dataflow.yml
for seed in 1 2 3; do
    start=$(date +%s)
    "$G" evolve g-dataflow.yml $CAL --budget 150 --seed $seed --force o-df-$seed >/dev/null 2>o-df-$seed.err
    end=$(date +%s)
    printf '%-44s %s\n' "g-dataflow seed $seed, $((end - start)) s" "$(score o-df-$seed)"
    start=$(date +%s)
    "$G" evolve g-modules.yml $CAL --budget 75 --seed $seed --force o-ps-$seed >/dev/null 2>o-ps-$seed.err
    printf 'dataflow:\n  models: [o-ps-%s, c, docs, python]\n  repeats: 1\ndtype: bfloat16\n' $seed > g-comb-$seed.yml
    "$G" evolve g-comb-$seed.yml $CAL --budget 75 --seed $seed --force o-comb-$seed >/dev/null 2>o-comb-$seed.err
    end=$(date +%s)
    printf '%-44s %s\n' "g-modules 75 + dataflow 75, seed $seed, $((end - start)) s" "$(score o-comb-$seed)"
done
# Not one model — a bound on routing: each held-out domain scored by SRC with its own expert's MLPs
# (and their norms) swapped in, as a perfect sequence-level router would; over RegMean's attention and
# over the 15-value search's (seed 1)
perdomain() {
    for d in c docs python; do
        printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters:\n      weight:\n        - filter: mlp\n          value: 0\n        - filter: post_attention_layernorm\n          value: 0\n        - value: 1\n  - model: %s\n    parameters:\n      weight:\n        - filter: mlp\n          value: 1\n        - filter: post_attention_layernorm\n          value: 1\n        - value: 0\ndtype: bfloat16\n' "$1" $d > swap-$d.yml
        rm -rf m-swap-$d && "$G" merge swap-$d.yml m-swap-$d --threads 2 >/dev/null 2>&1
        "$G" eval m-swap-$d --text "$F/eval/$d.txt" --ctx 256 --threads 2 --json 2>/dev/null | sed 's/.*"nll": \([0-9.e-]*\).*/\1/'
    done | awk '{ s += $1; printf "%.4f ", $1 } END { printf "%.4f %.3f\n", s / NR, exp(s / NR) }'
}
printf '%-44s %s\n' "expert MLP per domain, RegMean attention" "$(perdomain m-regmean)"
printf '%-44s %s\n' "expert MLP per domain, g-modules attention" "$(perdomain o-g-modules-1)"
# averages of functions instead of weights (bench/parallel-mlp.py): the average's attention, each MLP
# the three experts' side by side, outputs weighted 1/3; and task arithmetic in function space
# (outputs weighted 1 each, the base's MLP -2)
/usr/bin/python3 "$ROOT/bench/parallel-mlp.py" m-avg m-fn-avg 0.3333333 c docs python
/usr/bin/python3 "$ROOT/bench/parallel-mlp.py" m-avg m-fn-ta -2,1,1,1 base c docs python
printf '%-44s %s\n' "MLPs' outputs averaged (1/3 each)" "$(score m-fn-avg)"
printf '%-44s %s\n' "MLPs' outputs: task arithmetic, λ = 1" "$(score m-fn-ta)"
