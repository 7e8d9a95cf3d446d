#!/bin/sh
# LoRA end to end on `graft synth` models, checked against NumPy (tests/ref/lora_ref.py): extract-lora
# factors are the best rank-r approximation of each delta, the reported errors and energy ranks are
# numpy's, a full-rank adapter applied gives the fine-tune back, apply-lora computes W + s·B·A with
# rank/alpha patterns, rsLoRA, fan_in_fan_out, embeddings and modules_to_save, `model+lora` merges
# equal merges of the applied model; bad adapters and options fail cleanly with nothing written; in
# builds with fault injection, failing allocations and writes.
# Usage: tests/lora-e2e.sh BUILD_DIR [faults]
set -u
B=${1:?build dir}
FAULTS=${2:-}
G="$PWD/$B/graft"
REF="$PWD/tests/ref/lora_ref.py"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1
ref() { if "$PY" "$REF" "$@" >"$T/pyout" 2>&1; then ok; else bad "lora_ref.py $1: $(tail -c 400 "$T/pyout")"; fi; }
nothing() { [ ! -e "$1" ] && ! ls -A | grep -q "graft-tmp" && ok || bad "$2: left output or a temp folder behind"; }

expect 0 "$G" synth base --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 --seed 1
expect 0 "$G" synth ft --like base --delta 0.01 --seed 2
expect 0 "$G" synth bbase --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype bf16 --seed 3
expect 0 "$G" synth bft --like bbase --delta 0.01 --seed 4

