#!/usr/bin/python3
"""Independent NumPy check of graft shrink's layer metrics (tests/ops-e2e.sh).

  shrink_ref.py check MODEL IDS CTX BOS WINDOWS METRIC DROP REPORT.json
      The hidden states of llama_ref.py's float64 forward over the same windows (BOS, then CTX − 1 ids of
      IDS, at most WINDOWS of them): angular = mean over windows of arccos(cos(h_l, h_{l+DROP})) / π at
      the last token (Gromov et al.), block-influence = 1 − mean over all tokens of cos(h_i, h_{i+1})
      (ShortGPT), ppl = greedy rounds of the lowest mean NLL per scored token with a layer removed (removing =
      zeroing its o_proj and down_proj, which makes it an identity; values: the first round's NLLs); the
      reported values within 1e-4 and the same layers dropped.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import logits  # noqa: E402
from lora_ref import load  # noqa: E402


def cos(a, b):
    return np.clip((a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1)), -1, 1)


def check(model, ids, ctx, bos, windows, metric, drop, report):
    ctx, bos, windows, drop = int(ctx), int(bos), int(windows), int(drop)
    ids = [int(t) for t in open(ids).read().split()]
    W = {k: v.astype(np.float64) for k, v in load(model).items()}
    L = json.load(open(os.path.join(model, "config.json")))["num_hidden_layers"]
    body = ctx - 1 if bos >= 0 else ctx
    if metric == "ppl":
        wins = []
        for w0 in range(0, len(ids), body):
            toks = ([bos] if bos >= 0 else []) + ids[w0:w0 + body]
            if len(wins) == windows or len(toks) < 2:
                break
            wins.append(toks)

        def nll(gone):
            V = dict(W)
            for l in gone:
                for k in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
                    V["model.layers.%d.%s" % (l, k)] = np.zeros_like(W["model.layers.%d.%s" % (l, k)])
            tot, n = 0.0, 0
            for toks in wins:
                lg = logits(model, np.array(toks), V)
                ls = lg - lg.max(-1, keepdims=True)
                ls = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
                tot -= sum(ls[i, toks[i + 1]] for i in range(len(toks) - 1))
                n += len(toks) - 1
            return tot / n
        gone, vals = [], None
        for r in range(drop):
            cand = {l: nll(gone + [l]) for l in range(L) if l not in gone}
            if r == 0:
                vals = np.array([cand[l] for l in range(L)])
            gone.append(min(cand, key=lambda l: (cand[l], l)))
        rep = json.load(open(report))
        if np.abs(np.array(rep["values"]) - vals).max() > 1e-4 or rep["dropped"] != sorted(gone):
            print("FAIL ppl: graft %s dropped %s; NumPy %s dropped %s" % (rep["values"], rep["dropped"], list(vals), sorted(gone)))
            sys.exit(1)
        print("ok ppl: %s, dropped %s" % (" ".join("%.5f" % v for v in vals), sorted(gone)))
        return
    acc = np.zeros(L - drop + 1 if metric == "angular" else L)
    count = used = 0
    for w0 in range(0, len(ids), body):
        if used == windows:
            break
        toks = ([bos] if bos >= 0 else []) + ids[w0:w0 + body]
        if len(toks) < 2:
            break
        taps = {}
        logits(model, np.array(toks), W, taps)
        h = [taps[(l, -1)][0] for l in range(L + 1)]
        if metric == "angular":
            acc += [np.arccos(cos(h[l][-1], h[l + drop][-1])) / np.pi for l in range(L - drop + 1)]
            count += 1
        else:
            acc += [(1 - cos(h[l], h[l + 1])).sum() for l in range(L)]
            count += len(toks)
        used += 1
    vals = acc / count
    rep = json.load(open(report))
    if rep["windows"] != used or len(rep["values"]) != len(vals) or np.abs(np.array(rep["values"]) - vals).max() > 1e-4:
        print("FAIL values %s, windows %d; NumPy %s, windows %d" % (rep["values"], rep["windows"], list(vals), used))
        sys.exit(1)
    if metric == "angular":
        b = int(np.argmin(vals))
        want = list(range(b, b + drop))
    else:
        want = sorted(sorted(range(L), key=lambda l: (vals[l], l))[:drop])
    if rep["dropped"] != want:
        print("FAIL dropped %s, NumPy %s" % (rep["dropped"], want))
        sys.exit(1)
    print("ok %s: %s, dropped %s" % (metric, " ".join("%.5f" % v for v in vals), want))


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(*sys.argv[2:10])
    else:
        sys.exit("unknown command")
