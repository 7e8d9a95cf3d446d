#!/bin/bash
# Cross-check graft merge against the independent NumPy reference (tests/ref/merge_ref.py).
#   tests/ref/check.sh GRAFT_BIN [CONFIG_NAME...]      (default: every tests/ref/configs/*.yml)
# Generates small f32/bf16 models with `GRAFT_BIN synth`, merges each config with graft and with
# merge_ref.py, compares every tensor: f32 |graft-ref| <= 1e-5*max(1,|ref|); f16/bf16 within 1 ulp.
# A config may carry "# args: ..." (extra merge arguments, e.g. --seed 7, given to both) and
# "# compare: ..." (extra merge_ref.py --compare options for a documented legitimate difference).
# Methods whose result depends on the BLAS/LAPACK kernels (SVDs, solves) are compared against an error
# bound the reference derives for each tensor (merge_ref.py: bounds.json) instead.
# Env: PYTHON (default /usr/bin/python3), KEEP=1 keeps the work folder, VARIANTS (below).
set -u
GRAFT=${1:?usage: check.sh GRAFT_BIN [CONFIG_NAME...]}
shift
case $GRAFT in /*) ;; *) GRAFT=$PWD/$GRAFT ;; esac
PY=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
REF=$HERE/merge_ref.py
W=$(mktemp -d "${TMPDIR:-/tmp}/graft-ref.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "work folder: $W"; else trap 'rm -rf "$W"' EXIT; fi

T0=$(date +%s)
M=$W/models
mkdir -p "$M" "$W/configs" "$W/out"
synth() { "$GRAFT" synth "$@" --threads 2 >"$W/synth.log" 2>&1 || { cat "$W/synth.log" >&2; echo "synth $* failed" >&2; exit 2; }; }
synth "$M/base" --layers 3 --hidden 64 --intermediate 96 --vocab 128 --dtype f32 --seed 1
for i in 1 2 3; do synth "$M/ft$i" --like "$M/base" --delta 0.01 --seed $((i + 1)); done
synth "$M/ftshard" --like "$M/base" --delta 0.02 --seed 9 --out-shard-size 40K
synth "$M/bbase" --layers 3 --hidden 64 --intermediate 96 --vocab 128 --dtype bf16 --seed 5
for i in 1 2; do synth "$M/bft$i" --like "$M/bbase" --delta 0.01 --seed $((i + 10)); done
# "big" models: tensors of 327,680 and 524,288 elements span several of graft's 256 Ki-element chunks
synth "$M/Lbase" --layers 2 --hidden 512 --intermediate 640 --vocab 1024 --dtype bf16 --seed 21
for i in 1 2; do synth "$M/Lft$i" --like "$M/Lbase" --delta 0.01 --seed $((i + 21)); done
# Gram statistics of the fine-tunes (RegMean / MaTS): graft eval --collect gram on random ids
"$PY" -c 'import random; random.seed(7); print(" ".join(str(random.randrange(128)) for _ in range(400)))' > "$M/ids.txt"
for i in 1 2 3; do "$GRAFT" eval "$M/ft$i" --tokens "$M/ids.txt" --ctx 64 --collect gram "$M/ft$i.gram.safetensors" >"$W/synth.log" 2>&1 || { cat "$W/synth.log" >&2; exit 2; }; done
# diagonal Fisher files of ft1, ft2 (positive, spanning four decades; one tensor all zero, below the floor)
for i in 1 2; do
    "$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import numpy as np, merge_ref as r
m = r.Model(sys.argv[2]); rng = np.random.default_rng(int(sys.argv[4]))
ts = [(k, "F32", list(m.where[k].tensors[k]["shape"])) for k in m.names]
def f(j):
    x = (10.0 ** rng.uniform(-4, 0, size=ts[j][2])).astype(np.float32)
    return x * 0 if ts[j][0].endswith("norm.weight") and j % 2 else x
r.write_safetensors(sys.argv[3], ts, f)' "$HERE" "$M/ft$i" "$M/ft$i.fisher.safetensors" $i || exit 2
done
# a vision–language layout for `modules:`
synth "$M/vlbase" --arch gemma3vl --layers 3 --hidden 64 --intermediate 96 --vocab 128 --dtype f32 --seed 31
for i in 1 2; do synth "$M/vlft$i" --like "$M/vlbase" --delta 0.01 --seed $((i + 31)); done

if [ $# -gt 0 ]; then
    cfgs=(); for c in "$@"; do cfgs+=("$HERE/configs/${c%.yml}.yml"); done
else
    cfgs=("$HERE"/configs/*.yml)
fi
# VARIANTS: the environments graft runs each config in, compared against one reference run: "default"
# (as called), "generic" (GRAFT_CPU=generic: graft's portable code paths only) or an OpenBLAS kernel
# family (OPENBLAS_CORETYPE=NAME, e.g. Prescott, Haswell, SkylakeX, Zen). KERNELS=1 adds, for the
# configs whose method's result depends on BLAS/LAPACK (iso_c, iso_cts, tsv, regmean, mats), every
# kernel family this CPU can run and "generic" (tests/ref/kernels.sh --list).
variant_env() {
    case $1 in
        default) echo "" ;;
        generic) echo "GRAFT_CPU=generic" ;;
        *) echo "OPENBLAS_CORETYPE=$1" ;;
    esac
}
VARIANTS=${VARIANTS:-default}
KV=""
[ "${KERNELS:-0}" = 1 ] && KV=$(bash "$HERE/kernels.sh" --list)
pass=0 fail=0 nexp=0
: > "$W/jobs"
for cfg in "${cfgs[@]}"; do
    name=$(basename "$cfg" .yml)
    cp "$cfg" "$W/configs/"
    c=$W/configs/$name.yml
    args=$(sed -n 's/^# args: *//p' "$cfg" | head -1)
    cmp=$(sed -n 's/^# compare: *//p' "$cfg" | head -1)
    vs=$VARIANTS
    case $name in big_*) ;; *) # (the small configs: the same code paths at a fraction of the time)
        case $(sed -n 's/^merge_method: *//p' "$cfg" | head -1) in
            iso_c | iso_cts | tsv | regmean | mats) [ -n "$KV" ] && vs="$vs $KV" ;;
        esac
    esac
    got=""
    for v in $vs; do
        label=$name; [ "$vs" = default ] || label="$name [$v]"
        g=$W/out/$name.$v.graft
        # shellcheck disable=SC2046,SC2086
        if env $(variant_env "$v") "$GRAFT" merge "$c" "$g" --threads 2 $args >"$g.log" 2>&1; then
            got="$got,[\"$label\", \"$g\"]" nexp=$((nexp + 1))
        else
            printf 'FAIL %-34s graft merge failed: %s\n' "$label" "$(grep -v '^$' "$g.log" | tail -1)"
            fail=$((fail + 1))
        fi
    done
    [ -n "$got" ] || continue
    # shellcheck disable=SC2086
    printf '{"name": "%s", "config": "%s", "ref": "%s", "args": [%s], "compare": [%s], "got": [%s]}\n' "$name" "$c" "$W/out/$name.ref" \
        "$(for x in $args; do printf '"%s",' "$x"; done | sed 's/,$//')" "$(for x in $cmp; do printf '"%s",' "$x"; done | sed 's/,$//')" \
        "${got#,}" >> "$W/jobs"
