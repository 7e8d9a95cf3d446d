# Shared helpers of the shell test suites (sourced). Callers set G (the graft binary) first.
T=$(mktemp -d "${TMPDIR:-/tmp}/graft-test-XXXXXX")
trap 'rm -rf "$T"' EXIT
export ASAN_OPTIONS="exitcode=86:detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="exitcode=87:print_stacktrace=1"
pass=0 fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "not ok - $*"; }
# expect CODE CMD... : run, capture stdout in $T/out and stderr in $T/err, compare the exit code
expect() {
    want=$1; shift
    "$@" >"$T/out" 2>"$T/err"; got=$?
    if [ "$got" = "$want" ]; then ok; else bad "exit $got (want $want): $* :: $(head -c 400 "$T/err")"; fi
}
# alloc_faults STRIDE OUT CMD...: run CMD with its 1st, (1+STRIDE)th, … allocation failing (builds with
# fault injection) until a run succeeds; each failure must exit 1 with an out-of-memory message and
# leave neither OUT nor a temp folder; the final run's OUT must verify.
alloc_faults() {
    stride=$1 out=$2; shift 2
    n=1 fails=0
    while [ $n -le 5000 ]; do
        GRAFT_FAULT_ALLOC=$n "$@" >/dev/null 2>"$T/err"
        rc=$?
        [ $rc = 0 ] && break
        fails=$((fails + 1))
        if [ $rc = 1 ] && [ ! -e "$out" ] && grep -q "out of memory\|cannot" "$T/err"; then ok
        else bad "alloc fault $n of '$*': exit $rc, output $(ls -d "$out" 2>/dev/null): $(head -c 400 "$T/err")"; fi
        ls -A | grep -q "graft-tmp" && bad "alloc fault $n of '$*' left a temp folder"
        n=$((n + stride))
    done
    echo "# allocation faults of '$*': $fails failing points exercised (every ${stride}th), then success at #$n"
    [ -e "$out" ] && "$G" verify "$out" >/dev/null && ok || bad "no successful '$*' after allocation faults"
}
