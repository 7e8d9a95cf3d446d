#!/usr/bin/env python3
"""Independent check of `graft analyze --json`: recompute every figure with NumPy from the model
folders (float64, whole tensors) and compare.
Usage: analyze_ref.py GRAFT_JSON BASE MODEL... [--density D]"""
import json
import math
import struct
import sys

import numpy as np

DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def load(d):
    b = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        raw = b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, DT[v["dtype"]])
        out[k] = a.astype(np.float32).astype(np.float64).reshape(v["shape"])
    return out


def topk(x, k):
    m = np.zeros(x.size, bool)
    if k:
        order = np.lexsort((np.arange(x.size), -np.abs(x)))  # largest first, ties: lower index
        m[order[:k]] = True
    return m


def erank(x):
    s = np.linalg.svd(x, compute_uv=False)
    t = s.sum()
    if t <= 0:
        return 0.0
    p = s[s > 0] / t
    return math.exp(-(p * np.log(p)).sum())


def main(a):
    dens = 0.2
    if "--density" in a:
        i = a.index("--density")
        dens = float(a[i + 1])
        a = a[:i] + a[i + 2:]
    got = json.load(open(a[0]))
    base, models = load(a[1]), [load(m) for m in a[2:]]
    n = len(models)
    bad = []

    def close(x, y, what, tol=1e-6):
        if x is None or y is None or (isinstance(y, float) and math.isnan(y)):
            if not (x is None and (y is None or math.isnan(y))):
                bad.append("%s: graft %s, ref %s" % (what, x, y))
            return
        if abs(x - y) > tol * max(1.0, abs(y)):
            bad.append("%s: graft %.9g, ref %.9g" % (what, x, y))

    tot = {"tv": [[] for _ in range(n)], "k": np.zeros((n, n)), "ov": np.zeros((n, n)), "er": [[] for _ in range(n)]}
    gt = {t["name"]: t for t in got["tensors"]}
    for name in base:
        if name not in gt:
            continue
        tv = [(m[name] - base[name]).ravel() for m in models]
        k = int(base[name].size * dens)
        ks = [min(k, int(np.count_nonzero(t))) for t in tv]  # the top-k among the changed entries
        masks = [topk(t, kk) for t, kk in zip(tv, ks)]
        blk = gt[name]
        for i in range(n):
            close(blk["norm"][i], float(np.linalg.norm(tv[i])), name + " norm")
            tot["tv"][i].append(tv[i])
            if base[name].ndim == 2 and min(base[name].shape) > 1:
                if np.any(tv[i]):
                    e = erank((models[i][name] - base[name]))
                    tot["er"][i].append(e)
                    close(blk["erank"][i], e, name + " erank", 1e-4)
                else:
                    close(blk["erank"][i], None, name + " erank of an unchanged matrix")
        for p in blk["pairs"]:
            i, j = p["a"], p["b"]
            x, y = tv[i], tv[j]
            c = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
            close(p["cos"], c, name + " cos")
            close(p["abs_cos"], abs(c), name + " abs_cos")
            close(p["pearson"], float(np.corrcoef(x, y)[0, 1]), name + " pearson", 1e-5)
            close(p["euclid"], float(np.linalg.norm(x - y)), name + " euclid")
            both = (x != 0) & (y != 0)
            close(p["conflict"], float(((x > 0) != (y > 0))[both].sum() / both.sum()) if both.any() else None, name + " conflict")
            ov, kk = int((masks[i] & masks[j]).sum()), max(ks[i], ks[j])
            close(p["overlap"], ov / kk if kk else None, name + " overlap")
            tot["ov"][i, j] += ov
            tot["k"][i, j] += kk
    m = got["model"]
    flat = [np.concatenate(t) for t in tot["tv"]]
    for i in range(n):
        close(m["norm"][i], float(np.linalg.norm(flat[i])), "model norm")
        if tot["er"][i]:
            close(m["erank"][i], float(np.mean(tot["er"][i])), "model erank", 1e-4)
    for p in m["pairs"]:
        i, j = p["a"], p["b"]
        x, y = flat[i], flat[j]
        close(p["cos"], float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))), "model cos")
        close(p["pearson"], float(np.corrcoef(x, y)[0, 1]), "model pearson", 1e-5)
        close(p["euclid"], float(np.linalg.norm(x - y)), "model euclid")
        close(p["overlap"], tot["ov"][i, j] / tot["k"][i, j] if tot["k"][i, j] else None, "model overlap")
    if bad:
        print("FAIL", len(bad), "differences; first:", *bad[:5], sep="\n  ")
        return 1
    print("ok: %d tensors, %d models" % (len(gt), n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
