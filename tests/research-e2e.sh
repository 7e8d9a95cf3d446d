#!/bin/sh
# Research merges and `graft analyze` end to end: regmean / mats from `graft eval --collect gram`
# files and fisher files (thread independence, bad statistics files); opcm against NumPy, its norm
# rule and --resume; analyze on hand-built relations (a model against
# itself and against its negation: cos 1 / −1, conflict 0 / 1, overlap 1, distances 0 / 2‖τ‖),
# agreement with an independent NumPy computation (tests/ref/analyze_ref.py) on dense and sparse task
# vectors (f32 and bf16), thread independence of analyze and of iso_c / iso_cts / tsv / pcb, config
# and usage errors.
# Usage: tests/research-e2e.sh BUILD_DIR [faults]
set -u
B=${1:?build dir}
FAULTS=${2:-}
G="$PWD/$B/graft"
AREF="$PWD/tests/ref/analyze_ref.py"
OREF="$PWD/tests/ref/opcm_ref.py"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1

expect 0 "$G" synth base --dtype f32 --layers 2 --hidden 32 --intermediate 48 --heads 4 --vocab 96 --seed 1
for i in 1 2 3; do expect 0 "$G" synth ft$i --like base --delta 0.02 --seed $((i + 1)); done
printf 'merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: ft1\n    parameters: {weight: -1.0}\ndtype: float32\n' > neg.yml
expect 0 "$G" merge neg.yml neg1
cp -r ft1 same1
expect 0 "$G" analyze --base base ft1 same1 neg1 --json
cp "$T/out" hand.json
"$PY" - <<'PYEOF' && ok || bad "analyze of a model against itself and its negation: $(head -c 600 hand.json)"
import json, math
m = json.load(open("hand.json"))["model"]
p = {(x["a"], x["b"]): x for x in m["pairs"]}
n = m["norm"]
ok = abs(n[0] - n[1]) == 0 and abs(n[0] - n[2]) < 1e-9 * n[0]
a, b = p[(0, 1)], p[(0, 2)]
ok &= abs(a["cos"] - 1) < 1e-12 and a["euclid"] == 0 and a["conflict"] == 0 and a["overlap"] == 1 and abs(a["pearson"] - 1) < 1e-9
ok &= abs(b["cos"] + 1) < 1e-12 and abs(b["abs_cos"] - 1) < 1e-12 and b["conflict"] == 1 and b["overlap"] == 1 and abs(b["euclid"] - 2 * n[0]) < 1e-9 * n[0]
raise SystemExit(0 if ok else 1)
PYEOF
# (from a review) two models that change disjoint tensors do not overlap: the top-k is taken among the
# entries a model changed (an unchanged tensor's "top-k" was its first k entries, the same in both:
# overlap 0.92); an unchanged matrix has no effective rank; NaN is refused; T5-style names go to their
# block, not the sub-layer; a layer index past the tensor count is no layer (blocks.999999 allocated
# a million layers)
"$PY" - "$(dirname "$AREF")" <<'PYEOF' || bad "analyze fixtures"
import shutil, sys
sys.path.insert(0, sys.argv[1])
from lora_ref import load, save
b, f = load("base"), load("ft1")
for d, keep in (("d1", "model.layers.0.self_attn.q_proj.weight"), ("d2", "model.layers.1.self_attn.q_proj.weight")):
    shutil.rmtree(d, ignore_errors=True); shutil.copytree("base", d)
    t = dict(b); t[keep] = f[keep]; save(d + "/model.safetensors", t)
