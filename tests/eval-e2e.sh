#!/bin/sh
# The evaluator end to end: tokenizers (byte-level Llama-3 / GPT-2 / Qwen2 with NFC, SentencePiece-style
# with byte fallback, Metaspace) trained by tests/ref/tok_ref.py, whose independent encoder must give
# the same ids on multilingual text, emoji, whitespace runs, digits and inline special tokens, and
# decode must give the text back; graft eval's logits and perplexity against an independent NumPy
# forward (tests/ref/llama_ref.py) for Llama (f32, bf16, tied), Qwen2 (biases, f16), Mistral (sliding
# window), rope_scaling llama3 and linear, non-overlapping and strided windows, with and without BOS;
# thread-count independence; --collect gram / act-norm against NumPy, and act-norm feeding
# `graft prune --wanda`; bad tokenizers, configs and token files fail cleanly; tokensurgeon (every
# approach, byte-level and Metaspace vocabularies both ways) against tests/ref/tokensurgeon_ref.py.
# Usage: tests/eval-e2e.sh BUILD_DIR [faults]
set -u
B=${1:?build dir}
FAULTS=${2:-}
G="$PWD/$B/graft"
TREF="$PWD/tests/ref/tok_ref.py"
LREF="$PWD/tests/ref/llama_ref.py"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1

# ---- tokenizers against the independent encoder ----
printf 'The quick brown fox jumps over the lazy dog. It'"'"'s DON'"'"'T they'"'"'LL\n\nGröße über Übung — “quotes” and ‘single’…\nЁжик в тумане. 敏捷的棕色狐狸跳过了懒狗。日本語のテキスト。\nمرحبا بالعالم\nemoji: 👩‍👩‍👧‍👦 🎉🇩🇪 ok\ncombining: e\314\201 vs \303\251, ﬁ ligature, Ⅻ\n   leading spaces,\ttabs\t\tand   runs    \n\n\n  \r\nnumbers 1234567 3.14159 2024-11-29\ncode: for (int i = 0; i < n; i++) { x += y; }   \n' > plain.txt
{ cat plain.txt; printf '<|begin_of_text|>special<|eot_id|> in text <s> and </s> too <|im_start|>x<|im_end|>\n'; } > special.txt
printf ' starts and ends with a space ' > space.txt
printf '' > empty.txt
printf 'x' > one.txt
for k in llama3 gpt2 qwen2 spm metaspace; do
    "$PY" "$TREF" make $k tok-$k || bad "tok_ref make $k"
    for f in plain special space empty one; do
        want=$("$PY" "$TREF" encode tok-$k $f.txt)
        got=$("$G" tokenize tok-$k $f.txt 2>"$T/err")
        if [ "$want" = "$got" ]; then ok; else bad "tokenize $k $f.txt differs from the reference: $(head -c 300 "$T/err")"; fi
    done
    # decode(encode(text)) is the text (Qwen2's NFC normalizer composes e + U+0301)
    "$G" tokenize tok-$k plain.txt > ids.txt && "$G" tokenize --decode tok-$k ids.txt > back.txt
    if [ $k = qwen2 ]; then "$PY" -c 'import sys, unicodedata; sys.stdout.write(unicodedata.normalize("NFC", open("plain.txt", encoding="utf-8", newline="").read()))' > want.txt
    else cp plain.txt want.txt; fi
    cmp -s back.txt want.txt && ok || bad "decode(encode(text)) != text for $k"
done
# byte fallback: characters the SentencePiece vocabulary lacks become <0xXX> tokens
printf '🎉' > party.txt
"$G" tokenize tok-spm party.txt > ids.txt
want=""
for b in F0 9F 8E 89; do want="$want $("$PY" -c "import json; print(json.load(open('tok-spm/tokenizer.json'))['model']['vocab']['<0x$b>'])")"; done
[ "$(cat ids.txt)" = "$("$PY" -c "import json; print(json.load(open('tok-spm/tokenizer.json'))['model']['vocab']['▁'])")$want" ] && ok || bad "byte fallback ids: $(cat ids.txt) (want ▁ then$want)"
"$G" tokenize --bos tok-llama3 one.txt | grep -q "^$("$PY" -c "import json; print([a['id'] for a in json.load(open('tok-llama3/tokenizer.json'))['added_tokens'] if a['content']=='<|begin_of_text|>'][0])") " && ok || bad "llama3 BOS from the post-processor template"
[ "$("$G" tokenize --bos tok-spm one.txt | cut -d' ' -f1)" = 1 ] && ok || bad "spm BOS from add_bos_token"
[ "$("$G" tokenize --bos tok-qwen2 one.txt | wc -w)" = 1 ] && ok || bad "qwen2 adds no BOS (add_bos_token false)"
"$G" tokenize --json tok-gpt2 one.txt | grep -q '"ids": \[' && ok || bad "tokenize --json"
# hostile or unsupported tokenizer files
mkdir -p badtok
for case in '{"model": {"type": "Unigram", "vocab": []}}|model type "Unigram" is not supported' \
            '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}}|merge 0' \
            '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}}|id 0 is given to two' \
            '{"model": {"type": "BPE", "vocab": {"a": 99999999}, "merges": []}}|over the limit' \
            '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(("}}}|regex' \
            '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "BertNormalizer"}}|normalizer "BertNormalizer" is not supported' \
            '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"id": 5}]}|added token 0' \
            '{"model": {"type": "BPE", "vocab": {"a": 0, "a": 1}, "merges": []}}|duplicate' \
            '{"model": 5}|no "model" object' \
            'not json|line 1'; do
    printf '%s' "${case%%|*}" > badtok/tokenizer.json
    expect 3 "$G" tokenize badtok one.txt
    grep -q "^graft: error: badtok/tokenizer.json: " "$T/err" && grep -qF "${case#*|}" "$T/err" && ok || bad "bad tokenizer '${case%%|*}': $(cat "$T/err")"
done
# HF's rules where they are easy to miss: a repeated merge takes its last rank (HF's merge map), a
# "#version" line of merges.txt is skipped, and ^ / $ in a Split regex are line anchors (Oniguruma)
mkdir -p tokm tokl toka
"$PY" -c 'import json
json.dump({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4}, "merges": ["#version: 0.2", "b c", "a b", "b c"]}}, open("tokm/tokenizer.json", "w"))
json.dump({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "\n": 2, "a\n": 3}, "merges": ["a \n"]},
           "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a$"}, "behavior": "Isolated", "invert": False}}, open("tokl/tokenizer.json", "w"))'
"$PY" -c 'import json
w = dict(single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
json.dump({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "d": 3, "<": 4, " ": 5}, "merges": []},
           "added_tokens": [dict(w, id=10, content="<a"), dict(w, id=11, content="<ab"), dict(w, id=12, content="<abc"),
                            dict(w, id=13, content="ab", single_word=True)]}, open("toka/tokenizer.json", "w"))'
printf '<ab<abc<a<abdab ab' > added.txt
# added tokens sharing prefixes: leftmost, then longest (one walk of a trie); single_word refused inside a word
[ "$("$G" tokenize toka added.txt)" = "11 12 10 11 3 0 1 5 13" ] && ok || bad "added tokens with shared prefixes: $("$G" tokenize toka added.txt 2>&1)"
printf 'abc' > abc.txt && printf 'ab\na\nab' > lines.txt
[ "$("$G" tokenize tokm abc.txt)" = "3 2" ] && ok || bad "a repeated merge's rank: $("$G" tokenize tokm abc.txt 2>&1)"
[ "$("$G" tokenize tokl lines.txt)" = "0 1 2 0 2 0 1" ] && ok || bad "\$ as a line anchor: $("$G" tokenize tokl lines.txt 2>&1)"
# HF's split and added-token rules (hand-derived from tokenizers' NormalizedString::split, the onig crate's
# find_iter and added_vocabulary.rs; each case gave other ids before): an empty match splits the text;
# the first empty match after a non-empty one is dropped wherever it falls; Contiguous with invert merges
# neighbouring matches; Lowercase maps İ to i + U+0307 (Rust's full mapping); lstrip / rstrip take
# Unicode White_Space; single_word tests neighbours with Rust regex's \w (² is not a word character, Ⓐ
# is), and a rejected single_word match is skipped whole (no shorter token, none inside it); a String
# pattern splits (it was refused: "invalid option bits"), an empty one matches
# everywhere; the Metaspace decoder drops every ▁ of the first token and keeps its literal spaces
"$PY" - <<'PYEOF' || bad "HF rule tokenizers"
import json, os
def tok(d, vocab, merges=(), **kw):
    os.makedirs(d, exist_ok=True)
    json.dump(dict({"model": {"type": "BPE", "vocab": vocab, "merges": list(merges)}}, **kw), open(d + "/tokenizer.json", "w"))
