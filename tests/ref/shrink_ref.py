#!/usr/bin/python3
"""Independent NumPy check of graft shrink's layer metrics (tests/ops-e2e.sh).

  shrink_ref.py check MODEL IDS CTX BOS WINDOWS METRIC DROP REPORT.json
      The hidden states of llama_ref.py's float64 forward over the same windows (BOS, then CTX − 1 ids of
      IDS, at most WINDOWS of them): angular = mean over windows of arccos(cos(h_l, h_{l+DROP})) / π at
      the last token (Gromov et al.), block-influence = 1 − mean over all tokens of cos(h_i, h_{i+1})
      (ShortGPT); the reported values within 1e-4 and the same layers dropped.
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