shutil.rmtree("dn", ignore_errors=True); shutil.copytree("ft1", "dn")
t = dict(f); t["model.layers.1.input_layernorm.weight"] = t["model.layers.1.input_layernorm.weight"].copy(); t["model.layers.1.input_layernorm.weight"][3] = float("nan")
save("dn/model.safetensors", t)
import numpy as np
names = ["encoder.block.%d.layer.%d.w" % (b, l) for b in range(4) for l in (0, 1)] + ["blocks.999999.w"]
save("t5b.safetensors", {n: np.ones(4, np.float32) for n in names})
save("t5f.safetensors", {n: np.full(4, 2 + i, np.float32) for i, n in enumerate(names)})
PYEOF
expect 0 "$G" analyze --base base d1 d2 --json --per-layer
"$PY" -c 'import json; m = json.load(open("'"$T"'/out")); p = m["model"]["pairs"][0]; e = m["model"]["erank"]
assert p["overlap"] == 0 and e[0] is not None and e[0] > 1, (p, e)' && ok || bad "analyze of disjoint changes: $(head -c 400 "$T/out")"
"$PY" "$AREF" "$T/out" base d1 d2 > "$T/py" 2>&1 && ok || bad "analyze of disjoint changes vs NumPy: $(cat "$T/py")"
expect 1 "$G" analyze --base base ft1 dn
grep -q "dn: tensor 'model.layers.1.input_layernorm.weight': holds 1 NaN or infinite values" "$T/err" && ok || bad "analyze with a NaN: $(cat "$T/err")"
expect 0 "$G" analyze --base t5b.safetensors t5f.safetensors --json --per-tensor
"$PY" -c 'import json; m = json.load(open("'"$T"'/out")); L = {t["name"]: t.get("layer") for t in m["tensors"]}
assert [(x["layer"], x["n_tensors"]) for x in m["layers"]] == [(0, 2), (1, 2), (2, 2), (3, 2)], (L, [x["layer"] for x in m["layers"]])' && ok || bad "analyze layer numbering: $(head -c 600 "$T/out")"
# agreement with NumPy: dense f32 task vectors, and sparse ones (TIES with density 0.3 leaves 70 % zeros)
expect 0 "$G" analyze --base base ft1 ft2 ft3 --json --threads 3
cp "$T/out" a3.json
"$PY" "$AREF" a3.json base ft1 ft2 ft3 > "$T/py" 2>&1 && ok || bad "analyze vs NumPy: $(cat "$T/py")"
expect 0 "$G" analyze --base base ft1 ft2 ft3 --json --threads 1
cmp -s "$T/out" a3.json && ok || bad "analyze depends on --threads"
for i in 1 2; do
    printf 'merge_method: ties\nbase_model: base\nmodels:\n  - model: ft%d\n    parameters: {weight: 1.0, density: 0.3}\ndtype: float32\n' $i > sp$i.yml
    expect 0 "$G" merge sp$i.yml sp$i
done
expect 0 "$G" analyze --base base sp1 sp2 ft3 --json --density 0.1
cp "$T/out" sp.json
"$PY" "$AREF" sp.json base sp1 sp2 ft3 --density 0.1 > "$T/py" 2>&1 && ok || bad "analyze of sparse task vectors vs NumPy: $(cat "$T/py")"
expect 0 "$G" synth bb --dtype bf16 --layers 1 --hidden 32 --intermediate 48 --heads 4 --vocab 64 --seed 7
for i in 1 2; do expect 0 "$G" synth bf$i --like bb --delta 0.05 --seed $((i + 7)); done
expect 0 "$G" analyze --base bb bf1 bf2 --json
cp "$T/out" bf.json
"$PY" "$AREF" bf.json bb bf1 bf2 > "$T/py" 2>&1 && ok || bad "analyze of bf16 models vs NumPy: $(cat "$T/py")"
# the readable table: whole model, then layers and tensors on request
expect 0 "$G" analyze --base base ft1 ft2 --per-layer --per-tensor
grep -q "^whole model" "$T/out" && grep -q "^layer 1" "$T/out" && grep -q "^model.layers.0.mlp.up_proj.weight" "$T/out" && grep -q "A-B" "$T/out" && ok || bad "analyze table: $(head -20 "$T/out")"
# a model whose tensors differ in shape is analysed on the shared ones only
expect 0 "$G" synth other --dtype f32 --layers 2 --hidden 32 --intermediate 64 --heads 4 --vocab 96 --seed 5
expect 0 "$G" analyze --base base ft1 other
grep -q "tensors skipped" "$T/out" && ok || bad "skipped tensors not reported: $(head -5 "$T/out")"
# usage errors
expect 2 "$G" analyze ft1 ft2
grep -q -- "--base BASE is required" "$T/err" && ok || bad "analyze without --base: $(cat "$T/err")"
expect 2 "$G" analyze --base base ft1 ft1 ft1 ft1 ft1 ft1 ft1 ft1 ft1 ft1 ft1 ft1 ft1 ft1 ft1 ft1 ft1
expect 3 "$G" analyze --base base nowhere
expect 2 "$G" analyze --base base ft1 --density 0
# research merges: the same bytes for any thread count
for m in iso_c iso_cts tsv pcb; do
    printf 'merge_method: %s\nbase_model: base\nmodels:\n  - model: ft1\n  - model: ft2\n  - model: ft3\ndtype: float32\n' $m > $m.yml
    expect 0 "$G" merge $m.yml $m-1 --threads 1
    expect 0 "$G" merge $m.yml $m-3 --threads 3
    cmp -s $m-1/model.safetensors $m-3/model.safetensors && ok || bad "$m depends on --threads"
    expect 0 "$G" merge $m.yml $m-plan --dry-run
    grep -q "$m" "$T/out" && ok || bad "$m dry run: $(head -5 "$T/out")"
