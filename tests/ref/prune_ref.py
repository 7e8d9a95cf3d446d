#!/usr/bin/python3
"""Independent NumPy check of graft prune (tests/ops-e2e.sh).

  prune_ref.py check IN OUT MODE ARG [STATS]   MODE: layer S | global S | nm N:M | wanda S | wanda-nm N:M
      OUT's zeros are exactly the ones computed here from IN (ties: the lower index is kept), kept
      values are bit-identical, tensors not pruned (1-D, embedding, lm_head) are unchanged.
  prune_ref.py stats IN OUT                     write random Wanda statistics (NAME [in] per 2-D weight)
"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from lora_ref import load, save  # noqa: E402


def order(path):
    """Tensor names in graft's order (single file: data offset order)."""
    f = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
    b = open(f, "rb").read()
    h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
    return [k for k, v in sorted(((k, v) for k, v in h.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0])]


def prunable(name, w):
    return w.ndim == 2 and not any(s in name for s in ("embed_tokens", "lm_head"))


def keep_top(score, k):
    keep = np.zeros(score.size, dtype=bool)
    keep[np.argsort(-score.ravel(), kind="stable")[:k]] = True
    return keep.reshape(score.shape)


def rows_keep(score, kept_per_group, group):
    keep = np.zeros(score.shape, dtype=bool)
    for r in range(score.shape[0]):
        for c0 in range(0, score.shape[1], group):
            g = score[r, c0:c0 + group]
            keep[r, c0 + np.argsort(-g, kind="stable")[:kept_per_group]] = True
    return keep


def check(inp, out, mode, arg, stats=None):
    W, O, names = load(inp), load(out), order(inp)
    S = load(stats) if stats else {}
    masks = {}
    pr = [n for n in names if prunable(n, W[n])]
    if mode == "global":
        s = float(arg)
        allmag = np.concatenate([np.abs(W[n]).ravel() for n in pr])
        keep = keep_top(allmag, allmag.size - int(s * allmag.size))
        off = 0
        for n in pr:
            masks[n] = keep[off:off + W[n].size].reshape(W[n].shape)
            off += W[n].size
    for n in pr:
        w = W[n]
        score = np.abs(w).astype(np.float32)
        if mode.startswith("wanda"):
            score = (score * np.sqrt(np.maximum(S[n].astype(np.float32), 0))).astype(np.float32)
        if mode == "layer":
            masks[n] = keep_top(score, w.size - int(float(arg) * w.size))
        elif mode in ("nm", "wanda-nm"):
            nn, mm = map(int, arg.split(":"))
            masks[n] = rows_keep(score, nn, mm)
        elif mode == "wanda":
            d = int(float(arg) * w.shape[1])
            masks[n] = rows_keep(score, w.shape[1] - d, w.shape[1])
    for n in names:
        if n not in masks:
            if not np.array_equal(O[n], W[n]):
                sys.exit("FAIL %s: changed but not prunable" % n)
            continue
        want = np.where(masks[n], W[n], np.float32(0))
        if not np.array_equal(O[n].view(np.uint32), want.astype(np.float32).view(np.uint32)):
            sys.exit("FAIL %s: %d elements differ" % (n, int((O[n] != want).sum())))
    print("ok: %d tensors pruned exactly as numpy (%s %s)" % (len(pr), mode, arg))


def stats(inp, out):
    W = load(inp)
    rng = np.random.default_rng(3)
    T = {n: rng.random(w.shape[1]).astype(np.float32) * 4 for n, w in W.items() if w.ndim == 2}
    save(out, T)
    print("ok stats")


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "check":
        check(a[1], a[2], a[3], a[4], a[5] if len(a) > 5 else None)
    elif a[0] == "stats":
        stats(a[1], a[2])
    else:
        raise SystemExit(__doc__)
