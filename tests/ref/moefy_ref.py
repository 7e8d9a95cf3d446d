#!/usr/bin/python3
"""Independent NumPy check of graft moefy (tests/ops-e2e.sh).

  moefy_ref.py check DENSE MOE REPORT.json RANGE [IDS CTX BOS WINDOWS MAX_TOKENS]
      Every layer's groups are a partition into equal parts; expert e's w1 / w3 are gate_proj / up_proj
      rows of its neurons (ascending) and w2 is K × down_proj's columns (to the stored dtype's rounding);
      the features (unit rows of [gate | up], or with calibration the neurons' |activation| on the first
      MAX_TOKENS tokens of llama_ref.py's float64 forward over the same windows) give the reported k-means
      objective, and one more balanced greedy assignment from the groups' means does not improve it (a
      fixed point); the router is s × (the groups' mean gate row, or the ridge fit λ = 1e-3 · mean diagonal
      of the MLP inputs to the groups' activation norms) with s = RANGE / (4 max_e ‖c_e ⊙ g‖, or the largest
      calibration logit), for float16 raised until the router's largest entry is 2^-4.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import logits  # noqa: E402
from lora_ref import load  # noqa: E402


def greedy(X, C, cap):
    d = (X * X).sum(1)[:, None] + (C * C).sum(1)[None, :] - 2 * X @ C.T
    a = -np.ones(len(X), int)
    fill = np.zeros(len(C), int)
    for k in np.lexsort((np.tile(np.arange(len(C)), len(X)), np.repeat(np.arange(len(X)), len(C)), d.ravel())):
        i, e = divmod(int(k), len(C))
        if a[i] < 0 and fill[e] < cap:
            a[i] = e
            fill[e] += 1
    return a


def objective(X, a, C):
    return float(((X - C[a]) ** 2).sum(1).mean())


def check(dense, moe, report, rng, ids=None, ctx=None, bos=None, windows=None, max_tokens=None):
    rng = float(rng)
    D = load(dense)
    Mo = load(moe)
    rep = json.load(open(report))
    c = json.load(open(os.path.join(dense, "config.json")))
    L, I, E, K = c["num_hidden_layers"], c["intermediate_size"], rep["experts"], rep["top_k"]
    cap = I // E
    dt = c.get("torch_dtype")
    tol = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}.get(dt, 1e-6)
    acts = hs = None
    if ids is not None:
        ctx, bos, windows, max_tokens = int(ctx), int(bos), int(windows), int(max_tokens)
        toks_all = [int(t) for t in open(ids).read().split()]
        W = {k: v.astype(np.float64) for k, v in D.items()}
        body = ctx - 1 if bos >= 0 else ctx
        acts, hs, n, used = [[] for _ in range(L)], [[] for _ in range(L)], 0, 0
        for w0 in range(0, len(toks_all), body):
            toks = ([bos] if bos >= 0 else []) + toks_all[w0:w0 + body]
            if used == windows or n >= max_tokens or len(toks) < 2:
                break
            taps = {}
            logits(dense, np.array(toks), W, taps)
            for l in range(L):
                acts[l].append(taps[(l, 3)][0])
                hs[l].append(taps[(l, 2)][0])
            n += len(toks)
            used += 1
        acts = [np.concatenate(a)[:max_tokens] for a in acts]
        hs = [np.concatenate(h)[:max_tokens] for h in hs]
    fails = []
    for l in range(L):
        p = "model.layers.%d." % l
        lay = rep["layer"][l]
        a = np.array(lay["expert"])
        if sorted(np.bincount(a, minlength=E).tolist()) != [cap] * E:
            fails.append("layer %d: groups not of %d neurons" % (l, cap))
            continue
        gate, up, down = D[p + "mlp.gate_proj.weight"], D[p + "mlp.up_proj.weight"], D[p + "mlp.down_proj.weight"]
        for e in range(E):
            rows = np.where(a == e)[0]
            q = p + "block_sparse_moe.experts.%d." % e
            if not (np.array_equal(Mo[q + "w1.weight"], gate[rows]) and np.array_equal(Mo[q + "w3.weight"], up[rows])):
                fails.append("layer %d expert %d: w1 / w3 are not the group's gate / up rows" % (l, e))
            want = K * down[:, rows].astype(np.float64)
            if np.abs(Mo[q + "w2.weight"] - want).max() > tol * np.abs(want).max():
                fails.append("layer %d expert %d: w2 is not K × the group's down_proj columns" % (l, e))
        X = np.concatenate([gate, up], 1).astype(np.float64) if acts is None else np.abs(acts[l]).T
        nr = np.sqrt((X * X).sum(1, keepdims=True))
        X = np.where(nr > 0, X / np.where(nr > 0, nr, 1), 0)
        C = np.array([X[a == e].mean(0) for e in range(E)])
        obj = objective(X, a, C)
        if abs(obj - lay["objective"]) > 1e-4 * max(obj, 1e-12):
            fails.append("layer %d: objective %.6g, NumPy %.6g" % (l, lay["objective"], obj))
        if lay["converged"]:
            b = greedy(X, C, cap)
            if objective(X, b, C) < obj * (1 - 1e-3):
                fails.append("layer %d: not a fixed point of the balanced assignment" % l)
        if acts is None:
            R = np.array([gate[a == e].astype(np.float64).mean(0) for e in range(E)])
            g = D[p + "post_attention_layernorm.weight"].astype(np.float64)
            big = 4 * np.sqrt(((R * g) ** 2).sum(1)).max()
        else:
            Xh = hs[l]
            N = np.array([np.sqrt((acts[l][:, a == e] ** 2).sum(1)) for e in range(E)]).T
            G = Xh.T @ Xh
            G += 1e-3 * np.trace(G) / len(G) * np.eye(len(G))
            R = np.linalg.solve(G, Xh.T @ N).T
            big = np.abs(Xh @ R.T).max()
        s = rng / big
        if dt == "float16" and s * np.abs(R).max() < 0.0625:  # raised: the router's entries stay normal
            s = 0.0625 / np.abs(R).max()
        if abs(lay["router_range"] - s * big) > 1e-3 * s * big:
            fails.append("layer %d: router range %.6g, NumPy %.6g" % (l, lay["router_range"], s * big))
        if abs(lay["router_scale"] - s) > 1e-3 * s:
            fails.append("layer %d: router scale %.6g, NumPy %.6g" % (l, lay["router_scale"], s))
        got = Mo[p + "block_sparse_moe.gate.weight"] / lay["router_scale"]
        if np.abs(got - R).max() > (1e-2 if acts is not None else 2 * tol) * np.abs(R).max():
            fails.append("layer %d: router rows differ from NumPy's by %.3g of the largest" % (l, np.abs(got - R).max() / np.abs(R).max()))
    if fails:
        print("FAIL " + "; ".join(fails[:6]))
        sys.exit(1)
    print("ok moefy: %d layers, %d experts of %d, objectives %s" % (L, E, cap, " ".join("%.4f" % x["objective"] for x in rep["layer"])))


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(*sys.argv[2:])
    else:
        sys.exit("unknown command")