# ---- extract: factors against numpy's SVD (left and right Gram routes: 96×64 and 64×96 matrices) ----
expect 0 "$G" extract-lora --base base --model ft ad8 --rank 8 --json --threads 2
cp "$T/out" rep8.json
ref extract base ft ad8 rep8.json 8
grep -q '"embed_tokens"' ad8/adapter_config.json && grep -q '"lm_head"' ad8/adapter_config.json && ok || bad "embeddings not in modules_to_save"
grep -q '"model.layers.0.input_layernorm", "kind": "whole"' rep8.json && ok || bad "norms not saved whole"
[ -f ad8/README.md ] && [ ! -e ad8/model.safetensors ] && ok || bad "adapter folder layout"
# same bytes for any thread count
expect 0 "$G" extract-lora --base base --model ft ad8t1 --rank 8 --threads 1
cmp -s ad8/adapter_model.safetensors ad8t1/adapter_model.safetensors && ok || bad "extract-lora output depends on --threads"
# --embed-lora: embedding as lora_embedding_A/B (transposed), lm_head as a regular pair
expect 0 "$G" extract-lora --base base --model ft ade --rank 5 --embed-lora --json
cp "$T/out" repe.json
ref extract base ft ade repe.json 5
grep -q '"model.embed_tokens", "kind": "embedding"' repe.json && ok || bad "--embed-lora: embedding kind"
# GPT-2's Conv1D layers (stored [in, out]): the adapter is laid out as PEFT reads it — fan_in_fan_out,
# lora_A [r, in], lora_B [out, r], Δ = s·(B·A)ᵀ — (it was factored as stored with fan_in_fan_out false,
# which PEFT could not load or applied transposed); apply-lora reads it back; at full rank the
# fine-tune comes back (NumPy check of PEFT's formula)
expect 0 "$G" synth g2b --arch gpt2 --layers 2 --hidden 32 --vocab 64 --dtype f32 --seed 11
expect 0 "$G" synth g2f --like g2b --delta 0.05 --seed 12
expect 0 "$G" extract-lora --base g2b --model g2f g2ad --rank 32
"$PY" - "$(dirname "$REF")" > "$T/py" 2>&1 <<'PYEOF' && ok || bad "GPT-2 Conv1D adapter layout: $(cat "$T/py")"
import json, sys
sys.path.insert(0, sys.argv[1])
from lora_ref import load
import numpy as np
c = json.load(open("g2ad/adapter_config.json")); A = load("g2ad/adapter_model.safetensors"); B, F = load("g2b"), load("g2f")
assert c["fan_in_fan_out"] is True, c["fan_in_fan_out"]
k = [n for n in A if n.endswith("attn.c_attn.lora_A.weight")][0]; m = k[len("base_model.model."):-len(".lora_A.weight")]
a, b, w = A[k], A[k.replace("lora_A", "lora_B")], B[m + ".weight"]
assert a.shape == (32, w.shape[0]) and b.shape == (w.shape[1], 32), (a.shape, b.shape, w.shape)
s = c["lora_alpha"] / c["r"]
err = np.abs(w + s * (b @ a).T - F[m + ".weight"]).max() / np.abs(F[m + ".weight"] - w).max()
assert err < 1e-3, err
PYEOF
# GPT-2's position table wpe is an nn.Embedding: saved whole by default like wte, lora_embedding_A/B with
# --embed-lora (it was factored as a linear layer's lora_A/B, which PEFT drops)
"$PY" -c 'import json, sys; sys.path.insert(0, sys.argv[1]); from lora_ref import load
A = load("g2ad/adapter_model.safetensors"); c = json.load(open("g2ad/adapter_config.json"))
assert "base_model.model.transformer.wpe.weight" in A and not any("wpe.lora" in k for k in A), sorted(A)
assert "wpe" in c["modules_to_save"], c["modules_to_save"]' "$(dirname "$REF")" && ok || bad "GPT-2 wpe not saved whole"
expect 0 "$G" extract-lora --base g2b --model g2f g2ade --rank 4 --embed-lora
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from lora_ref import load
A = load("g2ade/adapter_model.safetensors"); a = A["base_model.model.transformer.wpe.lora_embedding_A"]; b = A["base_model.model.transformer.wpe.lora_embedding_B"]
B = load("g2b")["transformer.wpe.weight"]; assert a.shape == (4, B.shape[0]) and b.shape == (B.shape[1], 4), (a.shape, b.shape)' "$(dirname "$REF")" && ok || bad "GPT-2 wpe with --embed-lora"
expect 0 "$G" apply-lora g2b g2ad g2back
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from lora_ref import load; import numpy as np
a, f = load("g2back"), load("g2f"); k = [n for n in f if n.endswith("attn.c_attn.weight")][0]
sys.exit(0 if np.abs(a[k] - f[k]).max() <= 1e-3 * np.abs(f[k]).max() else 1)' "$(dirname "$REF")" && ok || bad "GPT-2 Conv1D adapter applied back"
# a tied fine-tune of an untied base: its head (its embedding) is extracted as lm_head — it was dropped,
# and the applied adapter kept the base's head
/usr/bin/python3 - "$(dirname "$REF")" <<'PY' || bad "tied fine-tune fixture"
import json, shutil, sys
sys.path.insert(0, sys.argv[1])
from lora_ref import load, save
shutil.rmtree("tft", ignore_errors=True); shutil.copytree("ft", "tft")
t = load("ft"); del t["lm_head.weight"]; save("tft/model.safetensors", t)
c = json.load(open("tft/config.json")); c["tie_word_embeddings"] = True; json.dump(c, open("tft/config.json", "w"))
PY
expect 0 "$G" extract-lora --base base --model tft adt --rank 4
expect 0 "$G" apply-lora base adt adt-back
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from lora_ref import load; import numpy as np
A, back, f = load("adt/adapter_model.safetensors"), load("adt-back"), load("tft")
assert np.array_equal(A["base_model.model.lm_head.weight"], f["model.embed_tokens.weight"])
assert np.array_equal(back["lm_head.weight"], f["model.embed_tokens.weight"])' "$(dirname "$REF")" && ok || bad "tied fine-tune: head not extracted"
# a VLM's SigLIP position table (nn.Embedding position_embedding) is saved whole too, not as a linear pair
expect 0 "$G" synth vla --arch gemma3vl --layers 2 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 64 --dtype f32 --seed 21
expect 0 "$G" synth vlb --like vla --delta 0.02 --seed 22
expect 0 "$G" extract-lora --base vla --model vlb advl --rank 4
"$PY" -c 'import json, sys; sys.path.insert(0, sys.argv[1]); from lora_ref import load
A = load("advl/adapter_model.safetensors"); c = json.load(open("advl/adapter_config.json"))
assert any(k.endswith("position_embedding.weight") for k in A) and not any("position_embedding.lora" in k for k in A), sorted(A)[:5]
assert "position_embedding" in c["modules_to_save"] and "position_embedding" not in c["target_modules"]' "$(dirname "$REF")" && ok || bad "SigLIP position_embedding as a linear pair"
# energy and sv-epsilon choose ranks from the spectrum
expect 0 "$G" extract-lora --base base --model ft aden --energy 0.5 --json
cp "$T/out" repen.json
ref energy base ft repen.json 0.5
expect 0 "$G" extract-lora --base base --model ft adsv --sv-epsilon 1e9 --json
grep -q '"rank": 1,' "$T/out" && ! grep -q '"rank": [2-9]' "$T/out" && ok || bad "--sv-epsilon above every singular value should keep rank 1"
# --svd randomized on low-rank-plus-noise deltas (tests/ref/lowrank.py: rank 12, s_j = 0.8^j, noise
# 1e-3): the reported error is the written factors' error and within 1 % of the optimal rank-8 error;
# the bytes do not depend on --threads; the seed changes the test vectors
"$PY" "$(dirname "$REF")/lowrank.py" base lr 12 1.0 0.001 5 && ok || bad "lowrank.py"
expect 0 "$G" extract-lora --base base --model lr adr --rank 8 --svd randomized --json --threads 2
cp "$T/out" repr.json
ref randomized base lr adr repr.json 8 0.01
expect 0 "$G" extract-lora --base base --model lr adr1 --rank 8 --svd randomized --threads 1
cmp -s adr/adapter_model.safetensors adr1/adapter_model.safetensors && ok || bad "randomized extract-lora depends on --threads"
expect 0 "$G" extract-lora --base base --model lr adr2 --rank 8 --svd randomized --seed 7 --oversample 4 --power-iters 1 --json
cp "$T/out" repr2.json
ref randomized base lr adr2 repr2.json 8 0.01
cmp -s adr/adapter_model.safetensors adr2/adapter_model.safetensors && bad "--seed / --oversample did not change the factors" || ok
# at (nearly) full rank (rank + oversample ≥ the short side) the exact route runs: the same bytes as --svd exact
expect 0 "$G" extract-lora --base base --model lr adf --rank 60 --svd randomized
expect 0 "$G" extract-lora --base base --model lr adf2 --rank 60
cmp -s adf/adapter_model.safetensors adf2/adapter_model.safetensors && ok || bad "randomized at full rank differs from the exact route"
expect 2 "$G" extract-lora --base base --model lr x --svd randomized --energy 0.5
grep -q "drop --energy" "$T/err" && nothing x "randomized with --energy" || bad "randomized with --energy: $(cat "$T/err")"
expect 2 "$G" extract-lora --base base --model lr x --svd fast
# selection: include / exclude / save-module / skip-undecomposable
expect 0 "$G" extract-lora --base base --model ft adi --include 'mlp' --exclude 'layers\.1\.' --save-module up_proj --json
n=$(grep -c '"name"' "$T/out")
[ "$n" = 3 ] && grep -q '"model.layers.0.mlp.up_proj", "kind": "whole"' "$T/out" && ! grep -q 'layers.1' "$T/out" && ok || bad "include/exclude/save-module: $(cat "$T/out")"
expect 0 "$G" extract-lora --base base --model ft adu --skip-undecomposable --rank 4 --json
grep -q 'layernorm' "$T/out" && bad "--skip-undecomposable kept norms" || ok
# bf16 models: factors in bf16
expect 0 "$G" extract-lora --base bbase --model bft adb --rank 8
"$G" inspect adb/adapter_model.safetensors | grep -q "^BF16 " && ok || bad "bf16 adapter factors not in bf16"
# a fine-tune with a larger vocabulary: embedding and lm_head saved whole (even with --embed-lora),
# the card says to resize; applying that adapter to the smaller base is refused with that advice
expect 0 "$G" synth big --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 136 --dtype f32 --seed 9
expect 0 "$G" extract-lora --base base --model big adv --rank 4 --embed-lora --json
grep -q '"model.embed_tokens", "kind": "whole", "shape": \[136, 64\]' "$T/out" && grep -q '"lm_head", "kind": "whole"' "$T/out" && ok || bad "grown vocabulary: $(head -c 300 "$T/out")"
grep -q "resize_token_embeddings" adv/README.md && ok || bad "grown vocabulary: no resize advice in README.md"
expect 3 "$G" apply-lora base adv xv
grep -q "resize" "$T/err" && ok || bad "applying a grown-vocabulary adapter: $(cat "$T/err")"
nothing xv "grown-vocabulary apply"
# dry run: a plan, nothing written
expect 0 "$G" extract-lora --base base --model ft dry --dry-run
nothing dry "extract-lora --dry-run"
grep -q "rank ≤ 64" "$T/out" && ok || bad "dry run plan does not show rank caps"

