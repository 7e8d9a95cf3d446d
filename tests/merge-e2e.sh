#!/bin/sh
# End-to-end merges on `graft synth` models: every architecture layout graft is tested with
# (Llama, Mistral, Qwen2, Gemma, Phi-3, GPT-2, GPT-NeoX, Mixtral, Gemma 3 VLM), `modules:`, each example config of
# shared/methods-mergekit.md §1.7, tokenizer unions, bad configs (exit 4, nothing written), kill -9
# during a merge and — in builds with fault injection — failing writes and allocations of a merge.
# Usage: tests/merge-e2e.sh BUILD_DIR [faults]
set -u
B=${1:?build dir}
FAULTS=${2:-}
G="$PWD/$B/graft"
REFD="$PWD/tests/ref"
. "$(dirname "$0")/lib.sh"
# names NAME DIR: the sorted tensor names of a model
names() { "$G" inspect "$1" --json | sed -n 's/^ *"name": "\([^"]*\)".*/\1/p' | sort; }
cd "$T" || exit 1

# ---- architectures: ties, slerp and a layer-stacking passthrough on each layout ----
for arch in llama mistral qwen2 gemma phi3 gpt2 gpt_neox mixtral gemma3vl; do
    expect 0 "$G" synth $arch-base --arch $arch --layers 3 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 64 --seed 3
    expect 0 "$G" synth $arch-a --like $arch-base --delta 0.01 --seed 4
    expect 0 "$G" synth $arch-b --like $arch-base --delta 0.01 --seed 5
    printf 'merge_method: ties\nbase_model: %s-base\nmodels:\n  - model: %s-a\n    parameters: {density: 0.5, weight: 0.6}\n  - model: %s-b\n    parameters: {density: 0.3, weight: 0.4}\n' \
        $arch $arch $arch > $arch-ties.yml
    expect 0 "$G" merge $arch-ties.yml $arch-ties --threads 2
    expect 0 "$G" verify $arch-ties
    [ -n "$(names $arch-base)" ] && [ "$(names $arch-ties)" = "$(names $arch-base)" ] && ok || bad "$arch: ties output tensor names differ from the base's"
    printf 'merge_method: slerp\nbase_model: %s-a\nmodels: [{model: %s-a}, {model: %s-b}]\nparameters: {t: [0, 0.5, 1]}\n' $arch $arch $arch > $arch-slerp.yml
    expect 0 "$G" merge $arch-slerp.yml $arch-slerp --threads 2
    # frankenmerge: a[0,3) + b[1,3) = 5 layers, renumbered, config layer count rewritten
    printf 'slices:\n  - sources: [{model: %s-a, layer_range: [0, 3]}]\n  - sources: [{model: %s-b, layer_range: [1, 3]}]\nmerge_method: passthrough\n' $arch $arch > $arch-stack.yml
    expect 0 "$G" merge $arch-stack.yml $arch-stack
    n=$(names $arch-stack | sed -n 's/^[a-z_.]*\.\([0-9][0-9]*\)\..*/\1/p' | sort -n | uniq | tail -n 1)
    [ "$n" = 4 ] && ok || bad "$arch: stacked model's last layer index is '$n', want 4"
    grep -qE '"(num_hidden_layers|n_layer)": 5' $arch-stack/config.json && ok || bad "$arch: layer count not rewritten to 5"
done
# a passthrough copy of a layout is byte-identical
printf 'merge_method: passthrough\nmodels: [{model: phi3-a}]\n' > copy.yml
expect 0 "$G" merge copy.yml copy
cmp -s copy/model.safetensors phi3-a/model.safetensors && ok || bad "passthrough of one model is not a byte copy"

# ---- modules: a vision–language model merged module by module ----
cat > mod.yml <<'YML'
merge_method: linear
modules:
  text_decoder:
    slices:
      - sources: [{model: gemma3vl-a, layer_range: [0, 3]}]
      - sources: [{model: gemma3vl-b, layer_range: [2, 3]}]
    parameters: {weight: 1}
  vision_tower:
    slices:
      - sources: [{model: gemma3vl-a, layer_range: [0, 1]}, {model: gemma3vl-b, layer_range: [1, 2]}]
    parameters: {weight: 0.5}
  multi_modal_projector:
    models: [{model: gemma3vl-b, parameters: {weight: 1}}]
YML
expect 0 "$G" merge mod.yml mod --threads 2
expect 0 "$G" verify mod
python3 - mod/config.json <<'PY' && ok || bad "modules: layer counts in config.json: $(tr -d ' \n' < mod/config.json | head -c 300)"
import json, sys
c = json.load(open(sys.argv[1]))
sys.exit(0 if c["text_config"]["num_hidden_layers"] == 4 and c["vision_config"]["num_hidden_layers"] == 1 else 1)
PY
n=$(names mod | grep -c '^vision_tower.vision_model.encoder.layers.0.')
[ "$n" = 12 ] && ok || bad "modules: vision layer 0 has $n tensors, want 12"
names mod | grep -q 'encoder.layers.1.' && bad "modules: vision layer 1 written" || ok
names mod | grep -q '^language_model.model.layers.3.mlp.up_proj.weight$' && ok || bad "modules: text layer 3 missing"
[ "$(names mod | grep -c multi_modal_projector)" = 2 ] && ok || bad "modules: projector tensors"
"$G" merge mod.yml mod2 --dry-run > plan.txt && grep -q "^plan: merge_method linear, .* 5 layers" plan.txt && ok || bad "modules: dry-run plan: $(head -1 plan.txt)"

# ---- the example configurations (shared/methods-mergekit.md §1.7) ----
expect 0 "$G" synth base --layers 4 --hidden 64 --intermediate 96 --vocab 96 --seed 1
for i in 1 2 3; do expect 0 "$G" synth ft$i --like base --delta 0.01 --seed $((10 + i)); done
cat > ex-ties.yml <<'YML'
merge_method: ties
base_model: base
models:
  - model: ft1
    parameters: {density: [1, 0.7, 0.1], weight: 1.0}
  - model: ft2
    parameters: {density: 0.5, weight: [0, 0.3, 0.7, 1]}
  - model: ft3
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
parameters: {normalize: true, int8_mask: true}
dtype: float16
YML
cat > ex-gradient-slerp.yml <<'YML'
slices:
  - sources:
      - {model: ft1, layer_range: [0, 4]}
      - {model: ft2, layer_range: [0, 4]}
merge_method: slerp
base_model: ft1
parameters:
  t:
    - {filter: self_attn, value: [0, 0.5, 0.3, 0.7, 1]}
    - {filter: mlp,       value: [1, 0.5, 0.7, 0.3, 0]}
    - value: 0.5
