#!/bin/sh
# The Python module (release build; `make` builds build/python/graft*.so): graft.open on a folder, a
# sharded folder and a GGUF file — names as the CLI lists them, config.json as a dict, every tensor's
# array equal to the bytes an independent reader takes from the file, read-only, zero-copy (alive after
# the model is dropped), to_numpy's float32; graft.merge from a dict, a YAML string and a path gives
# the CLI's bytes (dare_ties with a seed); eval_ppl (text and ids), convert and extract_lora give what
# the CLI computes and writes; errors are graft.Error subclasses with the CLI's exit codes; merge
# releases the GIL, and Ctrl-C (SIGINT) during a merge, an extract_lora or an eval_ppl raises
# KeyboardInterrupt soon and leaves no output.
# Usage: tests/python.sh BUILD_DIR
set -u
B=${1:?build dir}
G="$PWD/$B/graft"
REF="$PWD/tests/ref"
PY=${PYTHON:-/usr/bin/python3}
export PYTHONPATH="$PWD/$B/python"
V=$(sed -n 's/^#define GRAFT_VERSION "\(.*\)"/\1/p' include/graft/graft.h)
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1
ls "$PYTHONPATH"/graft*.so > /dev/null 2>&1 && ok || bad "build/python/graft*.so is not built"
expect 0 "$G" synth m --layers 2 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 128 --dtype bf16 --seed 1
expect 0 "$G" synth f1 --like m --delta 0.01 --seed 2
expect 0 "$G" synth f2 --like m --delta 0.01 --seed 3
expect 0 "$G" convert m msh --dtype f32 --out-shard-size 40K
expect 0 "$G" convert m m.gguf --type f32
"$G" inspect m --json | sed -n 's/^ *"name": "\([^"]*\)".*/\1/p' > cli-names.txt
printf 'merge_method: dare_ties\nbase_model: m\nmodels:\n  - model: f1\n    parameters: {weight: 0.6, density: 0.5}\n  - model: f2\n    parameters: {weight: 0.4, density: 0.5}\ndtype: bfloat16\n' > dt.yml
expect 0 "$G" merge dt.yml cli-out --seed 3 --threads 2
# for Ctrl-C: models whose TIES merge takes seconds on one thread
expect 0 "$G" synth big --layers 8 --hidden 1024 --intermediate 2816 --heads 8 --kv-heads 2 --vocab 8192 --dtype bf16 --seed 5
expect 0 "$G" synth big1 --like big --delta 0.01 --seed 6
expect 0 "$G" synth big2 --like big --delta 0.01 --seed 7
expect 0 "$G" synth ev --layers 2 --hidden 64 --heads 4 --kv-heads 2 --vocab 640 --dtype f32 --seed 4
"$PY" "$REF/tok_ref.py" make llama3 ev || bad "tokenizer fixture"
"$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import tok_ref; open("t.txt", "w").write(tok_ref.CORPUS)' "$REF"
"$G" eval ev --text t.txt --ctx 32 --json > cli-eval.json
"$G" tokenize ev t.txt > t.ids
"$G" eval ev --tokens t.ids --ctx 32 --no-bos --json > cli-eval-ids.json
expect 0 "$G" convert ev evb --dtype bf16
"$G" eval evb --tokens t.ids --ctx 32 --no-bos --matmul bf16 --json > cli-eval-bf16.json
expect 0 "$G" convert m cli-f16 --dtype f16
expect 0 "$G" extract-lora --base m --model f1 cli-lora --rank 4 --threads 2
"$PY" - "$V" > "$T/py" 2>&1 <<'PYEOF' && ok || bad "python module: $(cat "$T/py")"
import gc, json, os, struct, sys, threading, time
import numpy as np
import graft

def check(c, what):
    if not c:
        raise SystemExit("FAIL: " + what)

