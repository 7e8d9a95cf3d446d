# Shared helpers of the shell test suites (sourced). Callers set G (the graft binary) first.
T=$(mktemp -d "${TMPDIR:-/tmp}/graft-test-XXXXXX")
trap 'rm -rf "$T"' EXIT
export ASAN_OPTIONS="exitcode=86:detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="exitcode=87:print_stacktrace=1"
pass=0 fail=0
# PATCH FILE NAME_REGEX VALUE [INDEX...]: overwrite F32 elements of a .safetensors file (tests/ref/patch.py)
PATCH="${PYTHON:-/usr/bin/python3} $PWD/tests/ref/patch.py"
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "not ok - $*"; }
# expect CODE CMD... : run, capture stdout in $T/out and stderr in $T/err, compare the exit code
expect() {
    want=$1; shift
    "$@" >"$T/out" 2>"$T/err"; got=$?
    if [ "$got" = "$want" ]; then ok; else bad "exit $got (want $want): $* :: $(head -c 400 "$T/err")"; fi
}
# alloc_faults STRIDE OUT CMD...: allocation failures in CMD (builds with fault injection). One clean run
# records every allocation site (GRAFT_FAULT_SITES); then the first allocation of each site that no
# earlier alloc_faults of this suite has failed fails in turn (GRAFT_FAULT_ALLOC_SITE), and so do
# allocations 1, 1+S, 1+2S, … with S = max(STRIDE, total/24) (later occurrences: a failure halfway
# through the output, whatever the site). Each failure must exit 1 with an
# out-of-memory message and leave neither OUT nor a temp folder (a failure the command survives must
# still give a valid OUT); the recorded run's OUT must verify.
alloc_faults() {
    stride=$1 out=$2; shift 2
    rm -f "$T/sites"
    GRAFT_FAULT_SITES="$T/sites" "$@" >/dev/null 2>"$T/err"
    rc=$?
    if [ $rc != 0 ] || [ ! -e "$out" ] || ! "$G" verify "$out" >/dev/null 2>&1; then
        bad "recording allocation sites of '$*': exit $rc: $(head -c 400 "$T/err")"; return
    fi
    ok; rm -rf "$out" "$out.opcm-state.safetensors" # (a continual merge's state beside its output)
    total=$(sed -n 's/^total //p' "$T/sites" | tail -n 1)
    [ -n "$total" ] || { bad "'$*' recorded no allocation total (did it _exit?)"; total=0; }
    s=$((total / 24)); [ $s -lt $stride ] && s=$stride
    touch "$T/sites-done"
    all=$(grep -v '^total ' "$T/sites" | cut -d' ' -f1)
    sites=$(printf '%s\n' $all | grep -vxF -f "$T/sites-done")
    nall=$(printf '%s\n' $all | grep -c .) nsites=$(printf '%s\n' $sites | grep -c .)
    printf '%s\n' $sites >> "$T/sites-done"
    fails=0
    for spec in $(printf '%s\n' $sites | sed -n 's/^./site:&/p') $(seq 1 $s "$total" | sed 's/^/nth:/'); do
        case $spec in
            site:*) GRAFT_FAULT_ALLOC_SITE=${spec#site:} "$@" >/dev/null 2>"$T/err" ;;
            nth:*) GRAFT_FAULT_ALLOC=${spec#nth:} "$@" >/dev/null 2>"$T/err" ;;
        esac
        rc=$?
        if [ $rc = 0 ]; then # an allocation whose failure is handled by a fallback
            "$G" verify "$out" >/dev/null 2>&1 && ok || bad "alloc fault $spec of '$*': success but invalid output"
            rm -rf "$out" "$out.opcm-state.safetensors"; continue
        fi
        fails=$((fails + 1))
        if [ $rc = 1 ] && [ ! -e "$out" ] && [ ! -e "$out.opcm-state.safetensors" ] && grep -q "out of memory\|cannot" "$T/err"; then ok
        else bad "alloc fault $spec of '$*': exit $rc, output $(ls -d "$out" 2>/dev/null): $(head -c 400 "$T/err")"; fi
        ls -A | grep -q "graft-tmp" && bad "alloc fault $spec of '$*' left a temp folder"
    done
    echo "# allocation faults of '$*': $nsites new of $nall sites and every ${s}th of $total allocations, $fails failing runs"
}
