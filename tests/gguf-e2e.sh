#!/bin/sh
# GGUF end to end: `graft convert --to gguf` of Llama (f32 and bf16 sources, tied and untied), Qwen2
# (biases, no q/k permutation) and a SentencePiece-style tokenizer, at every output type, checked by an
# independent Python GGUF reader (tests/ref/gguf_ref.py): names, shapes, the q/k permutation, bytes of
# every tensor (q8_0 / q4_0 recomputed with ggml's reference quantizers), metadata and tokenizer arrays;
# graft's own reader accepts each file; thread independence; refusals (unsupported architecture,
# existing output, missing tokenizer) leave nothing behind.
# Usage: tests/gguf-e2e.sh BUILD_DIR [faults]
set -u
B=${1:?build dir}
FAULTS=${2:-}
G="$PWD/$B/graft"
REF="$PWD/tests/ref/gguf_ref.py"
TREF="$PWD/tests/ref/tok_ref.py"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1

expect 0 "$G" synth l32 --dtype f32 --layers 2 --hidden 64 --heads 4 --kv-heads 2 --vocab 640 --seed 1
expect 0 "$G" synth lbf --dtype bf16 --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 4 --vocab 700 --tie --seed 2
expect 0 "$G" synth q2 --arch qwen2 --dtype f16 --layers 2 --hidden 64 --heads 4 --kv-heads 2 --vocab 640 --seed 3
"$PY" "$TREF" make llama3 l32 && "$PY" "$TREF" make spm lbf && "$PY" "$TREF" make qwen2 q2 || bad "tokenizer fixtures"
for m in l32 lbf q2; do
    for t in f32 f16 bf16 q8_0 q4_0; do
        expect 0 "$G" convert $m $m-$t.gguf --to gguf --type $t --threads 2
        expect 0 "$G" verify $m-$t.gguf
        if "$PY" "$REF" check $m $m-$t.gguf $t > "$T/py" 2>&1; then ok; else bad "convert $m to $t: $(cat "$T/py")"; fi
    done
done
"$G" inspect lbf-q8_0.gguf | grep -q 'tokenizer.ggml.model *"llama"' && "$G" inspect lbf-q8_0.gguf | grep -q "tokenizer.ggml.scores" && ok || bad "SentencePiece-style tokenizer metadata"
"$G" inspect q2-f16.gguf | grep -q 'tokenizer.ggml.pre *"qwen2"' && "$G" inspect q2-f16.gguf | grep -q "blk.0.attn_q.bias" && ok || bad "Qwen2 metadata / biases"
"$G" inspect l32-f16.gguf | grep -q 'tokenizer.ggml.pre *"llama-bpe"' && ok || bad "Llama 3 pre-tokenizer name"
# the OUT suffix chooses GGUF; default type f16; same bytes for any thread count
expect 0 "$G" convert l32 auto.gguf --threads 1
cmp -s auto.gguf l32-f16.gguf && ok || bad "convert to gguf depends on --threads or the default type"
# graft eval on the GGUF conversion: the F32 file scores exactly what the HF folder does (the q/k
# permutation undone), to 0.1 % at least; quantized files stay close; the tokenizer comes from
# --tokenizer for text, and BOS from the GGUF metadata for ids
printf 'The quick brown fox jumps over the lazy dog. Größe über Übung 12345, the the then.\n敏捷的棕色狐狸跳过了懒狗。\n' > t.txt
for m in l32 q2; do
    "$G" eval $m --text t.txt --ctx 24 --json > hf.json 2>"$T/err" || bad "eval $m: $(cat "$T/err")"
    "$G" tokenize $m t.txt > t.ids
    for t in f32 q8_0; do
        "$G" eval $m-$t.gguf --text t.txt --tokenizer $m --ctx 24 --json > g1.json 2>"$T/err" || bad "eval $m-$t.gguf: $(cat "$T/err")"
        "$G" eval $m-$t.gguf --tokens t.ids --ctx 24 --json > g2.json 2>"$T/err" || bad "eval $m-$t.gguf --tokens: $(cat "$T/err")"
        tol=0.001; [ $t = q8_0 ] && tol=0.05
        "$PY" -c 'import json, sys, math; h, a, b = (json.load(open(f)) for f in ("hf.json", "g1.json", "g2.json")); t = float(sys.argv[1])