dtype: float16
YML
cat > ex-stack.yml <<'YML'
slices:
  - sources: [{model: ft1, layer_range: [0, 3]}]
  - sources: [{model: ft2, layer_range: [1, 4]}]
merge_method: passthrough
dtype: float16
YML
cat > ex-linear.yml <<'YML'
models:
  - model: ft1
    parameters: {weight: 1.0}
  - model: ft2
    parameters: {weight: 0.3}
  - model: ft3
    parameters: {weight: 0.5}
merge_method: linear
dtype: float16
YML
cat > ex-bio.yml <<'YML'
models:
  - model: ft1
    parameters: {density: 0.5, weight: 0.5}
  - model: ft2
    parameters: {density: 0.5, weight: 0.5}
merge_method: ties
base_model: base
parameters: {normalize: false, int8_mask: true}
dtype: float16
YML
cat > ex-fusion.yml <<'YML'
models:
  - model: ft1
  - model: ft2
merge_method: arcee_fusion
base_model: ft1
dtype: bfloat16
YML
for ex in ties gradient-slerp stack linear bio fusion; do
    expect 0 "$G" merge ex-$ex.yml out-$ex --threads 2
    expect 0 "$G" verify out-$ex
    for f in config.json README.md mergekit_config.yml tokenizer.json generation_config.json; do
        [ -f out-$ex/$f ] && ok || bad "example $ex: output lacks $f"
    done
done
grep -q '"torch_dtype": "float16"' out-linear/config.json && ok || bad "linear example: torch_dtype not float16"
grep -q '"num_hidden_layers": 6' out-stack/config.json && ok || bad "stack example: num_hidden_layers not 6"
"$G" inspect out-ties | grep -q "^F16 " && ok || bad "ties example: output not float16"
cmp -s ex-ties.yml out-ties/mergekit_config.yml && ok || bad "mergekit_config.yml is not the config verbatim"

# ---- a tied donor and an untied model: the output's own lm_head is declared untied ----
expect 0 "$G" synth tie1 --layers 2 --hidden 32 --intermediate 48 --vocab 64 --dtype f32 --tie --seed 3
expect 0 "$G" synth unt1 --layers 2 --hidden 32 --intermediate 48 --vocab 64 --dtype f32 --seed 4
for order in "tie1 unt1" "unt1 tie1"; do
    set -- $order
    printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: 1}\n  - model: %s\n    parameters: {weight: 1}\ndtype: float32\n' $1 $2 > tu.yml
    rm -rf tu && expect 0 "$G" merge tu.yml tu
    "$G" inspect tu --json > tu.json 2>/dev/null
    python3 -c 'import json; c = json.load(open("tu/config.json")); t = [x["name"] for x in json.load(open("tu.json"))["tensors"]]
assert "lm_head.weight" in t and c.get("tie_word_embeddings") is False, (c.get("tie_word_embeddings"), t)' > "$T/py" 2>&1 && ok || bad "tied + untied ($order): $(cat "$T/py")"
done
# a per-model filter sees lm_head.weight where the tied model's embedding stands in for it (MergeKit
# filters weight_in.name): `embed` gives the embedding weight 0, not the head (the stand-in's name matched)
printf 'merge_method: linear\nmodels:\n  - model: unt1\n    parameters: {weight: 1}\n  - model: tie1\n    parameters:\n      weight: [{filter: embed, value: 0}, {value: 1}]\ndtype: float32\n' > tf.yml
rm -rf tf && expect 0 "$G" merge tf.yml tf
/usr/bin/python3 - "$REFD" <<'PY' && ok || bad "filter on a tied lm_head"
import sys
sys.path.insert(0, sys.argv[1])
from lora_ref import load
import numpy as np
o, u, t = load("tf"), load("unt1"), load("tie1")
assert np.array_equal(o["model.embed_tokens.weight"], u["model.embed_tokens.weight"])
want = (u["lm_head.weight"].astype(np.float64) + t["model.embed_tokens.weight"]) / 2
assert np.abs(o["lm_head.weight"] - want).max() <= 1e-6 * np.abs(want).max()
PY
# slices: the last slice's sources beyond the first slice's count do not merge the tensors after the
# layers (MergeKit zips them with the first slice's weight names): model.norm and lm_head are ft1's
printf 'merge_method: linear\nslices:\n  - sources: [{model: ft1, layer_range: [0, 2], parameters: {weight: 1}}]\n  - sources:\n      - {model: ft1, layer_range: [2, 4], parameters: {weight: 0.5}}\n      - {model: ft2, layer_range: [2, 4], parameters: {weight: 0.5}}\n' > pz.yml
rm -rf pz && expect 0 "$G" merge pz.yml pz
grep -q "merge only the first 1 of this last slice's 2 sources" err && ok || bad "post weights: no warning: $(cat err)"
/usr/bin/python3 - "$REFD" <<'PY' && ok || bad "post weights of a longer last slice"
import sys
sys.path.insert(0, sys.argv[1])
from lora_ref import load
import numpy as np
o, a, b = load("pz"), load("ft1"), load("ft2")
for n in ("model.norm.weight", "lm_head.weight"):
    assert np.array_equal(o[n], a[n]), n
assert not np.array_equal(o["model.layers.3.mlp.up_proj.weight"], a["model.layers.3.mlp.up_proj.weight"])
PY
expect 0 "$G" synth tie2 --layers 2 --hidden 32 --intermediate 48 --vocab 64 --dtype f32 --tie --seed 5
# slices ending in a tied model under an untied donor's config: the output's head is that model's
# embedding, written as lm_head.weight (none was written: transformers initialised a random head);
# under a tied donor the output stays tied, as MergeKit's output loads
for c in "unt1 tie1" "tie2 tie1" "tie1 tie1"; do
    set -- $c
    printf 'merge_method: passthrough\nslices:\n  - sources: [{model: %s, layer_range: [0, 2]}]\n  - sources: [{model: %s, layer_range: [0, 2]}]\n' $1 $2 > st.yml
    rm -rf st && expect 0 "$G" merge st.yml st
    /usr/bin/python3 - "$REFD" $1 $2 <<'PY' && ok || bad "slices $c: lm_head / tie_word_embeddings"
