"""PyTorch checkpoints for tests/torchbin.sh, written by torch.save itself (python3-torch), and hostile
ones built with Python's pickle and zipfile modules. Independent of graft: safetensors files are read
with struct/json/NumPy here.

  torchbin_fixtures.py from-st DIR OUT [SHARDS]   DIR's safetensors tensors → OUT/pytorch_model.bin
                                                  (or SHARDS files + pytorch_model.bin.index.json), plus
                                                  config.json and tokenizer files
  torchbin_fixtures.py same A B                   every tensor of two models (safetensors files or
                                                  folders) has the same name, dtype, shape and bytes
  torchbin_fixtures.py against-torch BIN ST       every tensor torch.load reads from BIN equals ST's
  torchbin_fixtures.py zoo OUTDIR                 the small and hostile checkpoints (see below)
"""
import collections, io, json, os, pickle, shutil, struct, sys, zipfile

import numpy as np

ST_DT = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
         "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def st_files(path):
    if os.path.isfile(path):
        return [path]
    idx = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(idx):
        return [os.path.join(path, f) for f in sorted(set(json.load(open(idx))["weight_map"].values()))]
    return [os.path.join(path, "model.safetensors")]


def st_read(path):
    """name → (dtype string, shape, raw bytes) over a file or folder."""
    out = {}
    for f in st_files(path):
        b = open(f, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        for k, v in h.items():
            if k != "__metadata__":
                s, e = v["data_offsets"]
                out[k] = (v["dtype"], tuple(v["shape"]), b[8 + n + s:8 + n + e])
    return out


def to_torch(dt, shape, raw):
    import torch
    a = np.frombuffer(raw, ST_DT[dt]).reshape(shape).copy()
    if dt == "BF16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def from_st(src, out, shards=1):
    import torch
    t = st_read(src)
    os.makedirs(out, exist_ok=True)
    names = list(t)
    if shards == 1:
        torch.save(collections.OrderedDict((k, to_torch(*t[k])) for k in names), os.path.join(out, "pytorch_model.bin"))
    else:
        per = (len(names) + shards - 1) // shards
        wm, total = {}, 0
        for i in range(shards):
            fn = "pytorch_model-%05d-of-%05d.bin" % (i + 1, shards)
            part = names[i * per:(i + 1) * per]
            torch.save(collections.OrderedDict((k, to_torch(*t[k])) for k in part), os.path.join(out, fn))
            for k in part:
                wm[k] = fn
                total += len(t[k][2])
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, open(os.path.join(out, "pytorch_model.bin.index.json"), "w"), indent=2)
    if os.path.isdir(src):
        for f in os.listdir(src):
            if f.endswith(".json") and not f.startswith("model.safetensors"):
                shutil.copy(os.path.join(src, f), out)


def same(a, b):
    ta, tb = st_read(a), st_read(b)
    if set(ta) != set(tb):
        sys.exit("tensor names differ: %s" % sorted(set(ta) ^ set(tb))[:5])
    for k in ta:
        if ta[k] != tb[k]:
            sys.exit("tensor %s differs: %s %s vs %s %s" % (k, ta[k][0], ta[k][1], tb[k][0], tb[k][1]))
    print("same: %d tensors" % len(ta))


def against_torch(binf, stf):
    import torch
    sd = torch.load(binf)
    t = st_read(stf)
    names = [k for k, v in sd.items() if isinstance(v, torch.Tensor)]
    if sorted(names) != sorted(t):
        sys.exit("names differ: torch %s graft %s" % (sorted(names), sorted(t)))
    tdt = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
           torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
    for k in names:
        v = sd[k].detach().contiguous()
        dt, shape, raw = t[k]
        if tdt[v.dtype] != dt or tuple(v.shape) != shape:
            sys.exit("%s: torch %s %s, graft %s %s" % (k, v.dtype, tuple(v.shape), dt, shape))
        ref = (v.view(torch.int16) if v.dtype == torch.bfloat16 else v).numpy().tobytes()
        if ref != raw:
            sys.exit("%s: values differ" % k)
    print("against torch: %d tensors" % len(names))


# ---- hostile checkpoints ----------------------------------------------------------------------------
def zip_ckpt(path, pkl, storages=(), method=zipfile.ZIP_STORED, archive="archive"):
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr(archive + "/data.pkl", pkl)
        for k, data in storages:
            z.writestr(archive + "/data/" + k, data)
        z.writestr(archive + "/version", "3\n")