ok = all(abs(math.exp(x["nll"]) / math.exp(h["nll"]) - 1) <= t and x["tokens_scored"] == h["tokens_scored"] and x["bos"] == h["bos"] for x in (a, b))
sys.exit(0 if ok else 1)' $tol && ok || bad "eval of $m-$t.gguf differs from the HF folder: $(cat hf.json g1.json g2.json)"
    done
done
expect 3 "$G" eval l32-f32.gguf --text t.txt
grep -q "needs a tokenizer: give --tokenizer DIR" "$T/err" && ok || bad "eval gguf --text without a tokenizer: $(cat "$T/err")"
# merging straight to GGUF: the same bytes as merging to a folder and converting it
expect 0 "$G" synth f1 --like l32 --delta 0.02 --seed 11
expect 0 "$G" synth f2 --like l32 --delta 0.02 --seed 12
printf 'merge_method: ties\nbase_model: l32\nmodels:\n  - model: f1\n    parameters: {weight: 0.6, density: 0.5}\n  - model: f2\n    parameters: {weight: 0.4, density: 0.5}\ndtype: float32\n' > ties.yml
expect 0 "$G" merge ties.yml merged.gguf --type q4_0 --threads 2
expect 0 "$G" merge ties.yml merged --threads 1
expect 0 "$G" convert merged merged2.gguf --type q4_0
cmp -s merged.gguf merged2.gguf && ok || bad "merge to GGUF differs from merge + convert"
! ls -A | grep -q graft-tmp && ok || bad "merge to GGUF left its temporary folder"
expect 1 "$G" merge ties.yml merged.gguf
grep -q "already exists" "$T/err" && ok || bad "merge over an existing GGUF: $(cat "$T/err")"
expect 0 "$G" merge ties.yml m.out --format gguf --type q8_0
expect 0 "$G" verify m.out
# refusals
expect 1 "$G" convert l32 l32-f16.gguf --to gguf
grep -q "already exists; use --force" "$T/err" && ok || bad "existing gguf output: $(cat "$T/err")"
expect 0 "$G" convert l32 l32-f16.gguf --to gguf --force
expect 0 "$G" synth g2 --arch gpt2 --layers 1 --hidden 32 --intermediate 48 --heads 4 --vocab 64
expect 3 "$G" convert g2 g2.gguf
grep -q "GGUF conversion covers" "$T/err" && [ ! -e g2.gguf ] && ! ls -A | grep -q graft-tmp && ok || bad "gpt2 to gguf: $(cat "$T/err")"
cp -r l32 notok && rm notok/tokenizer.json
expect 3 "$G" convert notok notok.gguf
grep -q "needs tokenizer.json" "$T/err" && [ ! -e notok.gguf ] && ! ls -A | grep -q graft-tmp && ok || bad "no tokenizer: $(cat "$T/err")"
expect 2 "$G" convert l32 x.gguf --type q5_k
if [ "$FAULTS" = faults ]; then
    alloc_faults 3 fa.gguf "$G" convert l32 fa.gguf --type q4_0 --threads 2
    for spec in write fsync rename; do
        GRAFT_FAULT_IO="$spec:1:ENOSPC" "$G" convert l32 fio.gguf >/dev/null 2>"$T/err"
        [ $? = 1 ] && [ ! -e fio.gguf ] && ! ls -A | grep -q graft-tmp && ok || bad "gguf convert with a failing $spec: $(cat "$T/err")"
    done
fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
