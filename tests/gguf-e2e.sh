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
# Llama with attention_bias (q/k/v/o biases): the q/k biases are permuted as their rows (llama.cpp's
# converter permutes them too; this used to loop forever), and eval of the F32 file gives the folder's
# logits bit for bit. A hostile file storing the 1-D q bias as Q8_0 (never written by a converter) is
# decoded before the un-permutation (it used to be read past its 68 bytes): it scores within Q8_0's
# rounding of the F32 file.
"$PY" -c 'import json; c = json.load(open("l32/config.json")); c["attention_bias"] = True; json.dump(c, open("lbc.json", "w"))' || bad "config edit"
expect 0 "$G" synth lb --like-config lbc.json --seed 4
expect 0 "$G" convert lb lb-f32.gguf --type f32
"$PY" -c 'import random; random.seed(7); print(" ".join(str(random.randrange(640)) for _ in range(100)))' > lb.ids
"$G" eval lb --tokens lb.ids --ctx 50 --no-bos --dump-logits lb-hf.bin > /dev/null 2>"$T/err" && "$G" eval lb-f32.gguf --tokens lb.ids --ctx 50 --no-bos --dump-logits lb-gg.bin --json > lb-gg.json 2>>"$T/err" &&
    cmp -s lb-hf.bin lb-gg.bin && ok || bad "Llama with biases: the GGUF's logits differ from the folder's: $(cat "$T/err")"
"$PY" "$REF" q8vec lb-f32.gguf blk.0.attn_q.bias lb-q8b.gguf || bad "q8vec"
"$G" eval lb-q8b.gguf --tokens lb.ids --ctx 50 --no-bos --json > lb-q8b.json 2>"$T/err" &&
    "$PY" -c 'import json, sys; a, b = (json.load(open(f))["nll"] for f in sys.argv[1:]); sys.exit(0 if abs(a - b) <= 1e-3 * abs(a) else 1)' lb-gg.json lb-q8b.json &&
    ok || bad "a Q8_0 q bias: $(cat "$T/err" lb-gg.json lb-q8b.json)"
# llama.cpp's defaults for metadata a file may lack: a Llama 3 kind of BPE vocabulary without
# tokenizer.ggml.add_bos_token still adds BOS (llama-vocab.cpp), in eval and in the rebuilt folder; a
# RoPE factor without rope.scaling.type is linear, also under the older key rope.scale_linear
"$PY" "$REF" kvedit l32-f16.gguf nobos.gguf -tokenizer.ggml.add_bos_token || bad "kvedit"
printf 'Hello world, hello GGUF.\n' > hb.txt
"$G" tokenize l32-f16.gguf hb.txt --bos > nb1.ids && "$G" tokenize l32 hb.txt --bos > nb0.ids && cmp -s nb0.ids nb1.ids &&
    expect 0 "$G" convert nobos.gguf nobos-back && grep -q '"add_bos_token": true' nobos-back/tokenizer_config.json && ok || bad "BOS default of a llama-bpe vocabulary: $(cat nb0.ids nb1.ids)"
"$G" tokenize nobos.gguf hb.txt --bos > nb2.ids && cmp -s nb0.ids nb2.ids && ok || bad "BOS default of a llama-bpe vocabulary (the GGUF itself)"
for spec in "-llama.rope.scaling.type llama.rope.scale_linear=f32:4" "-llama.rope.scaling.type llama.rope.scaling.factor=f32:4"; do
    "$PY" "$REF" kvedit l32-f16.gguf rl.gguf $spec || bad "kvedit"
    rm -rf rl-back && expect 0 "$G" convert rl.gguf rl-back
    "$PY" -c 'import json; r = json.load(open("rl-back/config.json"))["rope_scaling"]; exit(0 if r == {"type": "linear", "factor": 4.0} else 1)' && ok || bad "RoPE factor without a type ($spec): $(grep -A3 rope_scaling rl-back/config.json)"
