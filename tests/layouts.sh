#!/bin/sh
# Real checkpoint layouts (tests/configs: the config.json of Llama-3.1-8B, Llama-3.2-1B, Qwen2.5-7B,
# Qwen3-8B, Mistral-7B-v0.3, Mixtral-8x7B, Gemma-2-9B, Gemma-3-4B, Phi-3-mini 4k and 128k):
# - tests/ref/layout_ref.py (written from transformers' modules) gives, at full size, exactly the shard
#   of every tensor and the total_size of the index files the Hub publishes (tests/configs/index);
# - `graft synth --like-config`, scaled down, writes exactly the tensors, shapes, dtype, shards and
#   config.json that layout_ref.py expects;
# - every merge method, a frankenmerge, LoRA extract/apply, prune, quantize/dequantize run on each
#   layout (fused Phi-3 tensors merged as one tensor, Gemma's w − 1 norms as stored); upcycle, moe,
#   expand, GGUF conversion and eval run where they apply and otherwise exit 4 with one line saying
#   what they cover, writing nothing (GGUF round trips per architecture: tests/gguf-e2e.sh).
# Usage: tests/layouts.sh BUILD_DIR [quick]   (quick, for the sanitizer build: every method on the
# Phi-3, Gemma 3 and Mixtral layouts, linear / ties / slerp on the others)
set -u
B=${1:?build dir}
QUICK=${2:-}
G="$PWD/$B/graft"
CFG="$PWD/tests/configs"
REF="$PWD/tests/ref/layout_ref.py"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
# names DIR: the sorted tensor names of a model
names() { "$G" inspect "$1" --json | sed -n 's/^ *"name": "\([^"]*\)".*/\1/p' | sort; }
cd "$T" || exit 1

SHAPE="--layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 256"
OVR="layers=2 hidden=64 intermediate=96 heads=4 kv=2 vocab=256"
# every method, with the parameters it needs; @B the base, @A and @C two fine-tunes
methods='linear|models: [{model: @A, parameters: {weight: 0.6}}, {model: @C, parameters: {weight: 0.4}}]
slerp|base_model: @A\nmodels: [{model: @A}, {model: @C}]\nparameters: {t: [0, 0.5, 1]}
nuslerp|models: [{model: @A, parameters: {weight: 0.5}}, {model: @C, parameters: {weight: 0.5}}]
multislerp|models: [{model: @A, parameters: {weight: 0.5}}, {model: @C, parameters: {weight: 0.5}}]
karcher|models: [{model: @A}, {model: @C}]
task_arithmetic|base_model: @B\nmodels: [{model: @A, parameters: {weight: 0.5}}, {model: @C, parameters: {weight: 0.5}}]
ties|base_model: @B\nmodels: [{model: @A, parameters: {weight: 0.5, density: 0.5}}, {model: @C, parameters: {weight: 0.5, density: 0.5}}]
dare_linear|base_model: @B\nmodels: [{model: @A, parameters: {weight: 0.5, density: 0.5}}, {model: @C, parameters: {weight: 0.5, density: 0.5}}]
dare_ties|base_model: @B\nmodels: [{model: @A, parameters: {weight: 0.5, density: 0.5}}, {model: @C, parameters: {weight: 0.5, density: 0.5}}]
breadcrumbs|base_model: @B\nmodels: [{model: @A, parameters: {weight: 0.5, density: 0.5}}, {model: @C, parameters: {weight: 0.5, density: 0.5}}]
breadcrumbs_ties|base_model: @B\nmodels: [{model: @A, parameters: {weight: 0.5, density: 0.5}}, {model: @C, parameters: {weight: 0.5, density: 0.5}}]
della|base_model: @B\nmodels: [{model: @A, parameters: {weight: 0.5, density: 0.5, epsilon: 0.1}}, {model: @C, parameters: {weight: 0.5, density: 0.5, epsilon: 0.1}}]
della_linear|base_model: @B\nmodels: [{model: @A, parameters: {weight: 0.5, density: 0.5, epsilon: 0.1}}, {model: @C, parameters: {weight: 0.5, density: 0.5, epsilon: 0.1}}]
sce|base_model: @B\nmodels: [{model: @A}, {model: @C}]
ram|base_model: @B\nmodels: [{model: @A}, {model: @C}]
ramplus_tl|base_model: @B\nmodels: [{model: @A}, {model: @C}]
model_stock|base_model: @B\nmodels: [{model: @A}, {model: @C}]
nearswap|base_model: @B\nmodels: [{model: @A}]\nparameters: {t: 0.01}
arcee_fusion|base_model: @B\nmodels: [{model: @A}]
passthrough|models: [{model: @A}]
iso_c|base_model: @B\nmodels: [{model: @A}, {model: @C}]
iso_cts|base_model: @B\nmodels: [{model: @A}, {model: @C}]
tsv|base_model: @B\nmodels: [{model: @A}, {model: @C}]
pcb|base_model: @B\nmodels: [{model: @A}, {model: @C}]
opcm|base_model: @B\nmodels: [{model: @A}, {model: @C}]'

