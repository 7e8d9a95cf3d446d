#!/bin/sh
# Benchmark: merging 8 rank-16 LoRA adapters (every attention and MLP projection, PEFT's all-linear) of a
# Llama-3.2-1B-shaped BF16 model (`graft synth --like-config tests/configs/llama-3.2-1b.json`), 2 threads:
#   adapter space   graft merge-lora: cat (the exact sum, rank 128), svd (rank 16), ties (factors, rank 16)
#   densified       the route without adapter space: graft merge task_arithmetic of the 8 BASE+ADAPTER
#                   models (each adapter applied into a full model first, as MergeKit's LoRA references
#                   are), then graft extract-lora --rank 16 of the merge against the base
# Wall time (median of RUNS, default 3; the densified route once: BASE_RUNS, default 1) and peak RssAnon
# (bench/peakrss.c). The adapters: random factors, A ~ N(0, 1/in), B ~ N(0, 0.01²), lora_alpha 32.
# Usage: bench/lora-merge.sh [WORKDIR]
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench-lora-merge"}
RUNS=${RUNS:-3}
PY=${PYTHON:-/usr/bin/python3}
mkdir -p "$W"
cc -O2 -o "$W/peakrss" "$ROOT/bench/peakrss.c"
cd "$W"
if [ ! -f ad8/adapter_config.json ]; then
    "$G" synth base --like-config "$ROOT/tests/configs/llama-3.2-1b.json" --dtype bf16 --seed 1 --force --threads 2 >/dev/null
    "$PY" - "$ROOT" <<'EOF'
import json, os, struct, sys
import numpy as np
sys.path.insert(0, os.path.join(sys.argv[1], "tests", "ref"))
from lora_ref import save
hdr = {}
for f in sorted(os.listdir("base")):
    if f.endswith(".safetensors"):
        b = open(os.path.join("base", f), "rb")
        n = struct.unpack("<Q", b.read(8))[0]
        hdr.update({k: v for k, v in json.loads(b.read(n)).items() if k != "__metadata__"})
proj = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
for i in range(1, 9):
    rng = np.random.default_rng(i)
    T = {}
    for k in sorted(hdr):
        if k.endswith(".weight") and any(p in k for p in proj):
            out, inp = hdr[k]["shape"]
            m = "base_model.model." + k[:-7]
            T[m + ".lora_A.weight"] = (rng.standard_normal((16, inp)) / np.sqrt(inp)).astype(np.float32)
            T[m + ".lora_B.weight"] = (rng.standard_normal((out, 16)) * 0.01).astype(np.float32)
    os.makedirs("ad%d" % i, exist_ok=True)
    save(os.path.join("ad%d" % i, "adapter_model.safetensors"), T)
    json.dump({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": list(proj), "task_type": "CAUSAL_LM",
               "fan_in_fan_out": False, "use_rslora": False}, open(os.path.join("ad%d" % i, "adapter_config.json"), "w"))
EOF
fi
for c in cat svd ties; do
    { echo "base_model: base"; echo "combination: $c"; echo "rank: 16"; echo "density: 0.5"; echo "adapters:"
      for i in 1 2 3 4 5 6 7 8; do echo "  - {adapter: ad$i, weight: 0.125}"; done; } > $c.yml
done
{ echo "merge_method: task_arithmetic"; echo "base_model: base"; echo "dtype: bfloat16"; echo "models:"
  for i in 1 2 3 4 5 6 7 8; do echo "  - model: base+ad$i"; echo "    parameters: {weight: 0.125}"; done; } > ta.yml
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# run OUT CMD...: wall seconds and peak RssAnon MiB ("S M"), OUT removed and everything written back first
run() { rm -rf "$1"; shift; sync; "$W/peakrss" "$@" 2>"$W/rss.txt" >/dev/null; s=$(grep -o 'wall_s=[0-9.]*' "$W/rss.txt" | cut -d= -f2);
        a=$(grep -o 'rssanon_kib=[0-9]*' "$W/rss.txt" | cut -d= -f2); echo "$s $((a / 1024))"; }
echo "8 rank-16 adapters (112 modules each) of a Llama-3.2-1B-shaped BF16 model, 2 threads"
for c in cat svd ties; do
    rs=$(for i in $(seq $RUNS); do run o-$c "$G" merge-lora $c.yml o-$c --threads 2; done)
    t=$(echo "$rs" | cut -d' ' -f1 | median) m=$(echo "$rs" | cut -d' ' -f2 | sort -n | tail -n 1)
    eval "t_$c=$t"
    printf 'graft merge-lora %-5s %8.2fs   peak RssAnon %5d MiB   adapter %s\n' "$c" "$t" "$m" "$(du -sh o-$c | cut -f1)"
done
dt=0 dm=0
for i in $(seq ${BASE_RUNS:-1}); do
    r1=$(run merged "$G" merge ta.yml merged --threads 2)
    r2=$(run ex "$G" extract-lora --base base --model merged ex --rank 16 --threads 2)
    dt=$(echo "$r1 $r2" | awk '{printf "%.2f", $1 + $3}')
    dm=$(echo "$r1 $r2" | awk '{print ($2 > $4 ? $2 : $4)}')
    echo "densified: merge of 8 applied models $(echo "$r1" | cut -d' ' -f1)s (peak RssAnon $(echo "$r1" | cut -d' ' -f2) MiB), extract-lora --rank 16 $(echo "$r2" | cut -d' ' -f1)s (peak RssAnon $(echo "$r2" | cut -d' ' -f2) MiB)"
done
printf 'densify-merge-extract   %8.2fs   peak RssAnon %5d MiB\n' "$dt" "$dm"
echo "ratios (densified / adapter space): cat $(echo "$dt $t_cat" | awk '{printf "%.0f", $1 / $2}')x, svd $(echo "$dt $t_svd" | awk '{printf "%.0f", $1 / $2}')x, ties $(echo "$dt $t_ties" | awk '{printf "%.0f", $1 / $2}')x"
rm -rf merged ex o-cat o-svd o-ties