import json, sys
sys.path.insert(0, sys.argv[1])
from lora_ref import load
import numpy as np
o, a, b = load("st"), load(sys.argv[2]), load(sys.argv[3])
tied = json.load(open("st/config.json"))["tie_word_embeddings"]
assert np.array_equal(o["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
if sys.argv[2].startswith("tie"):
    assert tied is True and "lm_head.weight" not in o
else:
    assert tied is False and np.array_equal(o["lm_head.weight"], b["model.embed_tokens.weight"])
PY
done
printf 'merge_method: linear\nmodels:\n  - model: tie1\n    parameters: {weight: 1}\n  - model: tie2\n    parameters: {weight: 1}\ndtype: float32\n' > tt.yml
rm -rf tt && expect 0 "$G" merge tt.yml tt
grep -q '"tie_word_embeddings": true' tt/config.json && ok || bad "two tied models: the output should stay tied: $(cat tt/config.json)"

# ---- fused bf16 kernels (apply_raw) give the staged f32 path's bytes: same merge on f32 copies ----
# (tensors of 8 chunks, so that top-k thresholds apply per chunk and one chunk holds the tie boundary)
expect 0 "$G" synth rb --layers 1 --hidden 512 --intermediate 1024 --heads 8 --kv-heads 8 --vocab 1024 --seed 1
for i in 1 2 3; do expect 0 "$G" synth rb$i --like rb --delta 0.01 --seed $((20 + i)); done
for m in rb1 rb2 rb3 rb; do expect 0 "$G" convert $m $m-f32 --dtype f32; done
for meth in linear task_arithmetic ties dare_ties dare_linear; do
    for v in "" -f32; do
        b="base_model: rb$v"; [ $meth = linear ] && b="name: x"
        dens=""; case $meth in ties|dare_*) dens=", density: 0.5" ;; esac
        printf 'merge_method: %s\n%s\nmodels:\n  - model: rb1%s\n    parameters: {weight: 0.7%s}\n  - model: rb2%s\n    parameters: {weight: -0.2%s}\n  - model: rb3%s\n    parameters: {weight: 0.4, density: 0.3}\nparameters: {normalize: true}\nout_dtype: bfloat16\n' \
            $meth "$b" "$v" "$dens" "$v" "$dens" "$v" > raw-$meth$v.yml
        expect 0 "$G" merge raw-$meth$v.yml raw-$meth$v --threads 2 --seed 3
    done
    cmp -s raw-$meth/model.safetensors raw-$meth-f32/model.safetensors && ok || bad "$meth: fused bf16 path differs from the f32 path"
    # the hand-written AVX-512 kernels (where the CPU has them) against the portable code
    GRAFT_CPU=generic "$G" merge raw-$meth.yml raw-$meth-gen --threads 2 --seed 3 >/dev/null 2>&1 && ok || bad "$meth: GRAFT_CPU=generic merge failed"
    cmp -s raw-$meth/model.safetensors raw-$meth-gen/model.safetensors && ok || bad "$meth: AVX-512 kernels differ from the portable code"
done

# ---- tokenizer union (README example shape) on models with different vocabularies ----
expect 0 "$G" synth v-base --layers 2 --hidden 32 --intermediate 48 --vocab 80 --seed 1
expect 0 "$G" synth v-big --layers 2 --hidden 32 --intermediate 48 --vocab 90 --seed 2
cat > ex-tok.yml <<'YML'
merge_method: linear
base_model: v-base
models:
  - model: v-base
    parameters: {weight: 1}
  - model: v-big
    parameters: {weight: 1}
tokenizer:
  source: union
  tokens:
    <|im_start|>: {source: {kind: model_token, model: v-big, token: "</s>"}}
    t85: {source: v-big}
    <s>: {source: v-big, force: true}
    <|unused|>: {source: {kind: zero}}
  pad_to_multiple_of: 64
chat_template: chatml
YML
expect 0 "$G" merge ex-tok.yml out-tok
# 80 + t80…t89 + <|im_start|> + <|unused|> = 92 tokens → 128 rows
grep -q '"vocab_size": 128' out-tok/config.json && ok || bad "union: vocab_size not 128: $(grep vocab_size out-tok/config.json)"
"$G" inspect out-tok | grep -q "\[128, 32\] .*model.embed_tokens.weight" && ok || bad "union: embed_tokens not [128, 32]"
grep -q '"content": "t89"' out-tok/tokenizer.json && grep -q '<|im_start|>' out-tok/tokenizer_config.json && ok || bad "union: tokenizer files"
sed 's/<|im_start|>: .*/<|im_start|>: {source: v-big}/' ex-tok.yml > bad-tok.yml
expect 4 "$G" merge bad-tok.yml out-tok2 # <|im_start|> is in no model: v-big cannot be its source
grep -q "'<|im_start|>' is not in the vocabulary of 'v-big'" err && ok || bad "token source error: $(cat err)"

# embeddings of different row counts under a base with more rows: cropped to the rows every model has
# (MergeKit's rectify_embed_sizes), config.json's vocab_size following; the smaller model was read past
# the end of its embedding (garbage rows, or SIGBUS at the end of a mapping)
printf 'merge_method: task_arithmetic\nbase_model: v-big\nmodels:\n  - model: v-base\n    parameters: {weight: 0.5}\n' > crop-ta.yml
printf 'merge_method: linear\nbase_model: v-big\nmodels:\n  - model: v-big\n    parameters: {weight: 0.5}\n  - model: v-base\n    parameters: {weight: 0.5}\n' > crop-lin.yml
for c in ta lin; do
    expect 0 "$G" merge crop-$c.yml crop-$c
    grep -q "model.embed_tokens.weight: embedding row counts differ between models; using the first 80 rows" err && ok || bad "crop $c: no warning: $(cat err)"
    grep -q "takes 'v-big''s tokenizer files: tokenizer.json has token ids up to 89 but model.embed_tokens.weight has 80 rows" err && ok || bad "crop $c: no tokenizer warning: $(cat err)"
    # verify: a valid file whose tokenizer names ids past the embedding is not clean (users.md #428)
    expect 3 "$G" verify crop-$c
    grep -q "tokenizer.json has token ids up to 89 but model.embed_tokens.weight has 80 rows" err && ok || bad "verify crop $c: $(cat err)"
    /usr/bin/python3 - crop-$c "$REFD" <<'PY' && ok || bad "crop $c: embeddings"
import json, sys
sys.path.insert(0, sys.argv[2])
from lora_ref import load
import numpy as np
o, big, small = load(sys.argv[1]), load("v-big"), load("v-base")
assert json.load(open(sys.argv[1] + "/config.json"))["vocab_size"] == 80
for n in ("model.embed_tokens.weight", "lm_head.weight"):
    b, s = big[n][:80].astype(np.float64), small[n].astype(np.float64)
    want = b + 0.5 * (s - b) if sys.argv[1].endswith("ta") else 0.5 * b + 0.5 * s
    assert o[n].shape == (80, 32) and np.abs(o[n] - want).max() <= 1e-2 * np.abs(want).max(), n
PY
done

# union over a base whose tokenizer lists tokens past its config's vocab_size (t70…t79 of v70): they
# are stripped from the base, and added back from the model that has them, as MergeKit compares with
# the stripped base vocabulary (they were dropped)
rm -rf v70 && cp -r v-base v70 && sed -i 's/"vocab_size": 80/"vocab_size": 70/' v70/config.json
printf 'merge_method: linear\nbase_model: v70\nmodels:\n  - model: v70\n    parameters: {weight: 1}\n  - model: v-big\n    parameters: {weight: 1}\ntokenizer_source: union\n' > u70.yml
rm -rf u70 && expect 0 "$G" merge u70.yml u70
expect 3 "$G" verify v70
grep -q "config.json says vocab_size 70 but model.embed_tokens.weight has 80 rows" err && ok || bad "verify of a config vocab_size that is not the rows: $(cat err)"
expect 0 "$G" verify u70
/usr/bin/python3 -c 'import json; t = json.load(open("u70/tokenizer.json")); c = json.load(open("u70/config.json"))
assert c["vocab_size"] == 90 and {"id": 75, "content": "t75"}.items() <= [a for a in t["added_tokens"] if a["content"] == "t75"][0].items()' &&
    ok || bad "union over a stripped base: $(grep vocab_size u70/config.json)"

# integer tensors are never computed on: the same bytes in every model are copied (position ids),
# different ones refused; a quantized checkpoint (quantization_config) is refused before any work —
# both were merged as numbers (int8 codes of two scales averaged, their scales copied)
expect 0 "$G" synth ib --layers 2 --hidden 32 --intermediate 48 --vocab 64 --dtype f32 --seed 30
for i in 1 2 3; do expect 0 "$G" synth ib$i --like ib --delta 0.01 --seed $((30 + i)); done
/usr/bin/python3 - "$REFD" <<'PY' || bad "integer tensor fixtures"
import sys
sys.path.insert(0, sys.argv[1])
from lora_ref import load, save
import numpy as np
for m, off in (("ib1", 0), ("ib2", 0), ("ib3", 1)):
    t = load(m); t["model.pos_ids"] = np.arange(16, dtype=np.int64) + off; save(m + "/model.safetensors", t)
PY
printf 'merge_method: linear\nmodels:\n  - model: ib1\n    parameters: {weight: 0.3}\n  - model: %s\n    parameters: {weight: 0.7}\n' ib2 > int-same.yml
printf 'merge_method: linear\nmodels:\n  - model: ib1\n    parameters: {weight: 0.3}\n  - model: %s\n    parameters: {weight: 0.7}\n' ib3 > int-diff.yml
rm -rf int-same && expect 0 "$G" merge int-same.yml int-same
"$G" inspect int-same | grep -q "^I64 .*\[16\] .*model.pos_ids" && /usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); from lora_ref import load; import numpy as np
assert (load("int-same")["model.pos_ids"] == np.arange(16)).all()' "$REFD" && ok || bad "identical integer tensor not copied"
expect 4 "$G" merge int-diff.yml int-diff
grep -q "tensor model.pos_ids is stored as I64 and differs between 'ib1' and 'ib3'" err && [ ! -e int-diff ] && ok || bad "differing integer tensor: $(cat err)"
expect 0 "$G" quantize ib2 ib2q --scheme int8
printf 'merge_method: task_arithmetic\nbase_model: ib\nmodels:\n  - model: ib2q\n    parameters: {weight: 1}\n' > int-q.yml
expect 4 "$G" merge int-q.yml int-q
grep -q "'ib2q' is a quantized checkpoint: config.json has quantization_config (quant_method \"graft_rtn\")" err && [ ! -e int-q ] && ok || bad "quantized input: $(cat err)"

