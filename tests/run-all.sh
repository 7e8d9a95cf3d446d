#!/bin/sh
# The whole suite, as `make test` runs it: unit tests, CLI tests and fuzz-corpus replay, each against
# the release build and the AddressSanitizer/UBSan build (which also has fault injection).
# Prints every suite's result and, last, the total "N passed, N failed".
set -u
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
total_pass=0 total_fail=0
suite() {
    name=$1; shift
    echo "== $name"
    out=$("$@" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -v '^ok \|^PASS ' | tail -n 40
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -n "$line" ]; then
        p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
    else # suites that report only an exit status count as one test
        if [ $rc = 0 ]; then p=1 f=0; else p=0 f=1; fi
    fi
    [ $rc != 0 ] && [ "$f" = 0 ] && f=1
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
}
suite "unit (release)" build/tests/unit
suite "unit (asan+ubsan)" build/asan/tests/unit
suite "cli (release)" sh tests/cli.sh build
suite "cli (asan+ubsan, fault injection)" sh tests/cli.sh build/asan faults
suite "merge end-to-end (release)" sh tests/merge-e2e.sh build
suite "merge end-to-end (asan+ubsan, fault injection)" sh tests/merge-e2e.sh build/asan faults
suite "LoRA extract/apply end-to-end (release)" sh tests/lora-e2e.sh build
suite "LoRA extract/apply end-to-end (asan+ubsan, fault injection)" sh tests/lora-e2e.sh build/asan faults
suite "prune / quantize end-to-end (release)" sh tests/ops-e2e.sh build
suite "prune / quantize end-to-end (asan+ubsan, fault injection)" sh tests/ops-e2e.sh build/asan faults
suite "evaluator / tokenizers end-to-end (release)" sh tests/eval-e2e.sh build
suite "evaluator / tokenizers end-to-end (asan+ubsan, fault injection)" sh tests/eval-e2e.sh build/asan faults
suite "GGUF convert end-to-end (release)" sh tests/gguf-e2e.sh build
suite "GGUF convert end-to-end (asan+ubsan, fault injection)" sh tests/gguf-e2e.sh build/asan faults
suite "research merges / analyze end-to-end (release)" sh tests/research-e2e.sh build
suite "research merges / analyze end-to-end (asan+ubsan, fault injection)" sh tests/research-e2e.sh build/asan faults
suite "merge vs independent NumPy reference (tests/ref/configs)" bash tests/ref/check.sh build/graft
suite "fuzz corpus: safetensors (asan+ubsan)" build/asan/tests/fuzz-safetensors fuzz/corpus/safetensors
suite "fuzz corpus: index (asan+ubsan)" build/asan/tests/fuzz-index fuzz/corpus/index
suite "fuzz corpus: config (asan+ubsan)" build/asan/tests/fuzz-config fuzz/corpus/config
suite "fuzz corpus: tokenizer (asan+ubsan)" build/asan/tests/fuzz-tokenizer fuzz/corpus/tokenizer
suite "fuzz corpus: genome (asan+ubsan)" build/asan/tests/fuzz-genome fuzz/corpus/genome
suite "fuzz corpus: gguf (asan+ubsan)" build/asan/tests/fuzz-gguf fuzz/corpus/gguf
echo "$total_pass passed, $total_fail failed"
[ $total_fail = 0 ]
