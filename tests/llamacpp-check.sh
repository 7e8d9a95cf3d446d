#!/bin/sh
# Acceptance against llama.cpp itself (opt-in, never part of `make test`: llama.cpp is not a
# dependency). Point LLAMA_CPP_BIN at a folder with llama-tokenize and llama-perplexity built from a
# llama.cpp checkout (2025 or later). For Llama (llama3 BPE), Llama (SentencePiece, tied), Qwen2, Llama
# with llama3 rope_scaling, Mixtral (stacked experts), Phi-3 (fused qkv / gate_up; 128k with LongRoPE
# factors), Gemma 2 (26 layers, the 2B's count, for which llama.cpp scales queries by 1/sqrt(head_dim)),
# Qwen3 and Gemma 3 (these two need a 2025-04 or later llama.cpp; skipped by older ones), the Gemmas
# with sliding windows shorter than the chunks, converted at every output type, this checks that llama.cpp loads each file, tokenizes a
# multilingual text to exactly graft's ids (HF tokenizer.json and the GGUF's own vocabulary), and that
# its perplexity equals the one graft computes from its own logits over the same chunks
# (llama-perplexity scores positions n/2 … n−2 of each n-token chunk whose first token is replaced
# by BOS when the model adds one): to 0.2 % for f32 files, 1 % for f16/bf16 and 3 % for q8_0/q4_0
# (llama.cpp rounds or quantizes the activations for those). The output matrix of each random model is scaled up so that its
# predictions are sharp (perplexity far below the vocabulary size), which makes the comparison mean
# something. Gemma 1 files are only loaded and tokenized (graft's evaluator does not run Gemma 1).
# Usage: LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin [MODELS="l32 lb …"] tests/llamacpp-check.sh BUILD_DIR
set -u
B=${1:?build dir}
: "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to llama.cpp's build/bin}"
G="$PWD/$B/graft"
TREF="$PWD/tests/ref/tok_ref.py"
CFG="$PWD/tests/configs"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1
N=64
# sharpen DIR FACTOR: multiply the output matrix (lm_head, or the tied embeddings) in place
sharpen() {
    "$PY" - "$1" "$2" <<'PYEOF' || bad "sharpen $1"
import json, struct, sys
import numpy as np
p, f = sys.argv[1] + "/model.safetensors", float(sys.argv[2])
b = bytearray(open(p, "rb").read()); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
name = [k for k in h if k.endswith("lm_head.weight")] or [k for k in h if k.endswith("embed_tokens.weight")]
name = name[0]
t = h[name]; lo, hi = t["data_offsets"]; lo += 8 + n; hi += 8 + n
if t["dtype"] == "F32":
    b[lo:hi] = (np.frombuffer(bytes(b[lo:hi]), "<f4") * np.float32(f)).astype("<f4").tobytes()
elif t["dtype"] == "BF16":
    v = (np.frombuffer(bytes(b[lo:hi]), "<u2").astype(np.uint32) << 16).view(np.float32) * np.float32(f)
    b[lo:hi] = (v.view(np.uint32) >> 16).astype("<u2").tobytes()
else:
    b[lo:hi] = (np.frombuffer(bytes(b[lo:hi]), "<f2") * np.float16(f)).astype("<f2").tobytes()
open(p, "wb").write(b)
PYEOF
}
S="--layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 640"
expect 0 "$G" synth l32 --dtype f32 $S --seed 1
"$PY" -c 'import json; c = json.load(open("l32/config.json")); c["attention_bias"] = True; json.dump(c, open("lbc.json", "w"))' || bad "bias fixture"
expect 0 "$G" synth lb --like-config lbc.json --seed 11 # q/k/v/o biases: q/k's permuted as llama.cpp's converter does
expect 0 "$G" synth lbf --dtype bf16 --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 4 --vocab 700 --tie --seed 2
expect 0 "$G" synth q2 --arch qwen2 --dtype f16 $S --seed 3
"$PY" "$TREF" make llama3 l32 && "$PY" "$TREF" make llama3 lb && "$PY" "$TREF" make spm lbf && "$PY" "$TREF" make qwen2 q2 || bad "tokenizer fixtures"
expect 0 "$G" synth mx --like-config "$CFG/mixtral-8x7b.json" $S --experts 4 --dtype f32 --seed 4
expect 0 "$G" synth p4 --like-config "$CFG/phi-3-mini-4k.json" $S --dtype bf16 --seed 5
expect 0 "$G" synth p128 --like-config "$CFG/phi-3-mini-128k.json" --layers 2 --hidden 192 --intermediate 96 --heads 2 --kv-heads 2 --vocab 640 --dtype f32 --seed 6
expect 0 "$G" synth gm2 --like-config "$CFG/gemma-2-9b.json" --layers 26 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --head-dim 32 --vocab 640 --dtype f32 --seed 7
"$PY" -c 'import json; c = json.load(open("gm2/config.json")); c["query_pre_attn_scalar"] = 32; json.dump(c, open("gm2/config.json", "w"), indent=2)' || bad "gemma 2 fixture"
expect 0 "$G" synth gm1 --arch gemma --dtype bf16 $S --seed 8
expect 0 "$G" synth q3 --like-config "$CFG/qwen3-8b.json" $S --head-dim 32 --dtype bf16 --seed 9
# Gemma 3 (vision-language checkpoint; its text decoder converts): 8 layers, so 0–4 and 6–7 slide and 5
# is global (with linear RoPE scaling)
expect 0 "$G" synth gm3 --like-config "$CFG/gemma-3-4b.json" --layers 8 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --head-dim 32 --vocab 640 --dtype f32 --seed 10
"$PY" -c 'import json; c = json.load(open("gm3/config.json")); c["text_config"].update(query_pre_attn_scalar=32, sliding_window=16); json.dump(c, open("gm3/config.json", "w"), indent=2)' || bad "gemma 3 fixture"
# a sliding window shorter than the 64-token chunks, so that it matters (not for Phi-3: llama.cpp
# disabled Phi-3's sliding window in mid-2025, ggml-org/llama.cpp#13676, and computes full attention)
"$PY" -c 'import json, sys
for m in sys.argv[1:]:
    c = json.load(open(m + "/config.json")); c["sliding_window"] = 16; json.dump(c, open(m + "/config.json", "w"), indent=2)' gm2 || bad "sliding window fixture"