# an unchanged model: --energy keeps one (zero) component per module
expect 0 "$G" extract-lora --base base --model base adz --energy 0.9 --json
grep '"kind": "lora"' "$T/out" | grep -q '"rank": \([02-9]\|1[0-9]\)' && bad "--energy on a zero delta: ranks other than 1" || ok
# a tied base and an untied fine-tune: lm_head is saved whole and applying it unties the output
expect 0 "$G" synth tb --layers 2 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 64 --dtype f32 --seed 5 --tie
expect 0 "$G" synth tf --layers 2 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 64 --dtype f32 --seed 6
expect 0 "$G" extract-lora --base tb --model tf tad --rank 4
expect 0 "$G" apply-lora tb tad tout
grep -q '"tie_word_embeddings": false' tout/config.json && ok || bad "tied base: output config still tied"
"$PY" -c "
import sys; sys.path.insert(0, '$(dirname "$REF")')
import numpy as np, lora_ref as L
assert np.array_equal(L.load('tout')['lm_head.weight'], L.load('tf')['lm_head.weight'])" && ok || bad "tied base: lm_head is not the fine-tune's"
expect 0 "$G" extract-lora --base tb --model tf tadl --rank 4 --embed-lora
expect 3 "$G" apply-lora tb tadl toutl
grep -q "untied base" "$T/err" && ok || bad "LoRA factors for a tied lm_head: $(cat "$T/err")"

