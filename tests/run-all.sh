#!/bin/sh
# The whole suite, as `make test` runs it: unit tests, CLI tests and fuzz-corpus replay, each against
# the release build and the AddressSanitizer/UBSan build (which also has fault injection), and the
# NumPy reference checks. Independent suites run side by side (JOBS at a time, default: the number of
# CPUs); each prints its result and seconds, in a fixed order; last, the total "N passed, N failed".
set -u
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
# OpenBLAS starts a spinning thread per CPU at load unless told otherwise; graft runs its BLAS calls
# single-threaded or parallelises over matrices itself, and thousands of short test processes would
# otherwise keep every core busy spinning.
export OPENBLAS_NUM_THREADS=1
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
[ "$JOBS" -ge 1 ] 2>/dev/null || JOBS=2
R=$(mktemp -d "${TMPDIR:-/tmp}/graft-run-all.XXXXXX")
trap 'rm -rf "$R"' EXIT
start=$(date +%s)

# name | command (longest first, so the lanes finish together)
cat > "$R/suites" <<'LIST'
cli (asan+ubsan, fault injection)|sh tests/cli.sh build/asan faults
merge end-to-end (asan+ubsan, fault injection)|sh tests/merge-e2e.sh build/asan faults
prune / quantize end-to-end (asan+ubsan, fault injection)|sh tests/ops-e2e.sh build/asan faults
merge vs independent NumPy reference (tests/ref/configs; SVD and solver methods also under every OpenBLAS kernel family and GRAFT_CPU=generic)|KERNELS=1 bash tests/ref/check.sh build/graft
opcm and extract-lora vs NumPy under every OpenBLAS kernel family and GRAFT_CPU=generic|bash tests/ref/kernels.sh build/graft
GGUF convert end-to-end (asan+ubsan, fault injection)|sh tests/gguf-e2e.sh build/asan faults
real checkpoint layouts (asan+ubsan)|sh tests/layouts.sh build/asan quick
research merges / analyze end-to-end (asan+ubsan, fault injection)|sh tests/research-e2e.sh build/asan faults
evaluator / tokenizers end-to-end (asan+ubsan, fault injection)|sh tests/eval-e2e.sh build/asan faults
unit (asan+ubsan)|build/asan/tests/unit
cli (release)|sh tests/cli.sh build
merge end-to-end (release)|sh tests/merge-e2e.sh build
LoRA extract/apply end-to-end (asan+ubsan, fault injection)|sh tests/lora-e2e.sh build/asan faults
merge-lora / merge --lora-space vs NumPy (asan+ubsan, fault injection)|sh tests/lora-merge.sh build/asan faults
PyTorch .bin checkpoints vs torch.save / torch.load, hostile pickles (asan+ubsan)|sh tests/torchbin.sh build/asan
unit (release)|build/tests/unit
GGUF convert end-to-end (release)|sh tests/gguf-e2e.sh build
prune / quantize end-to-end (release)|sh tests/ops-e2e.sh build
evaluator / tokenizers end-to-end (release)|sh tests/eval-e2e.sh build
research merges / analyze end-to-end (release)|sh tests/research-e2e.sh build
LoRA extract/apply end-to-end (release)|sh tests/lora-e2e.sh build
merge-lora / merge --lora-space vs NumPy (release)|sh tests/lora-merge.sh build
real checkpoint layouts (release)|sh tests/layouts.sh build
shared library, pkg-config, make install (release)|sh tests/shlib.sh build
Python module (release)|sh tests/python.sh build
PyTorch .bin checkpoints vs torch.save / torch.load, hostile pickles (release)|sh tests/torchbin.sh build
graft merge under MPI, np = 1, 2, 3 against one process (release)|sh tests/mpi.sh build
fuzz corpus: safetensors (asan+ubsan)|build/asan/tests/fuzz-safetensors fuzz/corpus/safetensors
fuzz corpus: index (asan+ubsan)|build/asan/tests/fuzz-index fuzz/corpus/index
fuzz corpus: config (asan+ubsan)|build/asan/tests/fuzz-config fuzz/corpus/config
fuzz corpus: tokenizer (asan+ubsan)|build/asan/tests/fuzz-tokenizer fuzz/corpus/tokenizer
fuzz corpus: genome (asan+ubsan)|build/asan/tests/fuzz-genome fuzz/corpus/genome
fuzz corpus: gguf (asan+ubsan)|build/asan/tests/fuzz-gguf fuzz/corpus/gguf
fuzz corpus: layout (asan+ubsan)|build/asan/tests/fuzz-layout fuzz/corpus/layout
fuzz corpus: torchbin (asan+ubsan)|build/asan/tests/fuzz-torchbin fuzz/corpus/torchbin
fuzz corpus: merge-lora config (asan+ubsan)|build/asan/tests/fuzz-loracfg fuzz/corpus/loracfg
LIST
[ -n "${SUITES:-}" ] && { grep -i -- "$SUITES" "$R/suites" > "$R/s2"; mv "$R/s2" "$R/suites"; }

# run suite number $1: output in $R/$1.out, exit status and seconds in $R/$1.rc
run_one() {
    line=$(sed -n "${1}p" "$R/suites")
    s0=$(date +%s)
    sh -c "${line#*|}" > "$R/$1.out" 2>&1
    echo "$? $(($(date +%s) - s0))" > "$R/$1.rc.tmp" && mv "$R/$1.rc.tmp" "$R/$1.rc"
}
n=$(grep -c . "$R/suites")
i=1 running=0
while [ $i -le "$n" ] || [ $running -gt 0 ]; do
    running=0
    for j in $(seq 1 $((i - 1))); do [ -f "$R/$j.rc" ] || running=$((running + 1)); done
    if [ $i -le "$n" ] && [ $running -lt "$JOBS" ]; then
        run_one $i &
        i=$((i + 1)); running=$((running + 1))
        continue
    fi
    sleep 0.2
done
wait

total_pass=0 total_fail=0
for j in $(seq 1 "$n"); do
    line=$(sed -n "${j}p" "$R/suites")
    read -r rc secs < "$R/$j.rc"
    out=$(cat "$R/$j.out")
    echo "== ${line%%|*} (${secs} s)"
    printf '%s\n' "$out" | grep -v '^ok \|^PASS ' | tail -n 40
    res=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -n "$res" ]; then
        p=${res%% passed*}; f=${res#*passed, }; f=${f%% failed*}
    else # suites that report only an exit status count as one test
        if [ "$rc" = 0 ]; then p=1 f=0; else p=0 f=1; fi
    fi
    [ "$rc" != 0 ] && [ "$f" = 0 ] && f=1
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
done
echo "# suites: $(($(date +%s) - start)) s wall with $JOBS at a time"
echo "$total_pass passed, $total_fail failed"
[ $total_fail = 0 ]
