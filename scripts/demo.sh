#!/bin/sh
# `make demo`: generate a small model family with `graft synth`, inspect it, convert it (sharded) and
# verify the result — a real run on models the project makes itself.
set -eu
G="$PWD/build/graft"
D="$PWD/build/demo"
rm -rf "$D" && mkdir -p "$D" && cd "$D"
step() { printf '\n$ %s\n' "$*"; "$@"; }
step "$G" synth base --layers 4 --hidden 256 --intermediate 688 --heads 8 --kv-heads 4 --vocab 2048 --dtype bf16 --seed 1
step "$G" synth finetune --like base --delta 0.01 --seed 2
step "$G" inspect finetune
step "$G" convert finetune finetune-f16 --dtype f16 --out-shard-size 5M
step ls -l finetune-f16
step "$G" verify finetune-f16
step "$G" convert finetune-f16 finetune-f8.safetensors --dtype f8_e4m3
step "$G" verify finetune-f8.safetensors
step "$G" synth finetune2 --like base --delta 0.01 --seed 3
cat > ties.yml <<'YML'
merge_method: ties
base_model: base
models:
  - model: finetune
    parameters: {density: 0.5, weight: 1.0}
  - model: finetune2
    parameters: {density: 0.5, weight: [0.3, 0.7]}
parameters: {normalize: true}
dtype: bfloat16
YML
step cat ties.yml
step "$G" merge ties.yml merged --dry-run
step "$G" merge ties.yml merged
step "$G" verify merged
step "$G" extract-lora --base base --model finetune2 finetune2-lora --rank 16
step "$G" apply-lora base finetune2-lora finetune2-approx
step "$G" verify finetune2-approx
awk 'BEGIN { x = 7; for (i = 0; i < 600; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "%d ", x % 2048 } print "" }' > ids.txt
step "$G" eval base --tokens ids.txt --ctx 128 --batch 2
step "$G" eval merged --tokens ids.txt --ctx 128 --batch 2 --json
printf '\ndemo: all outputs are in %s\n' "$D"