done
# a vocabulary piece that is not UTF-8 is refused (tokenizer.json would drop it: a broken folder, exit 0)
"$PY" -c 'import struct; b = bytearray(open("l32-f16.gguf", "rb").read()); k = b.index(b"tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens")
assert struct.unpack_from("<IIQ", b, k)[:2] == (9, 8); at = k + 16
while struct.unpack_from("<Q", b, at)[0] == 0: at += 8
b[at + 8] = 0xFF; open("badtok.gguf", "wb").write(bytes(b))' || bad "badtok"
expect 3 "$G" convert badtok.gguf badtok-back
grep -q "tokenizer.ggml.tokens\[[0-9]*\] is not valid UTF-8 or holds NUL" "$T/err" && [ ! -e badtok-back ] && ok || bad "a token that is not UTF-8: $(cat "$T/err")"
# tokenizer.ggml.pre "default" is llama.cpp's default pre-tokenizer (punctuation runs, GPT-2's regex,
# digit runs, digits in threes), not GPT-2's regex: "0000" is 000|0 there, 00|00 under gpt-2 (this
# vocabulary merges "0 0" and "00 0"); llama.cpp d32676d7's llama-tokenize gave the same ids
"$PY" "$REF" kvedit l32-f16.gguf pdef.gguf tokenizer.ggml.pre=str:default && "$PY" "$REF" kvedit l32-f16.gguf pg2.gguf tokenizer.ggml.pre=str:gpt-2 || bad "kvedit"
printf '0000' > z4.txt
want=$("$PY" -c 'import json; v = json.load(open("l32/tokenizer.json"))["model"]["vocab"]; print(v["000"], v["0"], "/", v["00"], v["00"])')
[ "$("$G" tokenize pdef.gguf z4.txt) / $("$G" tokenize pg2.gguf z4.txt)" = "$want" ] && ok || bad "the default pre-tokenizer: $("$G" tokenize pdef.gguf z4.txt) / $("$G" tokenize pg2.gguf z4.txt), want $want"
# the layers must be what block_count says, and expert_count needs the experts (a layer past block_count
# was dropped silently, exit 0; a Mixtral config without experts was written)
for spec in "llama.block_count=u32:1|a layer past llama.block_count (1)|blk" \
            "llama.block_count=u32:3|blk.2.attn_norm.weight': missing: llama.block_count is 3|blk" \
            "llama.expert_count=u32:4|blk.0.ffn_gate_exps.weight': missing, though llama.expert_count is 4|exp"; do
    "$PY" "$REF" kvedit l32-f16.gguf bc.gguf "${spec%%|*}" || bad "kvedit"
    rm -rf bc-back && expect 3 "$G" convert bc.gguf bc-back
    want=${spec#*|}; want=${want%|*}
    grep -qF "$want" "$T/err" && [ ! -e bc-back ] && ok || bad "${spec%%|*}: $(cat "$T/err")"
done
# back to a folder (and so into merge, whose GGUF inputs go through it): the biases un-permuted value
# by value (they were refused as "1 rows"), attention_bias in config.json, the folder's logits again;
# the quantized-bias file decodes its bias first
expect 0 "$G" convert lb-f32.gguf lb-back
grep -q '"attention_bias": true' lb-back/config.json && "$G" eval lb-back --tokens lb.ids --ctx 50 --no-bos --dump-logits lb-back.bin > /dev/null 2>"$T/err" &&
    cmp -s lb-hf.bin lb-back.bin && ok || bad "Llama with biases back from GGUF: $(cat "$T/err")"
expect 0 "$G" convert lb-q8b.gguf lb-back8
"$G" eval lb-back8 --tokens lb.ids --ctx 50 --no-bos --json > lb-back8.json 2>"$T/err" &&
    "$PY" -c 'import json, sys; a, b = (json.load(open(f))["nll"] for f in sys.argv[1:]); sys.exit(0 if a == b else 1)' lb-q8b.json lb-back8.json && ok || bad "a Q8_0 q bias back to a folder: $(cat "$T/err")"

# Qwen3 (the real layout, scaled; head_dim 32 ≠ hidden / heads): attn_q_norm / attn_k_norm, key_length;
# graft eval of the F32 GGUF scores exactly what the folder does, and converting back gives its tensors
expect 0 "$G" synth q3 --like-config "$(dirname "$REF")/../configs/qwen3-8b.json" --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --head-dim 32 --vocab 640 --dtype f32 --seed 7
"$PY" "$TREF" make qwen2 q3 || bad "qwen3 tokenizer fixture"
expect 0 "$G" convert q3 q3.gguf --type f32
"$G" inspect q3.gguf > "$T/out" 2>&1
grep -q 'general.architecture *"qwen3"' "$T/out" && grep -q "blk.1.attn_k_norm.weight" "$T/out" && grep -q "qwen3.attention.key_length *32" "$T/out" && ok ||
    bad "qwen3 GGUF metadata / names: $(grep -E 'qwen3|norm' "$T/out" | head -20)"
"$G" eval q3 --text t.txt --ctx 24 --json > hf.json 2>"$T/err" && "$G" eval q3.gguf --text t.txt --ctx 24 --json > g1.json 2>>"$T/err" &&
    "$PY" -c 'import json; a, b = (json.load(open(f)) for f in ("hf.json", "g1.json")); exit(0 if a["nll"] == b["nll"] and a["tokens_scored"] == b["tokens_scored"] else 1)' &&
    ok || bad "eval of q3.gguf differs: $(cat "$T/err" hf.json g1.json)"
expect 0 "$G" convert q3.gguf q3back
"$PY" "$(dirname "$REF")/llama_ref.py" same q3 q3back 0 > "$T/py" 2>&1 && grep -q '"head_dim": 32' q3back/config.json && ok || bad "qwen3 GGUF round trip: $(cat "$T/py")"
# Mixtral, Phi-3 (4k, and 128k with LongRoPE), Gemma and Gemma 2 (real layouts, scaled; Gemma 2 with
# query_pre_attn_scalar = head_dim, as llama.cpp scales it): each laid out as llama.cpp's converter does
# (stacked experts, F32 router, fused attn_qkv / ffn_up, rope_factors_long/short, norms as 1 + w,
# lm_head dropped, soft-caps, sliding window), checked by gguf_ref.py at f32, bf16 and q8_0; graft eval
# of the F32 GGUF scores exactly what the folder does (Gemma 1 is not evaluated); converting back gives
# the folder's tensors (bit for bit; Gemma's norms to the rounding of 1 + w in float32) and its
# architectural config fields.
CFGD="$(dirname "$REF")/../configs"
S="--layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 640 --dtype f32"
expect 0 "$G" synth mx --like-config "$CFGD/mixtral-8x7b.json" $S --experts 4 --seed 21
expect 0 "$G" synth p4 --like-config "$CFGD/phi-3-mini-4k.json" $S --seed 22
expect 0 "$G" synth p128 --like-config "$CFGD/phi-3-mini-128k.json" --layers 2 --hidden 192 --intermediate 96 --heads 2 --kv-heads 2 --vocab 640 --dtype f32 --seed 23
expect 0 "$G" synth gm2 --like-config "$CFGD/gemma-2-9b.json" $S --head-dim 32 --seed 24
"$PY" -c 'import json; c = json.load(open("gm2/config.json")); c["query_pre_attn_scalar"] = 32; json.dump(c, open("gm2/config.json", "w"), indent=2)' || bad "gemma 2 fixture"
expect 0 "$G" synth gm1 --arch gemma --dtype bf16 --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 1 --vocab 640 --seed 25
# Gemma 3 vision-language (the text decoder converts; 7 layers: sliding, and global layer 5 with linear
# RoPE scaling) and text-only with an untied lm_head
expect 0 "$G" synth gm3 --like-config "$CFGD/gemma-3-4b.json" --layers 7 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --head-dim 32 --vocab 640 --dtype f32 --seed 26
"$PY" -c 'import json; c = json.load(open("gm3/config.json")); c["text_config"]["query_pre_attn_scalar"] = 32; json.dump(c, open("gm3/config.json", "w"), indent=2)' || bad "gemma 3 fixture"
expect 0 "$G" synth gt3 --like-config "$CFGD/gemma-3-4b.json" --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --head-dim 32 --vocab 640 --dtype bf16 --seed 27
"$PY" - <<'PYEOF' || bad "gemma 3 text fixture"
import json, struct
c = json.load(open("gt3/config.json")); t = c["text_config"]; t.update(architectures=["Gemma3ForCausalLM"], query_pre_attn_scalar=32, tie_word_embeddings=False, torch_dtype=c["torch_dtype"])
json.dump(t, open("gt3/config.json", "w"), indent=2)
b = open("gt3/model.safetensors", "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
out, blobs, off = {}, [], 0
for k, v in h.items():  # the text decoder under Gemma3ForCausalLM's names, plus an lm_head of its own
    if k == "__metadata__" or not k.startswith("language_model."): continue
    raw = d[v["data_offsets"][0]:v["data_offsets"][1]]
    for name in [k.replace("language_model.model.", "model.")] + (["lm_head.weight"] if k.endswith("embed_tokens.weight") else []):
        rb = 2 * v["shape"][-1]  # lm_head: the embedding rows rotated by one
        blob = raw if name != "lm_head.weight" else raw[rb:] + raw[:rb]
        out[name] = dict(dtype=v["dtype"], shape=v["shape"], data_offsets=[off, off + len(blob)]); blobs.append(blob); off += len(blob)
hj = json.dumps(out).encode(); hj += b" " * (-len(hj) % 8)
open("gt3/model.safetensors", "wb").write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))
PYEOF
for m in mx p4 p128 gm2 gm1 gm3 gt3; do
    "$PY" "$TREF" make spm $m || bad "$m tokenizer fixture"
    for t in f32 bf16 q8_0; do
        expect 0 "$G" convert $m $m-$t.gguf --type $t --threads 2
        if "$PY" "$REF" check $m $m-$t.gguf $t > "$T/py" 2>&1; then ok; else bad "convert $m to $t: $(cat "$T/py")"; fi
    done
    if [ $m != gm1 ]; then
        "$G" eval $m --text t.txt --ctx 24 --json > hf.json 2>"$T/err" && "$G" eval $m-f32.gguf --text t.txt --ctx 24 --json > g1.json 2>>"$T/err" &&
            "$PY" -c 'import json; a, b = (json.load(open(f)) for f in ("hf.json", "g1.json")); exit(0 if a["nll"] == b["nll"] and a["tokens_scored"] == b["tokens_scored"] else 1)' &&
            ok || bad "eval of $m-f32.gguf differs from the folder: $(cat "$T/err" hf.json g1.json)"
    fi
    expect 0 "$G" convert $m-f32.gguf $m-back --dtype "$(case $m in gm1|gt3) echo bf16 ;; *) echo f32 ;; esac)"
    "$PY" - $m $m-back "$(dirname "$REF")" <<'PYEOF' && ok || bad "GGUF → HF of $m-f32.gguf is not the source"