# a model missing one tensor, or a whole layer, is refused before any work (the tensor came out as the
# base's, the layer as nothing, with exit 0)
/usr/bin/python3 - "$REFD" <<'PY' || bad "missing-tensor fixtures"
import os, shutil, sys
sys.path.insert(0, sys.argv[1])
from lora_ref import load, save
for d, drop in (("miss1", lambda k: k == "model.layers.2.mlp.up_proj.weight"), ("gap", lambda k: k.startswith("model.layers.2."))):
    shutil.rmtree(d, ignore_errors=True); shutil.copytree("ft2", d)
    t = load("ft2"); save(d + "/model.safetensors", {k: v for k, v in t.items() if not drop(k)})
PY
printf 'merge_method: linear\nmodels:\n  - model: ft1\n    parameters: {weight: 0.5}\n  - model: miss1\n    parameters: {weight: 0.5}\n' > miss1.yml
expect 4 "$G" merge miss1.yml miss1-out
grep -q "tensor model.layers.2.mlp.up_proj.weight: 'miss1' has no such tensor" err && [ ! -e miss1-out ] && ok || bad "missing tensor: $(cat err)"
printf 'merge_method: passthrough\nslices:\n  - sources: [{model: gap, layer_range: [0, 4]}]\n' > gap.yml
expect 4 "$G" merge gap.yml gap-out
grep -q "'gap' has no tensors for layer 2" err && [ ! -e gap-out ] && ok || bad "missing layer: $(cat err)"

