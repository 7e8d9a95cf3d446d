#!/bin/sh
# Checkpoint operations end to end on `graft synth` models: quantize / dequantize (int8, int4, group
# sizes that do and do not divide the rows, bf16 and f32 inputs) checked bit for bit against NumPy
# (tests/ref/quant_ref.py); prune (magnitude per tensor and global, N:M, Wanda, ties at the threshold)
# checked element for element against NumPy (tests/ref/prune_ref.py); upcycle (experts equal the dense
# MLP, zero / N(0, σ²) routers, Mixtral config, mergeable); reparam (BN, RepVGG, weight-norm folds
# against NumPy's own convolution, tests/ref/reparam_ref.py; μP fold of MiniCPM-style checkpoints
# against the evaluator and llama_ref.py's MiniCPM forward); align (Git Re-Basin permutations against
# tests/ref/align_ref.py's optimal assignments, logits unchanged); moe (experts from their models,
# residual/noise scales, routers, Qwen2-MoE with a shared expert, bad configs); shrink (depth and width
# pruning against tests/ref/shrink_ref.py) and moefy (tests/ref/moefy_ref.py; K = E equals the dense
# model); expand (logits unchanged under an independent NumPy
# Llama forward, tests/ref/llama_ref.py); thread-count independence; bad options and inputs fail cleanly with
# nothing written; in builds with fault injection, failing allocations and writes.
# Usage: tests/ops-e2e.sh BUILD_DIR [faults]
set -u
B=${1:?build dir}
FAULTS=${2:-}
G="$PWD/$B/graft"
QREF="$PWD/tests/ref/quant_ref.py"
BREF="$PWD/tests/ref/bcq_ref.py"
AREF="$PWD/tests/ref/align_ref.py"
export AREFDIR="$PWD/tests/ref"
CFGS="$PWD/tests/configs"
PREF="$PWD/tests/ref/prune_ref.py"
RREF="$PWD/tests/ref/reparam_ref.py"
LREF="$PWD/tests/ref/llama_ref.py"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1
nothing() { [ ! -e "$1" ] && ! ls -A | grep -q "graft-tmp" && ok || bad "$2: left output or a temp folder behind"; }

expect 0 "$G" synth m32 --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 --seed 1
expect 0 "$G" synth mbf --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype bf16 --seed 2

# ---- quantize / dequantize against numpy ----
for m in m32 mbf; do
    for spec in "8 32" "4 32" "8 40" "4 7"; do
        set -- $spec
        bits=$1 grp=$2
        q=$m-q$bits-$grp
        expect 0 "$G" quantize $m $q --scheme int$bits --group $grp --threads 2
        cp "$T/out" $q.txt
        expect 0 "$G" dequantize $q $q-dq --dtype f32
        if [ $m = m32 ]; then src=$m; else src=$m-f32; [ -d $src ] || "$G" convert $m $src --dtype f32 >/dev/null 2>&1; fi
        if "$PY" "$QREF" check $src $q $q-dq $bits $grp $q.txt >"$T/py" 2>&1; then ok; else bad "int$bits group $grp on $m: $(cat "$T/py")"; fi
        expect 0 "$G" verify $q
    done
done
# ---- binary-coded quantization (BCQ) against numpy: codes nearest for their α, α sorted (powers of two
# with --shift), errors ≤ greedy and within 1 % of the reference's alternation, RTN baseline, dequantize ----
for m in m32 mbf; do
    for spec in "2 32 0" "3 40 0" "4 32 0" "3 32 1" "2 64 1"; do
        set -- $spec
        bits=$1 grp=$2 sh=$3
        q=$m-bcq$bits-$grp-$sh
        expect 0 "$G" quantize $m $q --scheme bcq --bits $bits --group $grp --threads 2 $([ $sh = 1 ] && echo --shift)
        cp "$T/out" $q.txt
        expect 0 "$G" dequantize $q $q-dq --dtype f32
        if [ $m = m32 ]; then src=$m; else src=$m-f32; [ -d $src ] || "$G" convert $m $src --dtype f32 >/dev/null 2>&1; fi
        if "$PY" "$BREF" check $src $q $q-dq $bits $grp $sh $q.txt >"$T/py" 2>&1; then ok; else bad "bcq$bits group $grp shift $sh on $m: $(cat "$T/py")"; fi
        expect 0 "$G" verify $q
    done
done
# no alternation (the greedy start alone): α still stored descending, codes moved with them
expect 0 "$G" quantize mbf mbf-r0 --scheme bcq --bits 4 --group 32 --rounds 0
expect 0 "$G" dequantize mbf-r0 mbf-r0-dq --dtype f32
cp "$T/out" /dev/null
"$G" quantize mbf mbf-r0b --scheme bcq --bits 4 --group 32 --rounds 0 > mbf-r0.txt 2>/dev/null
if "$PY" "$BREF" check mbf-f32 mbf-r0 mbf-r0-dq 4 32 0 mbf-r0.txt >"$T/py" 2>&1; then ok; else bad "bcq --rounds 0: $(cat "$T/py")"; fi
grep -q '"quant_method": "graft_bcq"' m32-bcq3-32-1/config.json && grep -q '"shift": true' m32-bcq3-32-1/config.json && ok || bad "bcq quantization_config"
expect 0 "$G" quantize mbf bt1 --scheme bcq --bits 3 --group 32 --threads 1
cmp -s bt1/model.safetensors mbf-bcq3-32-0/model.safetensors && bad "bcq groups of 32 and 40 gave the same bytes" || ok
expect 0 "$G" quantize mbf bt2 --scheme bcq --bits 3 --group 40 --threads 1
cmp -s bt2/model.safetensors mbf-bcq3-40-0/model.safetensors && ok || bad "bcq depends on --threads"
expect 0 "$G" dequantize mbf-bcq3-40-0 bback
"$G" inspect bback | grep "q_proj.weight" | grep -q "^BF16" && ok || bad "bcq dequantize default dtype"
expect 2 "$G" quantize m32 x1 --scheme bcq
expect 2 "$G" quantize m32 x1 --scheme bcq --bits 5
expect 2 "$G" quantize m32 x1 --scheme int8 --bits 3
expect 0 "$G" synth odd --layers 1 --hidden 64 --intermediate 90 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 --seed 1
expect 2 "$G" quantize odd x1 --scheme bcq --bits 2
grep -q "down_proj.weight': bcq packs 8 codes per byte: 90 columns" "$T/err" && ok || bad "bcq with cols % 8: $(cat "$T/err")"
nothing x1 "bcq usage errors"
expect 0 "$G" quantize odd oddq --scheme bcq --bits 2 --exclude down_proj
# a damaged α tensor: exit 3 naming it
cp -r m32-bcq2-32-0 bdam && "$PY" - bdam <<'PYEOF'
import json, struct, sys
p = sys.argv[1] + "/model.safetensors"
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
k = [k for k in h if k.endswith("q_proj.weight_alpha")][0]
h[k]["shape"] = [h[k]["shape"][0], h[k]["shape"][1] * h[k]["shape"][2], 1]
hb = json.dumps(h, separators=(",", ":")).encode()
assert len(hb) <= n
hb = hb.ljust(n)
open(p, "wb").write(b[:8] + hb + b[8 + n:])
PYEOF
expect 3 "$G" dequantize bdam x2
grep -q "q_proj.weight_alpha': α must be floating" "$T/err" && ok || bad "damaged α: $(cat "$T/err")"
nothing x2 "dequantize with a damaged α"
grep -q '"quant_method": "graft_rtn"' m32-q8-32/config.json && grep -q '"group_size": 32' m32-q8-32/config.json && ok || bad "quantization_config"
! grep -q quantization_config m32-q8-32-dq/config.json && grep -q '"torch_dtype": "float32"' m32-q8-32-dq/config.json && ok || bad "dequantize config.json"
"$G" inspect mbf-q4-32 | grep -q "^U8 " && ok || bad "int4 not stored as U8"
"$G" inspect m32-q8-32 | grep -q "lm_head.weight" && "$G" inspect m32-q8-32 | grep "lm_head.weight" | grep -q "^F32" && ok || bad "lm_head quantized without --embeddings"
expect 0 "$G" quantize m32 qe --scheme int8 --embeddings --exclude 'mlp'
grep -q "lm_head" "$T/out" && ! grep -q "mlp" "$T/out" && ok || bad "--embeddings / --exclude"
# default dequantized dtype: the one recorded
expect 0 "$G" dequantize mbf-q8-32 mbf-back
"$G" inspect mbf-back | grep "q_proj.weight" | grep -q "^BF16" && ok || bad "dequantize default dtype is not the recorded bf16"
# float64 weights round-trip through int8 (the dequantized dtype is float64)
expect 0 "$G" convert m32 m64 --dtype f64
expect 0 "$G" quantize m64 q64 --scheme int8
expect 0 "$G" dequantize q64 dq64
"$G" inspect dq64 | grep "q_proj.weight" | grep -q "^F64" && ok || bad "float64 dequantize dtype"
# same bytes for any thread count
expect 0 "$G" quantize mbf qt1 --scheme int4 --group 32 --threads 1
cmp -s qt1/model.safetensors mbf-q4-32/model.safetensors && ok || bad "quantize depends on --threads"
expect 0 "$G" quantize m32 qdry --scheme int8 --dry-run
nothing qdry "quantize --dry-run"

# ---- bad options and inputs ----
expect 2 "$G" quantize m32 x1 --scheme int3
expect 2 "$G" quantize m32 x2
expect 2 "$G" quantize m32 x3 --scheme int8 --group 0
expect 2 "$G" quantize m32 x4 --scheme int8 --exclude '('
nothing x4 "bad regex"
expect 2 "$G" quantize m32-q8-32 x5 --scheme int8
grep -q "quantized already\|no 2-D floating" "$T/err" && ok || bad "quantizing a quantized model: $(cat "$T/err")"
expect 3 "$G" dequantize m32 x6
grep -q "quantization_config" "$T/err" && ok || bad "dequantizing a plain model: $(cat "$T/err")"
nothing x6 "dequantize of a plain model"
expect 2 "$G" dequantize m32-q8-32 x7 --dtype f8_e4m3