# the full-size layouts: every tensor's shard and total_size as in the model.safetensors.index.json the
# Hub publishes (tests/configs/index; bf16 as published, the Instruct and -it variants share the layout)
for idx in "$CFG"/index/*.index.json; do
    m=$(basename "$idx" .index.json)
    if "$PY" "$REF" index "$CFG/$m.json" "$idx" bfloat16 > "$T/py" 2>&1; then ok; else bad "$m: $(cat "$T/py")"; fi
done

# refusals: a config graft has no layout for, hostile shapes, option clashes (exit 2, nothing written)
printf '{"model_type": "gpt_bigcode", "hidden_size": 64}' > c1.json
printf '{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 3, "num_key_value_heads": 2}' > c2.json
printf '{"model_type": "llama", "hidden_size": 1099511627776, "num_attention_heads": 4}' > c3.json
printf '[1, 2]' > c4.json
printf '{"model_type": 7}' > c5.json
for c in c1 c2 c3 c4 c5; do
    expect 2 "$G" synth "x-$c" --like-config $c.json
    [ "$(wc -l < "$T/err")" = 1 ] && grep -q "$c.json" "$T/err" && [ ! -e "x-$c" ] && ok || bad "synth --like-config $c: $(cat "$T/err")"
    [ $c = c1 ] && { grep -q "model_type 'gpt_bigcode' has no known layout (llama, mistral" "$T/err" && ok || bad "unknown model_type: $(cat "$T/err")"; }
    [ $c = c2 ] && { grep -q "inconsistent shape: .*heads 3, kv heads 2" "$T/err" && ok || bad "inconsistent heads: $(cat "$T/err")"; }
done
expect 2 "$G" synth x --like-config "$CFG/llama-3.1-8b.json" --arch qwen2
expect 2 "$G" synth x --head-dim 8
expect 1 "$G" synth x --like-config missing.json
# --preset: the compiled-in copy of a tests/configs file gives the same bytes as --like-config on it
expect 0 "$G" synth pa --preset phi-3-mini-4k $SHAPE
expect 0 "$G" synth pb --like-config "$CFG/phi-3-mini-4k.json" $SHAPE
cmp -s pa/model.safetensors pb/model.safetensors && cmp -s pa/config.json pb/config.json && ok || bad "--preset differs from --like-config"
rm -rf pa pb
expect 2 "$G" synth x --preset llama-9
grep -q "no preset 'llama-9'; the presets are: .*llama-3.1-8b" "$T/err" && ok || bad "unknown preset: $(cat "$T/err")"
expect 2 "$G" synth x --preset qwen3-8b --like-config "$CFG/qwen3-8b.json"
[ ! -e x ] && ok || bad "synth refusals left x"

for cfg in "$CFG"/*.json; do
    L=$(basename "$cfg" .json)
    hd="" shape=$SHAPE ovr=$OVR
    case $L in
    gemma-2-*) hd="--head-dim 32"; ovr="$OVR head_dim=32" ;; # head_dim ≠ hidden / heads, as in Gemma 2
    phi-3-mini-128k) # LongRoPE's 48 factors per list need head_dim 96 (Phi-3 takes hidden / heads)
        shape="--layers 2 --hidden 192 --intermediate 96 --heads 2 --kv-heads 2 --vocab 256"; ovr="layers=2 hidden=192 intermediate=96 heads=2 kv=2 vocab=256" ;;
    esac
    expect 0 "$G" synth "$L" --like-config "$cfg" $shape $hd --seed 1 --threads 2
    if "$PY" "$REF" check "$cfg" "$L" 5000000000 $ovr > "$T/py" 2>&1; then ok; else bad "$L layout: $(cat "$T/py")"; fi
    # shard layout: huggingface_hub's rule in state-dict order, with small shards
    expect 0 "$G" synth "$L-sh" --like-config "$cfg" $shape $hd --out-shard-size 20000
    if "$PY" "$REF" check "$cfg" "$L-sh" 20000 $ovr > "$T/py" 2>&1; then ok; else bad "$L shards: $(cat "$T/py")"; fi
    expect 0 "$G" verify "$L-sh"
    expect 0 "$G" synth "$L-a" --like "$L" --delta 0.01 --seed 2
    expect 0 "$G" synth "$L-c" --like "$L-sh" --delta 0.01 --seed 3
    tensors=$(names "$L")
    mlist=$methods
    case $QUICK:$L in quick:phi-3-mini-4k|quick:gemma-3-4b|quick:mixtral-8x7b|:*) ;; *) mlist=$(printf '%s\n' "$methods" | grep -E '^(linear|ties|slerp)\|') ;; esac
    printf '%s\n' "$mlist" | while IFS='|' read -r m body; do
        printf 'merge_method: %s\n%b\n' "$m" "$body" | sed "s/@B/$L/g; s/@A/$L-a/g; s/@C/$L-c/g" > "$L-$m.yml"
        if "$G" merge "$L-$m.yml" "$L-$m" --threads 2 > /dev/null 2> "$T/err" && "$G" verify "$L-$m" > /dev/null 2>&1 &&
            [ "$(names "$L-$m")" = "$tensors" ]; then
            echo ok
        else
            echo "not ok - $L $m: $(cat "$T/err")"
        fi
        rm -rf "$L-$m" "$L-$m.opcm-state.safetensors"
    done > "$T/res"
    pass=$((pass + $(grep -c '^ok' "$T/res"))); fail=$((fail + $(grep -c '^not ok' "$T/res")))
    grep '^not ok' "$T/res"
    # frankenmerge: a[0,2) + c[1,2) = 3 layers, renumbered; the config's layer count follows
    printf 'slices:\n  - sources: [{model: %s-a, layer_range: [0, 2]}]\n  - sources: [{model: %s-c, layer_range: [1, 2]}]\nmerge_method: passthrough\n' "$L" "$L" > "$L-stack.yml"
    expect 0 "$G" merge "$L-stack.yml" "$L-stack"
    n=$(names "$L-stack" | grep -v vision_tower | sed -n 's/^[a-z_.]*layers\.\([0-9][0-9]*\)\..*/\1/p' | sort -n | uniq | tail -n 1)
    [ "$n" = 2 ] && grep -q '"num_hidden_layers": 3' "$L-stack/config.json" && ok || bad "$L: frankenmerge has last layer '$n' / $(grep num_hidden_layers "$L-stack/config.json")"
    # ---- the other operations: where they apply they run and keep the layout; where they do not,
    # exit 4 with one line saying what they cover, and nothing written
    llama=false; case $L in llama-*|mistral-*) llama=true ;; esac
    grow=$llama; case $L in qwen2.5-*) grow=true ;; esac
    gguf=$grow gmsg="GGUF conversion covers"; case $L in qwen3-*|mixtral-*|phi-3-*) gguf=true ;; esac
    # Gemma 2 and 3 convert, but these scaled-down head_dims (32, 16) are not their query_pre_attn_scalar
    # (256), which llama.cpp cannot store: refused rather than written to compute another model
    case $L in gemma-2-*) gmsg="query_pre_attn_scalar 256: llama.cpp scales Gemma 2 queries by 1/sqrt(32)" ;;
               gemma-3-*) gmsg="query_pre_attn_scalar 256: llama.cpp scales Gemma 3 queries by 1/sqrt(16)" ;; esac
    ev=$gguf; case $L in mixtral-*|phi-3-*|gemma-*) ev=true ;; esac
    expect 0 "$G" extract-lora --base "$L" --model "$L-a" "$L-lora" --rank 4
    expect 0 "$G" apply-lora "$L" "$L-lora" "$L-al"
    [ "$(names "$L-al")" = "$tensors" ] && ok || bad "$L: apply-lora changed the tensor names"
    expect 0 "$G" prune "$L-a" "$L-pr" --sparsity 0.5
    [ "$(names "$L-pr")" = "$tensors" ] && ok || bad "$L: prune changed the tensor names"
    expect 0 "$G" quantize "$L-a" "$L-q" --scheme int8
    expect 0 "$G" dequantize "$L-q" "$L-dq"
    [ "$(names "$L-dq")" = "$tensors" ] && ok || bad "$L: quantize + dequantize changed the tensor names"
    printf 'base_model: %s\ngate_mode: random\nexperts:\n  - source_model: %s-a\n  - source_model: %s-c\n' "$L" "$L" "$L" > "$L-moe.yml"
    echo "1 5 9 13 17 21 25 29 33 37 41 45 49 53 57 61 65 69 73 77" > ids.txt
    # name | applies | command | its output | the refusal's words
    for op in "upcycle|$llama|upcycle $L $L-up --experts 2 --top-k 1|$L-up|upcycling writes Mixtral's layout" \
              "moe|$llama|moe $L-moe.yml $L-moe|$L-moe|output needs" \
              "expand|$grow|expand $L $L-ex --hidden 96|$L-ex|expand applies to Llama, Mistral and Qwen2" \
              "gguf|$gguf|convert $L $L.gguf --type q8_0|$L.gguf|$gmsg" \
              "eval|$ev|eval $L --tokens ids.txt --ctx 16||is not supported by the evaluator"; do
        name=${op%%|*}; r=${op#*|}; applies=${r%%|*}; r=${r#*|}; cmd=${r%%|*}; r=${r#*|}; out=${r%%|*}; msg=${r#*|}
        if [ "$applies" = true ]; then
            expect 0 "$G" $cmd
        else
            expect 4 "$G" $cmd
            [ "$(wc -l < "$T/err")" = 1 ] && grep -q "$msg" "$T/err" && { [ -z "$out" ] || [ ! -e "$out" ]; } && ok || bad "$L $name: $(cat "$T/err")"
        fi
    done
    rm -rf "$L-a" "$L-c" "$L-sh" "$L-stack" "$L-lora" "$L-al" "$L-pr" "$L-q" "$L-dq" "$L-up" "$L-moe" "$L-ex" "$L.gguf"
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
