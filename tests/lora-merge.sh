#!/bin/sh
# graft merge-lora and merge --lora-space end to end, checked against NumPy (tests/ref/lora_merge_ref.py,
# which densifies every update): each combination's ΔW, the truncation of the *_svd types (error = the
# discarded singular values, B·A = the best rank-r approximation, reported errors), PEFT config variants
# (rank_pattern / alpha_pattern, rsLoRA, fan_in_fan_out, embeddings, lora_B.bias, modules_to_save),
# the merged adapter applied by apply-lora as lora_ref.py reads PEFT adapters, --lora-space against the
# dense merge; bad configs and adapters fail with the module named and nothing written; with fault
# injection, failing allocations and writes.
# Usage: tests/lora-merge.sh BUILD_DIR [faults]
set -u
B=${1:?build dir}
FAULTS=${2:-}
G="$PWD/$B/graft"
REF="$PWD/tests/ref/lora_merge_ref.py"
LREF="$PWD/tests/ref/lora_ref.py"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1
ref() { if "$PY" "$REF" "$@" >"$T/pyout" 2>&1; then ok; else bad "lora_merge_ref.py $1 $2: $(tail -c 400 "$T/pyout")"; fi; }
nothing() { [ ! -e "$1" ] && ! ls -A | grep -q "graft-tmp" && ok || bad "$2: left output or a temp folder behind"; }
# cfg FILE COMBINATION [KEY: VALUE]... -- ADAPTER_ENTRY...: a merge-lora config on base
cfg() {
    f=$1 c=$2; shift 2
    { echo "base_model: base"; echo "combination: $c"
      while [ "$1" != "--" ]; do echo "$1"; shift; done; shift
      echo "adapters:"; for a in "$@"; do echo "  - $a"; done; } > "$f"
}

expect 0 "$G" synth base --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 --seed 1
expect 0 "$G" synth other --layers 2 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 --seed 1
mk() { if "$PY" "$REF" make "$@" >"$T/pyout" 2>&1; then ok; else bad "make $*: $(cat "$T/pyout")"; fi; }
# random factors (b*), exact small-integer factors (i*: pruning decisions do not depend on the CPU's
# rounding), PEFT variants
mk base b1 4 plain 4; mk base b2 5 rslora 4; mk base b3 6 bias 4
mk base i1 7 int 4; mk base i2 8 int 4
mk base p1 1 plain 4; mk base p2 2 rslora 6; mk base p3 3 patterns 4; mk base s1 9 scaled 5
for k in fanin embed whole; do mk base ${k}1 11 $k 4; mk base ${k}2 12 $k 3; done
mk other o1 1 plain 4

# ---- every combination against the reference ----
for c in svd linear ties dare_linear dare_ties magnitude_prune ties_svd dare_linear_svd dare_ties_svd magnitude_prune_svd; do
    sets="i"
    case $c in ties_svd|dare_ties_svd|magnitude_prune_svd) ;; *) sets="b i" ;; esac # ΔW-level pruning: exact inputs only
    for s in $sets; do
        if [ $s = b ]; then
            cfg $c-$s.yml $c "density: 0.5" "rank: 5" -- "{adapter: b1, weight: 0.7}" "{adapter: b2, weight: -0.4, density: 0.25}" b3
        else
            cfg $c-$s.yml $c "density: 0.5" "rank: 5" "majority_sign_method: frequency" -- "{adapter: i1, weight: 0.7}" "{adapter: i2, weight: -0.5, density: 0.25}"
        fi
        expect 0 "$G" merge-lora $c-$s.yml o-$c-$s --json --seed 3 --threads 2
        cp "$T/out" r-$c-$s.json
        ref check $c-$s.yml o-$c-$s r-$c-$s.json 3
    done
done
grep -q '"lora_bias": true' o-svd-b/adapter_config.json && grep -q '"use_rslora": false' o-svd-b/adapter_config.json && ok || bad "merged config: lora_bias / use_rslora"
# the same bytes for any thread count; the seed changes DARE's masks
expect 0 "$G" merge-lora dare_ties_svd-i.yml t1 --seed 3 --threads 1
cmp -s t1/adapter_model.safetensors o-dare_ties_svd-i/adapter_model.safetensors && ok || bad "merge-lora output depends on --threads"
expect 0 "$G" merge-lora dare_ties_svd-i.yml t2 --seed 4
cmp -s t2/adapter_model.safetensors t1/adapter_model.safetensors && bad "--seed did not change dare masks" || ok

