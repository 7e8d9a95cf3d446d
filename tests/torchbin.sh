#!/bin/sh
# PyTorch .bin checkpoints (src/io/torchbin.c) against files torch.save writes (python3-torch):
# every tensor graft reads equals what torch.load returns (dtypes F32/F16/BF16/F64/I64/I8/BOOL, tied
# weights sharing one storage, a view at a storage offset, a 0-d tensor, pickle protocols 2 and 4,
# nn.Parameter); a graft synth model saved as pytorch_model.bin and as three shards with
# pytorch_model.bin.index.json converts back to the same bytes, merges, evaluates and extracts LoRA
# exactly as its safetensors original does; a PEFT adapter_model.bin applies as its safetensors twin;
# folders prefer safetensors, as transformers does.
# Hostile files exit 3 with the file and reason named, execute nothing and write nothing: os.system /
# builtins.eval / builtins.exec / a script's class, EXT opcodes, huge memo indices, stack underflow, a
# name string reused through the memo, a "billion laughs" list, no STOP, truncated zip, bad CRC, compressed members, storages too short or
# missing or with the wrong element count, tensors past their storage or with overflowing shapes,
# non-contiguous views, nested dicts, the legacy (pre-1.6) format.
# Usage: tests/torchbin.sh BUILD_DIR [faults]
set -u
B=${1:?build dir}
G="$PWD/$B/graft"
FIX="$PWD/tests/ref/torchbin_fixtures.py"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1
if ! "$PY" -c 'import torch' 2>/dev/null; then
    bad "python3-torch is not installed (scripts/deps.sh test installs it)"
    echo "$pass passed, $fail failed"
    exit 1
fi
"$PY" "$FIX" zoo z > zoo.log 2>&1 && ok || bad "writing the checkpoints: $(tail -3 zoo.log)"

# readable checkpoints: graft's tensors equal torch.load's
for f in good good-p4 param plain-dict crafted-ok; do
    expect 0 "$G" convert z/$f.bin $f.safetensors
    "$PY" "$FIX" against-torch z/$f.bin $f.safetensors > "$T/py" 2>&1 && ok || bad "$f.bin vs torch.load: $(cat "$T/py")"
done
expect 0 "$G" inspect z/good.bin --json
"$PY" - "$T/out" <<'PY' && ok || bad "inspect of good.bin: tied tensors should share their offset"
import json, sys
t = {x["name"]: x for x in json.load(open(sys.argv[1]))["tensors"]}
assert t["lm_head.weight"]["offset"] == t["model.embed_tokens.weight"]["offset"] and "step" not in t
PY

# hostile and damaged checkpoints: exit 3, the file and reason named, no output
while IFS='|' read -r f why; do
    expect 3 "$G" convert z/$f.bin out-$f
    grep -q "z/$f.bin: .*$why" "$T/err" && [ ! -e out-$f ] && ok || bad "$f.bin: want '$why', got: $(cat "$T/err")"
done <<'LIST'
evil-os|refers to 'posix.system'.*nothing was executed
evil-eval|refers to '__builtin__.eval'
stack-global|refers to 'builtins.exec'
object|refers to '__main__.Module'
ext|extension registry
memo|memo index 4294967280 is out of range
underflow|stack underflow
nostop|ends without STOP
bomb|holds a list, not a state dict
list-root|holds a list, not a state dict
truncated|truncated or damaged
badcrc|good/data/0: its CRC-32 is .* the data is damaged
compressed|is compressed (method 8)
short-storage|storage data/0 holds 254 bytes but the pickle says 128 elements of 2 bytes
numel-mismatch|holds 16 bytes but the pickle says 5 elements
missing-storage|tensor 'w': its storage member data/7 is missing
past-storage|tensor 'w': elements 2… of 3 run past its storage
overflow-shape|tensor 'w': element count overflows 64 bits
noncontig|tensor 'a': stored as a non-contiguous view
nested|tensor 'model': a nested dict: not a flat state dict
name-reuse|tensor 'w': tensor name appears twice
legacy|legacy (pre-1.6) format
two-types|tensor 'b': storage data/0 is read as F16 × 8 here but as F32 × 4 by an earlier tensor
name-none|tensor 'w': tensor name appears twice (once for a None)
tuples|makes more than 4194304 values: not a state dict
LIST
[ ! -e z/PWNED ] && ok || bad "a pickle executed code"
ls -a | grep -q graft-tmp && bad "temporary folders left: $(ls -a)" || ok

# a real layout, as one file and as three shards with an index
expect 0 "$G" synth m --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype bf16 --seed 1
expect 0 "$G" synth f1 --like m --delta 0.01 --seed 2
"$PY" "$FIX" from-st m mb > "$T/py" 2>&1 && ok || bad "torch.save of m: $(cat "$T/py")"
"$PY" "$FIX" from-st m mbs 3 > "$T/py" 2>&1 && ok || bad "torch.save of m in shards: $(cat "$T/py")"
"$PY" "$FIX" from-st f1 f1b > "$T/py" 2>&1 && ok || bad "torch.save of f1: $(cat "$T/py")"
[ -f mbs/pytorch_model.bin.index.json ] && [ -f mbs/pytorch_model-00003-of-00003.bin ] && [ -f mb/config.json ] && ok || bad "fixture folders: $(ls mb mbs)"
for d in mb mbs; do
    expect 0 "$G" convert $d $d-st
    "$PY" "$FIX" same m $d-st > "$T/py" 2>&1 && ok || bad "$d → safetensors: $(cat "$T/py")"
    [ -f $d-st/config.json ] && ok || bad "$d: config.json not carried"