# ---- round trip: a full-rank adapter applied to the base gives the fine-tune back ----
expect 0 "$G" extract-lora --base base --model ft adfull --rank 1000 --embed-lora
expect 0 "$G" apply-lora base adfull back --threads 2
ref close back ft base 1e-5
expect 0 "$G" verify back
cmp -s back/config.json base/config.json && ok || bad "apply-lora did not copy config.json"
expect 0 "$G" apply-lora bbase adb bback
expect 0 "$G" verify bback

# ---- apply: hand-made PEFT adapters against numpy ----
ref make-adapter base adp patterns
expect 0 "$G" apply-lora base adp outp --threads 2
ref apply base adp outp 1
expect 0 "$G" apply-lora base adp outp2 --scale 0.5
ref apply base adp outp2 0.5
ref make-adapter base adf fanin
expect 0 "$G" apply-lora base adf outf
ref apply base adf outf 1
# PEFT's X.base_layer.weight (bias="all", saved embedding layers) replaces X.weight, X's factors on top
# (it was refused as "the base model has no tensor"); merge-lora refuses it with advice; a DoRA adapter
# is refused as such (its magnitude vectors were "for another model")
# rank_pattern / alpha_pattern keys are Python regexes (PEFT): \d and (?:…) as re reads them (POSIX read
# \d as "d": a 4× smaller update, exit 0); a key that does not compile is refused
cp -r adp adre && "$PY" -c 'import json; p = "adre/adapter_config.json"; c = json.load(open(p))
c["rank_pattern"] = {"layers\\.(?:1)\\.self_attn\\.q_proj": 2}; c["alpha_pattern"] = {"layers\\.\\d+\\.self_attn\\.q_proj": 3}; json.dump(c, open(p, "w"))'
expect 0 "$G" apply-lora base adre outre
ref apply base adre outre 1
cp -r adp adrx && "$PY" -c 'import json; p = "adrx/adapter_config.json"; c = json.load(open(p)); c["alpha_pattern"] = {"(": 3}; json.dump(c, open(p, "w"))'
expect 3 "$G" apply-lora base adrx outrx
grep -q 'alpha_pattern key "(" is not a valid regex' "$T/err" && [ ! -e outrx ] && ok || bad "a bad pattern key: $(cat "$T/err")"
ref make-adapter base adbl baselayer
expect 0 "$G" apply-lora base adbl outbl
ref apply base adbl outbl 1
printf 'combination: linear\nadapters:\n  - adapter: adbl\n    weight: 1\n  - adapter: adp\n    weight: 1\n' > mbl.yml
expect 3 "$G" merge-lora mbl.yml mbl-out
grep -q "base_layer tensors .* are not combined in adapter space" "$T/err" && [ ! -e mbl-out ] && ok || bad "merge-lora with base_layer: $(cat "$T/err")"
cp -r adp addora && "$PY" -c 'import json; p = "addora/adapter_config.json"; c = json.load(open(p)); c["use_dora"] = True; json.dump(c, open(p, "w"))'
expect 3 "$G" apply-lora base addora outdora
grep -q "a DoRA adapter (use_dora): graft applies plain LoRA only" "$T/err" && [ ! -e outdora ] && ok || bad "apply-lora of DoRA: $(cat "$T/err")"
expect 0 "$G" apply-lora base adp outp.safetensors
[ -f outp.safetensors ] && ok || bad "apply-lora to a single .safetensors file"
# an update that overflows float32 (every lora_B entry of the adapter at 3e38) is refused; written with
# --allow-nonfinite
cp -r adp adbig
$PATCH adbig/adapter_model.safetensors 'lora_B\.weight$' 3e38 && ok || bad "could not write adbig"
expect 1 "$G" apply-lora base adbig obig
[ "$(wc -l < "$T/err")" = 1 ] && grep -q "applying the adapter (s = .*) gives [0-9]* NaN or infinite values in rows 0…" "$T/err" && [ ! -e obig ] && ok || bad "overflowing adapter: $(cat "$T/err")"
expect 0 "$G" apply-lora base adbig obig --allow-nonfinite
grep -q "warning: tensor '.*': [0-9]* NaN or infinite values written" "$T/err" && ok || bad "apply-lora --allow-nonfinite: $(cat "$T/err")"
expect 0 "$G" apply-lora base adp --dry-run
grep -q "fits" "$T/err" && ok || bad "apply-lora --dry-run message"