# slices renumber the layers: layer_types is rebuilt from each output layer's source layer (it kept the
# donor's 6 entries for 7 layers, which transformers refuses); Gemma 3's positional sliding pattern is
# written out as layer_types of the layers' origins
expect 0 "$G" synth lt --layers 6 --hidden 32 --intermediate 48 --vocab 64 --seed 40
/usr/bin/python3 -c 'import json; p = "lt/config.json"; c = json.load(open(p)); c["layer_types"] = ["full_attention", "sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention"]; json.dump(c, open(p, "w"))'
printf 'merge_method: passthrough\nslices:\n  - sources: [{model: lt, layer_range: [0, 4]}]\n  - sources: [{model: lt, layer_range: [3, 6]}]\n' > lt.yml
rm -rf lt-out && expect 0 "$G" merge lt.yml lt-out
/usr/bin/python3 -c 'import json; c = json.load(open("lt-out/config.json")); f, s = "full_attention", "sliding_attention"
assert c["num_hidden_layers"] == 7 and c["layer_types"] == [f, s, s, f, f, s, f], c.get("layer_types")' && ok || bad "layer_types after slices: $(grep -A9 layer_types lt-out/config.json | tr -d ' \n')"
# a source without the list (a config saved before transformers wrote it) has the kinds transformers
# gives it (here: full attention): the merge was refused
rm -rf lt0 && cp -r lt lt0 && /usr/bin/python3 -c 'import json; p = "lt0/config.json"; c = json.load(open(p)); del c["layer_types"]; json.dump(c, open(p, "w"))'
printf 'merge_method: slerp\nbase_model: lt\nslices:\n  - sources: [{model: lt0, layer_range: [0, 3]}, {model: lt, layer_range: [0, 3]}]\nparameters: {t: 0.5}\n' > lt0.yml
rm -rf lt0-out && expect 0 "$G" merge lt0.yml lt0-out
/usr/bin/python3 -c 'import json; c = json.load(open("lt0-out/config.json"))
assert c["num_hidden_layers"] == 3 and c["layer_types"] == ["full_attention"] * 3, c.get("layer_types")' && ok || bad "layer_types from a source without the list"
# Qwen2 with use_sliding_window and no max_window_layers: Qwen2Config's default 28 (layers 28+ slide)
expect 0 "$G" synth qs --arch qwen2 --layers 30 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 64 --seed 42
/usr/bin/python3 -c 'import json; p = "qs/config.json"; c = json.load(open(p)); c.pop("max_window_layers", None); c.pop("layer_types", None); c["use_sliding_window"] = True; c["sliding_window"] = 4; json.dump(c, open(p, "w"))'
printf 'merge_method: passthrough\nslices:\n  - sources: [{model: qs, layer_range: [28, 30]}]\n  - sources: [{model: qs, layer_range: [0, 28]}]\n' > qs.yml
rm -rf qs-out && expect 0 "$G" merge qs.yml qs-out
/usr/bin/python3 -c 'import json; c = json.load(open("qs-out/config.json")); s, f = "sliding_attention", "full_attention"
assert c["layer_types"] == [s, s] + [f] * 28, c.get("layer_types")' && ok || bad "qwen2 max_window_layers default under slices"
expect 0 "$G" synth g3 --arch gemma3vl --layers 8 --hidden 32 --intermediate 48 --heads 4 --kv-heads 2 --vocab 64 --seed 41
/usr/bin/python3 -c 'import json; p = "g3/config.json"; c = json.load(open(p)); c["text_config"]["torch_dtype"] = "bfloat16"; json.dump(c, open(p, "w"))'
printf 'merge_method: passthrough\nslices:\n  - sources: [{model: g3, layer_range: [0, 6]}]\n  - sources: [{model: g3, layer_range: [4, 8]}]\ndtype: float32\n' > g3.yml
rm -rf g3-out && expect 0 "$G" merge g3.yml g3-out
/usr/bin/python3 -c 'import json; c = json.load(open("g3-out/config.json")); t = c["text_config"]; f, s = "full_attention", "sliding_attention"
assert "layer_types" not in c and t["num_hidden_layers"] == 10 and t["layer_types"] == [s] * 5 + [f] + [s, f, s, s], t.get("layer_types")
assert c["torch_dtype"] == t["torch_dtype"] == "float32", (c["torch_dtype"], t["torch_dtype"])' && ok || bad "Gemma 3 sliding pattern / text_config dtype after slices"