sp = lambda rx, beh="Isolated", inv=False: {"type": "Split", "pattern": {"Regex": rx}, "behavior": beh, "invert": inv}
w = dict(single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
tok("hz1", {"a": 0, "b": 1, "ab": 2, "ba": 3}, ["a b", "b a"], pre_tokenizer=sp("(?=b)"))
tok("hz2", {"a": 0, "b": 1, "c": 2, "bc": 3}, ["b c"], pre_tokenizer=sp("a|(?=c)"))
tok("hci", {"a": 0, "b": 1, "aa": 2}, ["a a"], pre_tokenizer=sp("a", "Contiguous", True))
tok("hlo", {"i": 0, "\u0307": 1, "i\u0307": 2}, ["i \u0307"], normalizer={"type": "Lowercase"})
tok("hls", {"a": 0, "b": 1, "\u00a0": 2, "\u3000": 3}, added_tokens=[dict(w, id=10, content="<m>", lstrip=True, rstrip=True)])
tok("hsw", {"a": 0, "b": 1, "\u00b2": 2, "\u24b6": 3}, added_tokens=[dict(w, id=13, content="ab", single_word=True)])
tok("hre", {"a": 0, "b": 1, "-": 2}, normalizer={"type": "Replace", "pattern": {"String": ""}, "content": "-"})
tok("hst", {"a": 0, "b": 1, ".": 2, "a.": 3}, ["a ."], pre_tokenizer={"type": "Split", "pattern": {"String": ".b"}, "behavior": "MergedWithNext", "invert": False})
tok("hsw3", {"x": 0, "a": 1, "b": 2, "c": 3, " ": 4}, added_tokens=[dict(w, id=10, content="ab", single_word=True), dict(w, id=1, content="a"), dict(w, id=12, content="bc")])
tok("hms", {"\u2581\u2581x": 0, " y": 1, "\u2581z": 2}, decoder={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"})
for f, t in (("hz1", "abab"), ("hz2", "abc"), ("hci", "aab"), ("hlo", "\u0130"), ("hls", "a\u00a0<m>\u3000b"),
             ("hsw1", "\u00b2ab"), ("hsw2", "\u24b6ab"), ("hre", "ab"), ("hst", "a.b.b"), ("hsw3", "xabc ab c")):
    open(f + ".txt", "w", encoding="utf-8").write(t)
open("hms1.ids", "w").write("0 2"); open("hms2.ids", "w").write("1 2")
PYEOF
for c in "hz1 hz1|0 3 1" "hz2 hz2|0 3" "hci hci|2 1" "hlo hlo|2" "hls hls|0 10 1" "hsw hsw1|2 13" "hsw hsw2|3 0 1" "hre hre|2 0 2 1 2" "hst hst|0 2 1 2 1" "hsw3 hsw3|0 1 2 3 4 10 4 3"; do
    set -- ${c%%|*}
    got=$("$G" tokenize $1 $2.txt 2>&1)
    [ "$got" = "${c#*|}" ] && ok || bad "HF rule $2: got '$got', want '${c#*|}'"
done
[ "$("$G" tokenize --decode hms hms1.ids)" = "x z" ] && [ "$("$G" tokenize --decode hms hms2.ids)" = " y z" ] && ok ||
    bad "Metaspace decoder: '$("$G" tokenize --decode hms hms1.ids)' / '$("$G" tokenize --decode hms hms2.ids)'"
# a long run of spaces under Llama 3's pattern (its \s*[\r\n]+ backtracks through the run) exceeded
# PCRE2's default 10M-step limit and failed; Oniguruma has none (release build only: 2 s)
if [ -z "$FAULTS" ]; then
    "$PY" -c 'open("spaces.txt", "w").write("a" + " " * 12000000 + "b")'
    "$G" tokenize tok-llama3 spaces.txt > spaces.ids 2>"$T/err" && [ "$(tr ' ' '\n' < spaces.ids | head -1)" = "$("$G" tokenize tok-llama3 one.txt | head -c 0; "$PY" -c 'import json; print(json.load(open("tok-llama3/tokenizer.json"))["model"]["vocab"]["a"])')" ] && ok || bad "12M spaces: $(cat "$T/err")"
    rm -f spaces.txt spaces.ids
fi
printf '\377\376bad' > badutf.txt
expect 3 "$G" tokenize tok-gpt2 badutf.txt
grep -q "badutf.txt: .*not valid UTF-8 (byte 0)" "$T/err" && ok || bad "invalid UTF-8 text: $(cat "$T/err")"
expect 3 "$G" tokenize . one.txt
grep -q "no tokenizer.json" "$T/err" && ok || bad "missing tokenizer.json: $(cat "$T/err")"

# ---- forward pass and perplexity against NumPy ----
expect 0 "$G" synth m32 --dtype f32 --layers 2 --hidden 64 --heads 4 --kv-heads 2 --vocab 640 --seed 3
expect 0 "$G" synth mbf --dtype bf16 --layers 2 --hidden 64 --heads 4 --kv-heads 1 --vocab 640 --tie --seed 4
expect 0 "$G" synth q2 --arch qwen2 --dtype f16 --layers 2 --hidden 64 --heads 4 --kv-heads 2 --vocab 640 --seed 5
expect 0 "$G" synth mi --arch mistral --dtype bf16 --layers 2 --hidden 64 --vocab 640 --seed 6
"$PY" -c '
import json
def edit(p, **kw):
    c = json.load(open(p + "/config.json")); c.update(kw); json.dump(c, open(p + "/config.json", "w"))
edit("mi", sliding_window=16)
' || bad "config edit"
cp -r m32 r3 && cp -r m32 r4
"$PY" -c '
import json
for p, rs in (("r3", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
              ("r4", {"type": "linear", "factor": 4.0})):
    c = json.load(open(p + "/config.json")); c["rope_scaling"] = rs; c["rope_theta"] = 500000.0; json.dump(c, open(p + "/config.json", "w"))
'
for m in m32 mbf q2 mi r3 r4; do rm -f $m/tokenizer.json $m/tokenizer_config.json; cp tok-llama3/tokenizer.json tok-llama3/tokenizer_config.json $m/; done
"$G" tokenize m32 plain.txt > plain.ids
BOS=$("$G" tokenize --bos m32 one.txt | cut -d' ' -f1)
"$PY" -c 'import random; random.seed(7); print(" ".join(str(random.randrange(640)) for _ in range(333)))' > rand.ids
check() { # MODEL IDS CTX BOS STRIDE [graft options]
    m=$1 ids=$2 ctx=$3 bos=$4 stride=$5; shift 5
    "$G" eval $m --tokens $ids --ctx $ctx --dump-logits lg.bin --json "$@" > res.json 2>"$T/err" || { bad "eval $m $*: $(cat "$T/err")"; return; }
    if "$PY" "$LREF" ppl $m $ids $ctx $bos $stride lg.bin res.json 1e-4 > "$T/py" 2>&1; then ok; else bad "eval $m ctx $ctx bos $bos stride $stride $*: $(cat "$T/py")"; fi
}
check m32 plain.ids 64 "$BOS" 0 --batch 3
check m32 rand.ids 50 -1 0 --no-bos --threads 1
check mbf plain.ids 64 "$BOS" 24 --stride 24 --batch 2
check q2 rand.ids 48 -1 0 --no-bos --batch 4
check mi rand.ids 48 "$BOS" 0
check r3 rand.ids 64 -1 20 --no-bos --stride 20
check r4 plain.ids 40 "$BOS" 0 --batch 5
# config.json as transformers reads it (from a review): RoPE in transformers 5's rope_parameters gives the
# logits of the older keys; mlp_bias and partial_rotary_factor, not computed, are refused; Qwen2's
# use_sliding_window slides only from max_window_layers on (all layers below: no window at all); a tied
# config ignores a stored lm_head, as transformers re-ties it
lg() { "$G" eval "$1" --tokens rand.ids --ctx 50 --no-bos --dump-logits "$2" > /dev/null 2>"$T/err"; }
cpm() { rm -rf "$2" && cp -r "$1" "$2" && "$PY" -c 'import json, sys; p = sys.argv[1] + "/config.json"; c = json.load(open(p)); exec(sys.argv[2]); json.dump(c, open(p, "w"))' "$2" "$3"; }
cpm m32 rp0 'c["rope_theta"] = 500000.0; c["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}'
cpm m32 rp1 'c.pop("rope_theta", None); c.pop("rope_scaling", None); c["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}'
lg rp0 rp0.bin && lg rp1 rp1.bin && lg m32 rpm.bin && cmp -s rp0.bin rp1.bin && ! cmp -s rp0.bin rpm.bin && ok || bad "rope_parameters: $(cat "$T/err")"
for edit in 'c["mlp_bias"] = True|mlp_bias' 'c["partial_rotary_factor"] = 0.5|partial_rotary_factor 0.5'; do
    cpm m32 cx "${edit%%|*}"
    expect 3 "$G" eval cx --tokens rand.ids --ctx 50 --no-bos
    grep -qF "${edit#*|}" "$T/err" && ok || bad "eval with ${edit%%|*}: $(cat "$T/err")"
done
cpm q2 qs0 'c["use_sliding_window"] = True; c["sliding_window"] = 8; c["max_window_layers"] = 2'
cpm q2 qs1 'c["use_sliding_window"] = True; c["sliding_window"] = 8; c["max_window_layers"] = 0'
lg q2 qn.bin && lg qs0 qs0.bin && lg qs1 qs1.bin && cmp -s qn.bin qs0.bin && ! cmp -s qn.bin qs1.bin && ok || bad "Qwen2 max_window_layers: $(cat "$T/err")"
cpm m32 tt1 'c["tie_word_embeddings"] = True'
cpm m32 tt2 'c["tie_word_embeddings"] = True'
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from merge_ref import write_safetensors; from lora_ref import load
t = load("tt2/model.safetensors"); t.pop("lm_head.weight"); n = sorted(t)
write_safetensors("tt2/model.safetensors", [(k, "F32", t[k].shape) for k in n], lambda i: t[n[i]])' "$(dirname "$LREF")" || bad "drop lm_head"
lg tt1 tt1.bin && lg tt2 tt2.bin && cmp -s tt1.bin tt2.bin && ok || bad "a tied config with a stored lm_head: $(cat "$T/err")"
# --matmul bf16 (activations rounded to bf16 before each product with BF16 weights, as llama.cpp): logits
# within bf16 rounding of the f32 reference (2⁻⁹ per activation, a few in sequence: 2·10⁻² of the
# largest), from the AVX512-BF16 kernel and from the sgemm route (GRAFT_CPU=generic) alike, which agree
# within the same bound (their f32 sums differ in order, and a last-bit difference can flip an activation's
# rounding by 2⁻⁸); one and two threads give the same bits; F32 weights are not affected; a bad mode is
# a usage error.
for m in mbf mi; do
    for e in native generic; do
        if [ $e = generic ]; then GRAFT_CPU=generic "$G" eval $m --tokens rand.ids --ctx 48 --no-bos --matmul bf16 --dump-logits lg-$e.bin --json > res.json 2>"$T/err"
        else "$G" eval $m --tokens rand.ids --ctx 48 --no-bos --matmul bf16 --threads 1 --dump-logits lg-$e.bin --json > res.json 2>"$T/err"; fi || bad "eval --matmul bf16 $m: $(cat "$T/err")"
        "$PY" "$LREF" ppl $m rand.ids 48 -1 0 lg-$e.bin res.json 2e-2 > "$T/py" 2>&1 && ok || bad "--matmul bf16 $m ($e) against the f32 reference: $(cat "$T/py")"
    done
    "$PY" -c 'import sys, numpy as np; a, b = (np.fromfile(f, "<f4") for f in sys.argv[1:]); d = np.abs(a - b).max() / np.abs(a).max(); sys.exit(0 if d <= 2e-2 else "differ by %g" % d)' lg-native.bin lg-generic.bin > "$T/py" 2>&1 && ok || bad "--matmul bf16 $m: kernel and sgemm route $(cat "$T/py")"
    "$G" eval $m --tokens rand.ids --ctx 48 --no-bos --matmul bf16 --threads 2 --dump-logits lg-2.bin > /dev/null 2>&1 && cmp -s lg-native.bin lg-2.bin && ok || bad "--matmul bf16 $m: 1 and 2 threads differ"
done
"$G" eval m32 --tokens rand.ids --ctx 50 --no-bos --dump-logits lg-a.bin > /dev/null 2>&1 && "$G" eval m32 --tokens rand.ids --ctx 50 --no-bos --matmul bf16 --dump-logits lg-b.bin > /dev/null 2>&1 && cmp -s lg-a.bin lg-b.bin && ok || bad "--matmul bf16 changed an F32 model's logits"
expect 2 "$G" eval m32 --tokens rand.ids --matmul fp8
grep -q "matmul expects f32 or bf16" "$T/err" && ok || bad "bad --matmul: $(cat "$T/err")"
# the real layouts of Qwen3 (q/k RMSNorm per head; head_dim 32 ≠ hidden / heads) and Phi-3 (fused
# qkv_proj / gate_up_proj; the 128k config's LongRoPE with head_dim 96, its original context cut to 32 so
# that 64-token windows take long_factor and 24-token ones short_factor, both with the attention factor)
CFG="$(dirname "$LREF")/../configs"
expect 0 "$G" synth qw3 --like-config "$CFG/qwen3-8b.json" --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --head-dim 32 --vocab 640 --dtype f32 --seed 8
expect 0 "$G" synth ph3 --like-config "$CFG/phi-3-mini-4k.json" --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 4 --vocab 640 --dtype f32 --seed 9
expect 0 "$G" synth pl3 --like-config "$CFG/phi-3-mini-128k.json" --layers 1 --hidden 192 --intermediate 96 --heads 2 --kv-heads 2 --vocab 640 --dtype f32 --seed 10
"$PY" -c '
import json
c = json.load(open("pl3/config.json")); c["original_max_position_embeddings"] = 32; json.dump(c, open("pl3/config.json", "w"))
' || bad "config edit"
check qw3 rand.ids 48 -1 0 --no-bos --batch 2
check ph3 rand.ids 40 -1 0 --no-bos
check pl3 rand.ids 64 -1 0 --no-bos
check pl3 rand.ids 24 -1 0 --no-bos --batch 3
# Gemma 2 (soft-capped scores and logits, sliding window on even layers), the Gemma 3 vision–language
# checkpoint's text decoder and a Gemma 3 text model in bf16 (√hidden rounded to bf16; global layers
# every 2nd / 3rd with the local RoPE base on the others): windows cut to 8 tokens so 40-token windows
# cross them
expect 0 "$G" synth gm2 --like-config "$CFG/gemma-2-9b.json" --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --head-dim 32 --vocab 640 --dtype f32 --seed 11
expect 0 "$G" synth gm3 --like-config "$CFG/gemma-3-4b.json" --layers 3 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --head-dim 32 --vocab 640 --dtype f32 --seed 12
"$PY" -c '
import json, sys
c = json.load(open(sys.argv[1] + "/gemma-3-4b.json"))["text_config"]
c.update(architectures=["Gemma3ForCausalLM"], torch_dtype="bfloat16")
json.dump(c, open("gm3t.json", "w"))
' "$CFG" || bad "gemma 3 text config"
expect 0 "$G" synth gm3t --like-config gm3t.json --layers 3 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --head-dim 32 --vocab 640 --dtype bf16 --seed 13
"$PY" -c '
import json
def edit(p, f):
    c = json.load(open(p + "/config.json")); f(c); json.dump(c, open(p + "/config.json", "w"))
edit("gm2", lambda c: c.update(sliding_window=8))
edit("gm3", lambda c: c["text_config"].update(sliding_window=8, sliding_window_pattern=2))
edit("gm3t", lambda c: c.update(sliding_window=8, sliding_window_pattern=3))
' || bad "config edit"
check gm2 rand.ids 40 -1 0 --no-bos --batch 2
check gm3 rand.ids 40 -1 0 --no-bos
check gm3t rand.ids 40 -1 0 --no-bos --batch 3
# Mixtral (graft moe of distinct experts, random router) against the NumPy MoE forward; sparse
# upcycling preserves the dense model's function: logits equal the dense model's (zero or random
# router: the experts are copies, and top-k weights are renormalised)
expect 0 "$G" synth ex1 --like m32 --delta 0.05 --seed 31
expect 0 "$G" synth ex2 --like m32 --delta 0.05 --seed 32
printf 'base_model: m32\ngate_mode: random\ndtype: float32\nexperts_per_token: 2\nexperts:\n  - {source_model: ex1}\n  - {source_model: ex2}\n  - {source_model: m32}\n' > moe.yml
expect 0 "$G" moe moe.yml mx --seed 4
check mx rand.ids 48 -1 0 --no-bos --batch 2
"$G" eval m32 --tokens rand.ids --ctx 64 --no-bos --dump-logits dense.bin >/dev/null 2>&1
for init in zero random; do
    expect 0 "$G" upcycle m32 up-$init --experts 4 --top-k 2 --router-init $init --seed 5
    "$G" eval up-$init --tokens rand.ids --ctx 64 --no-bos --dump-logits up.bin >/dev/null 2>&1
    "$PY" -c 'import numpy as np, sys; a, b = np.fromfile("dense.bin", "<f4"), np.fromfile("up.bin", "<f4"); d = np.abs(a - b).max() / np.abs(a).max(); print(d); sys.exit(0 if a.size == b.size and d < 1e-5 else 1)' > "$T/py" 2>&1 && ok || bad "upcycle --router-init $init changes the logits: $(cat "$T/py")"
done
# --matmul bf16 on the other layouts, in bf16: Phi-3's fused projections (row views), Gemma 2 and 3
# within bf16 rounding of the float64 reference as above; Mixtral's experts too, except where the
# rounding flips a near-tied top-2 choice of its random router (measured: 4 of 333 positions, the
# perplexity within 2·10⁻⁵): at most 3 % of the positions beyond the bound, perplexity within 10⁻³;
# a llama GGUF (q/k rows un-permuted in their BF16 type) gives the folder's very logits
for m in ph3 gm2 mx; do expect 0 "$G" convert $m $m-b --dtype bf16; done
for m in ph3-b gm2-b gm3t mx-b; do
    "$G" eval $m --tokens rand.ids --ctx 40 --no-bos --matmul bf16 --dump-logits lg.bin --json > res.json 2>"$T/err" || bad "eval --matmul bf16 $m: $(cat "$T/err")"
    if [ $m = mx-b ]; then
        "$G" eval $m --tokens rand.ids --ctx 40 --no-bos --dump-logits lg32.bin --json > res32.json 2>"$T/err"
        "$PY" -c 'import json, sys, numpy as np
a, b = (np.fromfile(f, "<f4").reshape(-1, 640) for f in ("lg32.bin", "lg.bin"))
d = np.abs(a - b).max(1) / np.abs(a).max()
n32, n16 = (json.load(open(f))["nll"] for f in ("res32.json", "res.json"))
sys.exit(0 if (d > 2e-2).mean() <= 0.03 and abs(n16 - n32) <= 1e-3 * n32 else "%d of %d positions beyond 2e-2; nll %g vs %g" % ((d > 2e-2).sum(), len(d), n16, n32))' > "$T/py" 2>&1 && ok || bad "--matmul bf16 $m: $(cat "$T/py")"
    else "$PY" "$LREF" ppl $m rand.ids 40 -1 0 lg.bin res.json 2e-2 > "$T/py" 2>&1 && ok || bad "--matmul bf16 $m against the f32 reference: $(cat "$T/py")"; fi
done
expect 0 "$G" convert mbf mbf.gguf --type bf16
"$G" eval mbf --tokens rand.ids --ctx 40 --no-bos --matmul bf16 --dump-logits a.bin > /dev/null 2>&1 && "$G" eval mbf.gguf --tokens rand.ids --ctx 40 --no-bos --matmul bf16 --dump-logits b.bin > /dev/null 2>&1 &&
    cmp -s a.bin b.bin && ok || bad "--matmul bf16: the GGUF's logits differ from the folder's"
expect 2 "$G" eval mx --tokens rand.ids --collect gram mxg.safetensors
grep -q "statistics of mixture-of-experts layers are not collected" "$T/err" && ok || bad "stats on MoE: $(cat "$T/err")"
# text input: the same as its ids
"$G" eval m32 --text plain.txt --ctx 64 --json > t1.json && "$G" eval m32 --tokens plain.ids --ctx 64 --json > t2.json &&
    [ "$(cut -d, -f5-7 t1.json)" = "$(cut -d, -f5-7 t2.json)" ] && ok || bad "--text and --tokens disagree: $(cat t1.json t2.json)"
# the same bits for any thread count (a batch size changes sgemm's M, so OpenBLAS may round differently)
"$G" eval mbf --tokens rand.ids --ctx 40 --threads 1 --batch 4 --dump-logits a.bin >/dev/null 2>&1 && "$G" eval mbf --tokens rand.ids --ctx 40 --threads 3 --batch 4 --dump-logits b.bin >/dev/null 2>&1
cmp -s a.bin b.bin && ok || bad "logits depend on --threads"
# statistics
for kind in gram act-norm; do
    expect 0 "$G" eval q2 --tokens rand.ids --ctx 64 --no-bos --batch 2 --collect $kind st-$kind.safetensors
    if "$PY" "$LREF" stats q2 rand.ids 64 -1 $kind st-$kind.safetensors > "$T/py" 2>&1; then ok; else bad "--collect $kind: $(cat "$T/py")"; fi
    # Phi-3: the statistics carry the fused projections' names (inputs of qkv_proj and gate_up_proj)
    expect 0 "$G" eval ph3 --tokens rand.ids --ctx 40 --no-bos --collect $kind sp-$kind.safetensors
    if "$PY" "$LREF" stats ph3 rand.ids 40 -1 $kind sp-$kind.safetensors > "$T/py" 2>&1; then ok; else bad "Phi-3 --collect $kind: $(cat "$T/py")"; fi
done
expect 0 "$G" eval mbf --text plain.txt --ctx 64 --collect act-norm wanda.safetensors
expect 0 "$G" prune mbf pruned --sparsity 0.5 --wanda wanda.safetensors
expect 0 "$G" verify pruned

# ---- a non-finite perplexity is an error naming the first layer whose output is not finite ----
cp -r m32 nfm
$PATCH nfm/model.safetensors '^model.layers.1.mlp.down_proj.weight$' inf 0 && ok || bad "could not patch nfm" # one infinite weight in layer 1
"$PY" -c 'import random; random.seed(3); print(" ".join(str(random.randrange(640)) for _ in range(100)))' > nfids.txt
expect 1 "$G" eval nfm --tokens nfids.txt --ctx 32
[ "$(wc -l < "$T/err")" = 1 ] && grep -q "log-likelihood is not finite: activations first became NaN or infinite in layer 1 (model.layers.1)" "$T/err" && ok || bad "non-finite eval: $(cat "$T/err")"
expect 0 "$G" eval m32 --tokens nfids.txt --ctx 32

# ---- evolve ----
expect 0 "$G" synth base --dtype bf16 --layers 2 --hidden 64 --vocab 640 --seed 10
expect 0 "$G" synth ft1 --like base --delta 0.02 --seed 11
expect 0 "$G" synth ft2 --like base --delta 0.02 --seed 12
for m in base ft1 ft2; do cp tok-llama3/tokenizer.json tok-llama3/tokenizer_config.json $m/; done
cat > genome.yml <<'EOT'
merge_method: task_arithmetic
base_model: base
models:
  - model: ft1
    parameters:
      weight: {search: [0, 1]}   # one value
  - model: ft2
    parameters:
      weight:
        search: [0.2, 0.8]
        groups: 2
dtype: bfloat16
EOT
expect 0 "$G" evolve genome.yml --eval plain.txt --budget 14 --ctx 48 --seed 3 evo
grep -q "2 generations (14 evaluations)" "$T/err" && ok || bad "evolve generations: $(cat "$T/err")"
[ "$(grep -c '"k":' evo.evolve.log)" = 14 ] && [ "$(grep -c '"sigma":' evo.evolve.log)" = 2 ] && ok || bad "evolve log: $(head -c 400 evo.evolve.log)"
cmp -s "$T/out" evo/mergekit_config.yml && grep -q "weight: 0\.[0-9]*   # one value" evo/mergekit_config.yml && grep -q "^        \[0\.[0-9]*, 0\.[0-9]*\]" evo/mergekit_config.yml && ok || bad "evolve best config: $(cat evo/mergekit_config.yml)"
# the reported best is what the written model scores, and the same NLL as the log's minimum
best=$(sed -n 's/.*best mean NLL \([0-9.]*\).*/\1/p' "$T/err")
"$G" eval evo --text plain.txt --ctx 48 --json > e.json
"$PY" -c 'import json, sys; e = json.load(open("e.json")); b = float(sys.argv[1]); m = min(json.loads(l)["nll"] for l in open("evo.evolve.log") if "\"k\"" in l); sys.exit(0 if abs(e["nll"] - b) < 1e-6 and abs(m - b) < 1e-6 else 1)' "$best" && ok || bad "evolve best ($best) is not what its model scores: $(cat e.json)"
# the same merge by the ordinary path from the written config (placed beside the genome: model paths
# are relative to the config file's folder)
cp evo/mergekit_config.yml best.yml
expect 0 "$G" merge best.yml again
cmp -s evo/model.safetensors again/model.safetensors && ok || bad "evolve's model differs from merging its config"
# resume: the logged candidates are replayed, the budget extended; equals a fresh run of the full budget
expect 0 "$G" evolve genome.yml --eval plain.txt --budget 28 --ctx 48 --seed 3 --resume --force evo
[ "$(grep -c '"k":' evo.evolve.log)" = 28 ] && ok || bad "resume did not extend the log"
expect 0 "$G" evolve genome.yml --eval plain.txt --budget 28 --ctx 48 --seed 3 --threads 1 fresh
cmp -s evo/model.safetensors fresh/model.safetensors && ok || bad "resumed evolve differs from a fresh run"
expect 1 "$G" evolve genome.yml --eval plain.txt --budget 14 --ctx 48 --seed 3 evo
grep -q "already exists; use --force" "$T/err" && ok || bad "evolve over an existing OUT: $(cat "$T/err")"
expect 1 "$G" evolve genome.yml --eval plain.txt --budget 14 --ctx 48 --seed 3 evo3 --log evo.evolve.log
grep -q "an evolve log is already there" "$T/err" && [ ! -e evo3 ] && ok || bad "evolve over an existing log: $(cat "$T/err")"
expect 2 "$G" evolve genome.yml --eval plain.txt --budget 14 --ctx 48 --seed 4 --resume evo3 --log evo.evolve.log
grep -q "written for another genome, --eval texts, ctx, max-tokens, batch, matmul, seed" "$T/err" && [ ! -e evo3 ] && ok || bad "resume with another seed: $(cat "$T/err")"
# --matmul bf16: candidates scored as `graft eval --matmul bf16` scores them (the BF16 merge's products
# with rounded activations); its log is not resumed by an f32 search, nor the other way round
expect 0 "$G" evolve genome.yml --eval plain.txt --budget 14 --ctx 48 --seed 3 --matmul bf16 evbf
best=$(sed -n 's/.*best mean NLL \([0-9.]*\).*/\1/p' "$T/err")
"$G" eval evbf --text plain.txt --ctx 48 --matmul bf16 --json > eb.json
"$PY" -c 'import json, sys; b = float(sys.argv[1]); sys.exit(0 if abs(json.load(open("eb.json"))["nll"] - b) < 1e-6 else 1)' "$best" && grep -q '"matmul":"bf16"' evbf.evolve.log && ok || bad "evolve --matmul bf16: the best ($best) is not what eval --matmul bf16 gives: $(cat eb.json)"
"$G" eval evbf --text plain.txt --ctx 48 --json > ef.json
"$PY" -c 'import json, sys; a, b = (json.load(open(f))["nll"] for f in sys.argv[1:]); sys.exit(0 if a != b and abs(a - b) < 1e-2 * b else 1)' eb.json ef.json && ok || bad "evolve --matmul bf16: not the bf16 products (or far from f32): $(cat eb.json ef.json)"
expect 2 "$G" evolve genome.yml --eval plain.txt --budget 28 --ctx 48 --seed 3 --resume --force evbf
grep -q "another genome, --eval texts, ctx, max-tokens, batch, matmul" "$T/err" && ok || bad "an f32 search resumed a bf16 log: $(cat "$T/err")"
expect 2 "$G" evolve genome.yml --eval plain.txt --budget 28 --ctx 48 --seed 3 --matmul bf16 --resume --force evo
expect 0 "$G" evolve genome.yml --eval plain.txt --budget 28 --ctx 48 --seed 3 --matmul f32 --resume --force evo
cmp -s evo/model.safetensors fresh/model.safetensors && ok || bad "evolve --matmul f32 did not resume the default's log"
expect 2 "$G" evolve genome.yml --eval plain.txt --budget 14 --matmul f16 gx
# another --batch (its sums round differently) is refused too; a blank line inside a log is kept whole
# on resume (appending after it once glued two lines into one)
expect 2 "$G" evolve genome.yml --eval plain.txt --budget 28 --ctx 48 --seed 3 --batch 4 --resume --force evo
expect 0 "$G" evolve genome.yml --eval plain.txt --budget 14 --ctx 48 --seed 3 evbl
sed -i '2a\\' evbl.evolve.log
expect 0 "$G" evolve genome.yml --eval plain.txt --budget 21 --ctx 48 --seed 3 --resume --force evbl
expect 0 "$G" evolve genome.yml --eval plain.txt --budget 28 --ctx 48 --seed 3 --resume --force evbl
cmp -s evbl/model.safetensors fresh/model.safetensors && [ "$(grep -c '"k":' evbl.evolve.log)" = 28 ] && ok || bad "evolve resumed over a blank log line: $(cat "$T/err")"
for bad in 'weight: {search: [1, 0]}|search expects [lo, hi]' 'weight: {search: [0, 1], groups: 0}|groups expects' \
           'weight: {search: [0, 1], step: 2}|takes only' 'weight: 0.5|no search ranges' 'weight: {search: [0, x]}|search expects'; do
    printf 'merge_method: linear\nmodels:\n  - model: ft1\n    parameters:\n      %s\n  - model: ft2\n    parameters:\n      weight: 1.0\n' "${bad%%|*}" > g.yml
    expect 4 "$G" evolve g.yml --eval plain.txt --budget 4 gx
    grep -qF "g.yml: " "$T/err" && grep -qF "${bad#*|}" "$T/err" && [ ! -e gx ] && [ ! -e gx.evolve.log ] && ok || bad "genome '${bad%%|*}': $(cat "$T/err")"
done
printf 'merge_method: nonsense\nmodels:\n  - model: ft1\n    parameters:\n      weight: {search: [0, 1]}\n' > g.yml
expect 4 "$G" evolve g.yml --eval plain.txt --budget 4 gx
grep -q "unknown merge_method 'nonsense'" "$T/err" && [ ! -e gx ] && ok || bad "evolve with a bad method: $(cat "$T/err")"
expect 2 "$G" evolve genome.yml --budget 4 gx
expect 2 "$G" evolve genome.yml --eval plain.txt gx
# tensors whose recipe did not change since the previous candidate are copied (only the MLP weights are
# searched here): counted in the log, and the reported best is still what its written model scores
cat > gm.yml <<'EOT'
merge_method: task_arithmetic
base_model: base
models:
  - model: ft1
    parameters:
      weight:
        - filter: mlp
          value: {search: [0, 1]}
        - value: 0.5
  - model: ft2
    parameters:
      weight: 0.5
dtype: bfloat16
EOT
expect 0 "$G" evolve gm.yml --eval plain.txt --budget 8 --ctx 48 --seed 3 evm
best=$(sed -n 's/.*best mean NLL \([0-9.]*\).*/\1/p' "$T/err")
reuse=$(sed -n 's/.*graft: \([0-9]*\) of \([0-9]*\) tensor merges copied.*/\1 \2/p' "$T/err")
set -- $reuse
[ "${1:-0}" -gt 0 ] && [ "$1" -lt "${2:-0}" ] && ok || bad "evolve reused no tensors: $(cat "$T/err")"
"$G" eval evm --text plain.txt --ctx 48 --json > evm.json
"$PY" -c 'import json, sys; sys.exit(0 if abs(json.load(open("evm.json"))["nll"] - float(sys.argv[1])) < 1e-6 else 1)' "$best" && ok || bad "evolve with reused tensors: the best is not what its model scores"
# starts: generation 0's candidate 0 is the baseline (init values; weights default to 1 / models merged),
# its NLL what graft eval gives the merge at those values; a choice renders its item
cat > gi.yml <<'EOT'
merge_method: {choice: [linear, task_arithmetic], init: task_arithmetic}
base_model: base
models:
  - model: ft1
    parameters:
      weight: {search: [0, 2], init: 1.5}
  - model: ft2
    parameters:
      weight:
        - filter: mlp
          value: {search: [0.2, 0.8], groups: 2}
        - value: {search: [0, 1]}
dtype: bfloat16
EOT
expect 0 "$G" evolve gi.yml --eval plain.txt --budget 10 --ctx 48 --seed 5 evi
cp "$T/err" evi.err
"$PY" -c '
import json, sys
c = [json.loads(l) for l in open("evi.evolve.log") if "\"k\"" in l]
x = c[0]["x"]
want = [0.75, 0.75, 0.5, 0.5, 0.5]  # task_arithmetic: the middle of its bin; 1.5 of [0, 2]; 1/2 of [0.2, 0.8] twice; 1/2 of [0, 1]
sys.exit(0 if c[0]["gen"] == 0 and c[0]["k"] == 0 and all(abs(a - b) < 1e-12 for a, b in zip(x, want)) else 1)' && ok || bad "evolve baseline point: $(head -c 300 evi.evolve.log)"
cat > base0.yml <<'EOT'
merge_method: task_arithmetic
base_model: base
models:
  - model: ft1
    parameters:
      weight: 1.5
  - model: ft2
    parameters:
      weight:
        - filter: mlp
          value: [0.5, 0.5]
        - value: 0.5
dtype: bfloat16
EOT
expect 0 "$G" merge base0.yml b0
"$G" eval b0 --text plain.txt --ctx 48 --json > b0.json
"$PY" -c 'import json; b = json.load(open("b0.json"))["nll"]; c = [json.loads(l) for l in open("evi.evolve.log") if "\"k\"" in l][0]; import sys; sys.exit(0 if abs(c["nll"] - b) < 1e-6 and abs(c["nlls"][0] - b) < 1e-6 else 1)' && ok || bad "evolve baseline NLL is not the merge's: $(cat b0.json)"
grep -q "vs the baseline" evi.err && grep -q '"baseline":' evi.evolve.log && ok || bad "evolve does not report the baseline: $(cat evi.err)"
grep -Eq "^merge_method: (linear|task_arithmetic)$" evi/mergekit_config.yml && ok || bad "evolve choice rendering: $(head -3 evi/mergekit_config.yml)"
grep -q '"nll": 1e+30' evi.evolve.log && grep -q "does not merge (.*linear merge but has no 'weight'" evi.err && ok || bad "evolve: a linear candidate with base_model is not scored worst: $(cat evi.err)"
for bad in 'weight: {search: [0, 1], init: 2}|init expects numbers within' 'weight: {search: [0, 1], groups: 2, init: [0.5]}|init has 1 values for 2 groups' \
           'weight: {choice: [0.5, 1], init: 0.7}|init must be one of' 'weight: {choice: [0.5, 1], search: [0, 1]}|either searched' \
           'weight: {choice: [], init: 1}|choice expects a list'; do
    printf 'merge_method: linear\nmodels:\n  - model: ft1\n    parameters:\n      %s\n  - model: ft2\n    parameters:\n      weight: 1.0\n' "${bad%%|*}" > g.yml
    expect 4 "$G" evolve g.yml --eval plain.txt --budget 4 gx
    grep -qF "${bad#*|}" "$T/err" && [ ! -e gx ] && ok || bad "genome '${bad%%|*}': $(cat "$T/err")"
done
# objectives over two texts: per-text NLLs logged; max scores the worse; pareto writes the front and
# picks its best mean; racing stops candidates early (z = 0: as soon as the estimate is worse)
for i in 1 2 3 4 5 6; do cat plain.txt; done > long.txt
expect 0 "$G" evolve genome.yml --eval plain.txt --eval long.txt --objective max --budget 14 --ctx 48 --seed 3 evmax
"$PY" -c 'import json, sys; c = [json.loads(l) for l in open("evmax.evolve.log") if "\"k\"" in l]; sys.exit(0 if all(len(x["nlls"]) == 2 and abs(x["nll"] - max(x["nlls"])) < 1e-12 for x in c) else 1)' && ok || bad "evolve --objective max: $(head -c 400 evmax.evolve.log)"
expect 0 "$G" evolve genome.yml --eval plain.txt --eval long.txt --objective pareto --budget 14 --ctx 48 --seed 3 evpar
"$PY" - <<'PYEOF' && ok || bad "evolve --objective pareto: $(tail -c 600 evpar.evolve.log)"
import json, sys
L = [json.loads(l) for l in open("evpar.evolve.log")]
c = [x for x in L if "k" in x and "nlls" in x]
front = [x for x in L if "pareto" in x][0]["pareto"]
dom = lambda a, b: all(p <= q for p, q in zip(a, b)) and any(p < q for p, q in zip(a, b))
want = sorted((x["gen"], x["k"]) for x in c if not any(dom(y["nlls"], x["nlls"]) for y in c))
got = sorted((x["gen"], x["k"]) for x in front)
sys.exit(0 if want == got and len(c) == 14 else 1)
PYEOF
grep -q "best on long.txt" "$T/err" && ok || bad "evolve pareto: best per text not listed: $(cat "$T/err")"
"$G" eval evpar --text plain.txt --text long.txt --ctx 48 --json > evpar.json 2>/dev/null
"$PY" -c '
import json, sys
front = [x for x in map(json.loads, open("evpar.evolve.log")) if isinstance(x.get("pareto"), list)][0]["pareto"]
best = min(front, key=lambda x: x["mean"])
e = json.load(open("evpar.json"))
sys.exit(0 if abs(sum(best["nlls"]) / 2 - best["mean"]) < 1e-12 else 1)' && ok || bad "evolve pareto: front means"
expect 0 "$G" evolve genome.yml --eval long.txt --race --race-z 0 --budget 21 --ctx 32 --seed 3 evr
"$PY" - <<'PYEOF' && ok || bad "evolve --race: $(tail -c 600 evr.evolve.log)"
import json, sys
L = [json.loads(l) for l in open("evr.evolve.log")]
c = [x for x in L if "k" in x and "nlls" in x]
w = [x for x in L if "race_windows" in x][0]
raced = [x for x in c if x.get("raced")]
full = [x for x in c if not x.get("raced")]
best = min(x["nll"] for x in full)
sys.exit(0 if raced and w["race_windows"] < w["full_windows"] and all(x["gen"] > 0 and x["nll"] > best for x in raced) else 1)
PYEOF
best=$(sed -n 's/.*best mean NLL \([0-9.]*\).*/\1/p' "$T/err")
grep -q "racing evaluated" "$T/err" && "$G" eval evr --text long.txt --ctx 32 --json > evr.json && "$PY" -c 'import json, sys; sys.exit(0 if abs(json.load(open("evr.json"))["nll"] - float(sys.argv[1])) < 1e-6 else 1)' "$best" && ok || bad "evolve --race: the best is not what its model scores: $(cat "$T/err")"
expect 0 "$G" evolve genome.yml --eval long.txt --race --race-z 0 --budget 28 --ctx 32 --seed 3 --resume --force evr
expect 0 "$G" evolve genome.yml --eval long.txt --race --race-z 0 --budget 28 --ctx 32 --seed 3 evr2
cmp -s evr/model.safetensors evr2/model.safetensors && ok || bad "resumed racing evolve differs from a fresh run"
expect 2 "$G" evolve genome.yml --eval long.txt --race --objective pareto --budget 4 gx
# resume: the default z and a whole-number σ0 (stored as JSON integers); a log cut mid-line (a killed
# run) continues from its last whole line and ends as a fresh run; another --eval text or ctx refused
expect 0 "$G" evolve genome.yml --eval long.txt --race --sigma 1 --budget 21 --ctx 32 --seed 4 evz
head -c 1500 evz.evolve.log > cut.log && cp cut.log evz.evolve.log
expect 0 "$G" evolve genome.yml --eval long.txt --race --sigma 1 --budget 28 --ctx 32 --seed 4 --resume --force evz
expect 0 "$G" evolve genome.yml --eval long.txt --race --sigma 1 --budget 28 --ctx 32 --seed 4 evz2
cmp -s evz/model.safetensors evz2/model.safetensors && ok || bad "evolve resumed from a cut log differs from a fresh run"
"$PY" -c '
import json, sys
a, b = ([(x["gen"], x["k"], x["x"], x["nll"], x.get("raced", False)) for x in map(json.loads, open(f)) if "nlls" in x] for f in sys.argv[1:])
sys.exit(0 if sorted(a) == sorted(b) and len(a) == 28 else 1)' evz.evolve.log evz2.evolve.log && ok || bad "evolve: the resumed log's candidates differ from a fresh run's"
: > evz.evolve.log
expect 0 "$G" evolve genome.yml --eval long.txt --race --sigma 1 --budget 7 --ctx 32 --seed 4 --resume --force evz
grep -q '"graft_evolve"' evz.evolve.log && ok || bad "evolve --resume of an empty log wrote no header"
expect 2 "$G" evolve genome.yml --eval plain.txt --race --sigma 1 --budget 14 --ctx 32 --seed 4 --resume --force evz
expect 2 "$G" evolve genome.yml --eval long.txt --race --sigma 1 --budget 14 --ctx 40 --seed 4 --resume --force evz
# genomes with non-ASCII text (and a BOM), block-style lists, a broken choice; refused data-flow specs
{ printf '\357\273\277# Größe — “genome”\n'; sed 's/      weight: {search: \[0, 2\], init: 1.5}/      weight:  # “block” style\n        search:\n          - 0\n          - 2\n        init: 1.5/' gi.yml; } > gu.yml
expect 0 "$G" evolve gu.yml --eval plain.txt --budget 8 --ctx 48 --seed 5 evu
"$PY" -c 'import sys; t = open(sys.argv[1], encoding="utf-8-sig").read(); import re; sys.exit(0 if t.startswith("# Größe — “genome”") and re.search(r"weight:  # “block” style\n        [0-9.]+\n  - model: ft2\n", t) else 1)' evu/mergekit_config.yml && ok || bad "evolve with a non-ASCII genome: $(head -12 evu/mergekit_config.yml)"
printf 'merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: {choice: [ft1, nothere]}\n    parameters:\n      weight: {search: [0, 1]}\ndtype: bfloat16\n' > gbad.yml
expect 0 "$G" evolve gbad.yml --eval plain.txt --budget 8 --ctx 48 --seed 5 evb
printf 'merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: {choice: [ft1, nothere], init: nothere}\n    parameters:\n      weight: {search: [0, 1]}\ndtype: bfloat16\n' > gbad2.yml
expect 4 "$G" evolve gbad2.yml --eval plain.txt --budget 8 --ctx 48 --seed 5 evb2
# the data-flow space: candidate 0 is the first model itself; the written frankenmerge computes what
# the sources' layers along the chosen path compute with the residual stream scaled at each layer's
# input (NumPy, llama_ref.py), up to the norms' ε
export AREFDIR="$(dirname "$TREF")"
expect 0 "$G" synth dfa --dtype f32 --layers 3 --hidden 64 --vocab 640 --seed 20
expect 0 "$G" synth dfb --like dfa --delta 0.3 --seed 21
for m in dfa dfb; do cp tok-llama3/tokenizer.json tok-llama3/tokenizer_config.json $m/; sed -i 's/"rms_norm_eps": [0-9.e-]*/"rms_norm_eps": 1e-12/' $m/config.json; done
# (ε ≪ the tiny random model's mean square: RMSNorm then ignores a common factor up to rounding)
printf 'dataflow:\n  models: [dfa, dfb]\n  repeats: 2\n  scale_range: [0.25, 4]\ndtype: float32\n' > gdf.yml
expect 0 "$G" evolve gdf.yml --eval plain.txt --budget 36 --ctx 48 --seed 2 edf
grep -q "24 searched values" "$T/err" && ok || bad "dataflow dimension: $(cat "$T/err")"
"$G" eval dfa --text plain.txt --ctx 48 --json > dfa.json
"$PY" -c 'import json, sys; a = json.load(open("dfa.json"))["nll"]; c = [json.loads(l) for l in open("edf.evolve.log") if "\"k\": 0," in l][0]; sys.exit(0 if c["gen"] == 0 and abs(c["nll"] - a) < 1e-6 else 1)' && ok || bad "dataflow baseline is not the first model: $(cat dfa.json)"
"$G" tokenize dfa plain.txt > df.ids 2>/dev/null
"$G" eval edf --tokens df.ids --ctx 40 --no-bos --max-tokens 40 --dump-logits df.bin >/dev/null 2>&1
"$PY" - <<'PYEOF' && ok || bad "dataflow path and scales differ from NumPy's"
import json, os, sys
sys.path.insert(0, os.environ["AREFDIR"])
import numpy as np
from llama_ref import logits
from lora_ref import load
L = [json.loads(l) for l in open("edf.evolve.log")]
c = [x for x in L if "k" in x and "nlls" in x]
best = min(c, key=lambda x: x["nll"])
x, T = best["x"], 12
slots = [(m, l) for rep in range(2) for m in ("dfa", "dfb") for l in range(3)]
path = [(slots[t], 0.25 + min(max(x[T + t], 0), 1) * 3.75) for t in range(T) if min(max(x[t], 0), 1) >= 0.5]
src = {m: {k: v.astype(np.float64) for k, v in load(m).items()} for m in ("dfa", "dfb")}
# MergeKit's rule for slices: embeddings from the first slice's model, final norm and lm_head from the last's
W = {k: src[path[0][0][0] if "embed_tokens" in k else path[-1][0][0]][k] for k in src["dfa"] if ".layers." not in k}
for i, ((m, l), _) in enumerate(path):
    for k, v in src[m].items():
        if k.startswith("model.layers.%d." % l):
            W[k.replace("model.layers.%d." % l, "model.layers.%d." % i)] = v
c = json.load(open("dfa/config.json"))
c["num_hidden_layers"] = len(path)
os.makedirs("dfref", exist_ok=True)
json.dump(c, open("dfref/config.json", "w"))
toks = np.array([int(t) for t in open("df.ids").read().split()][:40])
ref = logits("dfref", toks, W, res_scale=[s for _, s in path])
got = np.fromfile("df.bin", "<f4").reshape(ref.shape)
d = np.abs(got - ref).max() / np.abs(ref).max()
print(len(path), d)
moved = [m for m, _ in path] != [("dfa", l) for l in range(3)] or any(abs(w - 1) > 1e-3 for _, w in path)
sys.exit(0 if len(path) >= 1 and moved and d < 2e-5 else 1)
PYEOF
printf 'dataflow:\n  models: [dfa]\n  repeats: 9\ndtype: float32\n' > gdf2.yml
expect 4 "$G" evolve gdf2.yml --eval plain.txt --budget 4 gx
grep -q "repeats expects 1 to 8" "$T/err" && ok || bad "dataflow repeats: $(cat "$T/err")"
printf 'dataflow:\n  models: [nowhere]\ndtype: float32\n' > gdf3.yml
expect 4 "$G" evolve gdf3.yml --eval plain.txt --budget 4 gx
grep -q "no num_hidden_layers in" "$T/err" && ok || bad "dataflow with a missing model: $(cat "$T/err")"
printf 'dataflow:\n  models: [dfa]\nparameters:\n  x: {search: [0, 1]}\n' > gdf4.yml
expect 4 "$G" evolve gdf4.yml --eval plain.txt --budget 4 gx
grep -q "no other search ranges" "$T/err" && [ ! -e gx ] && ok || bad "dataflow with ranges: $(cat "$T/err")"
m=""; for i in $(seq 0 64); do m="$m${m:+, }m$i"; done
for spec in "models: [$m]|1 to 64" "models: [dfa]\n  scale_range: [1, 1]|lo < hi" "models: [dfa]\n  layers: [5]|layers gives dfa 5 layers"; do
    printf "dataflow:\n  ${spec%%|*}\ndtype: float32\n" > gdf5.yml
    expect 4 "$G" evolve gdf5.yml --eval plain.txt --budget 4 --force gx
    grep -qF "${spec#*|}" "$T/err" && [ ! -e gx ] && ok || bad "dataflow '${spec%%|*}': $(cat "$T/err")"
done
# rendering: a model name YAML must quote stays itself in the passthrough config (written raw, `df #b`
# became the model `df`); an anchored range renders with its anchor (the alias then reads the value); a
# tag is refused; values below 1e-4 render with a dot (`5.0e-06`: PyYAML, so MergeKit, reads `5e-06`
# as a string); two choice lists in one value are refused
cp -r dfb 'df #b'
printf 'dataflow:\n  models: [dfa, "df #b"]\n  repeats: 1\ndtype: float32\n' > gdfq.yml
expect 0 "$G" evolve gdfq.yml --eval plain.txt --budget 12 --ctx 48 --seed 2 edfq
! grep -q "does not merge" "$T/err" && ! grep -q '"nll": 1e+30' edfq.evolve.log && ok || bad "dataflow over a model named 'df #b': $(cat "$T/err")"
printf 'merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: ft1\n    parameters:\n      weight: &w {search: [0, 0.00001]}\n  - model: ft2\n    parameters:\n      weight: *w\ndtype: bfloat16\n' > ganc.yml
expect 0 "$G" evolve ganc.yml --eval plain.txt --budget 10 --ctx 48 --seed 2 eanc
"$PY" -c 'import sys, yaml; c = yaml.safe_load(open("eanc/mergekit_config.yml")); w = [m["parameters"]["weight"] for m in c["models"]]
sys.exit(0 if all(isinstance(x, float) for x in w) and w[0] == w[1] and 0 < w[0] < 1e-5 else "weights %r" % w)' > "$T/py" 2>&1 && grep -q "weight: &w [0-9]\.[0-9]*e-0[0-9]" eanc/mergekit_config.yml &&
    ! grep -q "does not merge" "$T/err" && ok || bad "an anchored range / a tiny value: $(cat "$T/py") $(cat eanc/mergekit_config.yml)"
printf 'merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: ft1\n    parameters:\n      weight: !!map {search: [0, 1]}\ndtype: bfloat16\n' > gtag.yml
expect 4 "$G" evolve gtag.yml --eval plain.txt --budget 4 gx
grep -q "line 6: a search range or choice cannot carry a tag (!!map)" "$T/err" && [ ! -e gx ] && ok || bad "a tagged range: $(cat "$T/err")"
printf 'merge_method: {choice: [ties, linear], choice: [task_arithmetic]}\nbase_model: base\nmodels:\n  - model: ft1\n    parameters:\n      weight: 1\ndtype: bfloat16\n' > gcc.yml
expect 4 "$G" evolve gcc.yml --eval plain.txt --budget 4 gx
grep -q "two choice lists in one value" "$T/err" && [ ! -e gx ] && ok || bad "two choice lists: $(cat "$T/err")"
# every candidate must read the --eval texts as the first did (the texts were tokenized with the first
# merged candidate's tokenizer, so a resumed run scored differently from a fresh one): a base_model
# choice whose tokenizer_config drops the BOS stops the search; one whose tokenizer.json is only
# written differently (same tokens) is fine
cp -r ft1 ftb && cp -r ft1 ftf
"$PY" -c 'import json; p = "ftb/tokenizer_config.json"; c = json.load(open(p)); c["add_bos_token"] = False; json.dump(c, open(p, "w"))
p = "ftf/tokenizer.json"; json.dump(json.load(open(p)), open(p, "w"), indent=1)'
for m in ftb ftf; do
    printf 'merge_method: task_arithmetic\nbase_model: {choice: [base, %s]}\nmodels:\n  - model: ft2\n    parameters:\n      weight: {search: [0, 1]}\ndtype: bfloat16\n' $m > gtok-$m.yml
done
expect 4 "$G" evolve gtok-ftb.yml --eval plain.txt --budget 12 --ctx 48 --seed 2 etok
grep -q "reads the --eval texts differently from the first's" "$T/err" && [ ! -e etok ] && ok || bad "a candidate with another BOS rule: $(cat "$T/err")"
expect 0 "$G" evolve gtok-ftf.yml --eval plain.txt --budget 12 --ctx 48 --seed 2 etok2
"$PY" -c 'import json, sys; c = [json.loads(l) for l in open("etok2.evolve.log") if "\"k\"" in l]; sys.exit(0 if any(x["x"][0] >= 0.5 and x["nll"] < 1e30 for x in c) else 1)' &&
    ! grep -q "warning" "$T/err" && ok || bad "a candidate whose tokenizer.json is only reformatted: $(cat "$T/err")"
expect 2 "$G" evolve genome.yml --eval long.txt --budget 28 --ctx 32 --seed 3 --resume --force evr
grep -q "objective or racing" "$T/err" && ok || bad "resume without racing: $(cat "$T/err")"
# candidates whose activations overflow score 1e30 (the worst) and the search goes on: weight w on a delta
# holding 1e38 overflows the merged weight once w > 3.4 (in-memory merges keep the Inf; eval refuses it)
expect 0 "$G" synth ebase --dtype f32 --layers 2 --hidden 64 --vocab 640 --seed 10
cp tok-llama3/tokenizer.json tok-llama3/tokenizer_config.json ebase/ && cp -r ebase ehuge &&
    $PATCH ehuge/model.safetensors '^model.layers.0.mlp.down_proj.weight$' 1e38 0 || bad "patch"
printf 'merge_method: task_arithmetic\nbase_model: ebase\nmodels:\n  - model: ehuge\n    parameters:\n      weight: {search: [2.5, 5]}\ndtype: float32\n' > gnf.yml
expect 0 "$G" evolve gnf.yml --eval plain.txt --budget 8 --ctx 48 --seed 3 enf
grep -q '"nll": 1e+30' enf.evolve.log && grep '"k":' enf.evolve.log | grep -qv '"nll": 1e+30' && ok || bad "evolve with overflowing candidates: $(cat enf.evolve.log)"
expect 0 "$G" verify --values enf

# ---- bad input ----
expect 2 "$G" eval m32
expect 2 "$G" eval m32 --tokens rand.ids --ctx 1
expect 2 "$G" eval m32 --tokens rand.ids --collect bogus x
printf '1 2 x 3' > bad.ids
expect 3 "$G" eval m32 --tokens bad.ids
grep -q "bad.ids: not a list of whitespace-separated token ids" "$T/err" && ok || bad "bad ids: $(cat "$T/err")"
printf '1 2 999999' > big.ids
expect 2 "$G" eval m32 --tokens big.ids
grep -q "token id 999999 is outside the vocabulary" "$T/err" && ok || bad "out-of-vocabulary id: $(cat "$T/err")"
cp -r m32 gpt && sed -i 's/LlamaForCausalLM/GPT2LMHeadModel/' gpt/config.json
expect 4 "$G" eval gpt --tokens rand.ids
grep -q "architecture GPT2LMHeadModel is not supported by the evaluator" "$T/err" && ok || bad "unsupported architecture: $(cat "$T/err")"
cp -r m32 scaled && sed -i 's/"rope_theta"/"rope_scaling": {"type": "yarn", "factor": 2.0}, "rope_theta"/' scaled/config.json
expect 3 "$G" eval scaled --tokens rand.ids
grep -q 'rope_scaling type "yarn" is not supported' "$T/err" && ok || bad "yarn: $(cat "$T/err")"
"$G" synth wrong --dtype f32 --layers 2 --hidden 64 --heads 4 --kv-heads 2 --vocab 640 --intermediate 100 >/dev/null 2>&1
sed -i 's/"intermediate_size": 100/"intermediate_size": 172/' wrong/config.json
expect 3 "$G" eval wrong --tokens rand.ids
grep -q "tensor 'model.layers.0.mlp.gate_proj.weight': shape \[100, 64\], config.json implies \[172, 64\]" "$T/err" && ok || bad "wrong shape: $(cat "$T/err")"
expect 0 "$G" quantize m32 q8 --scheme int8
expect 3 "$G" eval q8 --tokens rand.ids
grep -q "dtype I8: the forward pass reads F32, F16 or BF16" "$T/err" && ok || bad "int8 weights: $(cat "$T/err")"
expect 2 "$G" eval mbf --tokens rand.ids --bos --no-bos --ctx 8 --max-tokens 1
# ---- tokensurgeon: a model given a donor's tokenizer, against tests/ref/tokensurgeon_ref.py ----
SREF="$(dirname "$TREF")/tokensurgeon_ref.py"
export SREFDIR="$(dirname "$TREF")"
nothing() { [ ! -e "$1" ] && ! ls -A | grep -q "graft-tmp" && ok || bad "$2: left output or a temp folder behind"; }
mkts() { # mkts DIR HIDDEN VOCAB SEED TIE TOKDIR: a synth model with tok_ref.py's tokenizer
    "$G" synth $1 --layers 1 --hidden $2 --intermediate 96 --heads 4 --kv-heads 2 --vocab $3 --dtype f32 --seed $4 $5 >/dev/null 2>&1 &&
    cp $6/tokenizer.json $6/tokenizer_config.json $1/ && ok || bad "could not make $1"
}
printf '{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}' > tok-llama3/tokenizer_config.json
printf '{"bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|end_of_text|>"}' > tok-gpt2/tokenizer_config.json
vocab_of() { "$PY" -c 'import json, sys; t = json.load(open(sys.argv[1] + "/tokenizer.json")); print(max(list(t["model"]["vocab"].values()) + [a["id"] for a in t["added_tokens"]]) + 1)' $1; }
mkts tsA 64 $(vocab_of tok-llama3) 1 "" tok-llama3       # byte-level (Ġ), untied
mkts tsB 48 $(( $(vocab_of tok-gpt2) + 5 )) 2 "" tok-gpt2 # byte-level, another width, 5 rows without a token
mkts tsC 32 $(vocab_of tok-metaspace) 3 --tie tok-metaspace # Metaspace (▁), tied
for pair in "tsA tsB" "tsA tsC" "tsC tsA"; do
    set -- $pair
    for ap in omp mean zero subword; do
        expect 0 "$G" tokensurgeon $1 $2 ts-$1-$2-$ap --approach $ap --k 6 --json --threads 2
        cp "$T/out" ts-$1-$2-$ap.json
        if "$PY" "$SREF" check $1 $2 ts-$1-$2-$ap $ap 6 ts-$1-$2-$ap.json >"$T/py" 2>&1; then ok; else bad "tokensurgeon $1 ← $2 $ap: $(cat "$T/py")"; fi
    done
done
# more atoms than the donor's width (tsC: 32): at most 32; scaling the donor changes nothing
expect 0 "$G" tokensurgeon tsA tsC ts-k40 --k 40 --json
cp "$T/out" ts-k40.json
if "$PY" "$SREF" check tsA tsC ts-k40 omp 40 ts-k40.json >"$T/py" 2>&1; then ok; else bad "tokensurgeon --k 40 > width: $(cat "$T/py")"; fi
rm -rf tsC100 && mkdir tsC100 && cp tsC/*.json tsC100/ && "$PY" - tsC tsC100 <<'PYEOF'
import sys, os
sys.path.insert(0, os.environ["SREFDIR"])
from lora_ref import load, save
W = load(sys.argv[1])
W["model.embed_tokens.weight"] = W["model.embed_tokens.weight"] * 100
save(sys.argv[2] + "/model.safetensors", W)
PYEOF
expect 0 "$G" tokensurgeon tsA tsC100 ts-k40s --k 40
cmp -s ts-k40/model.safetensors ts-k40s/model.safetensors && ok || "$PY" -c 'import sys; sys.path.insert(0, sys.argv[3]); import numpy as np; from lora_ref import load; a, b = load(sys.argv[1]), load(sys.argv[2]); sys.exit(0 if all(np.abs(a[k] - b[k]).max() <= 1e-5 * max(np.abs(a[k]).max(), 1e-30) for k in a) else 1)' ts-k40 ts-k40s "$SREFDIR" && ok || bad "tokensurgeon: scaling the donor changed the rows"
# hostile: NaN in the donor's embedding; the output may not replace the donor
rm -rf tsCn && cp -r tsC tsCn && $PATCH tsCn/model.safetensors 'embed_tokens' inf 0
expect 1 "$G" tokensurgeon tsA tsCn x-ts5
grep -q "NaN or infinite" "$T/err" && ok || bad "tokensurgeon with an infinite donor row: $(cat "$T/err")"
nothing x-ts5 "tokensurgeon with an infinite donor row"
rm -rf tsB9 && cp -r tsB tsB9
expect 2 "$G" tokensurgeon tsA tsB9 tsB9 --force
cmp -s tsB/model.safetensors tsB9/model.safetensors && ok || bad "tokensurgeon replaced its donor"
grep -q '"unused": 5' ts-tsA-tsB-omp.json && ok || bad "tokensurgeon: rows without a token: $(cat ts-tsA-tsB-omp.json)"
grep -q '"approximated": 0,' ts-tsA-tsC-omp.json && bad "Metaspace ← byte-level approximated nothing" || ok
# a donor token is found by its string before its role (from a review): the same vocabulary with the
# roles only in special_tokens_map.json, and an instruct-style one (eos <|eot_id|>, pad <|end_of_text|>):
# every row exact (by role, <|eot_id|> took the model's <|end_of_text|> row and that one was approximated)
mkdir -p tsA2 tsA3 && cp tsA/* tsA2/ && cp tsA/* tsA3/
printf '{}' > tsA2/tokenizer_config.json && printf '{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}' > tsA2/special_tokens_map.json
printf '{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|end_of_text|>"}' > tsA3/tokenizer_config.json
for d in tsA2 tsA3; do
    expect 0 "$G" tokensurgeon tsA $d ts-$d --json
    grep -q '"approximated": 0' "$T/out" && cmp -s tsA/model.safetensors ts-$d/model.safetensors && ok || bad "tokensurgeon tsA ← $d: $(cat "$T/out")"
    if "$PY" "$SREF" check tsA $d ts-$d omp 64 "$T/out" >"$T/py" 2>&1; then ok; else bad "tokensurgeon tsA ← $d vs the reference: $(cat "$T/py")"; fi
done
expect 0 "$G" tokensurgeon tsA tsC ts-t1 --k 6 --threads 1
cmp -s ts-t1/model.safetensors ts-tsA-tsC-omp/model.safetensors && ok || bad "tokensurgeon depends on --threads"
# the transplanted model runs with the donor's tokenizer
expect 0 "$G" eval ts-tsA-tsC-omp --text plain.txt --ctx 32
"$G" inspect ts-tsC-tsA-omp | grep -q " lm_head.weight" && bad "a tied model gained an lm_head" || ok
# no shared token: omp has nothing to build from (exit 4); the other approaches still work
mkdir -p tok-alien && "$PY" - tok-metaspace tok-alien <<'PYEOF'
import json, sys
t = json.load(open(sys.argv[1] + "/tokenizer.json", encoding="utf-8"))
ren = lambda s: "\u2603" + s  # a snowman in front of every token: nothing matches the byte-level vocabulary
t["model"]["vocab"] = {ren(k): v for k, v in t["model"]["vocab"].items()}
t["model"]["merges"] = []
for a in t["added_tokens"]:
    a["content"] = ren(a["content"])
t["model"]["unk_token"] = ren(t["model"]["unk_token"])
t["post_processor"] = None
json.dump(t, open(sys.argv[2] + "/tokenizer.json", "w", encoding="utf-8"), ensure_ascii=False)
json.dump({}, open(sys.argv[2] + "/tokenizer_config.json", "w"))
PYEOF
mkts tsX 32 $(vocab_of tok-alien) 4 "" tok-alien
expect 4 "$G" tokensurgeon tsA tsX x-ts
grep -q "share no token" "$T/err" && ok || bad "no overlap: $(cat "$T/err")"
nothing x-ts "tokensurgeon without overlap"
expect 0 "$G" tokensurgeon tsA tsX ts-x-mean --approach mean
rm -f tsB2 && cp -r tsB tsB2 && rm tsB2/tokenizer.json
expect 3 "$G" tokensurgeon tsA tsB2 x-ts2
grep -q "tokenizer.json" "$T/err" && ok || bad "donor without tokenizer.json: $(cat "$T/err")"
expect 2 "$G" tokensurgeon tsA tsB x-ts3 --approach nearest
expect 2 "$G" tokensurgeon tsA tsB x-ts3 --k 0
expect 0 "$G" tokensurgeon tsA tsB x-ts4 --dry-run
nothing x-ts4 "tokensurgeon --dry-run"

if [ "$FAULTS" = faults ]; then
    n=1 fails=0
    while [ $n -le 400 ]; do
        GRAFT_FAULT_ALLOC=$n "$G" eval mbf --text plain.txt --ctx 64 --collect gram fst.safetensors >/dev/null 2>"$T/err"; rc=$?
        [ $rc = 0 ] && break
        fails=$((fails + 1))
        [ $rc = 1 ] && grep -q "out of memory" "$T/err" && [ ! -e fst.safetensors ] && ok || bad "eval alloc fault $n: exit $rc: $(head -c 300 "$T/err")"
        n=$((n + 7))
    done
    echo "# eval allocation faults: $fails failing points exercised"
    alloc_faults 2 ts-f "$G" tokensurgeon tsA tsC ts-f --k 6 --threads 2
    alloc_faults 2 ts-fs "$G" tokensurgeon tsA tsB ts-fs --approach subword
fi
# the trained family `make demo` ships (demo/family): valid folders, and really trained — each expert
# scores its own domain's held-out text better than the base does, and the base beats a random model
FAM="$(dirname "$0")/../demo/family"
if [ -d "$FAM" ]; then
    for m in base c docs python; do expect 0 "$G" verify "$FAM/$m"; done
    fppl() { "$G" eval "$FAM/$1" --text "$FAM/eval/$2.txt" --ctx 256 --json 2>"$T/err" | sed 's/.*"perplexity": \([0-9.]*\).*/\1/'; }
    for d in c docs python; do
        b=$(fppl base $d) e=$(fppl $d $d)
        awk -v b="$b" -v e="$e" 'BEGIN { exit !(e < b && b < 30) }' && ok || bad "demo family: expert $d ($e) vs base ($b) on its domain: $(cat "$T/err")"
    done
fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