# ---- bad inputs: clear errors, nothing written ----
expect 0 "$G" synth other --layers 2 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 --seed 7
expect 3 "$G" apply-lora other adp x1
grep -q "another model\|do not fit" "$T/err" && ok || bad "adapter for another model: $(cat "$T/err")"
nothing x1 "adapter for another model"
mkdir -p broken && cp adp/adapter_config.json broken/
"$PY" -c "
import sys; sys.path.insert(0, '$PWD/../tests/ref'); sys.path.insert(0, '$(dirname "$REF")')
import lora_ref as L
t = L.load('adp/adapter_model.safetensors'); t = {k: v for k, v in t.items() if 'layers.0.mlp.down_proj.lora_B' not in k}
L.save('broken/adapter_model.safetensors', t)" && ok || bad "could not write the broken adapter"
expect 3 "$G" apply-lora base broken x2
grep -q "only one of lora_A / lora_B" "$T/err" && ok || bad "missing lora_B: $(cat "$T/err")"
nothing x2 "missing lora_B"
mkdir -p badr && cp adp/adapter_model.safetensors badr/ && sed 's/"r": 4/"r": 3/' adp/adapter_config.json > badr/adapter_config.json
expect 3 "$G" apply-lora base badr x3
grep -q "rank 3" "$T/err" && ok || bad "rank mismatch: $(cat "$T/err")"
# PEFT's r is an integer: 4.5 used to pass as 4 (the scale then α/4.5)
mkdir -p halfr && cp adp/adapter_model.safetensors halfr/ && sed 's/"r": 4/"r": 4.5/' adp/adapter_config.json > halfr/adapter_config.json
expect 3 "$G" apply-lora base halfr x3h
grep -q '"r" must be a positive integer' "$T/err" && ok || bad "non-integer r: $(cat "$T/err")"
nothing x3h "non-integer r"
# a lora_A of the right size but 3-D ([4, 8, 12] for a 96-column linear) was accepted
mkdir -p a3d && cp adp/adapter_config.json a3d/
"$PY" -c "
import sys; sys.path.insert(0, '$(dirname "$REF")')
import lora_ref as L
t = L.load('adp/adapter_model.safetensors'); k = [n for n in t if n.endswith('layers.0.mlp.down_proj.lora_A.weight')][0]
t[k] = t[k].reshape(t[k].shape[0], 8, -1); L.save('a3d/adapter_model.safetensors', t)" && ok || bad "could not write the 3-D adapter"
expect 3 "$G" apply-lora base a3d x3d
grep -q "down_proj.*do not fit" "$T/err" && ok || bad "3-D lora_A: $(cat "$T/err")"
nothing x3d "3-D lora_A"
mkdir -p noconf && cp adp/adapter_model.safetensors noconf/
expect 3 "$G" apply-lora base noconf x4
mkdir -p notlora && cp adp/adapter_model.safetensors notlora/ && echo '{"peft_type": "IA3", "r": 4}' > notlora/adapter_config.json
expect 3 "$G" apply-lora base notlora x5
grep -q "LORA" "$T/err" && ok || bad "non-LoRA adapter: $(cat "$T/err")"
expect 2 "$G" extract-lora --base base --model ft x6 --include '('
grep -q "regular expression" "$T/err" && ok || bad "bad regex message"
expect 3 "$G" extract-lora --base base --model other x7
grep -q "shape\|does not extend" "$T/err" && ok || bad "shape mismatch message: $(cat "$T/err")"
nothing x7 "extract with mismatched shapes"
expect 2 "$G" extract-lora --model ft x8
expect 2 "$G" extract-lora --base base --model ft x9 --rank 0
expect 2 "$G" apply-lora base
mkdir -p full && touch full/keep
expect 1 "$G" apply-lora base adp full
[ -f full/keep ] && ok || bad "apply-lora replaced a non-empty folder without --force"