class Storage:  # stands for a typed storage in a crafted pickle: persistent id ('storage', cls, key, 'cpu', numel)
    def __init__(self, cls, key, numel):
        self.pid = ("storage", cls, key, "cpu", numel)


class Rebuilt:  # a tensor as _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        import torch._utils
        return (torch._utils._rebuild_tensor_v2, self.args)


class CraftPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Storage) else None


def craft(obj):
    f = io.BytesIO()
    CraftPickler(f, protocol=2).dump(obj)
    return f.getvalue()


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


class Module:  # a class of the saving script: torch.save of a model object pickles it by name
    def __init__(self):
        self.w = 1


def zoo(d):
    import builtins
    import torch
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    emb = torch.randn(16, 8).to(torch.bfloat16)
    sd = collections.OrderedDict()
    sd["model.embed_tokens.weight"] = emb
    sd["model.norm.weight"] = torch.ones(8)
    sd["model.layers.0.mlp.up_proj.weight"] = torch.randn(12, 8, dtype=torch.float16)
    sd["lm_head.weight"] = emb  # tied: one storage
    sd["slice"] = torch.arange(40, dtype=torch.float32)[10:30].view(4, 5)  # a view at a storage offset
    sd["ids"] = torch.arange(5, dtype=torch.int64)
    sd["scalar"] = torch.tensor(3.5, dtype=torch.float64)
    sd["flag"] = torch.tensor([True, False])
    sd["i8"] = torch.tensor([-3, 4], dtype=torch.int8)
    sd["step"] = 7  # not a tensor: skipped
    torch.save(sd, os.path.join(d, "good.bin"))
    torch.save(sd, os.path.join(d, "good-p4.bin"), pickle_protocol=4)
    p = torch.nn.Parameter(torch.randn(3, 2))
    torch.save({"p": p}, os.path.join(d, "param.bin"))
    torch.save({"w": torch.randn(4, 3)}, os.path.join(d, "plain-dict.bin"))
    torch.save(sd, os.path.join(d, "legacy.bin"), _use_new_zipfile_serialization=False)
    torch.save({"a": torch.randn(3, 4).t()}, os.path.join(d, "noncontig.bin"))
    torch.save({"model": {"w": torch.randn(2, 2)}}, os.path.join(d, "nested.bin"))
    torch.save({"x": Evil(os.system, "echo pwned > " + os.path.join(d, "PWNED"))}, os.path.join(d, "evil-os.bin"))
    torch.save({"x": Evil(builtins.eval, "print('pwned')")}, os.path.join(d, "evil-eval.bin"))
    torch.save({"m": Module()}, os.path.join(d, "object.bin"))
    good = open(os.path.join(d, "good.bin"), "rb").read()
    open(os.path.join(d, "truncated.bin"), "wb").write(good[:len(good) * 2 // 3])
    # a flipped byte inside the first storage (the directory's CRC no longer matches)
    with zipfile.ZipFile(os.path.join(d, "good.bin")) as z:
        info = {i.filename: i for i in z.infolist()}
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    st0 = [n for n in info if n.endswith("/data/0")][0]
    h = info[st0].header_offset  # the local header's own name and extra lengths (torch pads the extra field)
    off = h + 30 + struct.unpack("<H", good[h + 26:h + 28])[0] + struct.unpack("<H", good[h + 28:h + 30])[0] + 3
    bad = bytearray(good)
    bad[off] ^= 0x40
    open(os.path.join(d, "badcrc.bin"), "wb").write(bytes(bad))
    # the same members rewritten: deflated; one storage two bytes short
    with zipfile.ZipFile(os.path.join(d, "compressed.bin"), "w", zipfile.ZIP_DEFLATED) as z:
        for n, b in members:
            z.writestr(n, b)
    with zipfile.ZipFile(os.path.join(d, "short-storage.bin"), "w") as z:
        for n, b in members:
            z.writestr(n, b[:-2] if n == st0 else b)
    # crafted pickles
    F = torch.FloatStorage
    four = struct.pack("<4f", 1, 2, 3, 4)
    zip_ckpt(os.path.join(d, "past-storage.bin"), craft({"w": Rebuilt(Storage(F, "0", 4), 2, (3,), (1,))}), [("0", four)])
    zip_ckpt(os.path.join(d, "overflow-shape.bin"), craft({"w": Rebuilt(Storage(F, "0", 4), 0, (1 << 40, 1 << 40), (1 << 40, 1))}), [("0", four)])
    zip_ckpt(os.path.join(d, "missing-storage.bin"), craft({"w": Rebuilt(Storage(F, "7", 4), 0, (4,), (1,))}), [("0", four)])
    zip_ckpt(os.path.join(d, "numel-mismatch.bin"), craft({"w": Rebuilt(Storage(F, "0", 5), 0, (4,), (1,))}), [("0", four)])
    zip_ckpt(os.path.join(d, "crafted-ok.bin"), craft({"w": Rebuilt(Storage(F, "0", 4), 1, (3,), (1,))}), [("0", four)])
    zip_ckpt(os.path.join(d, "list-root.bin"), craft([1, 2, 3]))
    # raw opcodes: a memo index far beyond anything stored; REDUCE on an empty stack; no STOP;
    # a "billion laughs" list (each level holds the previous one 8 times: 8^30 elements if copied)
    zip_ckpt(os.path.join(d, "memo.bin"), b"\x80\x02}r\xf0\xff\xff\xff.")
    zip_ckpt(os.path.join(d, "underflow.bin"), b"\x80\x02R.")
    zip_ckpt(os.path.join(d, "nostop.bin"), b"\x80\x02}q\x00")
    bomb = b"\x80\x02]q\x00"
    for i in range(30):
        bomb += b"(" + b"h" + bytes([i]) + (b"h" + bytes([i])) * 7 + b"l" + b"q" + bytes([i + 1])
    zip_ckpt(os.path.join(d, "bomb.bin"), bomb + b".")
    # one string object (memo) naming two entries: a duplicate name, refused before names are copied
    import pickletools
    t = Rebuilt(Storage(F, "0", 4), 0, (4,), (1,))
    raw = craft(collections.OrderedDict([("w", t), ("v", t)]))  # the second tensor is a memo reference
    ops = list(pickletools.genops(raw))
    wput = [ops[i + 1][1] for i, (op, arg, pos) in enumerate(ops) if op.name == "BINUNICODE" and arg == "w"][0]
    vpos = [pos for op, arg, pos in ops if op.name == "BINUNICODE" and arg == "v"][0]
    zip_ckpt(os.path.join(d, "name-reuse.bin"), raw[:vpos] + b"h" + bytes([wput]) + raw[vpos + 6:], [("0", four)])
    # one storage key read as two types (torch.load keeps the first it meets: a float16 view of float32
    # bytes, or a resize error); a tensor's name given again to None (Python keeps the None); TUPLE1
    # over and over: more values than VALUES_MAX, one byte each (a limit, not "out of memory")
    zip_ckpt(os.path.join(d, "two-types.bin"), craft(collections.OrderedDict([("a", Rebuilt(Storage(F, "0", 4), 0, (4,), (1,))),
                                                                              ("b", Rebuilt(Storage(torch.HalfStorage, "0", 8), 0, (8,), (1,)))])), [("0", four)])
    raw = craft(collections.OrderedDict([("w", Rebuilt(Storage(F, "0", 4), 0, (4,), (1,))), ("x", None)]))
    assert raw.count(b"X\x01\x00\x00\x00x") == 1
    zip_ckpt(os.path.join(d, "name-none.bin"), raw.replace(b"X\x01\x00\x00\x00x", b"X\x01\x00\x00\x00w"), [("0", four)])
    zip_ckpt(os.path.join(d, "tuples.bin"), b"\x80\x02N" + b"\x85" * ((4 << 20) + 8) + b".")
    zip_ckpt(os.path.join(d, "ext.bin"), b"\x80\x02\x82\x01.")
    zip_ckpt(os.path.join(d, "stack-global.bin"), b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93.")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "from-st":
        from_st(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    elif cmd == "same":
        same(sys.argv[2], sys.argv[3])
    elif cmd == "against-torch":
        against_torch(sys.argv[2], sys.argv[3])
    elif cmd == "zoo":
        zoo(sys.argv[2])
    else:
        sys.exit("unknown command " + cmd)