# ---- PEFT variants: ranks differ (rank_pattern), rsLoRA, alpha_pattern, fan_in_fan_out, embeddings, whole ----
for c in cat svd; do
    cfg var-$c.yml $c -- "{adapter: p1, weight: 0.7}" "{adapter: p2, weight: -0.4}" p3 "{adapter: s1, weight: 2}"
    expect 0 "$G" merge-lora var-$c.yml var-$c --json
    cp "$T/out" rv-$c.json
    ref check var-$c.yml var-$c rv-$c.json
    for k in fanin embed whole; do
        cfg $k-$c.yml $c -- "{adapter: ${k}1, weight: 0.5}" ${k}2
        expect 0 "$G" merge-lora $k-$c.yml $k-$c --json
        cp "$T/out" r-$k-$c.json
        ref check $k-$c.yml $k-$c r-$k-$c.json
    done
done
grep -q '"rank_pattern"' var-cat/adapter_config.json && grep -q '"model.layers.1.self_attn.q_proj": 18' var-cat/adapter_config.json && ok || bad "cat: rank_pattern for the smaller module"
grep -q '"fan_in_fan_out": true' fanin-svd/adapter_config.json && ok || bad "fan_in_fan_out not kept"
grep -q '"norm"' whole-cat/adapter_config.json && ok || bad "modules_to_save not written"
# svd_clamp and PEFT's double scaling
cfg clamp.yml svd "rank: 3" "svd_clamp: 0.9" -- b1 "{adapter: b2, weight: 0.5}"
expect 0 "$G" merge-lora clamp.yml clamp --json
cp "$T/out" rclamp.json
ref check clamp.yml clamp rclamp.json
cfg pss.yml ties_svd "density: 0.5" "peft_svd_scaling: true" -- i1 "{adapter: i2, weight: 0.5}"
expect 0 "$G" merge-lora pss.yml pss --json
cp "$T/out" rpss.json
ref check pss.yml pss rpss.json
# ranks summing past a side (v_proj is 32 × 64, Σ rᵢ = 48): the core is wider than the update
mk base h1 21 plain 24; mk base h2 22 rslora 24
cfg wide.yml svd "rank: 40" -- h1 "{adapter: h2, weight: -0.5}"
expect 0 "$G" merge-lora wide.yml wide --json
cp "$T/out" rwide.json
ref check wide.yml wide rwide.json
grep -q '"model.layers.0.self_attn.v_proj", "kind": "lora", "shape": \[32, 64\], "rank": 32' rwide.json && ok || bad "rank not capped by the short side"
# one adapter through svd with a smaller rank: a resized adapter
cfg one.yml svd "rank: 2" -- p2
expect 0 "$G" merge-lora one.yml one --json
cp "$T/out" rone.json
ref check one.yml one rone.json

# ---- the merged adapter applied (apply-lora) is W + B·A as an independent PEFT reader computes it ----
expect 0 "$G" apply-lora base var-cat applied
if "$PY" "$LREF" apply base var-cat applied 1 >"$T/pyout" 2>&1; then ok; else bad "apply of a merged adapter: $(tail -c 300 "$T/pyout")"; fi

# ---- graft merge --lora-space: the dense merge's result as an adapter ----
printf 'merge_method: task_arithmetic\nbase_model: base\nparameters: {lambda: 0.8}\nmodels:\n  - model: base+p1\n    parameters: {weight: 0.7}\n  - model: base+p2\n    parameters: {weight: -0.4}\n  - model: base\n' > ta.yml
printf 'merge_method: linear\nmodels:\n  - model: base\n    parameters: {weight: 1}\n  - model: base+p3\n    parameters: {weight: 2}\n  - model: {model: {path: base, lora: p1}}\n    parameters: {weight: 1}\n' > lin.yml
for y in ta lin; do
    expect 0 "$G" merge $y.yml $y-ad --lora-space
    [ -f $y-ad/adapter_model.safetensors ] && [ -f $y-ad/adapter_config.json ] && ok || bad "--lora-space $y: no adapter written"
    expect 0 "$G" merge $y.yml $y-dense
    expect 0 "$G" apply-lora base $y-ad $y-applied
    if "$PY" "$LREF" close $y-applied $y-dense base 1e-5 >"$T/pyout" 2>&1; then ok; else bad "--lora-space $y vs the dense merge: $(cat "$T/pyout")"; fi
done
expect 0 "$G" merge ta.yml tadry --lora-space --dry-run
nothing tadry "merge --lora-space --dry-run"

