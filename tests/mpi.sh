#!/bin/sh
# graft merge under MPI (build/graft-mpi, Open MPI's mpirun, --oversubscribe on this machine's few cores):
# for np = 1, 2, 3 and several methods (per-tensor: linear, ties, dare_ties with a seed, the SVD-based
# iso_cts; whole-model: pcb with per_tensor false) every output file is byte-identical to the plain
# build's single-process merge, with --threads 1 and 2; output shards spread over the ranks; a failure
# on a rank other than 0 (a float16 overflow in a tensor only that rank merges) leaves no output and no
# temporary folder and is reported once, naming the rank, with the single-process exit code; a rank
# killed mid-run leaves no output, and the next run removes its temporary folder; --dry-run prints the
# plan once; a GGUF output and other commands than merge, eval and evolve are refused under mpirun;
# eval shares its batches of windows and prints the single-process figures bit for bit; evolve shares
# each generation's candidates and writes the single-process log and winner byte for byte. Without
# mpirun, graft-mpi behaves as graft.
# Usage: tests/mpi.sh BUILD_DIR
set -u
B=${1:?build dir}
G="$PWD/$B/graft"
GM="$PWD/$B/graft-mpi"
PATCH_PY="$PWD/tests/ref/patch.py"
TREF="$PWD/tests/ref/tok_ref.py"
PY=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1
if ! command -v mpirun >/dev/null 2>&1 || [ ! -x "$GM" ]; then
    bad "mpirun or $B/graft-mpi missing (make mpi; scripts/deps.sh test installs Open MPI)"
    echo "$pass passed, $fail failed"
    exit 1
fi
# root in CI containers; no shared-memory single-copy (ptrace) in containers; more ranks than cores
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 OMPI_MCA_plm_rsh_agent=false
run() { np=$1; shift; mpirun -np "$np" "$GM" "$@"; }
same_dir() { diff -r "$1" "$2" > /dev/null 2>&1; }

expect 0 "$G" synth base --layers 3 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 640 --dtype f32 --seed 1
for i in 1 2; do expect 0 "$G" synth ft$i --like base --delta 0.01 --seed $((i + 1)); done
printf 'merge_method: linear\nmodels:\n  - {model: ft1, parameters: {weight: 0.3}}\n  - {model: ft2, parameters: {weight: 0.7}}\ndtype: bfloat16\n' > linear.yml
for m in ties dare_ties; do
    printf 'merge_method: %s\nbase_model: base\nmodels:\n  - {model: ft1, parameters: {weight: 1.0, density: 0.5}}\n  - {model: ft2, parameters: {weight: 0.8, density: 0.4}}\ndtype: bfloat16\n' $m > $m.yml