# ---- model+lora in merge configs ----
expect 0 "$G" apply-lora base adp applied
printf 'merge_method: linear\nmodels:\n  - model: base+adp\n    parameters: {weight: 0.7}\n  - model: ft\n    parameters: {weight: 0.3}\n' > ml.yml
printf 'merge_method: linear\nmodels:\n  - model: applied\n    parameters: {weight: 0.7}\n  - model: ft\n    parameters: {weight: 0.3}\n' > mm.yml
printf 'merge_method: linear\nmodels:\n  - model: {model: {path: base, lora: adp}}\n    parameters: {weight: 0.7}\n  - model: ft\n    parameters: {weight: 0.3}\n' > mo.yml
printf 'merge_method: linear\nmodels:\n  - model: base@adp\n    parameters: {weight: 0.7}\n  - model: ft\n    parameters: {weight: 0.3}\n' > ma.yml
expect 0 "$G" merge ma.yml ma
expect 0 "$G" merge ml.yml ml --threads 2
expect 0 "$G" merge mm.yml mm
expect 0 "$G" merge mo.yml mo
cmp -s ml/model.safetensors mm/model.safetensors && cmp -s mo/model.safetensors mm/model.safetensors && cmp -s ma/model.safetensors mm/model.safetensors && ok || bad "model+lora merge differs from merging the applied model"
printf 'merge_method: linear\nmodels:\n  - model: base@main\n    parameters: {weight: 1}\n' > mrev.yml
expect 4 "$G" merge mrev.yml mrev
grep -q "revisions need" "$T/err" && ok || bad "model@revision message: $(cat "$T/err")"
ls -A | grep -q "graft-tmp" && bad "model+lora left a temp folder" || ok
expect 0 "$G" merge ml.yml mdry --dry-run
nothing mdry "merge --dry-run with a LoRA reference"
printf 'merge_method: linear\nmodels:\n  - model: base+adp+adp\n    parameters: {weight: 1}\n' > bad1.yml
expect 4 "$G" merge bad1.yml b1
printf 'merge_method: linear\nmodels:\n  - model: base+missing\n    parameters: {weight: 1}\n' > bad2.yml
expect 4 "$G" merge bad2.yml b2
printf 'merge_method: linear\nmodels:\n  - model: other+adp\n    parameters: {weight: 1}\n' > bad3.yml
expect 3 "$G" merge bad3.yml b3
nothing b3 "merge with an adapter for another model"

if [ "$FAULTS" = faults ]; then
    alloc_faults 3 fx "$G" extract-lora --base base --model ft fx --rank 4 --threads 2
    alloc_faults 3 fr "$G" extract-lora --base base --model lr fr --rank 4 --svd randomized --threads 2
    alloc_faults 3 fa "$G" apply-lora base adp fa --threads 2
    for spec in write fsync rename; do
        GRAFT_FAULT_IO="$spec:1:ENOSPC" "$G" apply-lora base adp fio >/dev/null 2>"$T/err"
        [ $? = 1 ] && [ ! -e fio ] && ok || bad "apply-lora with a failing $spec: $(cat "$T/err")"
    done
fi

echo "$pass passed, $fail failed"
[ $fail = 0 ]
