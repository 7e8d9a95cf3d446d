#!/usr/bin/python3
"""Independent NumPy check of graft quantize / dequantize (tests/ops-e2e.sh).

  quant_ref.py check IN QUANT DEQUANT BITS GROUP REPORT   QUANT's integers and scales are exactly the
      round-to-nearest-even symmetric group-wise ones computed here from IN; DEQUANT (f32) is q·s exactly;
      untouched tensors are byte-equal; the reported relative errors match.
"""
import re
import sys

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from lora_ref import load  # noqa: E402


def expected(w, bits, group):
    qmax = np.float32(127 if bits == 8 else 7)
    rows, cols = w.shape
    ng = (cols + group - 1) // group
    q = np.zeros((rows, cols), dtype=np.int32)
    s = np.zeros((rows, ng), dtype=np.float32)
    for g in range(ng):
        blk = w[:, g * group:(g + 1) * group].astype(np.float32)
        sc = (np.abs(blk).max(axis=1) / qmax).astype(np.float32)
        s[:, g] = sc
        safe = np.where(sc > 0, sc, np.float32(1))[:, None]
        v = np.rint((blk / safe).astype(np.float32))
        v = np.where(sc[:, None] > 0, v, 0)
        q[:, g * group:(g + 1) * group] = np.clip(v, -qmax, qmax).astype(np.int32)
    return q, s


def unpack4(u8, cols):
    lo = (u8 & 0xF).astype(np.int32)
    hi = (u8 >> 4).astype(np.int32)
    out = np.empty((u8.shape[0], cols), dtype=np.int32)
    out[:, 0::2], out[:, 1::2] = lo, hi
    return np.where(out >= 8, out - 16, out)


def check(inp, quant, deq, bits, group, report):
    W, Q, D = load(inp), raw(quant), load(deq)
    errs = dict(re.findall(r"^(\S+)\s+rel\. error (\S+)$", open(report).read(), re.M))
    n = 0
    for k, w in W.items():
        if k + "_scale" not in Q[1]:
            if not np.array_equal(D[k], w):
                sys.exit("FAIL %s: unquantized tensor changed" % k)
            continue
        q, s = expected(w, bits, group)
        got = Q[0][k]
        got = got.astype(np.int32) if bits == 8 else unpack4(got, w.shape[1])
        if not np.array_equal(got, q):
            sys.exit("FAIL %s: %d integers differ" % (k, int((got != q).sum())))
        if not np.array_equal(Q[1][k + "_scale"], s):
            sys.exit("FAIL %s: scales differ" % k)
        rec = (q.astype(np.float32) * np.repeat(s, group, axis=1)[:, : w.shape[1]]).astype(np.float32)
        if not np.array_equal(D[k], rec):
            sys.exit("FAIL %s: dequantized values are not q*s" % k)
        e = np.sqrt(((w.astype(np.float64) - rec) ** 2).sum() / max((w.astype(np.float64) ** 2).sum(), 1e-300))
        if abs(float(errs[k]) - e) > 1e-3 * e + 1e-9:
            sys.exit("FAIL %s: reported error %s, numpy %.6g" % (k, errs[k], e))
        n += 1
    print("ok: %d tensors quantized exactly as numpy" % n)


def raw(path):
    """Integer tensors as stored (I8 / U8) and float tensors decoded."""
    import json
    import os
    import struct
    f = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
    b = open(f, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    d = b[8 + n:]
    ints, floats = {}, {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        if v["dtype"] in ("I8", "U8"):
            ints[k] = np.frombuffer(d[s:e], dtype=np.int8 if v["dtype"] == "I8" else np.uint8).reshape(v["shape"])
        elif v["dtype"] == "F32":
            floats[k] = np.frombuffer(d[s:e], dtype=np.float32).reshape(v["shape"])
    return ints, floats


if __name__ == "__main__":
    a = sys.argv[1:]
    check(a[1], a[2], a[3], int(a[4]), int(a[5]), a[6])