# ---- prune against numpy ----
pref() { if "$PY" "$PREF" "$@" >"$T/py" 2>&1; then ok; else bad "prune_ref $*: $(cat "$T/py")"; fi; }
expect 0 "$G" prune m32 pl --sparsity 0.5 --threads 2
pref check m32 pl layer 0.5
expect 0 "$G" prune m32 pg --sparsity 0.3 --scope global
pref check m32 pg global 0.3
expect 0 "$G" prune m32 pn --nm 2:4
pref check m32 pn nm 2:4
pref stats m32 stats.safetensors
expect 0 "$G" prune m32 pw --sparsity 0.4 --wanda stats.safetensors
pref check m32 pw wanda 0.4 stats.safetensors
expect 0 "$G" prune m32 pwn --nm 4:8 --wanda stats.safetensors
pref check m32 pwn wanda-nm 4:8 stats.safetensors
# heavy ties (bf16 weights rounded to a few values): exact counts, lower index kept
expect 0 "$G" synth tie --layers 1 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 --seed 5
"$PY" -c "
import sys; sys.path.insert(0, '$(dirname "$PREF")')
import numpy as np, lora_ref as L
t = L.load('tie/model.safetensors'); t = {k: np.round(v * 20) / 20 for k, v in t.items()}
L.save('tie/model.safetensors', t)" && ok || bad "could not write the tied model"
expect 0 "$G" prune tie ptie --sparsity 0.37 --threads 2
pref check tie ptie layer 0.37
grep -q "sparsity 0.5000" "$T/out" || true
expect 0 "$G" prune mbf pb --sparsity 0.5 --threads 1
expect 0 "$G" prune mbf pb2 --sparsity 0.5 --threads 2
cmp -s pb/model.safetensors pb2/model.safetensors && ok || bad "prune depends on --threads"
expect 0 "$G" prune m32 pdry --nm 2:4 --dry-run
nothing pdry "prune --dry-run"
expect 2 "$G" prune m32 y1
expect 2 "$G" prune m32 y2 --sparsity 1
expect 2 "$G" prune m32 y3 --sparsity 0.5 --nm 2:4
expect 2 "$G" prune m32 y4 --nm 4:4
expect 2 "$G" prune m32 y5 --nm 2:4 --scope global
expect 3 "$G" prune m32 y6 --nm 2:5
grep -q "not a multiple of M" "$T/err" && ok || bad "N:M on a row length not divisible by M: $(cat "$T/err")"
nothing y6 "N:M with a bad M"
expect 3 "$G" prune m32 y7 --sparsity 0.5 --wanda m32
grep -q "Wanda statistics" "$T/err" && ok || bad "bad Wanda statistics: $(cat "$T/err")"

