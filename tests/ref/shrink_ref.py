#!/usr/bin/python3
"""Independent NumPy check of graft shrink's layer metrics (tests/ops-e2e.sh).

  shrink_ref.py check MODEL IDS CTX BOS WINDOWS METRIC DROP REPORT.json
      The hidden states of llama_ref.py's float64 forward over the same windows (BOS, then CTX − 1 ids of
      IDS, at most WINDOWS of them): angular = mean over windows of arccos(cos(h_l, h_{l+DROP})) / π at
      the last token (Gromov et al.), block-influence = 1 − mean over all tokens of cos(h_i, h_{i+1})
      (ShortGPT), ppl = greedy rounds of the lowest mean NLL per scored token with a layer removed (removing =
      zeroing its o_proj and down_proj, which makes it an identity; values: the first round's NLLs); the
      reported values within 1e-4 and the same layers dropped.

  shrink_ref.py width MODEL IDS CTX BOS WINDOWS REPORT.json PRUNED
      Width pruning: the importances from the same forward's activations (FFN neuron = |down_proj
      input|, head = the 2-norm of its output, channel = |RMSNorm output| summed over the layers' norms;
      each the mean over a window's tokens, then the root mean square over windows) within 1e-4 of the
      largest; every kept unit (key/value groups by their heads' sum) at least
      as important as every removed one (up to that tolerance); and PRUNED's logits (NumPy forward) equal
      MODEL's with the removed units' weights zeroed (o_proj columns, down_proj columns, and the removed
      channels of the embeddings, o_proj / down_proj rows and biases) within 1e-4 of the largest.
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


def width(model, ids, ctx, bos, windows, report, pruned):
    ctx, bos, windows = int(ctx), int(bos), int(windows)
    ids = [int(t) for t in open(ids).read().split()]
    W = {k: v.astype(np.float64) for k, v in load(model).items()}
    c = json.load(open(os.path.join(model, "config.json")))
    pre = "language_model.model." if "text_config" in c else "model."
    c = c.get("text_config", c)
    L, H, nh = c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"]
    nkv = c.get("num_key_value_heads", nh)
    hd = c.get("head_dim") or H // nh
    body = ctx - 1 if bos >= 0 else ctx
    ffn, head, hid, used = 0, 0, 0, 0
    for w0 in range(0, len(ids), body):
        toks = ([bos] if bos >= 0 else []) + ids[w0:w0 + body]
        if used == windows or len(toks) < 2:
            break
        taps = {}
        logits(model, np.array(toks), W, taps)
        # per window the mean over its tokens, then the root mean square over windows (Minitron)
        ffn = ffn + np.array([np.abs(taps[(l, 3)][0]).mean(0) for l in range(L)]) ** 2
        head = head + np.array([np.sqrt((taps[(l, 1)][0].reshape(len(toks), nh, hd) ** 2).sum(-1)).mean(0) for l in range(L)]) ** 2
        hid = hid + sum(np.abs(taps[(l, 0)][0]).mean(0) + np.abs(taps[(l, 2)][0]).mean(0) for l in range(L)) ** 2
        used += 1
    ffn, head, hid = np.sqrt(ffn / used), np.sqrt(head / used), np.sqrt(hid / used)
    rep = json.load(open(report))
    fails = []
    for key, ref in (("ffn_importance", ffn), ("head_importance", head), ("hidden_importance", hid)):
        got = np.array(rep[key])
        if got.shape != ref.shape or np.abs(got - ref).max() > 1e-4 * np.abs(ref).max():
            fails.append("%s: graft %s, NumPy %s" % (key, got.ravel()[:6], ref.ravel()[:6]))
    gs = nh // nkv
    groups = head.reshape(L, nkv, gs).sum(-1)

    def kept_ok(imp, kept, tol):
        gone = sorted(set(range(len(imp))) - set(kept))
        return not gone or not kept or min(imp[kept]) >= max(imp[gone]) - tol

    keep_f = rep.get("ffn_kept") or [list(range(ffn.shape[1]))] * L
    keep_g = rep.get("groups_kept") or [list(range(nkv))] * L
    keep_h = rep.get("hidden_kept") or list(range(H))
    for l in range(L):
        if not kept_ok(ffn[l], keep_f[l], 1e-4 * np.abs(ffn).max()):
            fails.append("layer %d: the kept neurons are not the most important" % l)
        if not kept_ok(groups[l], keep_g[l], 1e-4 * np.abs(groups).max()):
            fails.append("layer %d: the kept key/value groups are not the most important" % l)
    if not kept_ok(hid, keep_h, 1e-4 * np.abs(hid).max()):
        fails.append("the kept channels are not the most important")
    Z = dict(W)
    gone_h = sorted(set(range(H)) - set(keep_h))
    for k in list(Z):
        if k.endswith("embed_tokens.weight") or k.endswith("lm_head.weight"):
            Z[k] = Z[k].copy()
            Z[k][:, gone_h] = 0
    for l in range(L):
        p = pre + "layers.%d." % l
        heads_gone = [h for g in sorted(set(range(nkv)) - set(keep_g[l])) for h in range(g * gs, (g + 1) * gs)]
        o = Z[p + "self_attn.o_proj.weight"].copy()
        for h in heads_gone:
            o[:, h * hd:(h + 1) * hd] = 0
        o[gone_h, :] = 0
        Z[p + "self_attn.o_proj.weight"] = o
        if p + "self_attn.o_proj.bias" in Z:
            Z[p + "self_attn.o_proj.bias"] = Z[p + "self_attn.o_proj.bias"].copy()
            Z[p + "self_attn.o_proj.bias"][gone_h] = 0
        d = Z[p + "mlp.down_proj.weight"].copy()
        d[:, sorted(set(range(d.shape[1])) - set(keep_f[l]))] = 0
        d[gone_h, :] = 0
        Z[p + "mlp.down_proj.weight"] = d
    toks = np.array(([bos] if bos >= 0 else []) + ids[:ctx - 1])
    a, b = logits(model, toks, Z), logits(pruned, toks)
    d = np.abs(a - b).max() / np.abs(a).max()
    if d > 1e-4:
        fails.append("the pruned model's logits differ from the zeroed original's by %.3g of the largest" % d)
    if fails:
        print("FAIL " + "; ".join(fails))
        sys.exit(1)
    print("ok width: %d windows, kept %d/%d neurons, %d/%d groups, %d/%d channels; logits within %.2g" %
          (used, len(keep_f[0]), ffn.shape[1], len(keep_g[0]), nkv, len(keep_h), H, d))


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(*sys.argv[2:10])
    elif sys.argv[1] == "width":
        width(*sys.argv[2:9])
    else:
        sys.exit("unknown command")