done
printf 'merge_method: iso_cts\nbase_model: base\nmodels:\n  - model: ft1\n  - model: ft2\ndtype: float32\n' > iso_cts.yml
printf 'merge_method: pcb\nbase_model: base\nmodels:\n  - model: ft1\n  - model: ft2\nparameters: {pcb_ratio: 0.1, per_tensor: false}\ndtype: float32\n' > pcb.yml
# without mpirun: graft-mpi is graft
expect 0 "$G" merge linear.yml ref-linear --out-shard-size 40K --seed 3 --threads 2
expect 0 "$GM" merge linear.yml solo-linear --out-shard-size 40K --seed 3 --threads 2
same_dir ref-linear solo-linear && ok || bad "graft-mpi without mpirun differs from graft"
n_shards=$(ls ref-linear/*.safetensors | wc -l)
[ "$n_shards" -ge 3 ] && ok || bad "want ≥ 3 output shards to spread, got $n_shards"
for m in linear ties dare_ties iso_cts pcb; do
    [ -d ref-$m ] || expect 0 "$G" merge $m.yml ref-$m --out-shard-size 40K --seed 3 --threads 2
    for np in 1 2 3; do
        th=$((np % 2 + 1))
        expect 0 run $np merge $m.yml mpi-$m-$np --out-shard-size 40K --seed 3 --threads $th
        same_dir ref-$m mpi-$m-$np && ok || bad "$m with np=$np (--threads $th) differs from the single-process merge: $(diff -rq ref-$m mpi-$m-$np | head -3)"
        [ "$(grep -c 'graft: merged into' "$T/err")" = 1 ] && ok || bad "$m np=$np: want one summary line, got: $(cat "$T/err")"
    done
done
ls -a | grep -q graft-tmp && bad "temporary folders left: $(ls -a | grep graft-tmp)" || ok

# a float16 overflow in a tensor merged by rank 1 only: no output anywhere, one error naming rank 1
expect 0 "$G" synth hb --like base --delta 0.01 --seed 7
owner_tensor=$("$PY" - ref-linear <<'PY'
import json, os, struct, sys
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"]
size = {}
for f in sorted(set(idx.values())):
    b = open(os.path.join(d, f), "rb").read(8)
    size[f] = os.path.getsize(os.path.join(d, f)) - 8 - struct.unpack("<Q", b)[0]
shards = sorted(size)  # model-00001-of-… in order: the writer's shard index
order = sorted(range(len(shards)), key=lambda i: (-size[shards[i]], i))
load, owner = [0, 0], {}
for i in order:
    r = 0 if load[0] <= load[1] else 1
    owner[shards[i]] = r
    load[r] += size[shards[i]]
print(sorted(k for k, v in idx.items() if owner[v] == 1 and "weight" in k)[0])
PY
)
[ -n "$owner_tensor" ] && ok || bad "no tensor found for rank 1"
"$PY" "$PATCH_PY" hb/model.safetensors "^$(echo "$owner_tensor" | sed 's/\./\\./g')\$" 1e6 0 > /dev/null && ok || bad "patching $owner_tensor"
printf 'merge_method: linear\nmodels:\n  - {model: hb, parameters: {weight: 0.5}}\n  - {model: ft2, parameters: {weight: 0.5}}\ndtype: float16\n' > ovf.yml
expect 1 "$G" merge ovf.yml never1 --out-shard-size 40K
want_code=1
grep -q "overflow" "$T/err" && ok || bad "single-process overflow error: $(cat "$T/err")"
expect $want_code run 2 merge ovf.yml never2 --out-shard-size 40K
[ "$(grep -c 'graft: error: rank 1: ' "$T/err")" = 1 ] && grep -q "$owner_tensor" "$T/err" && ok || bad "np=2 overflow on rank 1: $(cat "$T/err")"
[ ! -e never2 ] && ! ls -a | grep -q graft-tmp && ok || bad "output or temporary folder after a rank's failure: $(ls -a)"

# a rank that fails before the output exists (here rank 1 runs where ft2 / base is missing): every rank
# stops with the same one error naming it (they waited for it in the writer's first collective, or in
# eval's reduction, forever); nothing is written. (timeout: a hang fails the test instead of the suite)
mkdir -p r1 && cp linear.yml r1/ && ln -sf ../ft1 r1/ft1
on1() { timeout 120 mpirun -np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then cd r1; fi; exec "$@"' sh "$GM" "$@"; }
expect 4 on1 merge linear.yml "$T/miss1" --out-shard-size 40K
[ "$(grep -c 'graft: error: rank 1: ' "$T/err")" = 1 ] && grep -q "ft2" "$T/err" && [ ! -e miss1 ] && ! ls -a | grep -q graft-tmp && ok ||
    bad "np=2, rank 1 without an input: $(cat "$T/err")"
"$PY" -c 'print("1 2 3 4 5 6 7 8")' > ids0.txt && cp ids0.txt r1/ids0.txt
# ranks that read different configs (rank 1's says float32): refused before the math (it wrote shards of
# two layouts into one folder and reported success)
mkdir -p r2 && sed 's/bfloat16/float32/' linear.yml > r2/linear.yml && ln -sf ../ft1 r2/ft1 && ln -sf ../ft2 r2/ft2
expect 2 timeout 120 mpirun -np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then cd r2; fi; exec "$@"' sh "$GM" merge linear.yml "$T/mix" --out-shard-size 40K
grep -q "the ranks planned different outputs" "$T/err" && [ ! -e mix ] && ! ls -a | grep -q graft-tmp && ok || bad "np=2 with different configs: $(cat "$T/err")"
expect 3 on1 eval base --tokens ids0.txt --ctx 4
[ "$(grep -c 'graft: error: rank 1: ' "$T/err")" = 1 ] && ok || bad "np=2 eval, rank 1 without the model: $(cat "$T/err")"
# the same for opcm's own early failures (here rank 1 lacks the --resume state): they met the others'
# agreement from the engine's, and the others then waited in the writer's forever
printf 'merge_method: opcm\nbase_model: base\nmodels:\n  - model: ft1\ndtype: float32\n' > op1.yml
printf 'merge_method: opcm\nbase_model: base\nmodels:\n  - model: ft2\ndtype: float32\n' > op2.yml
expect 0 "$G" merge op1.yml op1o
cp op2.yml r1/ && ln -sf ../base r1/base && ln -sf ../ft2 r1/ft2
on1 merge op2.yml "$T/op2o" --resume op1o.opcm-state.safetensors > /dev/null 2> "$T/err"
st=$?
[ $st != 0 ] && [ $st != 124 ] && [ "$(grep -c 'graft: error: rank 1: ' "$T/err")" = 1 ] && [ ! -e op2o ] && ! ls -a | grep -q graft-tmp && ok ||
    bad "np=2 opcm, rank 1 without the resume state: exit $st: $(cat "$T/err")"
# opcm under mpirun gives the single-process bytes (its SVDs ran under OpenBLAS's own threads, which
# Open MPI's one-core binding at np ≤ 2 changes: the output depended on the rank count)
printf 'merge_method: opcm\nbase_model: base\nmodels:\n  - model: ft1\n  - model: ft2\ndtype: float32\n' > opcm.yml
expect 0 "$G" merge opcm.yml ref-opcm --out-shard-size 40K --threads 2
for np in 1 2; do
    expect 0 run $np merge opcm.yml mpi-opcm-$np --out-shard-size 40K --threads 1
    same_dir ref-opcm mpi-opcm-$np && cmp -s ref-opcm.opcm-state.safetensors mpi-opcm-$np.opcm-state.safetensors && ok || bad "opcm np=$np differs from the single-process merge"
done

# a rank killed mid-run: no output; the next run removes the temporary folder
"$G" synth big --layers 8 --hidden 512 --intermediate 1408 --heads 8 --kv-heads 4 --vocab 512 --dtype f32 --seed 9 > /dev/null 2>&1
"$G" synth bigft --like big --delta 0.01 --seed 10 > /dev/null 2>&1
printf 'merge_method: iso_cts\nbase_model: big\nmodels:\n  - model: bigft\n  - model: big\ndtype: float32\n' > slow.yml
run 2 merge slow.yml killed --out-shard-size 1M --threads 1 > kill.out 2>&1 &
mp=$!
i=0
while [ $i -lt 100 ] && ! ls -a | grep -q '^\.killed\.graft-tmp'; do sleep 0.1; i=$((i + 1)); done
victim=$(pgrep -f "graft-mpi merge slow.yml" | tail -n 1)
[ -n "$victim" ] && kill -9 "$victim"
wait $mp
st=$?
[ $st != 0 ] && [ ! -e killed ] && ok || bad "killed rank: mpirun exit $st, output $(ls -d killed 2>/dev/null)"
i=0 # mpirun can return before its other ranks are dead (zombies count as dead)
while [ $i -lt 100 ] && ps -eo stat=,args= | grep -v '^Z' | grep -q "[g]raft-mpi merge slow.yml"; do sleep 0.1; i=$((i + 1)); done
expect 0 "$G" merge linear.yml killed --out-shard-size 40K
! ls -a | grep -q '^\.killed\.graft-tmp' && ok || bad "the next run left the killed run's temporary folder: $(ls -a | tr '\n' ' ') (killed rank pid $victim)"

# eval shares its batches of windows: the same perplexity line to the last digit (bits), for np = 2, 3
"$PY" -c 'import random; random.seed(4); print(" ".join(str(random.randrange(640)) for _ in range(700)))' > ids.txt
expect 0 "$G" eval base --tokens ids.txt --ctx 48 --batch 2 --json
sed 's/"seconds".*//' "$T/out" > eval-1.txt
for np in 2 3; do
    expect 0 run $np eval base --tokens ids.txt --ctx 48 --batch 2 --json
    [ "$(grep -c model "$T/out")" = 1 ] && sed 's/"seconds".*//' "$T/out" | cmp -s - eval-1.txt && ok || bad "eval np=$np: $(cat "$T/out") vs $(cat eval-1.txt)"
done
expect 2 run 2 eval base --tokens ids.txt --ctx 48 --collect gram g.safetensors
grep -q "run in one process" "$T/err" && [ ! -e g.safetensors ] && ok || bad "eval --collect under mpirun: $(cat "$T/err")"
# evolve shares each generation's candidates: the log and the winner's folder are the single-process ones
"$PY" "$TREF" make llama3 tok > /dev/null 2>&1 && ok || bad "tok_ref make llama3"
for m in base ft1 ft2; do cp tok/tokenizer.json tok/tokenizer_config.json $m/; done
printf 'merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: ft1\n    parameters:\n      weight: {search: [0, 1]}\n  - model: ft2\n    parameters:\n      weight: {search: [0.2, 0.8], groups: 2}\ndtype: bfloat16\n' > genome.yml
printf 'The quick brown fox jumps over the lazy dog, again and again, %s.\n' one two three four five six seven eight > evo.txt
expect 0 "$G" evolve genome.yml --eval evo.txt --budget 14 --ctx 48 --seed 3 --threads 2 evo-1
for np in 2 3; do
    expect 0 run $np evolve genome.yml --eval evo.txt --budget 14 --ctx 48 --seed 3 --threads 1 evo-$np
    cmp -s evo-1.evolve.log evo-$np.evolve.log && same_dir evo-1 evo-$np && ok || bad "evolve np=$np differs: $(diff evo-1.evolve.log evo-$np.evolve.log | head -3)"
    [ "$(grep -c 'graft: best mean NLL' "$T/err")" = 1 ] && ok || bad "evolve np=$np: want one summary, got: $(cat "$T/err")"
done
# the pareto objective over two texts, with a method choice whose linear candidates do not merge (scored
# worst): the same log, front and winner; --race is refused under mpirun
printf 'merge_method: {choice: [task_arithmetic, linear]}\nbase_model: base\nmodels:\n  - model: ft1\n    parameters:\n      weight: {search: [0, 1]}\n  - model: ft2\n    parameters:\n      weight: {search: [0.2, 0.8]}\ndtype: bfloat16\n' > genome2.yml
printf 'Another text, of other words: %s.\n' alpha beta gamma delta epsilon > evo2.txt
expect 0 "$G" evolve genome2.yml --eval evo.txt --eval evo2.txt --objective pareto --budget 12 --ctx 48 --seed 5 --threads 2 evp-1
grep -q '"nll": 1e+30' evp-1.evolve.log && ok || bad "evolve pareto: no candidate failed to merge (the test needs one)"
for np in 2 3; do
    expect 0 run $np evolve genome2.yml --eval evo.txt --eval evo2.txt --objective pareto --budget 12 --ctx 48 --seed 5 --threads 1 evp-$np
    cmp -s evp-1.evolve.log evp-$np.evolve.log && same_dir evp-1 evp-$np && ok || bad "evolve pareto np=$np differs: $(diff evp-1.evolve.log evp-$np.evolve.log | head -3)"
done
expect 2 run 2 evolve genome.yml --eval evo.txt --race --budget 14 --ctx 48 evr
grep -q "race runs in one process" "$T/err" && [ ! -e evr ] && ok || bad "evolve --race under mpirun: $(cat "$T/err")"
# the plan once; GGUF refused
expect 0 run 2 merge linear.yml planned --dry-run
[ "$(grep -c 'linear' "$T/out")" -ge 1 ] && [ ! -e planned ] && ok || bad "dry run under mpirun: $(head -3 "$T/out")"
expect 2 run 2 convert ft1 conv --dtype bf16
grep -q "only merge, eval and evolve run" "$T/err" && [ "$(grep -c 'graft: error' "$T/err")" = 1 ] && [ ! -e conv ] && ok || bad "convert under mpirun: $(cat "$T/err")"
expect 2 run 2 merge linear.yml x.gguf
grep -q "GGUF output is one file" "$T/err" && [ "$(grep -c 'graft: error' "$T/err")" = 1 ] && ok || bad "GGUF under mpirun: $(cat "$T/err")"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
