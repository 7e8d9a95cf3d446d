#!/bin/sh
# Command-line tests: help and usage errors, every corruption class through `verify`, `inspect` and
# `convert` (exact exit code, one-line message naming the file, no output left), thread-count
# independence, atomic output under kill -9, and — in builds with fault injection — failing writes,
# syncs, renames and allocations.
# Usage: tests/cli.sh BUILD_DIR [faults]
set -u
B=${1:?build dir}
FAULTS=${2:-}
G="$PWD/$B/graft"
GEN="$PWD/$B/tests/gen-corrupt"
. "$(dirname "$0")/lib.sh"
# no temp or partial output in folder $1 apart from the listed names
only_entries() {
    dir=$1; shift
    have=$(ls -A "$dir" | sort | tr '\n' ' ')
    want=""
    [ $# -gt 0 ] && want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
    [ "$have" = "$want" ] && ok || bad "entries of $dir: '$have' (want '$want')"
}

# ---- help and usage ----
expect 0 "$G" --help
grep -q "Exit codes" "$T/out" && ok || bad "--help lacks exit codes"
for c in inspect verify convert synth merge; do
    expect 0 "$G" "$c" --help
    grep -q "Usage: graft $c" "$T/out" && ok || bad "$c --help"
done
expect 2 "$G"
expect 2 "$G" frobnicate
expect 2 "$G" convert
expect 3 "$G" convert a b # no --dtype: every tensor keeps its type; a is missing
expect 2 "$G" convert a b --dtype int4
expect 2 "$G" convert a b --dtype f16 --threads 0
expect 2 "$G" convert a b --dtype f16 --threads 3x
expect 2 "$G" convert a b --dtype f16 --out-shard-size 5X
expect 2 "$G" synth o --layers -1
expect 2 "$G" synth o --hidden 10 --heads 3
grep -q "graft: error:" "$T/err" && ok || bad "usage error format"
expect 3 "$G" verify "$T/does-not-exist"
grep -q "^graft: error: $T/does-not-exist: " "$T/err" && ok || bad "missing file message: $(cat "$T/err")"

# ---- every corruption class: verify / inspect / convert ----
mkdir "$T/c"
"$GEN" --list > "$T/classes"
while read -r cls ref status msg; do
    for seed in 1 2 3; do
        [ "$cls" = TOO_MANY_TENSORS ] && [ $seed -gt 1 ] && continue
        f="$T/c/$cls-$seed.safetensors"
        "$GEN" "$cls" $seed "$f"
        for cmd in verify inspect; do
            expect 3 "$G" $cmd "$f"
            [ "$(wc -l < "$T/err")" = 1 ] && ok || bad "$cls $seed $cmd: not one line: $(cat "$T/err")"
            grep -qF "graft: error: $f: " "$T/err" && ok || bad "$cls $seed $cmd: message does not name the file: $(cat "$T/err")"
            grep -qF "$msg" "$T/err" && ok || bad "$cls $seed $cmd: message lacks '$msg': $(cat "$T/err")"
        done
        expect 3 "$G" convert "$f" "$T/c/out" --dtype f16
        expect 3 "$G" convert "$f" "$T/c/out.safetensors" --dtype bf16
        rm -f "$f"
    done
done < "$T/classes"
only_entries "$T/c"

# ---- a real model: synth, convert, verify, thread independence ----
ROOT=$PWD
cd "$T"
expect 0 "$G" synth base --layers 2 --hidden 128 --intermediate 344 --vocab 512 --seed 3
expect 0 "$G" synth ft --like base --delta 0.02 --seed 9
expect 0 "$G" verify ft
expect 0 "$G" inspect ft --json
grep -q '"n_params": ' out && grep -q '"dtype": "BF16"' out && grep -q '"file": "model.safetensors"' out && ok || bad "inspect --json fields"
expect 0 "$G" convert ft f16a --dtype f16 --threads 1 --out-shard-size 100K
expect 0 "$G" convert ft f16b --dtype f16 --threads 3 --out-shard-size 100K
cmp -s f16a/model.safetensors.index.json f16b/model.safetensors.index.json && ok || bad "index differs across threads"
for s in f16a/model-*.safetensors; do cmp -s "$s" "f16b/${s#f16a/}" && ok || bad "$s differs across threads"; done
grep -q '"torch_dtype": "float16"' f16a/config.json && ok || bad "config torch_dtype"
[ -f f16a/generation_config.json ] && ok || bad "generation_config.json not copied"
expect 0 "$G" verify f16a
expect 0 "$G" convert f16a back.safetensors --dtype f8_e4m3
expect 0 "$G" verify back.safetensors
# refusals: output is the input, or inside an input folder (a file of it replaced, or a new folder in
# it); non-empty output without --force; --force replaces
expect 2 "$G" convert ft ft --dtype f16 --force
sum0=$(cat ft/* | cksum)
expect 2 "$G" convert ft ft/model.safetensors --dtype f16 --force
expect 2 "$G" convert ft ft/sub --dtype f16
grep -q "output would be inside the input folder" err && [ ! -e ft/sub ] && [ "$(cat ft/* | cksum)" = "$sum0" ] && ok || bad "an output inside its input folder: $(cat err)"
expect 1 "$G" convert ft f16a --dtype f16
grep -q -- "--force" err && ok || bad "hint to --force"
expect 0 "$G" convert ft f16a --dtype f32 --force
grep -q '"torch_dtype": "float32"' f16a/config.json && ok || bad "--force did not replace"
# progress line when stderr is a terminal
if command -v script >/dev/null 2>&1; then
    script -qec "$G convert ft prog --dtype f32" /dev/null > prog.txt 2>&1
    grep -q "ETA" prog.txt && ok || bad "no progress line on a terminal"
fi

# ---- values: verify --values and inspect --stats count NaN, Inf and subnormals (as stored) ----
${PYTHON:-/usr/bin/python3} - <<'PYEOF' && ok || bad "could not write vals.safetensors"
import json, struct
# F16: 1.0, 2^-24 (subnormal), +Inf, NaN, -2.0;  BF16: 1.0, 2^-129 (subnormal), -Inf;  F32: 0.5, 3.0;
# F8_E4M3FNUZ: 1.0, NaN (0x80, its only one)
t = [("h", "F16", struct.pack("<5H", 0x3C00, 0x0001, 0x7C00, 0x7E00, 0xC000)),
     ("b", "BF16", struct.pack("<3H", 0x3F80, 0x0010, 0xFF80)), ("f", "F32", struct.pack("<2f", 0.5, 3.0)),
     ("z", "F8_E4M3FNUZ", bytes([0x40, 0x80]))]
hdr, off = {}, 0
for name, dt, raw in t:
    hdr[name] = {"dtype": dt, "shape": [len(raw) // {"F32": 4, "F8_E4M3FNUZ": 1}.get(dt, 2)], "data_offsets": [off, off + len(raw)]}
    off += len(raw)
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open("vals.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + b"".join(r for _, _, r in t))
PYEOF
expect 3 "$G" verify vals.safetensors --values
grep -q "^h: 1 NaN, 1 Inf, 1 subnormal of 5; finite min -2, max 1$" "$T/out" && grep -q "^b: 0 NaN, 1 Inf, 1 subnormal of 3; finite min 1.469367[0-9]*e-39, max 1$" "$T/out" &&
    ! grep -q "^f:" "$T/out" && grep -q "^z: 1 NaN, 0 Inf, 0 subnormal of 2; finite min 1, max 1$" "$T/out" &&
    grep -q "^values: 4 floating tensors, 2 NaN, 2 Inf, 2 subnormal$" "$T/out" && ok || bad "verify --values: $(cat "$T/out")"
[ "$(wc -l < "$T/err")" = 1 ] && grep -q "vals.safetensors: tensor 'h': holds NaN or infinite values (3 tensors in all)" "$T/err" && ok || bad "verify --values error: $(cat "$T/err")"
expect 0 "$G" verify vals.safetensors
expect 0 "$G" verify ft --values
grep -q "values: .* 0 NaN, 0 Inf" "$T/out" && ok || bad "verify --values of a clean model: $(cat "$T/out")"
expect 0 "$G" inspect vals.safetensors --stats
grep -q "  f  min 0.5 max 3 nan 0 inf 0 subnormal 0$" "$T/out" && ok || bad "inspect --stats: $(cat "$T/out")"
expect 0 "$G" inspect vals.safetensors --stats --json
grep -q '"subnormal": 1' "$T/out" && grep -q '"nan": 1' "$T/out" && ok || bad "inspect --stats --json: $(cat "$T/out")"
# float16 overflow in convert: refused (nothing written) unless --allow-nonfinite; inherited NaN/Inf are not overflow
${PYTHON:-/usr/bin/python3} -c 'import json, struct
raw = struct.pack("<3f", 1.0, 7e4, -1e6)
h = json.dumps({"big": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}).encode(); h += b" " * (-len(h) % 8)
open("big.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + raw)' && ok || bad "could not write big.safetensors"
expect 1 "$G" convert big.safetensors big16.safetensors --dtype f16
[ "$(wc -l < "$T/err")" = 1 ] && grep -q "big16.safetensors: tensor 'big': 2 finite values overflow f16 .*first: element 1" "$T/err" && [ ! -e big16.safetensors ] && ok || bad "f16 overflow in convert: $(cat "$T/err")"
expect 0 "$G" convert big.safetensors big16.safetensors --dtype f16 --allow-nonfinite
grep -q "warning: 2 finite values overflow f16" "$T/err" && ok || bad "convert --allow-nonfinite: $(cat "$T/err")"
expect 0 "$G" convert big.safetensors bigb.safetensors --dtype bf16
expect 0 "$G" convert vals.safetensors vals32.safetensors --dtype f32

# ---- merge: a real config, dry run, config errors (exit 4, nothing written) ----
expect 0 "$G" synth ft2 --like base --delta 0.02 --seed 10
cat > ties.yml <<YML
merge_method: ties
base_model: base
models:
  - model: ft
    parameters: {density: [1, 0.5], weight: 1.0}
  - model: ft2
    parameters: {density: 0.5, weight: [{filter: mlp, value: 0.5}, {value: 0.3}]}
parameters: {normalize: true}
dtype: bfloat16
YML
expect 0 "$G" merge ties.yml merged --dry-run
grep -q "model.layers.1.mlp.up_proj.weight" out && [ ! -e merged ] && ok || bad "dry run: plan missing or output written"
grep -q "^estimate: reads .* of inputs, writes .*; work buffers .* threads × 3 inputs × " out && ok || bad "dry run: no I/O and memory estimate: $(grep -v '^ ' out | head -5)"
expect 0 "$G" merge ties.yml merged --threads 2
expect 0 "$G" verify merged
for f in config.json README.md mergekit_config.yml generation_config.json; do [ -f "merged/$f" ] && ok || bad "merge output lacks $f"; done
expect 0 "$G" merge ties.yml merged1 --threads 1
cmp -s merged/model.safetensors merged1/model.safetensors && ok || bad "merge output differs across thread counts"
printf 'merge_method: ties\nmodels: [{model: ft, parameters: {weight: 1}}]\n' > nobase.yml
expect 4 "$G" merge nobase.yml bad
grep -q "needs base_model" err && [ ! -e bad ] && ok || bad "missing base_model: $(cat err)"
printf 'merge_method: linear\nmodels: [{model: ft, parameters: {weight: 1}}\n' > broken.yml
expect 4 "$G" merge broken.yml bad
expect 4 "$G" merge "$T/none.yml" bad
expect 2 "$G" merge ties.yml
ls -A | grep -q "graft-tmp" && bad "merge left temp folders" || ok

# ---- kill -9 at random moments: the target is absent or complete and valid ----
expect 0 "$G" synth big --layers 2 --hidden 1024 --intermediate 2816 --heads 8 --kv-heads 8 --vocab 8192 --seed 1
# time one uninterrupted run, then kill at 1/12 … 12/12 of that duration (plus a little)
t0=$(date +%s%N); "$G" convert big killed --dtype f32 --threads 2 --out-shard-size 50M 2>/dev/null; t1=$(date +%s%N)
dur_ms=$(( (t1 - t0) / 1000000 ))
complete=0 absent=0
i=0
while [ $i -lt 12 ]; do
    i=$((i + 1))
    rm -rf killed
    "$G" convert big killed --dtype f32 --threads 2 --out-shard-size 50M 2>/dev/null &
    pid=$!
    ms=$(( dur_ms * i / 11 ))
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    if [ -e killed ]; then
        "$G" verify killed >/dev/null 2>&1 && complete=$((complete + 1)) || bad "kill $i left an invalid output"
    else
        absent=$((absent + 1))
    fi
done
echo "# kill -9 test: $complete complete, $absent absent outputs of 12 (one run takes ${dur_ms} ms)"
[ $((complete + absent)) = 12 ] && ok || bad "kill test"
rm -rf killed
expect 0 "$G" convert big killed --dtype f32 --threads 2
ls -A | grep -q "graft-tmp" && bad "stale temp folders remain: $(ls -A)" || ok

# ---- fault injection (sanitizer build only) ----
if [ "$FAULTS" = faults ]; then
    rm -rf fo
    for spec in open:1 open:2 open:3 mkdir:1 write:1 write:2 write:3 write:5 write:8 fsync:1 fsync:2 fsync:3 rename:1; do
        for e in ENOSPC EIO; do
            GRAFT_FAULT_IO="$spec:$e" "$G" convert ft fo --dtype f16 --out-shard-size 100K >/dev/null 2>"$T/err"
            rc=$?
            if [ $rc = 0 ]; then
                "$G" verify fo >/dev/null 2>&1 && ok || bad "fault $spec: success but invalid output"
                rm -rf fo
            elif [ $rc = 1 ] || [ $rc = 3 ]; then
                [ ! -e fo ] && ok || bad "fault $spec:$e left output"
                grep -qE "No space left|Input/output error" "$T/err" && ok || bad "fault $spec:$e message: $(cat "$T/err")"
            else
                bad "fault $spec:$e: exit $rc $(head -c 600 "$T/err")"
            fi
            ls -A | grep -q "graft-tmp" && bad "fault $spec:$e left a temp folder" || ok
        done
    done
    alloc_faults 1 fa "$G" convert ft fa --dtype f16 --out-shard-size 100K
    # too little free space (GRAFT_FAULT_FREE_BYTES stands in for statvfs): refused before any byte is
    # written, with both sizes; safetensors folders, merges and GGUF files alike
    need=$(cat ft/*.safetensors | wc -c)
    GRAFT_FAULT_FREE_BYTES=$((need / 2)) "$G" convert ft fs --dtype bf16 >/dev/null 2>"$T/err"
    [ $? = 1 ] && [ "$(wc -l < "$T/err")" = 1 ] && grep -q "fs: not enough free space: the output needs .* the file system has .* free ($((need / 2)) < [0-9]* bytes); free some or write elsewhere" "$T/err" &&
        [ ! -e fs ] && ! ls -A | grep -q "graft-tmp" && ok || bad "free-space check: $(cat "$T/err")"
    printf 'merge_method: linear\nmodels:\n  - {model: base, parameters: {weight: 0.5}}\n  - {model: ft, parameters: {weight: 0.5}}\n' > fs.yml
    GRAFT_FAULT_FREE_BYTES=1000 "$G" merge fs.yml fs >/dev/null 2>"$T/err"
    [ $? = 1 ] && grep -q "fs: not enough free space" "$T/err" && [ ! -e fs ] && ok || bad "merge free-space check: $(cat "$T/err")"
    GRAFT_FAULT_FREE_BYTES=1000 "$G" convert ft fs.gguf --to gguf >/dev/null 2>"$T/err"
    [ $? = 1 ] && grep -q "fs.gguf: not enough free space: the GGUF file needs" "$T/err" && [ ! -e fs.gguf ] && ! ls -A | grep -q "graft-tmp" && ok ||
        bad "gguf free-space check: $(cat "$T/err")"
    GRAFT_FAULT_FREE_BYTES=$((need * 4)) "$G" convert ft fs --dtype bf16 >/dev/null 2>"$T/err" && "$G" verify fs >/dev/null && ok || bad "enough free space refused: $(cat "$T/err")"
    rm -rf fs
fi

# GGUF files: inspect and verify read them; a truncated or corrupted one is refused with its reason
GG="$ROOT/fuzz/corpus/gguf"
expect 0 "$G" verify "$GG/quant.gguf"
grep -q "GGUF v3, 5 tensors, 2 key/values" "$T/out" && ok || bad "verify gguf: $(cat "$T/out")"
expect 0 "$G" inspect "$GG/basic.gguf"
grep -q "tokenizer.ggml.tokens .*\[string × 2\] \"<s>\", \"hi\"" "$T/out" && grep -q "^BF16 *\[2\]" "$T/out" && ok || bad "inspect gguf: $(cat "$T/out")"
expect 0 "$G" inspect --json "$GG/quant.gguf"
grep -q '"format": *"gguf"' "$T/out" && grep -q '"type": *"Q6_K"' "$T/out" && ok || bad "inspect --json gguf: $(cat "$T/out")"
head -c 500 "$GG/basic.gguf" > cut.gguf
expect 3 "$G" verify cut.gguf
grep -q "cut.gguf: truncated" "$T/err" && ok || bad "truncated gguf: $(cat "$T/err")"
cp "$GG/basic.gguf" bad.gguf && printf '\001' | dd of=bad.gguf bs=1 seek=4 conv=notrunc 2>/dev/null
expect 3 "$G" inspect bad.gguf
grep -q "bad.gguf: GGUF version 1" "$T/err" && ok || bad "gguf version: $(cat "$T/err")"

echo "$pass passed, $fail failed"
[ $fail = 0 ]