done
# statistics methods fed by graft eval --collect gram, and Fisher files: thread independence
"$PY" -c 'import random; random.seed(5); print(" ".join(str(random.randrange(96)) for _ in range(300)))' > ids.txt
for i in 1 2 3; do expect 0 "$G" eval ft$i --tokens ids.txt --ctx 64 --collect gram g$i.safetensors; done
for m in regmean mats; do
    printf 'merge_method: %s\nbase_model: base\nmodels:\n  - model: ft1\n    parameters: {gram: g1.safetensors}\n  - model: ft2\n    parameters: {gram: g2.safetensors}\n  - model: ft3\n    parameters: {gram: g3.safetensors}\ndtype: float32\n' $m > $m.yml
    [ $m = regmean ] && sed -i '/^base_model/d' $m.yml
    expect 0 "$G" merge $m.yml $m-1 --threads 1
    expect 0 "$G" merge $m.yml $m-3 --threads 3
    cmp -s $m-1/model.safetensors $m-3/model.safetensors && ok || bad "$m depends on --threads"
done
printf 'merge_method: fisher\nmodels:\n  - model: ft1\n    parameters: {fisher: g1.safetensors}\n  - model: ft2\n    parameters: {fisher: g2.safetensors}\n' > fbad.yml
expect 4 "$G" merge fbad.yml never
grep -q "g1.safetensors has no tensor" "$T/err" && [ ! -e never ] && ok || bad "fisher with Gram files: $(cat "$T/err")"
head -c 100 g2.safetensors > gcut.safetensors
sed 's/g2.safetensors/gcut.safetensors/' regmean.yml > rcut.yml
expect 3 "$G" merge rcut.yml never
grep -q "gcut.safetensors" "$T/err" && [ ! -e never ] && ok || bad "truncated statistics file: $(cat "$T/err")"
# opcm: against an independent float64 implementation with full SVDs (tests/ref/opcm_ref.py); the
# merged task vector's norm is the mean task-vector norm; --resume from the state of a merge of the
# first models gives the bytes of one merge of all of them; threads do not matter
printf 'merge_method: opcm\nbase_model: base\nmodels:\n  - model: ft1\n  - model: ft2\n  - model: ft3\nparameters: {alpha: 0.6}\ndtype: float32\n' > opcm.yml
expect 0 "$G" merge opcm.yml op-all --threads 3
"$PY" "$OREF" op-all 0.6 base ft1 ft2 ft3 > "$T/py" 2>&1 && ok || bad "opcm vs NumPy: $(cat "$T/py")"
[ -f op-all.opcm-state.safetensors ] && ! ls -a | grep -q "graft-tmp" && ok || bad "opcm state missing or temporaries left: $(ls -a)"
expect 0 "$G" merge opcm.yml op-1 --threads 1
cmp -s op-all/model.safetensors op-1/model.safetensors && ok || bad "opcm depends on --threads"
"$PY" - <<'PYEOF' && ok || bad "opcm norm rule"
import json, struct, numpy as np
def load(p):
    b = open(p + "/model.safetensors", "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: np.frombuffer(d[v["data_offsets"][0]:v["data_offsets"][1]], np.float32).astype(np.float64) for k, v in h.items() if k != "__metadata__"}
b, o = load("base"), load("op-all")
tn = [np.sqrt(sum(((load("ft%d" % i)[k] - b[k]) ** 2).sum() for k in b)) for i in (1, 2, 3)]
m = np.sqrt(sum(((o[k] - b[k]) ** 2).sum() for k in b))
raise SystemExit(0 if abs(m - np.mean(tn)) < 1e-5 * m else 1)
PYEOF
printf 'merge_method: opcm\nbase_model: base\nmodels:\n  - model: ft1\n  - model: ft2\nparameters: {alpha: 0.6}\ndtype: float32\n' > opcm12.yml
printf 'merge_method: opcm\nbase_model: base\nmodels:\n  - model: ft3\nparameters: {alpha: 0.6}\ndtype: float32\n' > opcm3.yml
expect 0 "$G" merge opcm12.yml op12
expect 0 "$G" merge opcm3.yml op123 --resume op12.opcm-state.safetensors
cmp -s op-all/model.safetensors op123/model.safetensors && cmp -s op-all.opcm-state.safetensors op123.opcm-state.safetensors && ok || bad "opcm --resume differs from one merge"
expect 3 "$G" merge opcm3.yml never --resume ft1/model.safetensors
grep -q "not an opcm state" "$T/err" && [ ! -e never ] && ! ls -a | grep -q "graft-tmp" && ok || bad "resume from a non-state: $(cat "$T/err")"
expect 2 "$G" merge iso_c.yml never --resume op12.opcm-state.safetensors
grep -q -- "--resume continues an opcm merge" "$T/err" && ok || bad "--resume with iso_c: $(cat "$T/err")"
printf 'merge_method: iso_cts\nbase_model: base\nmodels:\n  - model: ft1\n  - model: ft2\nparameters: {common_space_fraction: 1.5}\n' > bad1.yml
expect 4 "$G" merge bad1.yml never
grep -q "common_space_fraction must be in \[0, 1\]" "$T/err" && [ ! -e never ] && ok || bad "bad common_space_fraction: $(cat "$T/err")"
printf 'merge_method: pcb\nbase_model: base\nmodels:\n  - model: ft1\nparameters: {pcb_ratio: 2}\n' > bad2.yml
expect 4 "$G" merge bad2.yml never
grep -q "pcb_ratio must be in (0, 1\]" "$T/err" && [ ! -e never ] && ok || bad "bad pcb_ratio: $(cat "$T/err")"
printf 'merge_method: tsv\nmodels:\n  - model: ft1\n  - model: ft2\n' > bad3.yml
expect 4 "$G" merge bad3.yml never
if [ "$FAULTS" = faults ]; then
    alloc_faults 7 fa-iso "$G" merge iso_cts.yml fa-iso --threads 2
    alloc_faults 7 fa-pcb "$G" merge pcb.yml fa-pcb --threads 2
    alloc_faults 7 fa-rm "$G" merge regmean.yml fa-rm --threads 2
    alloc_faults 11 fa-op "$G" merge opcm.yml fa-op --threads 2
    for spec in write open; do
        GRAFT_FAULT_IO="$spec:1:ENOSPC" "$G" merge opcm.yml fio-op >/dev/null 2>"$T/err"
        [ $? = 1 ] && [ ! -e fio-op ] && ! ls -a | grep -q "graft-tmp" && ok || bad "opcm with a failing $spec: $(cat "$T/err")"
    done
    GRAFT_FAULT_ALLOC=3 "$G" analyze --base base ft1 ft2 >/dev/null 2>"$T/err"
    [ $? = 1 ] && grep -q "out of memory" "$T/err" && ok || bad "analyze with a failing allocation: $(cat "$T/err")"
fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