done
# the references and comparisons in one Python process (NumPy imported once)
t0=$(date +%s)
"$PY" "$REF" --batch "$W/jobs" > "$W/results" 2>&1
echo "# models and graft merges: $((t0 - T0)) s; references and comparisons: $(($(date +%s) - t0)) s"
cat "$W/results"
p=$(grep -c '^PASS ' "$W/results") f=$(grep -c '^FAIL ' "$W/results")
pass=$((pass + p)) fail=$((fail + f))
[ $((p + f)) = "$nexp" ] || { echo "FAIL merge_ref.py --batch reported $((p + f)) of $nexp comparisons: $(tail -3 "$W/results")"; fail=$((fail + 1)); }
# the bounds have power: a reference output with one element of every bounded tensor moved by 2 % of
# the tensor's merged delta (twice the largest bound allowed) must fail the comparison
for rd in "$W"/out/*.ref; do
    [ -f "$rd/bounds.json" ] || continue
    if "$PY" - "$REF" "$rd" "$W/mutant" <<'PYEOF'
import json, os, shutil, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import numpy as np, merge_ref as r
src, dst = sys.argv[2], sys.argv[3]
shutil.rmtree(dst, ignore_errors=True)
os.makedirs(dst)
m, bounds = r.Model(src), json.load(open(os.path.join(src, "bounds.json")))
names = sorted(m.where)
def tensor(i):
    nm = names[i]
    dt, a = m.where[nm].raw(nm)
    x = r.to_f32(dt, a).astype(np.float64).ravel()
    if nm in bounds and bounds[nm][1] > 0:
        x[len(x) // 2] += 0.02 * bounds[nm][1]
    return r.encode(x.astype(np.float32).reshape(a.shape), dt)
r.write_safetensors(os.path.join(dst, "model.safetensors"), [(nm, m.where[nm].raw(nm)[0], list(m.shape(nm))) for nm in names], tensor)
shutil.copy(os.path.join(src, "bounds.json"), dst)
ok, msg = r.compare(dst, src)
sys.exit(1 if ok else 0)
PYEOF
    then pass=$((pass + 1))
    else echo "FAIL $(basename "$rd" .ref): a 2 % change of one element passes the bounded comparison"; fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