# ---- bad configs and adapters: exit 4 (config) / 3 (file) naming the module, nothing written ----
cfg e1.yml linear -- p1 p2
expect 4 "$G" merge-lora e1.yml x1
grep -q "module 'model.layers.0.mlp.down_proj': rank 6 here but 4" "$T/err" && ok || bad "unequal ranks: $(cat "$T/err")"
nothing x1 "unequal ranks"
cfg e2.yml svd -- p1 o1
expect 4 "$G" merge-lora e2.yml x2
grep -q "module '.*': its factors make a 32 × 48 update where an earlier adapter.s make 64 × 96" "$T/err" && ok || bad "adapters of different models: $(cat "$T/err")"
nothing x2 "adapters of different models"
{ echo "base_model: other"; echo "adapters: [p1]"; } > e3.yml
expect 4 "$G" merge-lora e3.yml x3
grep -q "does not fit the base's" "$T/err" && ok || bad "adapter for another base: $(cat "$T/err")"
cfg e4.yml cat -- fanin1 p1
expect 4 "$G" merge-lora e4.yml x4
grep -q "fan_in_fan_out differs" "$T/err" && ok || bad "fan_in_fan_out mismatch: $(cat "$T/err")"
printf 'combination: cat\nadapters: [whole1, whole2]\n' > e5.yml
expect 4 "$G" merge-lora e5.yml x5
grep -q "module 'model.norm.weight'.*give base_model" "$T/err" && ok || bad "differing whole tensors without base: $(cat "$T/err")"
cfg e6.yml ties -- p1 p3
expect 4 "$G" merge-lora e6.yml x6
grep -q "ties needs a density" "$T/err" && ok || bad "ties without density: $(cat "$T/err")"
for bad in "combination: fuse" "density: 0" "rank: 1.5" "majority_sign_method: most" "svd_clamp: 2" "adapters: []" "tokens: 3"; do
    { echo "$bad"; case $bad in adapters*) ;; *) echo "adapters: [p1]" ;; esac; } > e7.yml
    expect 4 "$G" merge-lora e7.yml x7
    grep -q "e7.yml: line [0-9]" "$T/err" && ok || bad "config '$bad': $(cat "$T/err")"
    nothing x7 "config '$bad'"