import json, struct, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from gguf_ref import text_config, text_name
def load(p):
    b = open(p + "/model.safetensors", "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: (v["dtype"], v["shape"], d[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in h.items() if k != "__metadata__"}
ca, cb = (json.load(open(p + "/config.json")) for p in sys.argv[1:3])
a = {text_name(k, ca): v for k, v in load(sys.argv[1]).items() if text_name(k, ca) is not None}  # Gemma 3 VL: the text decoder
b = load(sys.argv[2])
ca = text_config(ca)
if ca["architectures"][0] == "Gemma3ForConditionalGeneration": ca["architectures"] = ["Gemma3ForCausalLM"]
gemma = ca["architectures"][0].startswith("Gemma")
if gemma: ca.setdefault("tie_word_embeddings", True)  # Gemma configs' default
def vals(t):
    dt, _, raw = t
    if dt == "F32": return np.frombuffer(raw, "<f4").astype(np.float64)
    return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
diff = sorted(set(a) ^ set(b))
for k in set(a) & set(b):
    if a[k][:2] != b[k][:2]: diff.append(k)
    elif a[k][2] != b[k][2] and not (gemma and k.endswith("norm.weight") and np.abs(vals(a[k]) - vals(b[k])).max() <= 2.0 ** -22): diff.append(k)
keys = ["architectures", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "vocab_size",
        "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings", "num_local_experts", "num_experts_per_tok", "head_dim",
        "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping", "original_max_position_embeddings", "rope_scaling"]
if ca["architectures"][0].startswith("Gemma"): keys += ["sliding_window", "sliding_window_pattern", "rope_local_base_freq"][:1 if ca["architectures"][0] == "Gemma2ForCausalLM" else 3]
def norm(v):
    if isinstance(v, dict) and "type" in v and "rope_type" not in v: v = dict(v, rope_type=v["type"]); del v["type"]  # both spellings
    return json.loads(json.dumps(v), parse_float=lambda x: float(np.float32(float(x))))
bad = [k for k in keys if norm(ca.get(k)) != norm(cb.get(k))]
sys.exit(0 if not diff and not bad else print("tensors differ:", sorted(diff)[:8], "config differs:", [(k, ca.get(k), cb.get(k)) for k in bad]) or 1)
PYEOF
done
# Gemma 3 checkpoints saved by transformers ≥ 4.52 name the decoder model.language_model.*: the same GGUF
"$PY" - <<'PYEOF' || bad "gemma 3 new-names fixture"
import json, shutil, struct
shutil.copytree("gm3", "n/gm3")  # the same folder name: general.name is the folder's
b = open("gm3/model.safetensors", "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
h2 = {}
for k, v in h.items():
    k2 = k.replace("language_model.model.", "model.language_model.").replace("vision_tower.", "model.vision_tower.").replace("multi_modal_projector.", "model.multi_modal_projector.")
    h2[k2] = v
hj = json.dumps(h2).encode(); hj += b" " * (-len(hj) % 8)
open("n/gm3/model.safetensors", "wb").write(struct.pack("<Q", len(hj)) + hj + b[8 + n:])
PYEOF
expect 0 "$G" convert n/gm3 gm3n-f32.gguf --type f32
cmp -s gm3n-f32.gguf gm3-f32.gguf && ok || bad "gemma 3 with model.language_model.* names converts differently"
# hostile stacked experts: an expert_count far beyond any model, or an empty stacked dimension, is
# refused (exit 3) before anything is allocated from it
for spec in "2305843009213693951 1 0:1:8" "4 1 0:1:4" "4 1 8:4:0"; do
    "$PY" - $spec <<'PYEOF' || bad "hostile experts fixture"
import struct, sys
cnt, used, ne = int(sys.argv[1]), int(sys.argv[2]), [int(x) for x in sys.argv[3].split(":")]
s = lambda t: struct.pack("<Q", len(t)) + t.encode()
kv = [("general.architecture", 8, s("llama"))] + [("llama." + k, 4, struct.pack("<I", v)) for k, v in
      (("embedding_length", 8), ("feed_forward_length", 4), ("block_count", 1), ("attention.head_count", 2))]
kv += [("llama.expert_count", 10, struct.pack("<Q", cnt)), ("llama.expert_used_count", 4, struct.pack("<I", used))]
tens = [("token_embd.weight", [8, 4]), ("blk.0.ffn_gate_exps.weight", ne)]
b = b"GGUF" + struct.pack("<IQQ", 3, len(tens), len(kv))
for k, t, v in kv: b += s(k) + struct.pack("<I", t) + v
off = 0
for name, dims in tens:
    b += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, off)
    n = 4
    for d in dims: n *= d
    off += (n + 31) // 32 * 32
b += b"\0" * (-len(b) % 32) + b"\0" * off
open("hx.gguf", "wb").write(b)
PYEOF
    expect 3 "$G" convert hx.gguf hx-out
    [ "$(wc -l < "$T/err")" = 1 ] && grep -q "hx.gguf" "$T/err" && [ ! -e hx-out ] && ok || bad "hostile experts $spec: $(cat "$T/err")"
done
# the GGUF's own vocabulary (tokenizer.ggml.*, rebuilt as tokenizer.json) tokenizes exactly as the HF
# folder's tokenizer.json: byte-level llama3 and qwen2 with merges, SentencePiece with merges derived
# from the scores; eval --text on a GGUF then needs no --tokenizer
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import tok_ref; open("long.txt", "w").write(tok_ref.CORPUS * 2)' "$(dirname "$TREF")"
for m in l32 lbf q2; do
    for txt in t.txt long.txt; do
        "$G" tokenize $m $txt --bos > a.ids && "$G" tokenize $m-q4_0.gguf $txt --bos > b.ids 2>"$T/err" && cmp -s a.ids b.ids && ok || bad "GGUF vocabulary of $m tokenizes $txt differently: $(cat "$T/err")"
    done
    "$G" eval $m --text long.txt --ctx 24 --json > hf.json && "$G" eval $m-f32.gguf --text long.txt --ctx 24 --json > g1.json 2>"$T/err" && \
        "$PY" -c 'import json; a, b = json.load(open("hf.json")), json.load(open("g1.json")); exit(0 if a["nll"] == b["nll"] and a["bos"] == b["bos"] and a["tokens_scored"] == b["tokens_scored"] else 1)' \
        && ok || bad "eval --text of $m-f32.gguf with its own vocabulary: $(cat hf.json g1.json "$T/err")"
done
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
# GGUF → Hugging Face: F32/F16/BF16 files give back the source's tensors bit for bit (q/k rows
# un-permuted), config.json keeps every architectural field, tokenizer files, generation_config.json
for pair in l32:f32 lbf:bf16 q2:f16; do
    m=${pair%%:*} t=${pair#*:}
    expect 0 "$G" convert $m-$t.gguf $m-back --threads 2
    "$PY" - $m $m-back <<'PYEOF' && ok || bad "GGUF → HF of $m-$t.gguf is not the source"
import json, struct, sys
def load(p):
    b = open(p + "/model.safetensors", "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: (v["dtype"], v["shape"], d[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
ca, cb = (json.load(open(p + "/config.json")) for p in sys.argv[1:3])
keys = ["architectures", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "vocab_size",
        "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings", "torch_dtype"]
bad = [k for k in keys if ca.get(k) != cb.get(k)]
sys.exit(0 if a == b and not bad else print("tensors equal:", a == b, "config differs:", bad) or 1)
PYEOF
    [ -f $m-back/tokenizer.json ] && [ -f $m-back/tokenizer_config.json ] && [ -f $m-back/generation_config.json ] && ok || bad "$m-back lacks tokenizer or generation files"
    "$G" tokenize $m long.txt --bos > a.ids && "$G" tokenize $m-back long.txt --bos > b.ids && cmp -s a.ids b.ids && ok || bad "$m-back tokenizes differently"
done
# quantized files decode to f32 (or --dtype); the decoded model evaluates as the GGUF file does
expect 0 "$G" convert l32-q8_0.gguf l32-q8back --to hf
grep -q '"torch_dtype": "float32"' l32-q8back/config.json && ok || bad "decoded q8_0 is not float32"
"$G" eval l32-q8_0.gguf --text long.txt --ctx 24 --json > g1.json && "$G" eval l32-q8back --text long.txt --ctx 24 --json > g2.json && \
    "$PY" -c 'import json; a, b = json.load(open("g1.json")), json.load(open("g2.json")); exit(0 if a["nll"] == b["nll"] else 1)' && ok || bad "decoded q8_0 evaluates differently: $(cat g1.json g2.json)"
expect 0 "$G" convert l32-q4_0.gguf l32-bf --dtype bf16
grep -q '"torch_dtype": "bfloat16"' l32-bf/config.json && "$G" inspect l32-bf | grep -q "BF16" && ok || bad "--dtype bf16 from a GGUF file"
# GGUF → GGUF (re-typing) goes through the same decoding
expect 0 "$G" convert l32-f32.gguf again-q8_0.gguf --type q8_0
cmp -s again-q8_0.gguf l32-q8_0.gguf && ok || bad "f32 GGUF → q8_0 GGUF differs from HF → q8_0"
# llama3 rope_scaling: written as rope_freqs, read back into config.json, evaluated from the GGUF
cp -r l32 r3 && "$PY" -c 'import json; c = json.load(open("r3/config.json")); c["rope_scaling"] = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64, "rope_type": "llama3"}; json.dump(c, open("r3/config.json", "w"))'
expect 0 "$G" convert r3 r3.gguf --type f32
expect 0 "$G" convert r3.gguf r3-back
"$PY" -c 'import json; a, b = (json.load(open(p + "/config.json"))["rope_scaling"] for p in ("r3", "r3-back")); exit(0 if a == b else print(a, b) or 1)' && ok || bad "llama3 rope_scaling round trip"
for m in r3 r3.gguf r3-back; do "$G" eval $m --text long.txt --ctx 64 --json > $m.ev.json || bad "eval $m"; done
"$PY" -c 'import json; a, b, c = (json.load(open(p + ".ev.json"))["nll"] for p in ("r3", "r3.gguf", "r3-back")); exit(0 if a == b == c else print(a, b, c) or 1)' && ok || bad "llama3 rope from GGUF evaluates differently"
"$G" eval l32 --text long.txt --ctx 64 --json > l32.ev.json && "$PY" -c 'import json; exit(0 if json.load(open("l32.ev.json"))["nll"] != json.load(open("r3.ev.json"))["nll"] else 1)' && ok || bad "llama3 scaling had no effect"
# GGUF files as merge inputs: the same bytes as merging the HF folders
expect 0 "$G" convert f1 f1.gguf --type f32
expect 0 "$G" convert f2 f2.gguf --type f32
sed 's/l32$/l32-f32.gguf/; s/f1$/f1.gguf/; s/f2$/f2.gguf/' ties.yml > tiesg.yml
expect 0 "$G" merge tiesg.yml merged-g --threads 2
cmp -s merged/model.safetensors merged-g/model.safetensors && [ -f merged-g/tokenizer.json ] && ok || bad "merge of GGUF inputs differs from merging the folders"
mkdir -p g && expect 0 "$G" merge tiesg.yml g/merged.gguf --type q4_0
cmp -s merged.gguf g/merged.gguf && ok || bad "GGUF → merge → GGUF differs"
expect 0 "$G" extract-lora --base l32-f32.gguf --model f1.gguf --rank 4 lora-g
expect 0 "$G" extract-lora --base l32 --model f1 --rank 4 lora-h
cmp -s lora-g/adapter_model.safetensors lora-h/adapter_model.safetensors && ok || bad "extract-lora from GGUF inputs differs"
! ls "${TMPDIR:-/var/tmp}" 2>/dev/null | grep -q "graft-gguf-" && ok || bad "GGUF decoding left its temporary folder"
# temporaries of killed runs (their process is gone) are removed by the next run
# (also the temporary of the folder writer inside a merge to GGUF: "..stale.gguf.graft-tmp-P-hf.graft-tmp-P")
# (names are HOST@PID; those of older versions, PID alone, are swept too; another host's are kept)
H=$(uname -n | tr -c 'A-Za-z0-9.\n-' '_')
touch .stale.gguf.graft-tmp-2147483646 .stale.gguf.graft-tmp-$H@2147483646 .stale.gguf.graft-tmp-x$H@2147483646
mkdir -p .stale.gguf.graft-tmp-2147483645-hf ..stale.gguf.graft-tmp-2147483645-hf.graft-tmp-2147483645 tmpd/graft-gguf-2147483646-Ab12Cd \
    .stale.gguf.graft-tmp-$H@2147483645-hf ..stale.gguf.graft-tmp-$H@2147483645-hf.graft-tmp-$H@2147483645 tmpd/graft-gguf-$H@2147483646-Ab12Cd
expect 0 "$G" convert l32 stale.gguf --type q8_0
[ ! -e .stale.gguf.graft-tmp-2147483646 ] && [ ! -e .stale.gguf.graft-tmp-2147483645-hf ] && [ ! -e ..stale.gguf.graft-tmp-2147483645-hf.graft-tmp-2147483645 ] &&
    [ ! -e .stale.gguf.graft-tmp-$H@2147483646 ] && [ ! -e .stale.gguf.graft-tmp-$H@2147483645-hf ] && [ ! -e ..stale.gguf.graft-tmp-$H@2147483645-hf.graft-tmp-$H@2147483645 ] &&
    [ -e .stale.gguf.graft-tmp-x$H@2147483646 ] && ok || bad "stale GGUF temporaries: $(ls -a)"
rm -f .stale.gguf.graft-tmp-x$H@2147483646
# (from a review against llama.cpp's converter) transformers 5's rope_parameters are converted like
# the older keys (they were ignored: θ 10000, no rope_freqs); a rotary part of each head
# (partial_rotary_factor) is rope.dimension_count, and read back as the factor; Gemma 2 with null
# soft-caps, Gemma 3 with an attention cap, an untied Gemma 2 head and a byte-level regex llama.cpp
# does not know are refused (llama.cpp would compute another model); a gemma2 GGUF without caps reads
# as llama.cpp runs it (50 / 30); SentencePiece vocabularies say whether ▁ is prefixed (Gemma: no)
rm -rf rp5 && cp -r l32 rp5 && "$PY" -c 'import json; p = "rp5/config.json"; c = json.load(open(p)); c.pop("rope_theta", None); c.pop("rope_scaling", None)
c["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
json.dump(c, open(p, "w"))'
expect 0 "$G" convert rp5 rp5.gguf
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import gguf_ref; kv, t = gguf_ref.read_gguf("rp5.gguf")
assert abs(kv["llama.rope.freq_base"] - 500000) < 1 and any(x[0] == "rope_freqs.weight" for x in t) if isinstance(t, list) else "rope_freqs.weight" in t, kv' "$(dirname "$REF")" &&
    ok || bad "rope_parameters not converted"
rm -rf pr5 && cp -r p4 pr5 && "$PY" -c 'import json; p = "pr5/config.json"; c = json.load(open(p)); c["partial_rotary_factor"] = 0.5; json.dump(c, open(p, "w"))'
expect 0 "$G" convert pr5 pr5.gguf
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import gguf_ref; kv, t = gguf_ref.read_gguf("pr5.gguf")
assert kv["phi3.rope.dimension_count"] == 8, kv["phi3.rope.dimension_count"]' "$(dirname "$REF")" && ok || bad "partial_rotary_factor: rope.dimension_count"
expect 0 "$G" convert pr5.gguf pr5back
grep -q '"partial_rotary_factor": 0.5' pr5back/config.json && ok || bad "rope.dimension_count read back: $(grep -c partial pr5back/config.json)"
for edit in 'c["attn_logit_softcapping"] = None|gm2|soft-capping' 'c["final_logit_softcapping"] = 0|gm2|soft-capping' \
            'c["text_config"]["attn_logit_softcapping"] = 50.0|gm3|does not cap attention'; do
    rm -rf gx && cp -r "$(echo "$edit" | cut -d'|' -f2)" gx
    "$PY" -c 'import json, sys; p = "gx/config.json"; c = json.load(open(p)); exec(sys.argv[1]); json.dump(c, open(p, "w"))' "${edit%%|*}"
    expect 4 "$G" convert gx gx.gguf
    grep -q "$(echo "$edit" | cut -d'|' -f3)" "$T/err" && [ ! -e gx.gguf ] && ok || bad "convert with ${edit%%|*}: $(cat "$T/err")"
done
rm -rf gx && cp -r gm2 gx && "$PY" - "$(dirname "$REF")" <<'PYEOF' || bad "untied gemma 2 fixture"
import json, sys
sys.path.insert(0, sys.argv[1])
from lora_ref import load, save
t = load("gx"); t["lm_head.weight"] = t["model.embed_tokens.weight"][::-1].copy(); save("gx/model.safetensors", t)
c = json.load(open("gx/config.json")); c["tie_word_embeddings"] = False; json.dump(c, open("gx/config.json", "w"))
PYEOF
expect 4 "$G" convert gx gx.gguf
grep -q "lm_head.weight.*differs from the embedding" "$T/err" && ok || bad "untied gemma 2 head: $(cat "$T/err")"
"$PY" "$REF" kvedit gm2-f32.gguf gm2n.gguf -gemma2.attn_logit_softcapping -gemma2.final_logit_softcapping > /dev/null && expect 0 "$G" convert gm2n.gguf gm2nback
"$PY" -c 'import json; c = json.load(open("gm2nback/config.json")); assert c["attn_logit_softcapping"] == 50.0 and c["final_logit_softcapping"] == 30.0, c' && ok || bad "gemma2 GGUF without caps"
# the pre-tokenizer name: Llama 3's regex without ignore_merges is smaug-bpe (llama-bpe ignores merges
# for whole words), tekken's regex is tekken, an unknown byte-level Split is refused (it became gpt-2)
cat > pt-edit.py <<'PYEOF'
import json, sys
TEKKEN = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
t = json.load(open("pt/tokenizer.json")); sp = t["pre_tokenizer"]["pretokenizers"][0]
if sys.argv[1] == "smaug-bpe": t["model"]["ignore_merges"] = False
elif sys.argv[1] == "tekken": sp["pattern"]["Regex"] = TEKKEN
else: sp["pattern"]["Regex"] = r"\p{L}+|\s+"
json.dump(t, open("pt/tokenizer.json", "w"))
PYEOF
for ptk in smaug-bpe tekken refused; do
    rm -rf pt && cp -r l32 pt && "$PY" pt-edit.py $ptk || bad "pre-tokenizer fixture $ptk"
    if [ $ptk = refused ]; then
        expect 4 "$G" convert pt pt.gguf
        grep -q "Split regex is none llama.cpp knows" "$T/err" && [ ! -e pt.gguf ] && ok || bad "unknown pre-tokenizer: $(cat "$T/err")"
    else
        expect 0 "$G" convert pt pt-$ptk.gguf
        "$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import gguf_ref; kv, t = gguf_ref.read_gguf(sys.argv[2])
assert kv["tokenizer.ggml.pre"] == sys.argv[3], kv["tokenizer.ggml.pre"]' "$(dirname "$REF")" pt-$ptk.gguf $ptk 2>"$T/py" && ok || bad "pre-tokenizer $ptk: $(cat "$T/py")"
        # and read back: the same ids (tekken: llama.cpp ignores merges; this vocabulary has no merge a
        # whole-word token would skip)
        printf 'In 2024 the price was 12345 dollars. HeLLo wOrld\n' > ptx.txt
        expect 0 "$G" convert pt-$ptk.gguf ptback-$ptk
        [ "$("$G" tokenize pt ptx.txt)" = "$("$G" tokenize ptback-$ptk ptx.txt)" ] && ok || bad "pre-tokenizer $ptk read back: other ids"
    fi
done
# rope_parameters of Gemma 3 (per layer type; the defaults of the older keys filled afterwards) and of
# Phi-3 LongRoPE (its original_max_position_embeddings there)
rm -rf g3r && cp -r gm3 g3r && "$PY" -c 'import json; p = "g3r/config.json"; c = json.load(open(p)); t = c["text_config"]
for k in ("rope_theta", "rope_scaling", "rope_local_base_freq"): t.pop(k, None)
t["rope_parameters"] = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 500000.0}, "sliding_attention": {"rope_type": "default", "rope_theta": 20000.0}}
json.dump(c, open(p, "w"))'
expect 0 "$G" convert g3r g3r.gguf
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import gguf_ref; kv, t = gguf_ref.read_gguf("g3r.gguf")
assert abs(kv["gemma3.rope.freq_base"] - 5e5) < 1 and abs(kv["gemma3.rope.freq_base_swa"] - 2e4) < 1e-3 and kv["gemma3.rope.scaling.factor"] == 8.0, kv' "$(dirname "$REF")" 2>"$T/py" &&
    ok || bad "gemma 3 rope_parameters: $(tail -c 300 "$T/py")"
rm -rf p1r && cp -r p128 p1r && "$PY" -c 'import json; p = "p1r/config.json"; c = json.load(open(p)); rs = c.pop("rope_scaling"); o = c.pop("original_max_position_embeddings")
rs["rope_type"] = rs.pop("type")
c["rope_parameters"] = dict(rs, rope_theta=c.pop("rope_theta", 10000.0), original_max_position_embeddings=o); json.dump(c, open(p, "w"))'
expect 0 "$G" convert p128 p1a.gguf && expect 0 "$G" convert p1r p1r.gguf
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import gguf_ref; a, _ = gguf_ref.read_gguf("p1a.gguf"); b, _ = gguf_ref.read_gguf("p1r.gguf")
k = ["phi3.rope.scaling.original_context_length", "phi3.rope.scaling.attn_factor", "phi3.rope.freq_base"]
assert [a[x] for x in k] == [b[x] for x in k], ([a[x] for x in k], [b[x] for x in k])' "$(dirname "$REF")" 2>"$T/py" && ok || bad "phi-3 rope_parameters: $(tail -c 300 "$T/py")"
for pfx in 1 0; do # the SentencePiece fixture as it is (a Prepend ▁ normalizer), and Gemma-style without it
    rm -rf gsp && cp -r gm1 gsp && "$PY" "$TREF" make spm gsp > /dev/null
    [ $pfx = 0 ] && "$PY" -c 'import json; p = "gsp/tokenizer.json"; t = json.load(open(p)); n = t["normalizer"]
t["normalizer"] = {"type": "Sequence", "normalizers": [x for x in n.get("normalizers", [n]) if x["type"] != "Prepend"]}; json.dump(t, open(p, "w"))'
    "$PY" -c 'import json; t = json.load(open("gsp/tokenizer.json")); c = json.load(open("gsp/config.json")); n = 1 + max(list(t["model"]["vocab"].values()) + [a["id"] for a in t["added_tokens"]])
assert n <= c["vocab_size"], (n, c["vocab_size"])' || bad "spm fixture fits gm1"
    expect 0 "$G" convert gsp gsp$pfx.gguf
    "$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import gguf_ref; kv, t = gguf_ref.read_gguf(sys.argv[2])
assert kv["tokenizer.ggml.add_space_prefix"] is bool(int(sys.argv[3])), kv.get("tokenizer.ggml.add_space_prefix")' "$(dirname "$REF")" gsp$pfx.gguf $pfx 2>"$T/py" && ok || bad "add_space_prefix $pfx: $(cat "$T/py")"
done
# a GGUF output never replaces a GGUF input (convert, or a merge that reads it), nor lands in an input folder
cp stale.gguf in.gguf && sum0=$(cksum < in.gguf)
expect 2 "$G" convert in.gguf in.gguf --type f16 --force
grep -q "output is the input" "$T/err" && ok || bad "convert onto its GGUF input: $(cat "$T/err")"
printf 'merge_method: linear\nmodels:\n  - model: in.gguf\n    parameters: {weight: 1}\n  - model: l32\n    parameters: {weight: 1}\ndtype: float32\n' > ing.yml
expect 2 "$G" merge ing.yml in.gguf --force
grep -q "output is the input" "$T/err" && [ "$(cksum < in.gguf)" = "$sum0" ] && ! ls -A | grep -q graft-tmp && ok || bad "merge onto its GGUF input: $(cat "$T/err")"
expect 2 "$G" convert l32 l32/x.gguf --type f16
grep -q "inside the input folder" "$T/err" && [ ! -e l32/x.gguf ] && ok || bad "a GGUF into its input folder: $(cat "$T/err")"
GRAFT_TMPDIR="$PWD/tmpd" "$G" inspect stale.gguf >/dev/null && GRAFT_TMPDIR="$PWD/tmpd" "$G" merge tiesg.yml stale-m >/dev/null 2>&1
[ -z "$(ls -A tmpd)" ] && [ -d stale-m ] && ok || bad "stale decoded-GGUF folders left: $(ls -A tmpd)"
# refusals
expect 2 "$G" convert l32-f32.gguf one.safetensors
grep -q "converts to a folder" "$T/err" && ok || bad "gguf to one safetensors file: $(cat "$T/err")"
expect 1 "$G" convert l32-f32.gguf l32-back
grep -q "already exists" "$T/err" && ok || bad "gguf to an existing folder: $(cat "$T/err")"
"$PY" -c 'import struct; b = open("l32-f32.gguf", "rb").read(); k = b"general.architecture" + struct.pack("<IQ", 8, 5) + b"llama"; assert k in b; open("arch.gguf", "wb").write(b.replace(k, k[:-5] + b"bloom", 1))'
expect 3 "$G" convert arch.gguf arch-out
grep -q "arch.gguf: GGUF architecture 'bloom'" "$T/err" && [ ! -e arch-out ] && ok || bad "unknown architecture GGUF to HF: $(cat "$T/err")"
sed 's/l32-f32.gguf$/arch.gguf/' tiesg.yml > tiesa.yml
expect 3 "$G" merge tiesa.yml never
grep -q "arch.gguf" "$T/err" && [ ! -e never ] && ok || bad "merge with an unreadable GGUF input: $(cat "$T/err")"
expect 1 "$G" convert l32 l32-f16.gguf --to gguf
grep -q "already exists; use --force" "$T/err" && ok || bad "existing gguf output: $(cat "$T/err")"
expect 0 "$G" convert l32 l32-f16.gguf --to gguf --force
expect 0 "$G" synth g2 --arch gpt2 --layers 1 --hidden 32 --intermediate 48 --heads 4 --vocab 64
expect 4 "$G" convert g2 g2.gguf
grep -q "GGUF conversion covers" "$T/err" && [ ! -e g2.gguf ] && ! ls -A | grep -q graft-tmp && ok || bad "gpt2 to gguf: $(cat "$T/err")"
cp -r l32 notok && rm notok/tokenizer.json
expect 3 "$G" convert notok notok.gguf
grep -q "needs tokenizer.json" "$T/err" && [ ! -e notok.gguf ] && ! ls -A | grep -q graft-tmp && ok || bad "no tokenizer: $(cat "$T/err")"
expect 2 "$G" convert l32 x.gguf --type q5_k
# ---- numerical safety: values that overflow the GGUF type (as values, or as a q8_0 block scale) are refused
PATCH="$PY $(dirname "$REF")/patch.py"
cp -r l32 lbig && cp -r l32 lnan && $PATCH lbig/model.safetensors 'layers.0.mlp.up_proj.weight$' 1e5 5 &&
    $PATCH lbig/model.safetensors 'layers.0.self_attn.v_proj.weight$' 1e7 0 && $PATCH lnan/model.safetensors 'layers.0.mlp.up_proj.weight$' nan 5 || bad "patch"
expect 1 "$G" convert lbig big.gguf --type f16
grep -q "conversion to GGUF gives 1 NaN or infinite values (first at element .*) where its source holds none; 1 of them are F16 overflow" "$T/err" &&
    [ ! -e big.gguf ] && ! ls -A | grep -q graft-tmp && ok || bad "gguf f16 overflow: $(cat "$T/err")"
expect 0 "$G" convert lbig big.gguf --type f16 --allow-nonfinite
grep -q "warning: tensor 'model.layers.0.mlp.up_proj.weight': 1 NaN or infinite values written" "$T/err" && ok || bad "gguf --allow-nonfinite: $(cat "$T/err")"
expect 1 "$G" convert lbig bigq.gguf --type q8_0
grep -q "v_proj.weight': the conversion to GGUF gives 32 NaN or infinite values (first at element 0) where its source holds none" "$T/err" &&
    [ ! -e bigq.gguf ] && ok || bad "q8_0 scale overflow: $(cat "$T/err")"
# a NaN: its q8_0 block gets a NaN scale and zero quants (no undefined float→int cast), with a warning
expect 0 "$G" convert lnan nan.gguf --type q8_0
grep -q "up_proj.weight': 32 NaN or infinite values in the output, from NaN / infinite values in its source" "$T/err" && ok || bad "q8_0 of a NaN: $(cat "$T/err")"
# back from GGUF: float16 overflow of an F32 GGUF is refused the same way
expect 0 "$G" convert lbig big32.gguf --type f32
expect 1 "$G" convert big32.gguf bighf --dtype f16
grep -q "the conversion from GGUF gives 1 NaN or infinite values" "$T/err" && [ ! -e bighf ] && ok || bad "GGUF to f16 overflow: $(cat "$T/err")"
rm -rf big.gguf nan.gguf big32.gguf

if [ "$FAULTS" = faults ]; then
    alloc_faults 3 fa.gguf "$G" convert l32 fa.gguf --type q4_0 --threads 2
    for spec in write fsync rename; do
        GRAFT_FAULT_IO="$spec:1:ENOSPC" "$G" convert l32 fio.gguf >/dev/null 2>"$T/err"
        [ $? = 1 ] && [ ! -e fio.gguf ] && ! ls -A | grep -q graft-tmp && ok || bad "gguf convert with a failing $spec: $(cat "$T/err")"
        GRAFT_FAULT_IO="$spec:1:ENOSPC" "$G" convert l32-q8_0.gguf fio-hf >/dev/null 2>"$T/err"
        [ $? = 1 ] && [ ! -e fio-hf ] && ! ls -A | grep -q graft-tmp && ok || bad "gguf → hf with a failing $spec: $(cat "$T/err")"
    done
    alloc_faults 5 fa-hf "$G" convert l32-q8_0.gguf fa-hf --threads 2
    # GGUF inputs are decoded into a private folder under GRAFT_TMPDIR, removed on every failure
    mkdir -p gt && export GRAFT_TMPDIR="$PWD/gt"
    alloc_faults 17 fa-merge "$G" merge tiesg.yml fa-merge --threads 2
    [ -z "$(ls -A gt)" ] && ok || bad "decoded GGUF inputs left behind: $(ls gt)"
    unset GRAFT_TMPDIR
fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
