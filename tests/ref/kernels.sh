#!/bin/bash
# Kernel independence: graft's results that depend on BLAS/LAPACK (SVDs, linear solves, conjugate
# gradients) under every OpenBLAS kernel family this CPU can run and with graft's portable code paths
# (GRAFT_CPU=generic), each compared with an independent NumPy reference within the error bound the
# algorithm guarantees on that input. This script runs opcm (opcm_ref.py) and extract-lora
# (lora_ref.py) under each; `check.sh` with KERNELS=1 runs the reference configs of iso_c, iso_cts,
# tsv, regmean and mats under each. Prescott (SSE3) runs everywhere; Haswell and Zen need AVX2 + FMA,
# SkylakeX AVX-512 F/BW/DQ/VL/CD, Cooperlake (what OpenBLAS picks for this project's AMD Zen 5 CPUs)
# also AVX-512 BF16.
#   tests/ref/kernels.sh GRAFT_BIN      tests/ref/kernels.sh --list   (the variants, one line)
set -u
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
has() { for f in "$@"; do case $flags in *" $f "*) ;; *) return 1 ;; esac; done; }
v="generic Prescott"
has avx2 fma && v="$v Haswell Zen"
has avx512f avx512bw avx512dq avx512vl avx512cd && v="$v SkylakeX"
has avx512f avx512bw avx512dq avx512vl avx512cd avx512_bf16 && v="$v Cooperlake"
[ "${1:-}" = --list ] && { echo "$v"; exit 0; }
GRAFT=${1:?usage: kernels.sh GRAFT_BIN | --list}
case $GRAFT in /*) ;; *) GRAFT=$PWD/$GRAFT ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-/usr/bin/python3}
echo "# kernel variants: $v"
pass=0 fail=0
W=$(mktemp -d "${TMPDIR:-/tmp}/graft-kernels.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 1
q() { "$GRAFT" "$@" --threads 2 >/dev/null 2>"$W/err" || { echo "FAIL graft $*: $(tail -1 "$W/err")"; fail=$((fail + 1)); return 1; }; }
q synth base --dtype f32 --layers 2 --hidden 32 --intermediate 48 --heads 4 --vocab 96 --seed 1
for i in 1 2 3; do q synth ft$i --like base --delta 0.02 --seed $((i + 1)); done
printf 'merge_method: opcm\nbase_model: base\nmodels:\n  - model: ft1\n  - model: ft2\n  - model: ft3\nparameters: {alpha: 0.6}\ndtype: float32\n' > opcm.yml
q synth lb --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype f32 --seed 1
q synth lf --like lb --delta 0.01 --seed 2
for var in $v; do
    case $var in generic) e=GRAFT_CPU=generic ;; *) e=OPENBLAS_CORETYPE=$var ;; esac
    rm -rf op op.opcm-state.safetensors ad rep.json
    if env $e "$GRAFT" merge opcm.yml op --threads 2 >/dev/null 2>"$W/err" && msg=$("$PY" "$HERE/opcm_ref.py" op 0.6 base ft1 ft2 ft3 2>&1); then
        echo "PASS opcm [$var] $msg"; pass=$((pass + 1))
    else
        echo "FAIL opcm [$var] $(tail -1 "$W/err") $msg"; fail=$((fail + 1))
    fi
    if env $e "$GRAFT" extract-lora --base lb --model lf ad --rank 8 --json --threads 2 >rep.json 2>"$W/err" &&
        msg=$("$PY" "$HERE/lora_ref.py" extract lb lf ad rep.json 8 2>&1); then
        echo "PASS extract-lora [$var] $msg"; pass=$((pass + 1))
    else
        echo "FAIL extract-lora [$var] $(tail -1 "$W/err") $msg"; fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