done
printf 'adapters:\n  - {adapter: p1, weight: [1, 2]}\n' > e8.yml
expect 4 "$G" merge-lora e8.yml x8
cp -r p1 dora && sed -i 's/"peft_type"/"use_dora": true, "peft_type"/' dora/adapter_config.json
cfg e9.yml svd -- p1 dora
expect 4 "$G" merge-lora e9.yml x9
grep -q "DoRA" "$T/err" && ok || bad "DoRA adapter: $(cat "$T/err")"
cfg e10.yml svd -- p1 missing
expect 3 "$G" merge-lora e10.yml x10
grep -q "missing/adapter_model.safetensors: not found" "$T/err" && ok || bad "missing adapter: $(cat "$T/err")"
cp -r p1 trunc && truncate -s -100 trunc/adapter_model.safetensors
cfg e11.yml svd -- p1 trunc
expect 3 "$G" merge-lora e11.yml x11
grep -q "trunc/adapter_model.safetensors" "$T/err" && ok || bad "truncated adapter: $(cat "$T/err")"
nothing x11 "truncated adapter"
cp -r p1 nan && $PATCH nan/adapter_model.safetensors 'layers.0.mlp.down_proj.lora_A' nan 3
cfg e12.yml svd -- nan p1
expect 1 "$G" merge-lora e12.yml x12
grep -q "lora_A.weight': holds 1 NaN" "$T/err" && ok || bad "NaN factor: $(cat "$T/err")"
nothing x12 "NaN factor"
printf 'merge_method: ties\nbase_model: base\nmodels:\n  - model: base+p1\n    parameters: {weight: 1, density: 0.5}\n' > e13.yml
expect 4 "$G" merge e13.yml x13 --lora-space
grep -q "needs full weights" "$T/err" && ok || bad "--lora-space with ties: $(cat "$T/err")"
printf 'merge_method: linear\nmodels:\n  - model: base+p1\n    parameters: {weight: 1}\n  - model: other+o1\n    parameters: {weight: 1}\n' > e14.yml
expect 4 "$G" merge e14.yml x14 --lora-space
grep -q "is not the base of the other models" "$T/err" && ok || bad "--lora-space with two bases: $(cat "$T/err")"
printf 'merge_method: linear\nparameters: {normalize: false}\nmodels:\n  - model: base+p1\n    parameters: {weight: 0.5}\n' > e15.yml
expect 4 "$G" merge e15.yml x15 --lora-space
grep -q "scales the base too" "$T/err" && ok || bad "--lora-space linear without normalize: $(cat "$T/err")"
printf 'merge_method: linear\nmodels:\n  - model: base+p1\n  - model: base+p2\n    parameters: {weight: 1}\n' > e16.yml
expect 4 "$G" merge e16.yml x16 --lora-space
grep -q "model 'base+p1' has no weight" "$T/err" && ok || bad "--lora-space without a weight: $(cat "$T/err")"
expect 2 "$G" merge ta.yml x17.gguf --lora-space
# hostile factors: empty, integer bias, an overflow of the merge (nothing written, no crash)
hostile() { # hostile NAME PYTHON-EXPR-ON-T: a copy of p1 whose tensors T (name → array) are edited
    rm -rf $1 && cp -r p1 $1 && "$PY" - $1 "$2" <<'PYEOF'
import sys, os
sys.path.insert(0, os.environ["REFDIR"])
import numpy as np
from lora_ref import load, save
d, code = sys.argv[1], sys.argv[2]
T = load(d + "/adapter_model.safetensors")
exec(code)
save(d + "/adapter_model.safetensors", T)
PYEOF
}
export REFDIR="$(dirname "$REF")"
k=base_model.model.model.layers.0.self_attn.q_proj
hostile h0 "T['$k.lora_A.weight'] = np.zeros((4, 0), np.float32)"
cfg e18.yml svd "svd_clamp: 0.5" -- h0 p1
expect 3 "$G" merge-lora e18.yml x18
grep -q "non-empty" "$T/err" && ok || bad "empty factor: $(cat "$T/err")"
nothing x18 "empty factor"
hostile h1 "T['$k.lora_B.bias'] = np.arange(64, dtype=np.int64)"
cfg e19.yml cat -- h1 p1
expect 3 "$G" merge-lora e19.yml x19
grep -q "float16, bfloat16 or float32" "$T/err" && ok || bad "integer bias: $(cat "$T/err")"
cfg e20.yml cat -- "{adapter: p1, weight: 1e40}"
expect 1 "$G" merge-lora e20.yml x20
grep -q "NaN or infinite" "$T/err" && ok || bad "overflowing merge: $(cat "$T/err")"
nothing x20 "overflowing merge"
# PEFT config fields that would hide merged modules go; base biases (bias="all") are no modules_to_save
cp -r p2 px && "$PY" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c["exclude_modules"] = ["v_proj"]; c["bias"] = "all"; json.dump(c, open(p, "w"))' px/adapter_config.json
hostile pb "T['base_model.model.model.layers.0.self_attn.q_proj.bias'] = np.zeros(64, np.float32)"
printf 'combination: cat\nadapters: [px, pb]\n' > xb.yml # (the synth base has no q_proj.bias)
expect 0 "$G" merge-lora xb.yml xbo
"$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])); assert "exclude_modules" not in c and c["modules_to_save"] is None, c; print("ok")' xbo/adapter_config.json >"$T/py" 2>&1 && ok || bad "merged config fields: $(cat "$T/py")"
# --lora-space with a tensor saved whole: still the dense merge
printf 'merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: base+whole1\n    parameters: {weight: 0.5}\n  - model: base+p1\n    parameters: {weight: 1}\n' > taw.yml
expect 0 "$G" merge taw.yml taw-ad --lora-space
expect 0 "$G" merge taw.yml taw-dense
expect 0 "$G" apply-lora base taw-ad taw-applied
if "$PY" "$LREF" close taw-applied taw-dense base 1e-5 >"$T/pyout" 2>&1; then ok; else bad "--lora-space with a whole tensor vs the dense merge: $(cat "$T/pyout")"; fi
expect 0 "$G" merge-lora var-svd.yml dry --dry-run
nothing dry "merge-lora --dry-run"
expect 2 "$G" merge-lora var-svd.yml
expect 0 "$G" merge-lora --help
grep -q "ties_svd" "$T/out" && ok || bad "merge-lora --help"
expect 1 "$G" merge-lora var-svd.yml var-svd
grep -q "exists" "$T/err" && ok || bad "existing output: $(cat "$T/err")"
# inputs are read-only: the adapters' bytes did not change
cmp -s p1/adapter_model.safetensors dora/adapter_model.safetensors && ok || bad "an input adapter changed"

if [ "$FAULTS" = faults ]; then
    alloc_faults 3 fs "$G" merge-lora var-svd.yml fs --threads 2
    alloc_faults 3 ft "$G" merge-lora ties_svd-i.yml ft --threads 2
    alloc_faults 3 fl "$G" merge ta.yml fl --lora-space
    for spec in write fsync rename; do
        GRAFT_FAULT_IO="$spec:1:ENOSPC" "$G" merge-lora var-cat.yml fio >/dev/null 2>"$T/err"
        [ $? = 1 ] && [ ! -e fio ] && ok || bad "merge-lora with a failing $spec: $(cat "$T/err")"
    done
fi

echo "$pass passed, $fail failed"
[ $fail = 0 ]