def raw(folder):  # an independent reader: every tensor's dtype, shape and bytes
    out = {}
    for f in sorted(os.listdir(folder)):
        if not f.endswith(".safetensors"): continue
        b = open(os.path.join(folder, f), "rb").read(); n = struct.unpack("<Q", b[:8])[0]
        for k, v in json.loads(b[8:8 + n]).items():
            if k != "__metadata__": out[k] = (v["dtype"], tuple(v["shape"]), b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
    return out

check(graft.__version__ == sys.argv[1], "version %s" % graft.__version__)
m = graft.open("m")
check(m.names == open("cli-names.txt").read().split(), "names differ from graft inspect")
check(m.config == json.load(open("m/config.json")), "config")
check(len(m) == len(m.names) and "model.norm.weight" in m and "nope" not in m, "len / in")
r = raw("m")
for k, (dt, shape, b) in r.items():
    a = m[k]
    check(a.shape == shape and a.tobytes() == b and not a.flags.writeable and a.dtype == np.uint16, "tensor %s view" % k)
    check(m.dtype(k) == "BF16" and m.shape(k) == shape, "dtype/shape of %s" % k)
    f = m.to_numpy(k)
    check(f.dtype == np.float32 and np.array_equal(f.view(np.uint32), a.astype(np.uint32) << 16), "to_numpy of %s" % k)
keep = m["model.embed_tokens.weight"]
want = keep.tobytes()
del m; gc.collect()
check(keep.tobytes() == want, "an array outlives its model")
try:
    graft.open("m")["nope"]; check(False, "KeyError")
except KeyError:
    pass
# sharded F32 folder and a GGUF file: the same values
s, g = graft.open("msh"), graft.open("m.gguf")
check(len(s.names) > 1 and sorted(s.names) == sorted(r), "sharded names")
for k, (dt, shape, b) in r.items():
    bf = (np.frombuffer(b, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    check(np.array_equal(s[k], bf), "sharded %s" % k)
    check(k not in g or np.array_equal(g.to_numpy(k), bf), "gguf %s" % k)
check("model.layers.1.mlp.down_proj.weight" in g, "gguf names")
# merge: dict, YAML text, path → the CLI's bytes
cfg = {"merge_method": "dare_ties", "base_model": "m", "dtype": "bfloat16",
       "models": [{"model": "f1", "parameters": {"weight": 0.6, "density": 0.5}}, {"model": "f2", "parameters": {"weight": 0.4, "density": 0.5}}]}
graft.merge(cfg, "py-dict", seed=3, threads=1)
graft.merge(open("dt.yml").read(), "py-text", seed=3)
graft.merge("dt.yml", "py-path", seed=3, threads=2)
cli = open("cli-out/model.safetensors", "rb").read()
for o in ("py-dict", "py-text", "py-path"):
    check(open(o + "/model.safetensors", "rb").read() == cli, "merge %s differs from the CLI" % o)
# errors: the CLI's exit-code classes, one-line messages
def fails(cls, code, fn, word):
    try:
        fn(); check(False, "no error from %s" % word)
    except cls as e:
        check(e.exit_code == code and isinstance(e, graft.Error) and word in str(e) and "\n" not in str(e), "%s: %r %s" % (word, e, e.exit_code))
fails(graft.ConfigError, 4, lambda: graft.merge("merge_method: nonesuch\nmodels: [{model: m}]\n", "x"), "nonesuch")
fails(graft.InputError, 3, lambda: graft.open("missing"), "missing")
open("bad.safetensors", "wb").write(struct.pack("<Q", 1 << 40) + b"{}")
fails(graft.InputError, 3, lambda: graft.open("bad.safetensors"), "bad.safetensors")
fails(graft.Error, 1, lambda: graft.merge(cfg, "py-dict", seed=3), "py-dict")
graft.merge(cfg, "py-dict", seed=3, force=True)
check(not os.path.exists("x"), "a failed merge left output")
# eval_ppl, convert, extract_lora: what the CLI computes and writes
e = graft.eval_ppl("ev", [open("t.txt").read()], ctx=32)
c = json.load(open("cli-eval.json"))
check(abs(e["nll"] - c["nll"]) <= 1e-8 * abs(c["nll"]) and e["tokens_scored"] == c["tokens_scored"] and e["bos"] == c["bos"], "eval_ppl %s vs %s" % (e, c))
ids = [int(x) for x in open("t.ids").read().split()]
e2 = graft.eval_ppl(graft.open("ev"), [ids], ctx=32, bos=False)
c2 = json.load(open("cli-eval-ids.json"))
check(abs(e2["nll"] - c2["nll"]) <= 1e-8 * abs(c2["nll"]) and e2["tokens_scored"] == c2["tokens_scored"], "eval_ppl of ids")
e3, c3 = graft.eval_ppl("evb", [ids], ctx=32, bos=False, matmul="bf16"), json.load(open("cli-eval-bf16.json"))
check(abs(e3["nll"] - c3["nll"]) <= 1e-8 * abs(c3["nll"]), "eval_ppl matmul=bf16 %s vs %s" % (e3, c3))
graft.convert("m", "py-f16", "F16", threads=2)
check(open("py-f16/model.safetensors", "rb").read() == open("cli-f16/model.safetensors", "rb").read(), "convert differs from the CLI")
rep = graft.extract_lora("m", "f1", "py-lora", rank=4)
check(open("py-lora/adapter_model.safetensors", "rb").read() == open("cli-lora/adapter_model.safetensors", "rb").read(), "extract_lora differs from the CLI")
check(all(v is None or 0 <= v < 1 for v in rep.values()) and any(v is not None for v in rep.values()), "extract_lora report %r" % rep)
for bad_call in (lambda: graft.convert("m", "x", "int4"), lambda: graft.eval_ppl("ev", [[10 ** 6]]), lambda: graft.eval_ppl("ev", [[1]], matmul="f8")):
    try:
        bad_call(); check(False, "no ValueError")
    except ValueError:
        pass
# hostile or odd arguments raise, never crash: a lone surrogate, a list that empties itself while its
# ids are read; a config path with a colon is a path
for bad_call in (lambda: graft.merge("\ud800", "x"),):
    try:
        bad_call(); check(False, "no error")
    except (ValueError, UnicodeError, graft.Error):
        pass
class Shrink:
    def __index__(self):
        lst.clear(); return 1
lst = [[Shrink(), 2, 3, 4], [1, 2, 3, 4]]
r = graft.eval_ppl("ev", lst, ctx=32, bos=False)
check(r["tokens_scored"] == 6, "eval_ppl on a list emptied mid-read: %r" % r)
os.makedirs("a:b", exist_ok=True)
open("a:b/dt.yml", "w").write(open("dt.yml").read().replace("model: m", "model: ../m").replace("model: f", "model: ../f").replace("base_model: m", "base_model: ../m"))
graft.merge("a:b/dt.yml", "py-colon", seed=3)
check(open("py-colon/model.safetensors", "rb").read() == cli, "config path with a colon")
# Ctrl-C during a merge: KeyboardInterrupt, no output, no temporary folder left
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive session (a background job starts with SIGINT ignored)
big = {"merge_method": "ties", "base_model": "big", "dtype": "bfloat16",
       "models": [{"model": "big1", "parameters": {"weight": 1.0, "density": 0.5}}, {"model": "big2", "parameters": {"weight": 1.0, "density": 0.5}}]}
sent = []
def sigint_once_writing():  # SIGINT as soon as the merge's temporary folder exists: mid-merge, on any machine
    for _ in range(20000):
        if [f for f in os.listdir(".") if "graft-tmp" in f]:
            sent.append(time.time()); os.kill(os.getpid(), signal.SIGINT); return
        time.sleep(0.001)
tm = threading.Thread(target=sigint_once_writing); tm.start()
t0 = time.time()
try:
    graft.merge(big, "py-big", threads=1); interrupted = False
except KeyboardInterrupt:
    interrupted = True
tm.join()
t1 = time.time()
check(interrupted and not os.path.exists("py-big") and not [f for f in os.listdir(".") if "graft-tmp" in f],
      "Ctrl-C: interrupted %s, SIGINT sent at %s s, merge returned at %.3f s, left %s" % (interrupted, [round(x - t0, 3) for x in sent], t1 - t0, os.listdir(".")))
check(time.time() - t0 < 30, "Ctrl-C took %.1f s" % (time.time() - t0))
graft.merge(big, "py-big", threads=2)  # the same merge, uninterrupted, completes
check(os.path.exists("py-big/model.safetensors"), "merge after an interrupted one")
def interrupted(fn, what):  # SIGINT 0.5 s into a call of several seconds: KeyboardInterrupt, soon
    tm = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)); tm.start()
    t0 = time.time()
    try:
        fn(); hit = False
    except KeyboardInterrupt:
        hit = True
    tm.cancel()
    check(hit and time.time() - t0 < 10, "Ctrl-C in %s: interrupted %s after %.1f s" % (what, hit, time.time() - t0))
interrupted(lambda: graft.extract_lora("big", "big1", "py-blora", rank=16, threads=1), "extract_lora")
check(not os.path.exists("py-blora"), "an interrupted extract_lora left output")
rng = np.random.default_rng(1)
interrupted(lambda: graft.eval_ppl("big", [[int(x) for x in rng.integers(0, 8192, 4096)]], ctx=512, threads=1), "eval_ppl")
# the GIL is released while merging: another thread keeps running
ticks = [0]; done = [False]
def tick():
    while not done[0]: ticks[0] += 1; time.sleep(0.001)
t = threading.Thread(target=tick); t.start()
graft.merge(cfg, "py-gil", seed=3, threads=1, force=True); done[0] = True; t.join()
check(ticks[0] > 0, "GIL held during merge")
# from a review: a 0-d tensor reads (reshape(()) was called with no argument); to_numpy takes dtype= by
# keyword; an empty tensor converts; out-of-range threads and a negative or 2^64 seed / shard_size are
# errors ("K" wrapped them); bos takes any truth value; a forked child that drops a GGUF model leaves
# the parent's decoded folder alone
hdr = json.dumps({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}, "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [4, 4]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open("scalar.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + struct.pack("<f", 3.5))
sm = graft.open("scalar.safetensors")
check(sm["s"].shape == () and float(sm["s"]) == 3.5 and sm.to_numpy("s", dtype="raw").shape == () and sm.to_numpy("e").shape == (0, 3), "0-d / empty tensors")
for bad_call, exc in ((lambda: graft.merge(cfg, "py-x", threads=5000), ValueError), (lambda: graft.merge(cfg, "py-x", seed=-1), OverflowError),
                      (lambda: graft.merge(cfg, "py-x", seed=2 ** 64), OverflowError), (lambda: graft.convert("m", "py-x", "F32", shard_size=-1), OverflowError),
                      (lambda: graft.eval_ppl("ev", ["x"], ctx=2 ** 21), ValueError)):
    try:
        bad_call()
        check(False, "an out-of-range argument was accepted")
    except exc:
        pass
check(not os.path.exists("py-x"), "an out-of-range call wrote its output")
text = open("t.txt").read()
ra, rb = graft.eval_ppl("ev", [text], ctx=32, bos=np.False_), graft.eval_ppl("ev", [text], ctx=32, bos=False)
check(ra["nll"] == rb["nll"], "bos=np.False_ is not bos=False")
tmpd = os.environ.get("GRAFT_TMPDIR") or os.environ.get("TMPDIR") or "/var/tmp"
mine = lambda: {d for d in os.listdir(tmpd) if d.startswith("graft-gguf-") and ("@%d-" % os.getpid()) in d}  # graft-gguf-HOST@PID-…
old = mine()  # (folders of GGUF models opened above and still alive)
gm = graft.open("m.gguf")
before = mine() - old
pid = os.fork()
if pid == 0:  # the child drops its copy of the model and exits normally
    del gm; gc.collect(); sys.exit(0)
os.waitpid(pid, 0)
check(len(before) == 1 and before <= mine(), "a forked child removed the parent's decoded GGUF folder: %s → %s" % (before, mine()))
del gm; gc.collect()
check(not (before & mine()), "the parent's decoded GGUF folder stayed after close")
print("ok")
PYEOF
echo "$pass passed, $fail failed"
[ $fail = 0 ]