# tokenizer files are prepared with the plan: an unknown chat template fails a --dry-run (it passed,
# and the real run failed after the merge); a base stripped to its vocab_size loses the dropped token
# from tokenizer_config.json's added_tokens_decoder and additional_special_tokens and from
# special_tokens_map.json (transformers added it again past the last embedding row)
printf 'merge_method: linear\nmodels:\n  - model: ft1\n    parameters: {weight: 1}\nchat_template: bogus\n' > ct-bad.yml
expect 4 "$G" merge ct-bad.yml ct-bad --dry-run
grep -q "chat_template 'bogus'" err && ok || bad "chat template at plan time: $(cat err)"
rm -rf sx && cp -r v-base sx && /usr/bin/python3 - <<'PY' || bad "stripped-token fixture"
import json
t = json.load(open("sx/tokenizer.json"))
t["added_tokens"].append({"id": 100, "content": "<|extra|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True})
json.dump(t, open("sx/tokenizer.json", "w"))
tc = json.load(open("sx/tokenizer_config.json"))
tc["added_tokens_decoder"] = {"1": {"content": "<s>", "special": True}, "100": {"content": "<|extra|>", "special": True}}
tc["additional_special_tokens"] = ["<|extra|>"]; tc["pad_token"] = "<|extra|>"
json.dump(tc, open("sx/tokenizer_config.json", "w"))
sm = json.load(open("sx/special_tokens_map.json")); sm["additional_special_tokens"] = [{"content": "<|extra|>"}]; sm["pad_token"] = {"content": "<|extra|>"}
json.dump(sm, open("sx/special_tokens_map.json", "w"))
PY
printf 'merge_method: linear\nbase_model: sx\nmodels:\n  - model: sx\n    parameters: {weight: 1}\ntokenizer_source: base\n' > sx.yml
rm -rf sx-out && expect 0 "$G" merge sx.yml sx-out
/usr/bin/python3 -c 'import json; tc = json.load(open("sx-out/tokenizer_config.json")); sm = json.load(open("sx-out/special_tokens_map.json"))
t = json.load(open("sx-out/tokenizer.json"))
assert not any(a["content"] == "<|extra|>" for a in t["added_tokens"])
assert list(tc["added_tokens_decoder"]) == ["1"] and tc["additional_special_tokens"] == [] and sm["additional_special_tokens"] == [], (tc, sm)
assert tc["pad_token"] is None and sm["pad_token"] is None and tc["bos_token"] == "<s>", (tc, sm)' &&
    ok || bad "stripped token left in the tokenizer files"

# tokenizer_source keeps the source's padded row count when the vocabulary fits in it (96 tokens, 128
# rows: Qwen-style), the padding rows each model's mean row; pad_to_multiple_of: 1 cuts to the tokens
# as MergeKit does (it always cut them)
expect 0 "$G" synth pv --layers 2 --hidden 32 --intermediate 48 --vocab 128 --dtype f32 --seed 50
expect 0 "$G" synth pv2 --like pv --delta 0.02 --seed 51
for m in pv pv2; do /usr/bin/python3 -c 'import json, sys; p = sys.argv[1] + "/tokenizer.json"; t = json.load(open(p))
t["model"]["vocab"] = {k: v for k, v in t["model"]["vocab"].items() if v < 96}; t["added_tokens"] = [a for a in t["added_tokens"] if a["id"] < 96]
json.dump(t, open(p, "w"))' $m; done
printf 'merge_method: linear\nmodels:\n  - model: pv\n    parameters: {weight: 0.5}\n  - model: pv2\n    parameters: {weight: 0.5}\ntokenizer_source: base\n' > pv.yml
printf 'merge_method: linear\nmodels:\n  - model: pv\n    parameters: {weight: 0.5}\n  - model: pv2\n    parameters: {weight: 0.5}\ntokenizer: {source: base, pad_to_multiple_of: 1}\n' > pv1.yml
rm -rf pv-out pv1-out && expect 0 "$G" merge pv.yml pv-out && expect 0 "$G" merge pv1.yml pv1-out
/usr/bin/python3 - "$REFD" <<'PY' && ok || bad "padded vocabulary kept"
import json, sys
sys.path.insert(0, sys.argv[1])
from lora_ref import load
import numpy as np
o, o1, a, b = load("pv-out"), load("pv1-out"), load("pv"), load("pv2")
assert json.load(open("pv-out/config.json"))["vocab_size"] == 128 and json.load(open("pv1-out/config.json"))["vocab_size"] == 96
for n in ("model.embed_tokens.weight", "lm_head.weight"):
    e = o[n]; assert e.shape == (128, 32) and o1[n].shape == (96, 32)
    real = (a[n][:96].astype(np.float64) + b[n][:96]) / 2
    assert np.abs(e[:96] - real).max() < 1e-6 and np.abs(o1[n] - real).max() < 1e-6
    assert np.abs(e[96:] - real.mean(axis=0)).max() < 1e-6
PY

# ---- bad configs: exit 4, a precise message, nothing written ----
badcfg() { # NAME EXPECTED-MESSAGE YAML
    printf '%s' "$3" > bad-$1.yml
    expect 4 "$G" merge bad-$1.yml bad-$1
    grep -q -- "$2" err && ok || bad "$1: message '$(cat err)' lacks '$2'"
    [ ! -e bad-$1 ] && ok || bad "$1: output written"
}
badcfg method "unknown merge_method 'tie'" 'merge_method: tie
base_model: base
models: [{model: ft1}]
'
badcfg density "density" 'merge_method: ties
base_model: base
models: [{model: ft1, parameters: {density: 1.5, weight: 1}}]
'
badcfg range "past the 4 layers" 'merge_method: passthrough
slices:
  - sources: [{model: ft1, layer_range: [2, 9]}]
'
expect 0 "$G" synth wide --layers 4 --hidden 32 --intermediate 96 --vocab 96 --seed 1
badcfg shape "does not match" 'merge_method: linear
models: [{model: ft1, parameters: {weight: 1}}, {model: wide, parameters: {weight: 1}}]
'
badcfg layers "different numbers of layers" 'merge_method: linear
models: [{model: ft1, parameters: {weight: 1}}, {model: v-base, parameters: {weight: 1}}]
'
badcfg hub "works offline" 'merge_method: linear
models: [{model: meta-llama/Llama-3-8B, parameters: {weight: 1}}]
'
badcfg key "unknown key" 'merge_method: linear
modles: [{model: ft1}]
'
# from a review against MergeKit: an alias cycle in a model reference (a hang, or a stack overflow);
# a model twice in one slice (MergeKit merges it once; 70 copies overflowed the planner's arrays); more
# than 64 sources once the base is appended; a slice's own base_model (ignored before); a second
# YAML document (ignored before)
badcfg cycle "nested too deeply (an alias that refers to itself?)" 'merge_method: linear
base_model: &a {model: *a}
models: [{model: ft1}]
'
badcfg twice "model 'ft1' is listed twice in one slice" 'merge_method: linear
models: [{model: ft1, parameters: {weight: 1}}, {model: ft1, parameters: {weight: 3}}]
'
for i in $(seq 64); do ln -sfn ft1 ft1-$i; done
{ echo "merge_method: task_arithmetic"; echo "base_model: base"; echo "models:"; for i in $(seq 64); do echo "  - {model: ft1-$i, parameters: {weight: 1}}"; done; } > many.yml
badcfg many "65 sources in one slice (at most 64)" "$(cat many.yml)"
badcfg slicebase "a slice's own base_model is not supported" 'merge_method: task_arithmetic
base_model: base
slices:
  - sources: [{model: base, layer_range: [0, 4]}, {model: ft1, layer_range: [0, 4], parameters: {weight: 1}}]
    base_model: ft1
'
badcfg twodocs "a second YAML document" 'merge_method: linear
models: [{model: ft1, parameters: {weight: 1}}]
---
merge_method: ties
'
# `filter: null` is no filter (MergeKit's None): every tensor takes that entry's value; `tokenizer_source:
# null` and `chat_template: ~` are unset; more than 64 slices are fine (a frankenmerge of single layers)
printf 'merge_method: linear\nmodels:\n  - model: ft1\n    parameters:\n      weight: [{filter: null, value: 0.9}, {value: 0.1}]\n  - model: base\n    parameters: {weight: 0.5}\ntokenizer_source: null\nchat_template: ~\n' > fnull.yml
expect 0 "$G" merge fnull.yml fnull --dry-run
! grep -q "weight=0.1" "$T/out" && grep -q "ft1:model.layers.0.mlp.down_proj.weight weight=0.9" "$T/out" && ok || bad "filter: null: $(head -c 600 "$T/out")"
{ echo "merge_method: passthrough"; echo "slices:"; for i in $(seq 70); do echo "  - sources: [{model: ft1, layer_range: [1, 2]}]"; done; } > s70.yml
expect 0 "$G" merge s70.yml s70
grep -q '"num_hidden_layers": 70' s70/config.json && ok || bad "70 single-layer slices"
badcfg modunlisted "belongs to module 'vision_tower', which 'modules' does not list" 'merge_method: linear
modules:
  text_decoder: {models: [{model: gemma3vl-a, parameters: {weight: 1}}]}
  multi_modal_projector: {models: [{model: gemma3vl-a, parameters: {weight: 1}}]}
'
badcfg modnone "module 'audio_tower' matches no tensor" 'merge_method: linear
modules:
  text_decoder: {models: [{model: gemma3vl-a, parameters: {weight: 1}}]}
  vision_tower: {models: [{model: gemma3vl-a, parameters: {weight: 1}}]}
  multi_modal_projector: {models: [{model: gemma3vl-a, parameters: {weight: 1}}]}
  audio_tower: {models: [{model: gemma3vl-a, parameters: {weight: 1}}]}
'
badcfg modboth "module 'text_decoder' needs exactly one of 'models' or 'slices'" 'merge_method: linear
modules:
  text_decoder: {models: [{model: gemma3vl-a}], slices: [{sources: [{model: gemma3vl-a, layer_range: [0, 1]}]}]}
'
badcfg modtop "exactly one of 'models', 'slices' or 'modules'" 'merge_method: linear
models: [{model: ft1, parameters: {weight: 1}}]
modules:
  text_decoder: {models: [{model: gemma3vl-a}]}
'
badcfg modrange "past the 3 layers of 'gemma3vl-a' in module vision_tower" 'merge_method: passthrough
modules:
  text_decoder: {models: [{model: gemma3vl-a}]}
  multi_modal_projector: {models: [{model: gemma3vl-a}]}
  vision_tower: {slices: [{sources: [{model: gemma3vl-a, layer_range: [1, 4]}]}]}
'

# ---- kill -9 during a merge: the output is absent or complete ----
expect 0 "$G" synth kb --layers 2 --hidden 1024 --intermediate 2816 --vocab 8192 --heads 8 --kv-heads 8 --seed 1
expect 0 "$G" synth kf --like kb --seed 2
printf 'merge_method: dare_ties\nbase_model: kb\nmodels: [{model: kf, parameters: {density: 0.5, weight: 1}}]\ndtype: float32\n' > kill.yml
t0=$(date +%s%N); "$G" merge kill.yml kdone --threads 2 2>/dev/null; t1=$(date +%s%N)
dur_ms=$(( (t1 - t0) / 1000000 ))
i=0 complete=0
while [ $i -lt 8 ]; do
    i=$((i + 1))
    rm -rf kout
    "$G" merge kill.yml kout --threads 2 2>/dev/null &
    pid=$!
    ms=$(( dur_ms * i / 7 ))
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    if [ -e kout ]; then
        cmp -s kout/model.safetensors kdone/model.safetensors && complete=$((complete + 1)) || bad "kill $i left a wrong output"
    fi
done
echo "# kill -9 during merge: $complete of 8 runs had finished; the rest left nothing (one run: ${dur_ms} ms)"
rm -rf kout
expect 0 "$G" merge kill.yml kout --threads 2
ls -A | grep -q "graft-tmp" && bad "stale temp folders after killed merges" || ok

# ---- numerical safety: no NaN / Inf written silently ----
expect 0 "$G" synth nb --layers 2 --hidden 32 --intermediate 48 --heads 4 --vocab 64 --dtype f32 --seed 1
expect 0 "$G" synth nf --like nb --delta 0.01 --seed 2
# copies of nb with a large (finite) value, a NaN, or both in model.norm.weight (elements 5, 6)
cp -r nb nbig && cp -r nb nnan && cp -r nb nnanbig && cp -r nb nhuge
$PATCH nbig/model.safetensors '^model.norm.weight$' 1e38 5 && $PATCH nnan/model.safetensors '^model.norm.weight$' nan 5 &&
    $PATCH nnanbig/model.safetensors '^model.norm.weight$' nan 5 && $PATCH nnanbig/model.safetensors '^model.norm.weight$' 1e5 6 &&
    $PATCH nhuge/model.safetensors '^model.norm.weight$' 1e5 5 && ok || bad "could not patch the models"
nf_cfg() { printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: %s}\n  - model: nf\n    parameters: {weight: %s}\nparameters: {normalize: %s}\n%b' "$@" > nf.yml; }
nf_cfg nb 1e308 1 true ""
expect 4 "$G" merge nf.yml nfo
grep -q "parameter 'weight' of model 'nb' is 1e+308 for tensor .*not a finite float32 number" "$T/err" && [ ! -e nfo ] && ok || bad "weight 1e308: $(cat "$T/err")"
nf_cfg nb 3e38 3e38 false ""
expect 4 "$G" merge nf.yml nfo
grep -q "weights of tensor .* sum to 6e+38" "$T/err" && [ ! -e nfo ] && ok || bad "weights summing beyond float32: $(cat "$T/err")"
nf_cfg nb .inf 1 true ""
expect 4 "$G" merge nf.yml nfo
# float32 overflow in the merge: 4·1e38 + 4·(nf's value) = Inf
nf_cfg nbig 4 4 false ""
expect 1 "$G" merge nf.yml nfo --threads 2
grep -q "tensor 'model.norm.weight': the linear merge gives 1 NaN or infinite values (first at element 5) where no input holds any" "$T/err" && [ ! -e nfo ] && ! ls -A | grep -q graft-tmp && ok || bad "float32 overflow: $(cat "$T/err")"
[ "$(wc -l < "$T/err")" = 1 ] && ok || bad "float32 overflow: not one line: $(cat "$T/err")"
expect 0 "$G" merge nf.yml nfo --allow-nonfinite
grep -q "warning: tensor 'model.norm.weight': 1 NaN or infinite values written (first at element 5)" "$T/err" && "$G" verify nfo >/dev/null && ok || bad "--allow-nonfinite: $(cat "$T/err")"
rm -rf nfo
# float16 overflow in the conversion: finite float32 values beyond ±65504
nf_cfg nb 4e4 4e4 false "dtype: float16\n"
expect 1 "$G" merge nf.yml nfo
grep -q "float16 overflow\|F16 overflow" "$T/err" && grep -q "use out_dtype: bfloat16" "$T/err" && [ ! -e nfo ] && ok || bad "float16 overflow: $(cat "$T/err")"
# inherited: an input that holds a NaN gives a warning naming it, and the merge is written
nf_cfg nnan 0.5 0.5 true ""
expect 0 "$G" merge nf.yml nfo
grep -q "warning: input nnan, tensor 'model.norm.weight': holds 1 NaN or infinite values" "$T/err" &&
    grep -q "warning: tensor 'model.norm.weight': 1 NaN or infinite values in the output, from its inputs (1 in all inputs)" "$T/err" &&
    [ "$(wc -l < "$T/err")" = 3 ] && ok || bad "inherited NaN: $(cat "$T/err")"
rm -rf nfo
# an input NaN that does not reach the output (arcee_fusion keeps the base where the importance is low): one warning naming it
printf 'merge_method: arcee_fusion\nbase_model: nb\nmodels:\n  - model: nnan\n' > nf3.yml
expect 0 "$G" merge nf3.yml nfo
grep -q "warning: input nnan, tensor 'model.norm.weight': holds 1 NaN or infinite values" "$T/err" && [ "$(wc -l < "$T/err")" = 2 ] &&
    "$G" verify --values nfo >/dev/null && ok || bad "input NaN, finite output: $(cat "$T/err")"
rm -rf nfo
# a tensor copied as it is (passthrough): its NaN is reported the same way
printf 'merge_method: passthrough\nmodels:\n  - model: nnan\n' > nf3.yml
expect 0 "$G" merge nf3.yml nfo
grep -q "input nnan, tensor 'model.norm.weight': holds 1" "$T/err" && grep -q "1 NaN or infinite values in the output, from its inputs" "$T/err" && ok || bad "copied NaN: $(cat "$T/err")"
rm -rf nfo
# a NaN spread by a per-tensor norm (slerp): refused, and the error says where it came from
printf 'merge_method: slerp\nbase_model: nb\nmodels:\n  - model: nnan\nparameters: {t: 0.5}\n' > nf3.yml
expect 1 "$G" merge nf3.yml nfo
grep -q "the slerp merge gives 32 NaN or infinite values (first at element 0) where its inputs hold 1: the inputs' NaN/Inf spread" "$T/err" && [ ! -e nfo ] && ok || bad "spread NaN: $(cat "$T/err")"
# weights that sum to 0 under normalize: refused at plan time
nf_cfg nb 1 -1 true ""
expect 4 "$G" merge nf.yml nfo
grep -q "linear weights sum to 0 and normalize is on (the result would be NaN)" "$T/err" && [ ! -e nfo ] && ok || bad "weights summing to 0: $(cat "$T/err")"
# SLERP / NuSLERP / multislerp / Karcher on parallel and antiparallel tensors (model.norm.weight all 1 or all −1):
# the lerp fallback (|cos| > 0.9995) and Karcher's first-direction start, never NaN
cp -r nb npos && cp -r nb nneg && $PATCH npos/model.safetensors '^model.norm.weight$' 1 && $PATCH nneg/model.safetensors '^model.norm.weight$' -1 || bad "patch"
sl() { # NAME EXPECTED-MIN-MAX CONFIG
    printf "$3" > sl.yml
    "$G" merge sl.yml slo >/dev/null 2>"$T/err" && "$G" inspect --stats slo > "$T/out" 2>&1 &&
        grep -q " model.norm.weight  $2 nan 0 inf 0 subnormal 0$" "$T/out" && ok || bad "$1: $(cat "$T/err") $(grep norm.weight "$T/out")"
    rm -rf slo
}
sl "slerp, antiparallel" "min 0.4 max 0.4" 'merge_method: slerp\nbase_model: npos\nmodels:\n  - model: nneg\nparameters: {t: 0.3}\n'
sl "slerp, parallel" "min 1 max 1" 'merge_method: slerp\nbase_model: npos\nmodels:\n  - model: npos\nparameters: {t: 0.3}\n'
sl "nuslerp, antiparallel" "min 0 max 0" 'merge_method: nuslerp\nmodels:\n  - model: npos\n    parameters: {weight: 1}\n  - model: nneg\n    parameters: {weight: 1}\n'
sl "multislerp, antiparallel" "min 0 max 0" 'merge_method: multislerp\nmodels:\n  - model: npos\n    parameters: {weight: 1}\n  - model: nneg\n    parameters: {weight: 1}\n'
sl "karcher, antiparallel" "min 1 max 1" 'merge_method: karcher\nmodels:\n  - model: npos\n  - model: nneg\n'
ln -sfn npos npos2 # (one model twice in a slice is refused: a second name for it)
sl "karcher, parallel" "min 1 max 1" 'merge_method: karcher\nmodels:\n  - model: npos\n  - model: npos2\n'
# tiny kept masses: DARE keeping nothing with rescale (L1 ratio of 0 kept → 1, as MergeKit) gives the base
# exactly; TIES with weights 1e-30 under normalize divides by their sum (2e-30, not clamped: MergeKit's
# consensus divisor only replaces 0) and stays finite
printf 'merge_method: dare_linear\nbase_model: nb\nmodels:\n  - model: nf\n    parameters: {weight: 1, density: 1e-45}\nparameters: {rescale: true}\n' > nf3.yml
expect 0 "$G" merge nf3.yml nfo
cmp -s nfo/model.safetensors nb/model.safetensors && ok || bad "DARE keeping nothing is not the base"
rm -rf nfo
ln -sfn nf nf2
printf 'merge_method: ties\nbase_model: nb\nmodels:\n  - model: nf\n    parameters: {weight: 1e-30, density: 0.5}\n  - model: nf2\n    parameters: {weight: 1e-30, density: 0.5}\nparameters: {normalize: true}\n' > nf3.yml
expect 0 "$G" merge nf3.yml nfo
"$G" verify --values nfo >/dev/null && ! cmp -s nfo/model.safetensors nb/model.safetensors && ok || bad "TIES with tiny weights"
rm -rf nfo
# an input NaN does not cover values the merge makes besides: nnanbig's NaN, and its 1e5 overflows float16
nf_cfg nnanbig 1 1 false "dtype: float16\n"
expect 1 "$G" merge nf.yml nfo
grep -q "where its inputs hold 1.*F16 overflow" "$T/err" && [ ! -e nfo ] && ok || bad "inherited NaN plus new overflow: $(cat "$T/err")"
# whole-model methods (pcb over the flattened model, opcm) encode through the same check: float16 overflow
for i in 1 2; do expect 0 "$G" synth nh$i --like nhuge --delta 0.01 --seed $((40 + i)); done
for m in pcb opcm; do
    printf 'merge_method: %s\nbase_model: nhuge\nmodels:\n  - model: nh1\n  - model: nh2\ndtype: float16\n' $m > nf-$m.yml
    expect 1 "$G" merge nf-$m.yml nfo
    grep -q "tensor 'model.norm.weight': the $m merge gives .*F16 overflow" "$T/err" && [ ! -e nfo ] && [ ! -e nfo.opcm-state.safetensors ] && ok || bad "$m float16 overflow: $(cat "$T/err")"
done
# task arithmetic with a huge weight: the plan passes (finite), the values overflow float32
printf 'merge_method: task_arithmetic\nbase_model: nb\nmodels:\n  - model: nbig\n    parameters: {weight: 3e38}\ndtype: float32\n' > nf2.yml
expect 1 "$G" merge nf2.yml nfo
grep -q "task_arithmetic merge gives" "$T/err" && [ ! -e nfo ] && ok || bad "task_arithmetic overflow: $(cat "$T/err")"

# ---- fault injection during a merge (sanitizer build only) ----
if [ "$FAULTS" = faults ]; then
    for spec in open:4 mkdir:1 write:1 write:4 fsync:1 fsync:3 rename:1; do
        for e in ENOSPC EIO; do
            GRAFT_FAULT_IO="$spec:$e" "$G" merge ex-ties.yml fo --out-shard-size 100K >/dev/null 2>"$T/err"
            rc=$?
            if [ $rc = 0 ]; then
                "$G" verify fo >/dev/null 2>&1 && ok || bad "merge fault $spec: success but invalid output"
                rm -rf fo
            else
                [ $rc = 1 ] || [ $rc = 3 ] && [ ! -e fo ] && ok || bad "merge fault $spec:$e: exit $rc or output left: $(head -c 300 "$T/err")"
            fi
            ls -A | grep -q "graft-tmp" && bad "merge fault $spec:$e left a temp folder" || ok
        done
    done
    alloc_faults 1 fa "$G" merge ex-tok.yml fa
    alloc_faults 7 ft "$G" merge ex-ties.yml ft --threads 2 # selection pools, tie prefixes, histograms
fi

echo "$pass passed, $fail failed"
[ $fail = 0 ]