# ---- upcycle: experts are the dense MLP, the router zero or N(0, σ²), Mixtral's config ----
expect 0 "$G" upcycle m32 up --experts 4 --top-k 2 --seed 7 --threads 2
expect 0 "$G" verify up
# a transformers-5 config keeps θ in rope_parameters: no Llama-default rope_theta is added beside it
rm -rf m32r && cp -r m32 m32r && "$PY" -c 'import json; p = "m32r/config.json"; c = json.load(open(p)); c.pop("rope_theta", None)
c["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}; json.dump(c, open(p, "w"))'
expect 0 "$G" upcycle m32r upr --experts 2 --top-k 1
"$PY" -c 'import json; c = json.load(open("upr/config.json")); assert "rope_theta" not in c and c["rope_parameters"]["rope_theta"] == 500000.0, c' &&
    ok || bad "upcycle of a rope_parameters config: $(grep -n rope upr/config.json)"
expect 0 "$G" upcycle m32 up0 --experts 4 --top-k 1 --router-init zero
expect 0 "$G" upcycle m32 upb --experts 4 --top-k 2 --seed 7 --router-std 0.5 --threads 1
expect 0 "$G" upcycle m32 upt --experts 4 --top-k 2 --seed 7 --threads 1
cmp -s up/model.safetensors upt/model.safetensors && ok || bad "upcycle depends on --threads"
"$PY" -c "
import sys, json; sys.path.insert(0, '$(dirname "$QREF")')
import numpy as np, lora_ref as L
d, u, z, b = (L.load(x) for x in ('m32', 'up', 'up0', 'upb'))
for l in range(2):
    p = 'model.layers.%d.' % l
    for e in range(4):
        for w, src in (('w1', 'gate_proj'), ('w3', 'up_proj'), ('w2', 'down_proj')):
            assert np.array_equal(u[p + 'block_sparse_moe.experts.%d.%s.weight' % (e, w)], d[p + 'mlp.%s.weight' % src]), (l, e, w)
    assert p + 'mlp.gate_proj.weight' not in u
    r = u[p + 'block_sparse_moe.gate.weight']
    assert r.shape == (4, 64) and abs(r.std() - 0.02) < 0.004 and abs(r.mean()) < 0.004, (r.std(), r.mean())
    assert abs(b[p + 'block_sparse_moe.gate.weight'].std() - 0.5) < 0.1
    assert not z[p + 'block_sparse_moe.gate.weight'].any()
    assert not np.array_equal(r, u['model.layers.%d.block_sparse_moe.gate.weight' % (1 - l)])
for k in d:
    if '.mlp.' not in k: assert np.array_equal(u[k], d[k]), k
c = json.load(open('up/config.json'))
assert c['model_type'] == 'mixtral' and c['architectures'] == ['MixtralForCausalLM'] and c['num_local_experts'] == 4 and c['num_experts_per_tok'] == 2
assert json.load(open('up0/config.json'))['num_experts_per_tok'] == 1
print('ok')" >"$T/py" 2>&1 && ok || bad "upcycle outputs: $(tail -c 400 "$T/py")"
expect 0 "$G" upcycle m32 ups --experts 4 --top-k 2 --seed 8
cmp -s up/model.safetensors ups/model.safetensors && bad "upcycle: another seed gave the same router" || ok
printf 'merge_method: linear\nmodels:\n  - model: up\n    parameters: {weight: 0.5}\n  - model: ups\n    parameters: {weight: 0.5}\n' > upm.yml
expect 0 "$G" merge upm.yml upm
expect 0 "$G" synth q2 --arch qwen2 --layers 1 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 64
expect 4 "$G" upcycle q2 x10 --experts 4 --top-k 2
nothing x10 "upcycle of a Qwen2 model"
expect 2 "$G" upcycle m32 x11 --experts 4 --top-k 5
expect 2 "$G" upcycle m32 x12 --experts 1 --top-k 1
expect 0 "$G" upcycle m32 x13 --experts 4 --top-k 2 --dry-run
nothing x13 "upcycle --dry-run"
# a layer whose gate_proj is missing (renamed): refused, not upcycled without its MLP
rm -rf upg && cp -r m32 upg && "$PY" -c 'import sys; p = "upg/model.safetensors"; b = bytearray(open(p, "rb").read()); k = b"model.layers.1.mlp.gate_proj.weight"; i = b.index(k); b[i + len(k) - 7] = ord("X"); open(p, "wb").write(bytes(b))' || bad "rename"
expect 3 "$G" upcycle upg x14 --experts 2 --top-k 1
grep -q "a gated MLP needs gate_proj, up_proj and down_proj" "$T/err" && ok || bad "upcycle without a gate_proj: $(cat "$T/err")"
nothing x14 "upcycle without a gate_proj"

# ---- reparam: folded layers compute what the originals did (NumPy's own convolution) ----
"$PY" "$RREF" make conv.safetensors >/dev/null 2>&1 && ok || bad "could not write the conv checkpoint"
for f in bn repvgg mobileone weight-norm; do
    expect 0 "$G" reparam conv.safetensors r-$f.safetensors --fold $f --threads 2
    if "$PY" "$RREF" check $f conv.safetensors r-$f.safetensors >"$T/py" 2>&1; then ok; else bad "reparam $f: $(cat "$T/py")"; fi
done
expect 0 "$G" reparam conv.safetensors r-bn2.safetensors --fold bn --threads 1
cmp -s r-bn.safetensors r-bn2.safetensors && ok || bad "reparam depends on --threads"
expect 0 "$G" inspect r-bn.safetensors
grep -q "stem.bn" "$T/out" && bad "BN tensors left after folding" || ok
# (from a review) a negative running_var is refused, not written as NaN; float64 checkpoints fold in
# float64 (they went through float32: 1e-7 relative error)
"$PY" - <<'PY' || bad "reparam fixtures"
import json, struct
import numpy as np
def save64(path, t):
    hdr, off, blobs = {}, 0, []
    for k, v in t.items():
        a = np.ascontiguousarray(v, dtype=np.float64); hdr[k] = {"dtype": "F64", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes; blobs.append(a.tobytes())
    h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
rng = np.random.default_rng(5)
t = {"c.conv.weight": rng.normal(0, 0.3, (6, 4, 3, 3)), "c.bn.weight": rng.uniform(0.5, 1.5, 6), "c.bn.bias": rng.normal(0, 0.1, 6),
     "c.bn.running_mean": rng.normal(0, 0.2, 6), "c.bn.running_var": rng.uniform(0.5, 2.0, 6)}
save64("f64.safetensors", t)
t["c.bn.running_var"][1] = -1.0
save64("negvar.safetensors", t)
PY
expect 0 "$G" reparam f64.safetensors r-f64.safetensors --fold bn
"$PY" - <<'PY' && ok || bad "float64 BN fold"
import json, struct
import numpy as np
def load64(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: np.frombuffer(d[v["data_offsets"][0]:v["data_offsets"][1]], dtype=np.float64).reshape(v["shape"]) for k, v in h.items() if k != "__metadata__"}
I, O = load64("f64.safetensors"), load64("r-f64.safetensors")
s = I["c.bn.weight"] / np.sqrt(I["c.bn.running_var"] + 1e-5)
W = I["c.conv.weight"] * s[:, None, None, None]; b = I["c.bn.bias"] - I["c.bn.running_mean"] * s
assert np.abs(O["c.conv.weight"] - W).max() <= 1e-14 * np.abs(W).max() and np.abs(O["c.conv.bias"] - b).max() <= 1e-14 * np.abs(b).max()
PY
expect 3 "$G" reparam negvar.safetensors x-negvar.safetensors --fold bn
grep -q "BatchNorm 'c.bn': running_var\[1\] + eps is" "$T/err" && [ ! -e x-negvar.safetensors ] && ok || bad "negative running_var: $(cat "$T/err")"
expect 3 "$G" reparam m32 x20 --fold repvgg
grep -q "nothing to fold" "$T/err" && ok || bad "reparam with nothing to fold: $(cat "$T/err")"
nothing x20 "reparam with nothing to fold"
expect 2 "$G" reparam conv.safetensors x21 --fold bogus
expect 2 "$G" reparam conv.safetensors x22
expect 2 "$G" reparam conv.safetensors x23 --fold bn --pair nonsense

# ---- reparam --fold mup: MiniCPM-style μP checkpoints become plain Llama ones with the same logits ----
# (the evaluator runs MiniCPM's forward; both against llama_ref.py's NumPy forward)
mkmu() { # mkmu OUT DTYPE TIE: a synth model whose config.json says MiniCPM with μP scalars
    "$G" synth $1 --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype $2 --seed 5 ${3:-} >/dev/null 2>&1 &&
    "$PY" - $1/config.json <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(architectures=["MiniCPMForCausalLM"], model_type="minicpm", scale_emb=12, scale_depth=1.4, dim_model_base=16,
         auto_map={"AutoModelForCausalLM": "modeling_minicpm.MiniCPMForCausalLM"})
json.dump(c, open(sys.argv[1], "w"), indent=2)
PYEOF
}
"$PY" -c "import random; random.seed(2); print(' '.join(str(random.randrange(128)) for _ in range(90)))" > mu.ids
for spec in "f32 --tie" "f32 " "bf16 --tie"; do
    set -- $spec
    mu=mu-$1${2:-untied}
    mkmu $mu $1 ${2:-} && ok || bad "could not write $mu"
    expect 0 "$G" eval $mu --tokens mu.ids --ctx 45 --no-bos --dump-logits $mu.bin --json
    cp "$T/out" $mu.json
    if "$PY" "$LREF" ppl $mu mu.ids 45 -1 0 $mu.bin $mu.json 1e-4 >"$T/py" 2>&1; then ok; else bad "MiniCPM forward of $mu: $(cat "$T/py")"; fi
    expect 0 "$G" reparam $mu $mu-f --fold mup --threads 2
    expect 0 "$G" eval $mu-f --tokens mu.ids --ctx 45 --no-bos --dump-logits $mu-f.bin
    tol=1e-5; [ $1 = bf16 ] && tol=2e-2 # (bf16 weights scaled by 12 and by 1.4/√2 round once more)
    "$PY" -c 'import numpy as np, sys; a, b = np.fromfile(sys.argv[1], "<f4"), np.fromfile(sys.argv[2], "<f4"); d = np.abs(a - b).max() / np.abs(a).max(); print(d); sys.exit(0 if a.size == b.size and d < float(sys.argv[3]) else 1)' $mu.bin $mu-f.bin $tol > "$T/py" 2>&1 && ok || bad "fold mup of $mu changes the logits: $(cat "$T/py")"
    "$PY" -c 'import json, sys; c = json.load(open(sys.argv[1] + "/config.json")); assert c["architectures"] == ["LlamaForCausalLM"] and c["model_type"] == "llama" and not c["tie_word_embeddings"]; assert not any(k in c for k in ("scale_emb", "scale_depth", "dim_model_base", "auto_map")); print("ok")' $mu-f >"$T/py" 2>&1 && ok || bad "fold mup config.json: $(cat "$T/py")"
    "$G" inspect $mu-f | grep -q " lm_head.weight" && ok || bad "fold mup of $mu: no lm_head"
done
expect 0 "$G" reparam mu-f32--tie mu1 --fold mup --threads 1
cmp -s mu1/model.safetensors mu-f32--tie-f/model.safetensors && ok || bad "fold mup depends on --threads"
expect 4 "$G" reparam m32 x24 --fold mup
grep -q "not a μP / MiniCPM-style checkpoint" "$T/err" && ok || bad "fold mup of a plain Llama: $(cat "$T/err")"
nothing x24 "fold mup of a plain Llama"
cp -r mu-f32untied mu3 && sed -i 's/"scale_emb": 12/"scale_emb": 12, "q_lora_rank": 768/' mu3/config.json
expect 4 "$G" reparam mu3 x25 --fold mup
grep -q "latent attention" "$T/err" && ok || bad "fold mup of MiniCPM3: $(cat "$T/err")"
for badv in '"scale_emb": "x"' '"scale_emb": -1' '"scale_emb": 0' '"scale_depth": "deep"' '"dim_model_base": [16]'; do
    rm -rf mu4 && cp -r mu-f32untied mu4 && "$PY" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c.update(json.loads("{" + sys.argv[2] + "}")); json.dump(c, open(p, "w"))' mu4/config.json "$badv"
    expect 3 "$G" reparam mu4 x26 --fold mup
    grep -q 'config.json: "\(scale_\|dim_model\)' "$T/err" && ok || bad "fold mup with $badv: $(cat "$T/err")"
    nothing x26 "fold mup with a bad scalar"
done
cp -r m32 mu5 && "$PY" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c.update(scale_emb=12, dim_model_base=16); json.dump(c, open(p, "w"))' mu5/config.json
expect 4 "$G" reparam mu5 x28 --fold mup
grep -q "ignores scale_emb" "$T/err" && ok || bad "fold mup of a Llama config with μP keys: $(cat "$T/err")"
rm -rf mu6 && cp -r mu-f32untied mu6 && "$PY" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c.update(use_mup=False); json.dump(c, open(p, "w"))' mu6/config.json
expect 4 "$G" reparam mu6 x29 --fold mup
grep -q "use_mup: false" "$T/err" && ok || bad "fold mup with use_mup false: $(cat "$T/err")"
expect 0 "$G" reparam mu-f32untied x27 --fold mup --dry-run
nothing x27 "fold mup --dry-run"

# ---- align (Git Re-Basin weight matching): B reordered to match A, function unchanged ----
if "$PY" "$AREF" permute m32 m32p 3 >"$T/py" 2>&1; then ok; else bad "align_ref permute: $(cat "$T/py")"; fi
expect 0 "$G" align m32p --to m32 al1 --json --threads 2
cp "$T/out" al1.json
if "$PY" "$AREF" check m32 m32p al1 al1.json >"$T/py" 2>&1; then ok; else bad "align of a permuted copy: $(cat "$T/py")"; fi
"$PY" -c "import sys; sys.path.insert(0, '$(dirname "$AREF")'); from lora_ref import load; import numpy as np; A, O = load('m32'), load('al1'); sys.exit(0 if all(np.array_equal(A[k], O[k]) for k in A) else 1)" && ok || bad "aligning a permuted copy of A does not give A back"
expect 0 "$G" synth mind --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 --seed 21
for m in mind mbf; do
    expect 0 "$G" align $m --to m32 al-$m --json
    cp "$T/out" al-$m.json
    if "$PY" "$AREF" check m32 $m al-$m al-$m.json >"$T/py" 2>&1; then ok; else bad "align $m: $(cat "$T/py")"; fi
    "$G" eval $m --tokens mu.ids --ctx 45 --no-bos --dump-logits $m.bin >/dev/null 2>&1 && "$G" eval al-$m --tokens mu.ids --ctx 45 --no-bos --dump-logits al-$m.bin >/dev/null 2>&1
    "$PY" -c 'import numpy as np, sys; a, b = np.fromfile(sys.argv[1], "<f4"), np.fromfile(sys.argv[2], "<f4"); d = np.abs(a - b).max() / np.abs(a).max(); print(d); sys.exit(0 if a.size == b.size and d < 1e-5 else 1)' $m.bin al-$m.bin > "$T/py" 2>&1 && ok || bad "align changes $m's logits: $(cat "$T/py")"
done
expect 0 "$G" align mind --to m32 al-t1 --threads 1
cmp -s al-t1/model.safetensors al-mind/model.safetensors && ok || bad "align depends on --threads"
expect 0 "$G" align mind --to m32 al-nh --no-heads --json
grep -q '"heads_moved": 0' "$T/out" && ! grep -q '"mlp_moved": 0,' "$T/out" && ok || bad "align --no-heads: $(head -c 300 "$T/out")"
expect 0 "$G" align mind --to m32 al-nr --no-residual --json
cp "$T/out" al-nr.json
if "$PY" "$AREF" check m32 mind al-nr al-nr.json >"$T/py" 2>&1; then ok; else bad "align --no-residual: $(cat "$T/py")"; fi
grep -q '"residual_moved": 0}' al-nr.json && ok || bad "align --no-residual moved residual channels"
expect 0 "$G" align mind --to m32 al-dry --dry-run
nothing al-dry "align --dry-run"
expect 4 "$G" align odd --to m32 x28
grep -q "B does not have A's shapes\|differ from A's" "$T/err" && ok || bad "align of another shape: $(cat "$T/err")"
nothing x28 "align of another shape"
expect 0 "$G" synth phi --like-config "$CFGS/phi-3-mini-4k.json" --layers 1 --hidden 64 --intermediate 96 --heads 4 --kv-heads 4 --vocab 128 --dtype f32
expect 4 "$G" align phi --to phi x29
grep -q "Phi3ForCausalLM" "$T/err" && ok || bad "align of Phi-3: $(cat "$T/err")"
expect 2 "$G" align mind x30
expect 2 "$G" align mind --to m32 x31 --max-iters 1
# hostile inputs: a NaN weight (the assignment must not spin), tensors of the wrong shape
cp -r mind alnan && $PATCH alnan/model.safetensors 'layers.0.mlp.gate_proj.weight' nan 5
expect 1 "$G" align alnan --to m32 x32
grep -q "model.layers.0.*not finite" "$T/err" && ok || bad "align with a NaN weight: $(cat "$T/err")"
nothing x32 "align with a NaN weight"
"$PY" - mind mbad <<'PYEOF'
import sys, os
sys.path.insert(0, os.environ["AREFDIR"])
import numpy as np
from lora_ref import load, save
W = load(sys.argv[1])
W["model.norm.weight"] = W["model.norm.weight"][:8]
W["model.layers.0.self_attn.q_proj.bias"] = np.arange(8, dtype=np.float32)
os.makedirs(sys.argv[2], exist_ok=True)
save(sys.argv[2] + "/model.safetensors", W)
open(sys.argv[2] + "/config.json", "w").write(open(sys.argv[1] + "/config.json").read())
PYEOF
for flags in "" "--no-residual"; do
    expect 4 "$G" align mbad --to m32 x33 $flags
    grep -q "does not have the shape its place implies" "$T/err" && ok || bad "align of misshapen tensors ($flags): $(cat "$T/err")"
    nothing x33 "align of misshapen tensors"
done

# ---- shrink (depth pruning): metric values against NumPy's forward; a pruned model computes what the
# original does with the dropped layers' o_proj and down_proj zeroed (those layers become identities) ----
HREF="$(dirname "$AREF")/shrink_ref.py"
FAMB="$(dirname "$AREF")/../../demo/family/base"
FAMC="$(dirname "$AREF")/../../demo/family/calib/c.txt"
"$G" tokenize "$FAMB" "$FAMC" > calib.ids 2>/dev/null
for spec in "angular 1" "angular 2" "block-influence 2" "ppl 2"; do
    set -- $spec
    expect 0 "$G" shrink "$FAMB" sh-$1-$2 --drop-layers $2 --metric $1 --calib "$FAMC" --ctx 48 --windows 3 --json --threads 2
    cp "$T/out" sh-$1-$2.json
    if "$PY" "$HREF" check "$FAMB" calib.ids 48 256 3 $1 $2 sh-$1-$2.json >"$T/py" 2>&1; then ok; else bad "shrink $1 $2: $(cat "$T/py")"; fi
    "$PY" - "$FAMB" sh-$1-$2.json zeroed-$1-$2 <<'PYEOF'
import json, os, sys
sys.path.insert(0, os.environ["AREFDIR"])
import numpy as np
from lora_ref import load, save
W = load(sys.argv[1])
for l in json.load(open(sys.argv[2]))["dropped"]:
    for k in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
        W["model.layers.%d.%s" % (l, k)] = np.zeros_like(W["model.layers.%d.%s" % (l, k)])
os.makedirs(sys.argv[3], exist_ok=True)
save(sys.argv[3] + "/model.safetensors", W)
for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    open(os.path.join(sys.argv[3], f), "wb").write(open(os.path.join(sys.argv[1], f), "rb").read())
PYEOF
    "$G" eval zeroed-$1-$2 --tokens mu.ids --ctx 45 --no-bos --dump-logits z.bin >/dev/null 2>&1 && "$G" eval sh-$1-$2 --tokens mu.ids --ctx 45 --no-bos --dump-logits s.bin >/dev/null 2>&1
    "$PY" -c 'import numpy as np, sys; a, b = np.fromfile("z.bin", "<f4"), np.fromfile("s.bin", "<f4"); d = np.abs(a - b).max() / np.abs(a).max(); print(d); sys.exit(0 if a.size == b.size and d < 1e-5 else 1)' > "$T/py" 2>&1 && ok || bad "shrink $1 $2 differs from zeroing the dropped layers: $(cat "$T/py")"
    grep -q "\"num_hidden_layers\": $((4 - $2))" sh-$1-$2/config.json && ok || bad "shrink $1 $2: num_hidden_layers"
done
expect 0 "$G" shrink "$FAMB" sh-named --layers 3,0
"$G" inspect sh-named | grep -q "model.layers.1.mlp" && ! "$G" inspect sh-named | grep -q "model.layers.2\." && ok || bad "shrink --layers renumbering"
"$PY" -c "import sys; sys.path.insert(0, '$(dirname "$AREF")'); from lora_ref import load; import numpy as np; A, S = load('$FAMB'), load('sh-named'); sys.exit(0 if all(np.array_equal(S[k.replace('layers.%d.' % o, 'layers.%d.' % n)], A[k]) for o, n in ((1, 0), (2, 1)) for k in A if k.startswith('model.layers.%d.' % o)) else 1)" && ok || bad "shrink --layers: the kept layers' tensors are not the originals"
expect 2 "$G" shrink "$FAMB" x40 --layers 4
expect 2 "$G" shrink "$FAMB" x41 --drop-layers 4 --calib "$FAMC"
expect 2 "$G" shrink "$FAMB" x42 --drop-layers 1
expect 2 "$G" shrink "$FAMB" x43 --layers 1,1
expect 2 "$G" shrink "$FAMB" x45 --drop-layers 2 --metric ppl --calib "$FAMC" --budget 6
grep -q "needs 7 evaluations" "$T/err" && ok || bad "shrink ppl over budget: $(cat "$T/err")"
nothing x40 "shrink with a bad layer"
: > empty.txt
expect 2 "$G" shrink "$FAMB" x46 --drop-layers 1 --metric ppl --calib empty.txt
grep -q "fewer than 2 tokens" "$T/err" && ok || bad "shrink ppl on an empty text: $(cat "$T/err")"
nothing x46 "shrink ppl on an empty text"
for edit in '"mlp_only_layers": [3]' '"no_rope_layers": [1, 1, 0, 1]' '"sliding_window_pattern": 2'; do
    rm -rf shx && cp -r "$FAMB" shx && "$PY" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c.update(json.loads("{" + sys.argv[2] + "}")); json.dump(c, open(p, "w"))' shx/config.json "$edit"
    expect 4 "$G" shrink shx x47 --layers 1
    grep -q "not shrunk" "$T/err" && ok || bad "shrink with $edit: $(cat "$T/err")"
    nothing x47 "shrink with $edit"
done
# MiniCPM: scale_depth follows the layer count, so the kept branches keep their scale
rm -rf shm && cp -r "$FAMB" shm && "$PY" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c.update(architectures=["MiniCPMForCausalLM"], model_type="minicpm", scale_depth=1.4); json.dump(c, open(p, "w"))' shm/config.json
expect 0 "$G" shrink shm shm-3 --layers 3
"$PY" -c 'import json, sys, math; c = json.load(open(sys.argv[1])); sys.exit(0 if abs(c["scale_depth"] - 1.4 * math.sqrt(0.75)) < 1e-12 else 1)' shm-3/config.json && ok || bad "shrink of MiniCPM: scale_depth"
expect 0 "$G" shrink shm x48 --drop-layers 1 --metric ppl --calib "$FAMC" --ctx 48 --windows 2 --json --dry-run
l3=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["values"][3])' "$T/out" 2>/dev/null)
"$G" eval shm-3 --text "$FAMC" --ctx 48 --max-tokens 94 --json > shm3.json 2>/dev/null
"$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(0 if abs(r["nll"] - float(sys.argv[2])) < 1e-4 else 1)' shm3.json "${l3:-0}" && ok || bad "shrink of MiniCPM: the written model's loss $(cat shm3.json) is not what ppl measured ($l3)"
expect 0 "$G" shrink "$FAMB" x44 --drop-layers 1 --calib "$FAMC" --ctx 32 --windows 1 --dry-run
nothing x44 "shrink --dry-run"

# ---- shrink (width pruning): importances against NumPy's forward, the kept units the most important,
# and the pruned model's logits (NumPy forward) equal to the original's with the removed units zeroed,
# on the trained demo base (f32) and on the real layouts (biases, q/k norms, fused Phi-3, Gemma) ----
"$G" convert "$FAMB" wb32 --dtype f32 >/dev/null 2>&1 && cp "$FAMB"/tokenizer*.json wb32/
for spec in "--intermediate 264" "--heads 2" "--hidden 96" "--intermediate 176 --heads 2 --hidden 64"; do
    rm -rf wsh && expect 0 "$G" shrink wb32 wsh $spec --calib "$FAMC" --ctx 48 --windows 3 --json --threads 2
    cp "$T/out" wsh.json
    if "$PY" "$HREF" width wb32 calib.ids 48 256 3 wsh.json wsh >"$T/py" 2>&1; then ok; else bad "shrink $spec: $(cat "$T/py")"; fi
done
"$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])); sys.exit(0 if (c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (64, 176, 2, 1, 32) and abs(c["rms_norm_eps"] - 2e-5) < 1e-15 else 1)' wsh/config.json && ok || bad "shrink width: config.json $(cat wsh/config.json)"
for layout in "qwen2.5-7b --kv-heads 2|--intermediate 48 --heads 2 --hidden 48" "qwen3-8b --kv-heads 2|--intermediate 48 --heads 2 --hidden 40" \
              "phi-3-mini-4k --kv-heads 4|--intermediate 48 --heads 2 --hidden 48" "gemma-2-9b --kv-heads 2|--intermediate 40 --heads 2" \
              "gemma-3-4b --kv-heads 2|--intermediate 40 --heads 2"; do
    cfg=${layout%%|*} spec=${layout#*|}
    set -- $cfg
    rm -rf wl wsl && "$G" synth wl --like-config "$CFGS/$1.json" --layers 2 --hidden 64 --intermediate 96 --heads 4 $2 $3 --vocab 258 --dtype f32 >/dev/null 2>&1
    cp "$FAMB"/tokenizer*.json wl/
    expect 0 "$G" shrink wl wsl $spec --calib "$FAMC" --ctx 48 --windows 2 --json
    cp "$T/out" wsl.json
    if "$PY" "$HREF" width wl calib.ids 48 256 2 wsl.json wsl >"$T/py" 2>&1; then ok; else bad "shrink $spec of $1: $(cat "$T/py")"; fi
done
expect 0 "$G" verify wsl
# Phi-3's fused projections under grouped-query attention; a one-layer model's report keeps per-layer lists
rm -rf wlp wslp && "$G" synth wlp --like-config "$CFGS/phi-3-mini-4k.json" --layers 1 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 258 --dtype f32 >/dev/null 2>&1
cp "$FAMB"/tokenizer*.json wlp/
expect 0 "$G" shrink wlp wslp --intermediate 40 --heads 2 --hidden 48 --calib "$FAMC" --ctx 48 --windows 2 --json
cp "$T/out" wslp.json
if "$PY" "$HREF" width wlp calib.ids 48 256 2 wslp.json wslp >"$T/py" 2>&1; then ok; else bad "shrink of Phi-3 with grouped-query attention: $(cat "$T/py")"; fi
"$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(0 if all(isinstance(r[k][0], list) for k in ("ffn_importance", "head_importance", "ffn_kept", "groups_kept")) and not isinstance(r["hidden_kept"][0], list) else 1)' wslp.json && ok || bad "shrink --json of a one-layer model: per-layer lists flattened"
# the same selection and bytes for any thread count; the bf16 base
rm -rf wt1 wt2 && expect 0 "$G" shrink "$FAMB" wt1 --intermediate 200 --heads 2 --hidden 100 --calib "$FAMC" --ctx 64 --windows 2 --threads 1
expect 0 "$G" shrink "$FAMB" wt2 --intermediate 200 --heads 2 --hidden 100 --calib "$FAMC" --ctx 64 --windows 2 --threads 2
cmp -s wt1/model.safetensors wt2/model.safetensors && ok || bad "shrink width depends on the thread count"
expect 0 "$G" eval wt1 --text "$FAMC" --ctx 64 --max-tokens 200 --json
cp "$T/out" wt1.json
# GGUF through convert: the explicit head_dim becomes attention.key_length; the same loss
expect 0 "$G" convert wt1 wt1.gguf --to gguf --type f32
expect 0 "$G" eval wt1.gguf --text "$FAMC" --ctx 64 --max-tokens 200 --json
"$PY" -c 'import json, sys; a, b = (json.load(open(f))["nll"] for f in sys.argv[1:]); sys.exit(0 if abs(a - b) < 1e-6 else 1)' wt1.json "$T/out" && ok || bad "shrink width: the GGUF's loss differs"
# refusals: nothing written
expect 2 "$G" shrink "$FAMB" x50 --heads 3 --calib "$FAMC"
grep -q "multiple of 2" "$T/err" && ok || bad "shrink --heads 3 of 4 heads on 2 groups: $(cat "$T/err")"
expect 2 "$G" shrink "$FAMB" x50 --intermediate 400 --calib "$FAMC"
expect 2 "$G" shrink "$FAMB" x50 --intermediate 200
expect 2 "$G" shrink "$FAMB" x50 --intermediate 200 --drop-layers 1 --calib "$FAMC"
expect 4 "$G" shrink wl x50 --hidden 32 --calib "$FAMC"
grep -q "√hidden" "$T/err" && ok || bad "shrink --hidden of Gemma: $(cat "$T/err")"
expect 0 "$G" shrink "$FAMB" x50 --intermediate 200 --calib "$FAMC" --dry-run
nothing x50 "shrink width refusals and --dry-run"
expect 0 "$G" synth wmx --like-config "$CFGS/mixtral-8x7b.json" --layers 1 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 258 --dtype f32
cp "$FAMB"/tokenizer*.json wmx/
expect 4 "$G" shrink wmx x51 --intermediate 48 --calib "$FAMC"
grep -q "mixture-of-experts" "$T/err" && ok || bad "shrink width of Mixtral: $(cat "$T/err")"
"$PY" - wb32 wunk <<'PYEOF'
import sys, os, shutil
sys.path.insert(0, os.environ["AREFDIR"])
import numpy as np
from lora_ref import load, save
W = load(sys.argv[1])
W["model.layers.0.mlp.extra_scale"] = np.ones(352, np.float32)
os.makedirs(sys.argv[2], exist_ok=True)
save(sys.argv[2] + "/model.safetensors", W)
for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(sys.argv[1], f), sys.argv[2])
PYEOF
expect 4 "$G" shrink wunk x51 --intermediate 200 --calib "$FAMC"
grep -q "extra_scale.*does not know how to slice" "$T/err" && ok || bad "shrink width with an unknown tensor: $(cat "$T/err")"
expect 0 "$G" shrink wunk x52 --heads 2 --calib "$FAMC" --ctx 32 --windows 1
nothing x51 "shrink width of Mixtral / an unknown tensor"

# ---- moefy (MoEfication): groups, experts, k-means objective and router against NumPy
# (tests/ref/moefy_ref.py); with K = E the MoE computes the dense model (logits within 1e-5) ----
MREF="$(dirname "$AREF")/moefy_ref.py"
expect 0 "$G" moefy "$FAMB" mf8 --experts 8 --top-k 2 --json --threads 2
cp "$T/out" mf8.json
if "$PY" "$MREF" check "$FAMB" mf8 mf8.json 1e-5 >"$T/py" 2>&1; then ok; else bad "moefy: $(cat "$T/py")"; fi
expect 0 "$G" moefy wb32 mfc --experts 4 --top-k 3 --calib "$FAMC" --ctx 64 --windows 8 --max-tokens 300 --json
cp "$T/out" mfc.json
if "$PY" "$MREF" check wb32 mfc mfc.json 1e-5 calib.ids 64 256 8 300 >"$T/py" 2>&1; then ok; else bad "moefy --calib: $(cat "$T/py")"; fi
"$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])); sys.exit(0 if (c["architectures"], c["num_local_experts"], c["num_experts_per_tok"], c["intermediate_size"]) == (["MixtralForCausalLM"], 4, 3, 88) else 1)' mfc/config.json && ok || bad "moefy: config.json"
expect 0 "$G" verify mfc
for spec in "$FAMB 8" "wb32 4 --calib $FAMC --ctx 64 --windows 4"; do
    set -- $spec
    m=$1 e=$2; shift 2
    rm -rf mfe && expect 0 "$G" moefy $m mfe --experts $e --top-k $e "$@"
    "$G" eval $m --tokens mu.ids --ctx 45 --no-bos --dump-logits z.bin >/dev/null 2>&1 && "$G" eval mfe --tokens mu.ids --ctx 45 --no-bos --dump-logits s.bin >/dev/null 2>&1
    "$PY" -c 'import numpy as np, sys; a, b = np.fromfile("z.bin", "<f4"), np.fromfile("s.bin", "<f4"); d = np.abs(a - b).max() / np.abs(a).max(); print(d); sys.exit(0 if a.size == b.size and a.size and d < 1e-5 else 1)' > "$T/py" 2>&1 && ok || bad "moefy K = E on $m differs from the dense model: $(cat "$T/py")"
done
# the k-means runs to a fixed point on the demo base; an f16 model's router stays in normal numbers
"$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(0 if all(l["converged"] for l in r["layer"]) else 1)' mf8.json && ok || bad "moefy: k-means did not converge on the demo base"
"$G" convert "$FAMB" wf16 --dtype f16 >/dev/null 2>&1 && "$PY" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c["torch_dtype"] = "float16"; json.dump(c, open(p, "w"))' wf16/config.json
expect 0 "$G" moefy wf16 mf16 --experts 8 --top-k 2 --json
cp "$T/out" mf16.json
if "$PY" "$MREF" check wf16 mf16 mf16.json 1e-5 >"$T/py" 2>&1; then ok; else bad "moefy of an f16 model: $(cat "$T/py")"; fi
"$PY" -c 'import sys, os; sys.path.insert(0, os.environ["AREFDIR"]); from lora_ref import load; import numpy as np; W = load(sys.argv[1]); r = W["model.layers.0.block_sparse_moe.gate.weight"]; sys.exit(0 if np.abs(r).max() >= 0.0625 and (r != 0).mean() > 0.99 else 1)' mf16 && ok || bad "moefy of an f16 model: the router underflows"
# Mistral's sliding window carries over (moefy and upcycle)
rm -rf wmi && "$G" synth wmi --like-config "$CFGS/mistral-7b-v0.3.json" --layers 1 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 258 --dtype f32 >/dev/null 2>&1
"$PY" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c["sliding_window"] = 16; json.dump(c, open(p, "w"))' wmi/config.json
expect 0 "$G" moefy wmi mfmi --experts 4 --top-k 2
expect 0 "$G" upcycle wmi upmi --experts 2 --top-k 1
"$PY" -c 'import json, sys; sys.exit(0 if all(json.load(open(f + "/config.json"))["sliding_window"] == 16 for f in sys.argv[1:]) else 1)' mfmi upmi && ok || bad "moefy / upcycle of Mistral dropped sliding_window"
# a NaN weight: refused before clustering
cp -r wb32 wnan && $PATCH wnan/model.safetensors 'model.layers.1.mlp.up_proj.weight' nan 7
expect 1 "$G" moefy wnan x54 --experts 4 --top-k 2
grep -q "layers.1.mlp.up_proj.weight.*NaN or infinite" "$T/err" && ok || bad "moefy with a NaN weight: $(cat "$T/err")"
nothing x54 "moefy with a NaN weight"
expect 0 "$G" moefy "$FAMB" mft1 --experts 4 --top-k 2 --calib "$FAMC" --ctx 64 --windows 2 --threads 1
expect 0 "$G" moefy "$FAMB" mft2 --experts 4 --top-k 2 --calib "$FAMC" --ctx 64 --windows 2 --threads 2
cmp -s mft1/model.safetensors mft2/model.safetensors && ok || bad "moefy depends on the thread count"
expect 2 "$G" moefy "$FAMB" x53 --experts 3 --top-k 2
grep -q "divide intermediate_size (352)" "$T/err" && ok || bad "moefy --experts 3: $(cat "$T/err")"
expect 2 "$G" moefy "$FAMB" x53 --experts 4 --top-k 5
expect 2 "$G" moefy "$FAMB" x53 --experts 4
expect 2 "$G" moefy "$FAMB" x53 --experts 4 --top-k 1 --calib empty.txt
grep -q "fewer than 2 tokens" "$T/err" && ok || bad "moefy on an empty text: $(cat "$T/err")"
"$G" synth wq --like-config "$CFGS/qwen2.5-7b.json" --layers 1 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 >/dev/null 2>&1
expect 4 "$G" moefy wq x53 --experts 4 --top-k 2
expect 4 "$G" moefy wmx x53 --experts 4 --top-k 2
expect 0 "$G" moefy "$FAMB" x53 --experts 4 --top-k 2 --dry-run
nothing x53 "moefy refusals and --dry-run"

# ---- moe (mergekit-moe configs, Mixtral output) ----
expect 0 "$G" synth e1 --like m32 --delta 0.05 --seed 11
expect 0 "$G" synth e2 --like m32 --delta 0.05 --seed 12
cat > moe.yml <<'YML'
base_model: m32
gate_mode: random
experts_per_token: 2
experts:
  - source_model: e1
  - source_model: e2
    residual_scale: 0.5
  - source_model: m32
    noise_scale: 0.01
  - source_model: e1
YML
expect 0 "$G" moe moe.yml moeo --seed 3 --threads 2
expect 0 "$G" verify moeo
expect 0 "$G" moe moe.yml moeo1 --seed 3 --threads 1
cmp -s moeo/model.safetensors moeo1/model.safetensors && ok || bad "moe depends on --threads"
"$PY" -c "
import sys, json; sys.path.insert(0, '$(dirname "$QREF")')
import numpy as np, lora_ref as L
b, e1, e2, o = (L.load(x) for x in ('m32', 'e1', 'e2', 'moeo'))
src = [e1, e2, b, e1]
for l in range(2):
    p = 'model.layers.%d.' % l
    for e in range(4):
        for w, part in (('w1', 'gate_proj'), ('w3', 'up_proj'), ('w2', 'down_proj')):
            got, want = o[p + 'block_sparse_moe.experts.%d.%s.weight' % (e, w)], src[e][p + 'mlp.%s.weight' % part]
            if e == 1 and w == 'w2': want = (want * np.float32(0.5)).astype(np.float32)
            if e == 2:
                d = got - want
                assert abs(d.std() - 0.01) < 0.003 and abs(d.mean()) < 0.003, (l, w, d.std())
            else:
                assert np.array_equal(got, want), (l, e, w)
    r = o[p + 'block_sparse_moe.gate.weight']
    assert r.shape == (4, 64) and 0.8 < r.std() < 1.2, r.std()
for k in b:
    if '.mlp.' not in k: assert np.array_equal(o[k], b[k]), k
c = json.load(open('moeo/config.json'))
assert c['model_type'] == 'mixtral' and c['num_local_experts'] == 4 and c['num_experts_per_tok'] == 2
print('ok')" >"$T/py" 2>&1 && ok || bad "moe outputs: $(tail -c 400 "$T/py")"
[ -f moeo/mergekit_moe_config.yml ] && ok || bad "moe: no mergekit_moe_config.yml"
printf 'base_model: m32\ngate_mode: uniform_random\ndtype: bfloat16\nexperts:\n  - {source_model: e1, positive_prompts: [code]}\n  - {source_model: e2, positive_prompts: [math]}\n' > moeu.yml
expect 0 "$G" moe moeu.yml moeu
"$G" inspect moeu | grep "gate.weight" | grep -q "^BF16" && ok || bad "moe dtype: bfloat16 not applied"
moebad() { printf "$2" > mb.yml; expect 4 "$G" moe mb.yml mbo; grep -q "$3" "$T/err" && ok || bad "moe $1: $(cat "$T/err")"; nothing mbo "moe $1"; }
# routers from prompts (hidden, hidden_last, hidden_avg, cheap_embed) against the NumPy forward and
# an independent tokenizer; negative prompts subtract; a Qwen2-MoE shared expert gets its own vector
expect 0 "$G" synth gb --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 640 --dtype f32 --seed 21
"$PY" "$(dirname "$QREF")/tok_ref.py" make llama3 gb
expect 0 "$G" synth ge1 --like gb --delta 0.01 --seed 22
expect 0 "$G" synth ge2 --like gb --delta 0.01 --seed 23
# (from a review: the prompts' BOS is tokenizer.bos_token as MergeKit prepends it, and cheap_embed
# normalises the positive and negative sums before subtracting; "hidden-nobos": a tokenizer naming no
# bos_token gets none)
# "cheap_embed-meta": a Metaspace tokenizer (prepend_scheme first) with bos_token <s>: the prompt after
# the BOS gets no ▁, as tokenizing "<s>" + prompt as one text gives (graft put the BOS id before the
# prompt tokenized alone)
rm -rf gbm && cp -r gb gbm && "$PY" "$(dirname "$QREF")/tok_ref.py" make metaspace gbm > /dev/null && printf '{"bos_token": "<s>"}' > gbm/tokenizer_config.json
for mode in hidden hidden_last hidden_avg cheap_embed hidden-nobos cheap_embed-meta; do
    gbase=gb
    if [ $mode = hidden-nobos ]; then printf '{}' > gb/tokenizer_config.json; else printf '{"bos_token": "<|begin_of_text|>"}' > gb/tokenizer_config.json; fi
    [ $mode = cheap_embed-meta ] && gbase=gbm
    printf 'base_model: %s\ngate_mode: %s\ndtype: float32\nexperts:\n  - source_model: ge1\n    positive_prompts: ["Write a function in C", "for (int i = 0; i < n; i++)"]\n    negative_prompts: ["Größe über Übung"]\n  - source_model: ge2\n    positive_prompts: ["The quick brown fox jumps over the lazy dog."]\nshared_experts:\n  - source_model: gb\n    positive_prompts: ["numbers 12345"]\n' $gbase ${mode%-*} > moeg.yml
    expect 0 "$G" moe moeg.yml moeg-$mode --threads 2
    if "$PY" "$LREF" gates $gbase moeg-$mode moeg.yml > "$T/py" 2>&1; then ok; else bad "moe gate_mode $mode: $(cat "$T/py")"; fi
    [ $mode = cheap_embed ] || ! grep -q "degenerate" "$T/err" && ok || bad "moe $mode: degenerate-router warning for distinct prompts: $(cat "$T/err")"
done
# routers of prompts too alike (both end in " C": the first layer's input is the same): MergeKit's
# degenerate-gate warning (condition number above 5)
printf 'base_model: gb\ngate_mode: hidden\nexperts:\n  - {source_model: ge1, positive_prompts: ["Write a function in C"]}\n  - {source_model: ge2, positive_prompts: ["Read a program in C"]}\n' > mdg.yml
expect 0 "$G" moe mdg.yml mdg
grep -q "nearly degenerate (condition number above 5)" "$T/err" && ok || bad "moe: no degenerate-router warning: $(cat "$T/err")"
moebad k 'base_model: m32\ngate_mode: random\nexperts_per_token: 3\nexperts:\n  - {source_model: e1}\n  - {source_model: e2}\n' "more than"
moebad prompts 'base_model: m32\ngate_mode: uniform_random\nexperts:\n  - {source_model: e1}\n  - {source_model: e2}\n' "positive_prompts"
moebad same 'base_model: m32\ngate_mode: random\nexperts:\n  - {source_model: e1}\n  - {source_model: e1}\n' "same model"
moebad key 'base_model: m32\ngate_mode: random\nexpert: []\n' "unknown key"
moebad shared2 'base_model: m32\ngate_mode: random\nexperts: [{source_model: e1}, {source_model: e2}]\nshared_experts: [{source_model: e2}, {source_model: e1}]\n' "at most one"
moebad sharedp 'base_model: m32\ngate_mode: uniform_random\nexperts:\n  - {source_model: e1, positive_prompts: [a]}\n  - {source_model: e2, positive_prompts: [b]}\nshared_experts: [{source_model: m32}]\n' "shared expert needs"
moebad arch 'base_model: m32\ngate_mode: random\narchitecture: qwen\nexperts: [{source_model: e1}, {source_model: e2}]\n' "Qwen2-MoE needs one shared expert"
# a shared expert: Qwen2-MoE's layout, zero q/k/v biases added for a Llama base
printf 'base_model: m32\ngate_mode: random\narchitecture: qwen\nexperts: [{source_model: e1}, {source_model: e2}]\nshared_experts: [{source_model: m32, residual_scale: 0.5}]\n' > moeq.yml
expect 0 "$G" moe moeq.yml moeq --seed 2
expect 0 "$G" verify moeq
"$PY" -c "
import sys, json; sys.path.insert(0, '$(dirname "$QREF")')
import numpy as np, lora_ref as L
b, e1, e2, o = (L.load(x) for x in ('m32', 'e1', 'e2', 'moeq'))
for l in range(2):
    p = 'model.layers.%d.' % l
    for e, src in enumerate((e1, e2)):
        for part in ('gate_proj', 'up_proj', 'down_proj'):
            assert np.array_equal(o[p + 'mlp.experts.%d.%s.weight' % (e, part)], src[p + 'mlp.%s.weight' % part])
    assert np.array_equal(o[p + 'mlp.shared_expert.up_proj.weight'], b[p + 'mlp.up_proj.weight'])
    assert np.array_equal(o[p + 'mlp.shared_expert.down_proj.weight'], (b[p + 'mlp.down_proj.weight'] * np.float32(0.5)).astype(np.float32))
    assert o[p + 'mlp.gate.weight'].shape == (2, 64) and o[p + 'mlp.shared_expert_gate.weight'].shape == (1, 64)
    for q in 'qkv':
        bias = o[p + 'self_attn.%s_proj.bias' % q]
        assert bias.shape == (b[p + 'self_attn.%s_proj.weight' % q].shape[0],) and not bias.any()
c = json.load(open('moeq/config.json'))
assert c['model_type'] == 'qwen2_moe' and c['architectures'] == ['Qwen2MoeForCausalLM'] and c['num_experts'] == 2
assert c['shared_expert_intermediate_size'] == c['moe_intermediate_size'] == c['intermediate_size'] and c['norm_topk_prob'] is True
print('ok')" >"$T/py" 2>&1 && ok || bad "moe with a shared expert: $(tail -c 400 "$T/py")"
# (from a review of mergekit-moe parity) keys the base config leaves out keep the Llama class's
# defaults in the Mixtral config (rope_theta 1e4, not Mixtral's 1e6; rms_norm_eps 1e-6; KV heads =
# heads); noise comes before residual_scale; the experts take the base config's torch_dtype; experts of
# another shape, a shared expert without prompts under random gates (DeepSeek's layout in MergeKit),
# biases the output class has no place for and a Qwen2-MoE head_dim other than hidden / heads are
# refused; architecture is a prefix of the output's name ("mix" works, "mixtralZZZ" does not)
rm -rf m32d && cp -r m32 m32d && "$PY" -c 'import json; p = "m32d/config.json"; c = json.load(open(p))
for k in ("rope_theta", "rms_norm_eps", "num_key_value_heads", "max_position_embeddings"): c.pop(k, None)
c["torch_dtype"] = "bfloat16"; json.dump(c, open(p, "w"))'
printf 'base_model: m32d\ngate_mode: random\narchitecture: mix\nexperts:\n  - {source_model: e1, noise_scale: 0.01, residual_scale: 0.1}\n  - {source_model: e2}\n' > mdef.yml
expect 0 "$G" moe mdef.yml mdef --seed 5
"$PY" -c "
import sys, json; sys.path.insert(0, '$(dirname "$QREF")')
import numpy as np, lora_ref as L
c = json.load(open('mdef/config.json'))
assert c['rope_theta'] == 10000.0 and c['rms_norm_eps'] == 1e-6 and c['num_key_value_heads'] == c['num_attention_heads'] == 4, c
assert c['max_position_embeddings'] == 2048 and c['torch_dtype'] == 'bfloat16'
o, e1 = L.load('mdef'), L.load('e1')
w2 = o['model.layers.0.block_sparse_moe.experts.0.w2.weight'] - 0.1 * e1['model.layers.0.mlp.down_proj.weight']
assert 0.0007 < w2.std() < 0.0014, w2.std()  # (noise 0.01) × 0.1, plus bf16 rounding
print('ok')" >"$T/py" 2>&1 && ok || bad "moe config defaults / noise order: $(tail -c 400 "$T/py")"
"$G" inspect mdef | grep "experts" | grep -vq "^BF16" && bad "moe: experts not in the base's torch_dtype" || ok
expect 0 "$G" synth et --layers 2 --hidden 96 --intermediate 64 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 --seed 13
printf 'base_model: m32\ngate_mode: random\nexperts:\n  - {source_model: e1}\n  - {source_model: et}\n' > met.yml
expect 3 "$G" moe met.yml met
grep -q "shaped unlike the base" "$T/err" && ok || bad "moe with an expert of another shape: $(cat "$T/err")"
nothing met "moe with an expert of another shape"
moebad deepseek 'base_model: m32\ngate_mode: random\nexperts: [{source_model: e1}, {source_model: e2}]\nshared_experts: [{source_model: m32}]\n' "DeepSeek"
moebad archname 'base_model: m32\ngate_mode: random\narchitecture: mixtralZZZ\nexperts: [{source_model: e1}, {source_model: e2}]\n' "architecture 'mixtralZZZ'"
rm -rf lq && cp -r q2 lq && "$PY" -c 'import json; p = "lq/config.json"; c = json.load(open(p)); c["model_type"] = "llama"; c["architectures"] = ["LlamaForCausalLM"]; c["attention_bias"] = True; json.dump(c, open(p, "w"))'
printf 'base_model: lq\ngate_mode: random\nexperts:\n  - {source_model: lq}\n  - {source_model: lq}\n' > mlq.yml
expect 4 "$G" moe mlq.yml mlq --i-understand-this-is-not-useful-without-training
grep -q "self_attn.[qkv]_proj.bias'*: Mixtral has no such bias" "$T/err" && ok || bad "moe of a base with biases: $(cat "$T/err")"
rm -rf mhd && cp -r m32 mhd && "$PY" -c 'import json; p = "mhd/config.json"; c = json.load(open(p)); c["head_dim"] = 32; json.dump(c, open(p, "w"))'
moebad headdim 'base_model: mhd\ngate_mode: random\narchitecture: qwen\nexperts: [{source_model: e1}, {source_model: e2}]\nshared_experts: [{source_model: m32}]\n' "head_dim"
# over Qwen2 models MergeKit picks Qwen2-MoE for a prompt-less shared expert (DeepSeek takes only
# Llama / Mistral): written, not refused; a shared expert's router counts in the degenerate warning
printf 'base_model: q2\ngate_mode: random\nexperts: [{source_model: q2}, {source_model: q2}]\nshared_experts: [{source_model: q2}]\n' > mq2.yml
expect 0 "$G" moe mq2.yml mq2 --i-understand-this-is-not-useful-without-training
grep -q '"Qwen2MoeForCausalLM"' mq2/config.json && ok || bad "qwen2 moe with a prompt-less shared expert"
printf 'base_model: gb\ngate_mode: hidden\nexperts:\n  - {source_model: ge1, positive_prompts: ["Write a function in C"]}\n  - {source_model: ge2, positive_prompts: ["The quick brown fox"]}\nshared_experts:\n  - {source_model: gb, positive_prompts: ["Write a function in C"]}\n' > mdgs.yml
expect 0 "$G" moe mdgs.yml mdgs
grep -q "nearly degenerate" "$T/err" && ok || bad "moe: the shared expert's router not in the degenerate warning"
printf 'base_model: m32\ngate_mode: random\nexperts:\n  - {source_model: e1}\n  - {source_model: e1}\n' > msame.yml
expect 0 "$G" moe msame.yml msame --i-understand-this-is-not-useful-without-training
printf 'base_model: q2\ngate_mode: random\nexperts:\n  - {source_model: q2}\n  - {source_model: q2}\n' > mq.yml
expect 4 "$G" moe mq.yml mq --i-understand-this-is-not-useful-without-training

# ---- expand: the grown model's logits equal the original's (an independent NumPy forward pass) ----
same() { if "$PY" "$LREF" same "$@" >"$T/py" 2>&1; then ok; else bad "expand $2: $(cat "$T/py")"; fi; }
expect 0 "$G" expand m32 xw --hidden 80 --intermediate 128 --add-layers 1@1 --threads 2
same m32 xw 1e-6
expect 0 "$G" verify xw
grep -q '"num_hidden_layers": 3' xw/config.json && grep -q '"hidden_size": 80' xw/config.json && ok || bad "expand: config not updated"
expect 0 "$G" expand m32 xa --add-layers 2@0
same m32 xa 1e-6
expect 0 "$G" expand m32 xm --add-layers 1@0 --add-layers 2@2 --add-layers 1@1
same m32 xm 1e-6
grep -q '"num_hidden_layers": 6' xm/config.json && ok || bad "expand: repeated --add-layers count"
expect 0 "$G" expand m32 xe --add-layers 1@2 --intermediate 100
same m32 xe 1e-6
expect 0 "$G" synth qb --arch qwen2 --layers 2 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 64 --dtype f32 --seed 4
expect 0 "$G" expand qb qx --hidden 48 --add-layers 1@1
same qb qx 1e-6
expect 0 "$G" synth tb --layers 2 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 64 --dtype f32 --seed 5 --tie
expect 0 "$G" expand tb tx --hidden 40
same tb tx 1e-6
# from a review: config.json must agree with the tensors and its per-layer rules must follow the layers.
# rms_norm_eps absent: the default 1e-6 is scaled (exact again); layer_types follows the inserted layers
# (a new block takes its source layer's type); max_window_layers without layer_types, a layer past
# num_hidden_layers, or a missing one, are refused; an unknown tensor of the intermediate width too
cpcfg() { rm -rf "$2" && cp -r "$1" "$2" && "$PY" -c 'import json, sys; p = sys.argv[1] + "/config.json"; c = json.load(open(p)); exec(sys.argv[2]); json.dump(c, open(p, "w"))' "$2" "$3"; }
cpcfg tb tbn 'del c["rms_norm_eps"]'
expect 0 "$G" expand tbn tbnx --hidden 40
same tbn tbnx 1e-6
"$PY" -c 'import json; e = json.load(open("tbnx/config.json"))["rms_norm_eps"]; exit(0 if abs(e - 1e-6 * 32 / 40) < 1e-18 else 1)' && ok || bad "expand without rms_norm_eps: $(grep eps tbnx/config.json)"
cpcfg qb qlt 'c["layer_types"] = ["full_attention", "sliding_attention"]'
expect 0 "$G" expand qlt qltx --duplicate 0:2 --add-layers 1@2
"$PY" -c 'import json; t = json.load(open("qltx/config.json"))["layer_types"]; exit(0 if t == ["full_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention"] else 1)' && ok || bad "expand: layer_types $(grep -A6 layer_types qltx/config.json)"
cpcfg qb qmw 'c["use_sliding_window"] = True; c["max_window_layers"] = 1'
expect 4 "$G" expand qmw x60 --add-layers 1@0
grep -q "max_window_layers: not expanded" "$T/err" && ok || bad "expand with max_window_layers: $(cat "$T/err")"
nothing x60 "expand with max_window_layers"
expect 0 "$G" expand qmw x60b --hidden 48   # (no layer inserted: nothing positional changes)
for edit in 'c["num_hidden_layers"] = 1|in layer 1, past num_hidden_layers 1' 'c["num_hidden_layers"] = 3|layer 2 has no tensors'; do
    cpcfg tb tbl "${edit%%|*}"
    expect 3 "$G" expand tbl x61 --add-layers 1@1
    grep -qF "${edit#*|}" "$T/err" && ok || bad "expand with ${edit%%|*}: $(cat "$T/err")"
    nothing x61 "expand with ${edit%%|*}"
done
# more heads: GQA (4 query heads over 2 KV heads → 8, old heads reordered to keep their KV head),
# MHA (KV heads grow too), Qwen2 biases, combined with hidden growth
expect 0 "$G" expand m32 xh --heads 8 --threads 2
same m32 xh 1e-6
grep -q '"num_attention_heads": 8' xh/config.json && grep -q '"num_key_value_heads": 2' xh/config.json && grep -q '"head_dim": 16' xh/config.json && ok || bad "expand --heads: config"
expect 0 "$G" synth mha --layers 2 --hidden 32 --intermediate 48 --heads 4 --kv-heads 4 --vocab 64 --dtype f32 --seed 6
expect 0 "$G" expand mha mhax --heads 6 --hidden 40
same mha mhax 1e-6
grep -q '"num_key_value_heads": 6' mhax/config.json && ok || bad "expand --heads on MHA: KV heads"
expect 0 "$G" expand qb qh --heads 6 --add-layers 1@0
same qb qh 1e-6
expect 2 "$G" expand m32 y14 --heads 5
grep -q "multiple of the 2 key/value heads" "$T/err" && ok || bad "expand --heads 5 over 2 KV heads: $(cat "$T/err")"
expect 2 "$G" expand m32 y15 --heads 4
nothing y15 "expand --heads not growing"
expect 0 "$G" expand m32 xd --duplicate 0:2
grep -q '"num_hidden_layers": 4' xd/config.json && ok || bad "expand --duplicate: layer count"
if "$PY" "$LREF" same m32 xd 1e-6 >/dev/null 2>&1; then bad "expand --duplicate should change the function (reference not sensitive?)"; else ok; fi
expect 0 "$G" expand m32 xw2 --hidden 80 --intermediate 128 --add-layers 1@1 --threads 1
cmp -s xw/model.safetensors xw2/model.safetensors && ok || bad "expand depends on --threads"
expect 2 "$G" expand m32 y10 --hidden 32
expect 2 "$G" expand m32 y11
expect 2 "$G" expand m32 y12 --add-layers 1@5
expect 0 "$G" synth g2 --arch gpt2 --layers 1 --hidden 32 --intermediate 48 --heads 4 --vocab 64
expect 4 "$G" expand g2 y13 --hidden 48
nothing y13 "expand of a GPT-2 layout"
grep -q "model_type 'gpt2': expand applies to Llama, Mistral and Qwen2 models" "$T/err" && ok || bad "expand of GPT-2: $(cat "$T/err")"

# ---- numerical safety: NaN / Inf an operation makes are refused, those its input holds carry over ----
cp -r m32 mnan && cp -r m32 mbig && $PATCH mnan/model.safetensors 'layers.0.mlp.up_proj.weight$' nan 5 &&
    $PATCH mbig/model.safetensors 'layers.0.mlp.up_proj.weight$' 1e5 5 || bad "patch"
expect 0 "$G" expand mnan nfx --hidden 96
grep -q "warning: tensor 'model.layers.0.mlp.up_proj.weight': 1 NaN or infinite values in the output, from NaN / infinite values in its source" "$T/err" &&
    ok || bad "expand of a NaN: $(cat "$T/err")"
# quantize: a NaN gives its group a NaN scale (no integer holds it; no undefined float→int cast), dequantize keeps it as NaN
expect 0 "$G" quantize mnan nfq --scheme int8 --group 32
grep -q "tensor 'model.layers.0.mlp.up_proj.weight': holds 1 NaN or infinite values; their groups get a NaN scale" "$T/err" && ok || bad "quantize of a NaN: $(cat "$T/err")"
expect 0 "$G" dequantize nfq nfd --dtype f32
grep -q "32 NaN or infinite values in the output, from NaN / infinite values in its source" "$T/err" && ok || bad "dequantize of a NaN scale: $(cat "$T/err")"
expect 3 "$G" verify --values nfd
grep -q "up_proj.weight': holds NaN" "$T/err" && ok || bad "dequantized NaN group: $(cat "$T/err")"
# dequantize to float16 of a value beyond 65504: refused (nothing written) unless --allow-nonfinite
expect 0 "$G" quantize mbig nfq2 --scheme int8
expect 1 "$G" dequantize nfq2 nfd2 --dtype f16
grep -q "up_proj.weight': dequantize gives 1 NaN or infinite values (first at element 5) where its source holds none; 1 of them are F16 overflow" "$T/err" &&
    [ ! -e nfd2 ] && [ "$(wc -l < "$T/err")" = 1 ] && ok || bad "dequantize f16 overflow: $(cat "$T/err")"
expect 0 "$G" dequantize nfq2 nfd2 --dtype f16 --allow-nonfinite
grep -q "warning: tensor 'model.layers.0.mlp.up_proj.weight': 1 NaN or infinite values written (first at element 5)" "$T/err" && ok || bad "dequantize --allow-nonfinite: $(cat "$T/err")"
# upcycle: a random router of σ = 1e6 overflows a float16 model
expect 0 "$G" convert m32 m16 --dtype f16
expect 1 "$G" upcycle m16 nfu --experts 2 --top-k 1 --router-std 1e6
grep -q "block_sparse_moe.gate.weight': upcycle's router gives .* NaN or infinite values .*F16 overflow" "$T/err" && [ ! -e nfu ] && ok || bad "upcycle overflow: $(cat "$T/err")"
# moe: an expert converted to float16 with a value beyond its range
printf 'base_model: m32\ngate_mode: random\ndtype: float16\nexperts:\n  - source_model: mbig\n  - source_model: e1\n' > nfmoe.yml
expect 1 "$G" moe nfmoe.yml nfm
grep -q "experts.0.w3.weight': moe gives 1 NaN or infinite values (first at element 5) where its source holds none; 1 of them are F16 overflow" "$T/err" &&
    [ ! -e nfm ] && ok || bad "moe overflow: $(cat "$T/err")"
expect 0 "$G" moe nfmoe.yml nfm --allow-nonfinite
rm -rf nfx nfq nfd nfq2 nfd2 nfm

if [ "$FAULTS" = faults ]; then
    alloc_faults 2 fq "$G" quantize m32 fq --scheme int4 --group 32 --threads 2
    alloc_faults 2 fd "$G" dequantize m32-q4-32 fd --threads 2
    alloc_faults 2 fb "$G" quantize m32 fb --scheme bcq --bits 3 --group 32 --threads 2
    alloc_faults 2 fbd "$G" dequantize m32-bcq3-40-0 fbd --threads 2
    alloc_faults 2 fp "$G" prune m32 fp --sparsity 0.5 --threads 2
    alloc_faults 2 fg "$G" prune m32 fg --sparsity 0.5 --scope global
    alloc_faults 2 fu "$G" upcycle m32 fu --experts 3 --top-k 2 --threads 2
    alloc_faults 1 fr.safetensors "$G" reparam conv.safetensors fr.safetensors --fold repvgg --threads 2
    alloc_faults 1 fmu "$G" reparam mu-f32--tie fmu --fold mup --threads 2
    alloc_faults 1 fal "$G" align mind --to m32 fal --threads 2
    alloc_faults 1 fsh "$G" shrink "$FAMB" fsh --drop-layers 1 --calib "$FAMC" --ctx 32 --windows 2 --threads 2
    alloc_faults 1 fsw "$G" shrink "$FAMB" fsw --intermediate 200 --heads 2 --hidden 100 --calib "$FAMC" --ctx 32 --windows 2 --threads 2
    alloc_faults 1 fmf "$G" moefy "$FAMB" fmf --experts 4 --top-k 2 --calib "$FAMC" --ctx 32 --windows 2 --threads 2
    alloc_faults 1 fmw "$G" moefy "$FAMB" fmw --experts 4 --top-k 2 --threads 2
    alloc_faults 2 fm "$G" moe moe.yml fm --threads 2
    alloc_faults 1 fx2 "$G" expand m32 fx2 --hidden 80 --add-layers 1@1 --threads 2
    for spec in write fsync rename; do
        GRAFT_FAULT_IO="$spec:1:ENOSPC" "$G" quantize m32 fio --scheme int8 >/dev/null 2>"$T/err"
        [ $? = 1 ] && [ ! -e fio ] && ok || bad "quantize with a failing $spec: $(cat "$T/err")"
    done
fi

echo "$pass passed, $fail failed"
[ $fail = 0 ]