done
expect 0 "$G" inspect mbs
grep -q "pytorch_model-00002-of-00003.bin" "$T/out" && ok || bad "inspect of the sharded .bin folder: $(head -5 "$T/out")"
# merge, eval and extract-lora read .bin models as they read safetensors ones
printf 'merge_method: linear\nmodels:\n  - {model: m, parameters: {weight: 0.3}}\n  - {model: f1, parameters: {weight: 0.7}}\ndtype: bfloat16\n' > st.yml
printf 'merge_method: linear\nmodels:\n  - {model: mbs, parameters: {weight: 0.3}}\n  - {model: f1b/pytorch_model.bin, parameters: {weight: 0.7}}\ndtype: bfloat16\n' > bin.yml
expect 0 "$G" merge st.yml o-st
expect 0 "$G" merge bin.yml o-bin
cmp -s o-st/model.safetensors o-bin/model.safetensors && ok || bad "merge of .bin inputs differs from the safetensors merge"
"$PY" -c 'import random; random.seed(3); print(" ".join(str(random.randrange(128)) for _ in range(200)))' > ids.txt
expect 0 "$G" eval m --tokens ids.txt --ctx 32
sed 's/^m: //; s/, [0-9.]* tokens\/s//' "$T/out" > eval-st.txt
expect 0 "$G" eval mbs --tokens ids.txt --ctx 32
sed 's/^mbs: //; s/, [0-9.]* tokens\/s//' "$T/out" | cmp -s - eval-st.txt && ok || bad "eval of the .bin folder differs: $(cat "$T/out") vs $(cat eval-st.txt)"
expect 0 "$G" extract-lora --base mb --model f1b lo-bin --rank 4
expect 0 "$G" extract-lora --base m --model f1 lo-st --rank 4
cmp -s lo-st/adapter_model.safetensors lo-bin/adapter_model.safetensors && ok || bad "extract-lora from .bin models differs"
# a PEFT adapter saved as adapter_model.bin (older PEFT) applies as its safetensors twin does
"$PY" "$FIX" from-st lo-st/adapter_model.safetensors lob > "$T/py" 2>&1 && ok || bad "torch.save of the adapter: $(cat "$T/py")"
mv lob/pytorch_model.bin lob/adapter_model.bin && cp lo-st/adapter_config.json lob/
expect 0 "$G" apply-lora m lo-st ap-st
expect 0 "$G" apply-lora m lob ap-bin
cmp -s ap-st/model.safetensors ap-bin/model.safetensors && ok || bad "apply-lora of adapter_model.bin differs"
# the Python module (release build): graft.open on a .bin folder gives torch.load's arrays, zero-copy
if [ -f "$OLDPWD/$B/python/graft.so" ] || ls "$OLDPWD/$B"/python/graft*.so >/dev/null 2>&1; then
    PYTHONPATH="$OLDPWD/$B/python" "$PY" - <<'PY' > "$T/py" 2>&1 && ok || bad "graft.open of a .bin folder: $(cat "$T/py")"
import graft, torch, numpy as np
m = graft.open("mbs")
sd = {}
for i in (1, 2, 3):
    sd.update(torch.load("mbs/pytorch_model-%05d-of-00003.bin" % i))
assert sorted(m.names) == sorted(sd), (m.names, list(sd))
for k, v in sd.items():
    a = m[k]
    assert a.dtype == np.uint16 and not a.flags.writeable
    assert a.tobytes() == v.view(torch.int16).numpy().tobytes(), k
    assert np.array_equal(m.to_numpy(k), v.float().numpy()), k
print("ok")
PY
fi
# folder rules: safetensors wins over a .bin beside it; two .bin files need an index; index errors
mkdir both && cp m/* both/ && cp f1b/pytorch_model.bin both/
expect 0 "$G" convert both both-st
"$PY" "$FIX" same m both-st > "$T/py" 2>&1 && ok || bad "a folder with both formats should read model.safetensors: $(cat "$T/py")"
mkdir two && cp mbs/pytorch_model-0000[12]-of-00003.bin two/
expect 3 "$G" inspect two
grep -q "2 .bin files but no pytorch_model.bin.index.json" "$T/err" && ok || bad "two .bin files: $(cat "$T/err")"
cp -r mbs gone && rm gone/pytorch_model-00002-of-00003.bin
expect 3 "$G" inspect gone
grep -q "pytorch_model.bin.index.json: shard 'pytorch_model-00002-of-00003.bin' listed in weight_map is missing" "$T/err" && ok || bad "missing shard: $(cat "$T/err")"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
