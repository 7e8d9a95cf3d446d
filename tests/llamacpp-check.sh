#!/bin/sh
# Acceptance against llama.cpp itself (opt-in, never part of `make test`: llama.cpp is not a
# dependency). Point LLAMA_CPP_BIN at a folder with llama-tokenize and llama-perplexity built from any
# llama.cpp checkout; for Llama (llama3 BPE), Llama (SentencePiece, tied) and Qwen2 models converted
# and Llama with llama3 rope_scaling, at every output type, this checks that llama.cpp loads each file, tokenizes a multilingual text to
# exactly graft's ids (HF tokenizer.json and the GGUF's own vocabulary), and that its perplexity
# equals the one graft computes from its own logits over the same chunks (llama-perplexity scores
# positions n/2 … n−2 of each n-token chunk whose first token is replaced by BOS): to 0.2 % for
# f32/f16/bf16 files, 2 % for q8_0/q4_0 (llama.cpp quantizes the activations too).
# Usage: LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin tests/llamacpp-check.sh BUILD_DIR
set -u
B=${1:?build dir}
: "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to llama.cpp's build/bin}"
G="$PWD/$B/graft"
TREF="$PWD/tests/ref/tok_ref.py"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1
N=64
expect 0 "$G" synth l32 --dtype f32 --layers 2 --hidden 64 --heads 4 --kv-heads 2 --vocab 640 --seed 1
expect 0 "$G" synth lbf --dtype bf16 --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 4 --vocab 700 --tie --seed 2
expect 0 "$G" synth q2 --arch qwen2 --dtype f16 --layers 2 --hidden 64 --heads 4 --kv-heads 2 --vocab 640 --seed 3
"$PY" "$TREF" make llama3 l32 && "$PY" "$TREF" make spm lbf && "$PY" "$TREF" make qwen2 q2 || bad "tokenizer fixtures"
# llama3 rope_scaling (written as rope_freqs): l32 with its config changed
cp -r l32 r3 && "$PY" -c 'import json; c = json.load(open("r3/config.json")); c["rope_scaling"] = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64, "rope_type": "llama3"}; json.dump(c, open("r3/config.json", "w"))' || bad "llama3 fixture"
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import tok_ref; open("t.txt", "w").write(tok_ref.CORPUS * 3)' "$(dirname "$TREF")"
for m in l32 lbf q2 r3; do
    for t in f32 f16 bf16 q8_0 q4_0; do
        f=$m-$t.gguf
        expect 0 "$G" convert $m $f --type $t
        "$LLAMA_CPP_BIN/llama-tokenize" -m $f -f t.txt --ids --log-disable > lc.txt 2>"$T/err" || bad "llama-tokenize $f: $(tail -3 "$T/err")"
        "$G" tokenize $m t.txt --bos > hf.ids
        "$G" tokenize $f t.txt --bos > gg.ids # the GGUF's own vocabulary, rebuilt
        for ids in hf.ids gg.ids; do
            "$PY" -c 'import sys, ast; a = ast.literal_eval(open("lc.txt").read().strip()); b = [int(x) for x in open(sys.argv[1]).read().split()]; sys.exit(0 if a == b else 1)' $ids \
                && ok || bad "llama.cpp tokenizes $f differently from graft ($ids): $(head -c 300 lc.txt) vs $(head -c 300 $ids)"
        done
        "$LLAMA_CPP_BIN/llama-perplexity" -m $f -f t.txt -c $N -b $N -t 2 > pp.out 2> pp.err
        lc=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' pp.err)
        [ -n "$lc" ] || { bad "llama-perplexity $f: $(tail -3 pp.err)"; continue; }
        # graft: the same chunks, first token → BOS, logits dumped, scored as llama-perplexity does
        bos=$("$PY" -c 'import json; print(json.load(open("'$m'/tokenizer_config.json")).get("add_bos_token") and 1 or 0)')
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
        # llama.cpp multiplies quantized matrices with activations quantized to 8 bits; graft keeps them in f32
        tol=0.002; case $t in q*) tol=0.02 ;; esac
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