for m in mx p4 p128 gm2 gm1 gm3; do "$PY" "$TREF" make spm $m || bad "$m tokenizer fixture"; done
"$PY" "$TREF" make qwen2 q3 || bad "q3 tokenizer fixture"
for m in l32 lb lbf q2 mx p4 p128 gm2 gm1 q3 gm3; do sharpen $m 40; done
# llama3 rope_scaling (written as rope_freqs): l32 with its config changed
cp -r l32 r3 && "$PY" -c 'import json; c = json.load(open("r3/config.json")); c["rope_scaling"] = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64, "rope_type": "llama3"}; json.dump(c, open("r3/config.json", "w"))' || bad "llama3 fixture"
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import tok_ref; open("t.txt", "w").write(tok_ref.CORPUS * 3)' "$(dirname "$TREF")"
for m in ${MODELS:-l32 lb lbf q2 r3 mx p4 p128 gm2 gm1 q3 gm3}; do
    for t in f32 f16 bf16 q8_0 q4_0; do
        f=$m-$t.gguf
        expect 0 "$G" convert $m $f --type $t
        if ! "$LLAMA_CPP_BIN/llama-tokenize" -m $f -f t.txt --ids --log-disable > lc.txt 2>"$T/err"; then
            # Qwen3 and Gemma 3 need a llama.cpp from April 2025 or later
            "$LLAMA_CPP_BIN/llama-tokenize" -m $f -f t.txt --ids > /dev/null 2>"$T/err2"
            if grep -q "unknown model architecture" "$T/err2"; then echo "skip - $f: this llama.cpp does not know its architecture"; continue; fi
            bad "llama-tokenize $f: $(tail -3 "$T/err")"
        fi
        "$G" tokenize $m t.txt --bos > hf.ids
        "$G" tokenize $f t.txt --bos > gg.ids # the GGUF's own vocabulary, rebuilt
        for ids in hf.ids gg.ids; do
            "$PY" -c 'import sys, ast; a = ast.literal_eval(open("lc.txt").read().strip()); b = [int(x) for x in open(sys.argv[1]).read().split()]; sys.exit(0 if a == b else 1)' $ids \
                && ok || bad "llama.cpp tokenizes $f differently from graft ($ids): $(head -c 300 lc.txt) vs $(head -c 300 $ids)"
        done
        "$LLAMA_CPP_BIN/llama-perplexity" -m $f -f t.txt -c $N -b $N -t 2 > pp.err 2>&1 # newer builds log from a thread, to either stream
        lc=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' pp.err)
        [ -n "$lc" ] || { bad "llama-perplexity $f: $(tail -3 pp.err)"; continue; }
        # graft: the same chunks, first token → BOS, logits dumped, scored as llama-perplexity does
        "$G" tokenize $m t.txt > nb.ids
        bos=0; [ "$(wc -w < hf.ids)" = "$(wc -w < nb.ids)" ] || bos=1 # the model adds BOS
        if [ $m = gm1 ]; then rm -f w*.ids; continue; fi
        "$PY" - "$N" "$bos" <<'PYEOF'
import sys
n, bos = int(sys.argv[1]), int(sys.argv[2])
ids = [int(x) for x in open("hf.ids").read().split()]
for c in range(len(ids) // n):
    w = ids[c * n:(c + 1) * n]
    if bos: w[0] = ids[0]
    open("w%03d.ids" % c, "w").write(" ".join(map(str, w)))
PYEOF
        set -- ; for w in w*.ids; do set -- "$@" --tokens "$w"; done
        expect 0 "$G" eval $f "$@" --ctx $N --no-bos --dump-logits lg.bin
        # llama.cpp multiplies f16 / bf16 matrices with activations rounded to f16 / bf16, and quantized
        # ones with activations quantized to 8 bits; graft keeps activations in f32. With the sharpened
        # output (mean NLL ≈ 20 nats) these tolerances are 0.0001–0.0015 of the NLL.
        tol=0.002; case $t in f16|bf16) tol=0.01 ;; q*) tol=0.03 ;; esac
        "$PY" - "$N" "$lc" "$tol" <<'PYEOF' && ok || bad "perplexity of $f: llama.cpp $lc, graft $(cat gp.txt)"
import sys, glob, numpy as np
n, lc, tol = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
ws = [np.array([int(x) for x in open(f).read().split()]) for f in sorted(glob.glob("w*.ids"))]
lg = np.fromfile("lg.bin", dtype=np.float32).reshape(len(ws), n, -1).astype(np.float64)
nll = []
for w, l in zip(ws, lg):
    for j in range(n // 2, n - 1):
        z = l[j] - l[j].max()
        nll.append(np.log(np.exp(z).sum()) - z[w[j + 1]])
ppl = float(np.exp(np.mean(nll)))
open("gp.txt", "w").write("%.4f" % ppl)
sys.exit(0 if abs(ppl / lc - 1) < tol else 1)
PYEOF
        rm -f w*.ids
    done
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
