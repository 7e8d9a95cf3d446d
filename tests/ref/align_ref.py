#!/usr/bin/python3
"""Independent NumPy checks for graft align (tests/ops-e2e.sh).

  align_ref.py permute MODEL OUT SEED       MODEL with every layer's MLP neurons and attention heads shuffled
                                            (k/v groups as units, query heads within them) and the residual
                                            stream's channels: the same function
  align_ref.py check A B OUT REPORT.json    OUT is B reordered: every tensor is B's, the permuted ones gathered by
                                            one permutation per layer (gate/up rows and down columns; q rows and
                                            o_proj column blocks per head, k/v row blocks per group, heads moving
                                            with their group), and one residual permutation (embedding and lm_head
                                            columns, norm gains, q/k/v/gate/up columns, o/down rows); each layer
                                            assignment's score equals the optimum this file finds with its own
                                            Hungarian solver given the residual permutation, and that permutation is
                                            the optimum given the layers'; the reported cosines are recomputed
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_ref import load, save  # noqa: E402


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


def cfg(path):
    c = json.load(open(os.path.join(path, "config.json")))
    nh = c["num_attention_heads"]
    return c["num_hidden_layers"], nh, c.get("num_key_value_heads", nh)


def hungarian_max(S):
    """max Σ S[i, p[i]] over permutations p: Kuhn–Munkres with potentials, vectorised over columns."""
    n = S.shape[0]
    C = -np.asarray(S, dtype=np.float64)
    u, v = np.zeros(n + 1), np.zeros(n + 1)
    p, way = np.zeros(n + 1, dtype=int), np.zeros(n + 1, dtype=int)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = np.full(n + 1, np.inf), np.zeros(n + 1, bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = C[i0 - 1] - u[i0] - v[1:]
            upd = free & (cur < minv[1:])
            minv[1:][upd] = cur[upd]
            way[1:][upd] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    out = np.zeros(n, dtype=int)
    out[p[1:] - 1] = np.arange(n)
    return out


def parts(W, l):
    p = "model.layers.%d." % l
    return {k: W[p + k] for k in ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", "self_attn.q_proj.weight",
                                  "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight")}


def permute_layer(P, mlp, head, group, hd):
    """P's tensors reordered: output neuron i = P's mlp[i], head h = P's head[h], group g = P's group[g]."""
    rows = lambda x, perm, b: x.reshape(len(perm), b, -1)[perm].reshape(x.shape)
    out = dict(P)
    for k in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
        out[k] = P[k][mlp]
    out["mlp.down_proj.weight"] = P["mlp.down_proj.weight"][:, mlp]
    out["self_attn.q_proj.weight"] = rows(P["self_attn.q_proj.weight"], head, hd)
    for k in ("self_attn.k_proj.weight", "self_attn.v_proj.weight"):
        out[k] = rows(P[k], group, hd)
    o = P["self_attn.o_proj.weight"]
    out["self_attn.o_proj.weight"] = o.reshape(o.shape[0], len(head), hd)[:, head].reshape(o.shape)
    return out


RES_VEC = ("input_layernorm.weight", "post_attention_layernorm.weight", "pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight",
           "self_attn.o_proj.bias", "mlp.down_proj.bias")
RES_IN = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight")
RES_OUT = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def permute_residual(W, L, res):
    """W with the residual stream's channels reordered: channel i = the old channel res[i]."""
    W = dict(W)
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        if k in W:
            W[k] = W[k][:, res]
    W["model.norm.weight"] = W["model.norm.weight"][res]
    for l in range(L):
        p = "model.layers.%d." % l
        for k in RES_VEC:
            if p + k in W:
                W[p + k] = W[p + k][res]
        for k in RES_IN:
            W[p + k] = W[p + k][:, res]
        for k in RES_OUT:
            W[p + k] = W[p + k][res]
    return W


def permute(model, out, seed):
    W = load(model)
    L, nh, nkv = cfg(model)
    rng = np.random.default_rng(seed)
    g = nh // nkv
    W = permute_residual(W, L, rng.permutation(W["model.norm.weight"].shape[0]))
    for l in range(L):
        P = parts(W, l)
        hd = P["self_attn.q_proj.weight"].shape[0] // nh
        group = rng.permutation(nkv)
        head = np.concatenate([group[a] * g + rng.permutation(g) for a in range(nkv)])
        Q = permute_layer(P, rng.permutation(P["mlp.gate_proj.weight"].shape[0]), head, group, hd)
        for k, v in Q.items():
            W["model.layers.%d.%s" % (l, k)] = v
    os.makedirs(out, exist_ok=True)
    save(os.path.join(out, "model.safetensors"), W)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(model, f)):
            open(os.path.join(out, f), "wb").write(open(os.path.join(model, f), "rb").read())
    print("ok permuted")


def recover(got, src, block):
    """perm with got-block i == src-block perm[i] (rows of `block` rows), or None."""
    n = got.shape[0] // block
    g, s = got.reshape(n, -1), src.reshape(n, -1)
    keys = {s[j].tobytes(): j for j in range(n)}
    perm = [keys.get(g[i].tobytes()) for i in range(n)]
    return None if None in perm or len(set(perm)) != n else np.array(perm)


def check(a, b, out, report):
    A, B, O = load(a), load(b), load(out)
    L, nh, nkv = cfg(a)
    g = nh // nkv
    R = json.load(open(report))
    rep = R["layers"]
    res = recover(O["model.embed_tokens.weight"].T.copy(), B["model.embed_tokens.weight"].T.copy(), 1)
    if res is None:
        fail("the output's embedding columns are not B's, reordered")
    Bu = B  # B as it came, for the untouched tensors
    B = permute_residual(B, L, res)  # B's residual axis as the output has it: the layers are checked against this
    moved = set()
    perms = []
    for l in range(L):
        PA, PB, PO = parts(A, l), parts(B, l), parts(O, l)
        moved |= {"model.layers.%d.%s" % (l, k) for k in PA}
        hd = PA["self_attn.q_proj.weight"].shape[0] // nh
        mlp = recover(PO["mlp.gate_proj.weight"], PB["mlp.gate_proj.weight"], 1)
        head = recover(PO["self_attn.q_proj.weight"], PB["self_attn.q_proj.weight"], hd)
        group = recover(PO["self_attn.k_proj.weight"], PB["self_attn.k_proj.weight"], hd)
        if mlp is None or head is None or group is None:
            fail("layer %d: the output's rows are not B's, reordered" % l)
        want = permute_layer(PB, mlp, head, group, hd)
        for k in PO:
            if not np.array_equal(PO[k], want[k]):
                fail("layer %d: %s is not B's reordered by the permutation of the other tensors" % (l, k))
        if any(head[a_ * g + i] // g != group[a_] for a_ in range(nkv) for i in range(g)):
            fail("layer %d: a query head left its key/value group" % l)
        f64 = {k: v.astype(np.float64) for k, v in PA.items()}, {k: v.astype(np.float64) for k, v in PB.items()}
        fa, fb = f64
        S = fa["mlp.gate_proj.weight"] @ fb["mlp.gate_proj.weight"].T + fa["mlp.up_proj.weight"] @ fb["mlp.up_proj.weight"].T + \
            fa["mlp.down_proj.weight"].T @ fb["mlp.down_proj.weight"]
        best = hungarian_max(S)
        got_s, best_s = S[np.arange(len(mlp)), mlp].sum(), S[np.arange(len(best)), best].sum()
        if got_s < best_s - 1e-5 * np.abs(S).sum() / len(S):
            fail("layer %d: MLP assignment scores %.9g, the optimum is %.9g" % (l, got_s, best_s))
        # heads: q rows + o columns per head pair; k + v per group pair; groups by group score
        q = fa["self_attn.q_proj.weight"].reshape(nh, -1) @ fb["self_attn.q_proj.weight"].reshape(nh, -1).T
        oa = fa["self_attn.o_proj.weight"].reshape(-1, nh, hd).transpose(1, 0, 2).reshape(nh, -1)
        ob = fb["self_attn.o_proj.weight"].reshape(-1, nh, hd).transpose(1, 0, 2).reshape(nh, -1)
        Q = q + oa @ ob.T
        K = fa["self_attn.k_proj.weight"].reshape(nkv, -1) @ fb["self_attn.k_proj.weight"].reshape(nkv, -1).T + \
            fa["self_attn.v_proj.weight"].reshape(nkv, -1) @ fb["self_attn.v_proj.weight"].reshape(nkv, -1).T
        G = np.array([[K[x, y] + Q[x * g:(x + 1) * g, y * g:(y + 1) * g][np.arange(g), hungarian_max(Q[x * g:(x + 1) * g, y * g:(y + 1) * g])].sum()
                       for y in range(nkv)] for x in range(nkv)])
        bg = hungarian_max(G)
        got_h = K[np.arange(nkv), group].sum() + Q[np.arange(nh), head].sum()
        best_h = G[np.arange(nkv), bg].sum()
        if abs(got_h - best_h) > 1e-5 * (np.abs(G).sum() / nkv + 1e-30):
            fail("layer %d: head assignment scores %.9g, the optimum is %.9g" % (l, got_h, best_h))
        na = sum((v ** 2).sum() for k, v in fa.items() if k.startswith("mlp."))
        nb = sum((v ** 2).sum() for k, v in fb.items() if k.startswith("mlp."))
        cos = got_s / np.sqrt(na * nb)
        if abs(rep[l]["mlp_after"] - cos) > 1e-5 or rep[l]["mlp_moved"] != int((mlp != np.arange(len(mlp))).sum()):
            fail("layer %d: reported MLP cosine %s / moved %s, recomputed %.6g / %d" % (l, rep[l]["mlp_after"], rep[l]["mlp_moved"], cos,
                                                                                         (mlp != np.arange(len(mlp))).sum()))
        perms.append((mlp, head, group, hd))
    # the residual permutation maximises Σ C[i][res(i)] given the layers' permutations (unless the
    # descent stopped at its round limit)
    n = len(res)
    C = np.zeros((n, n))
    Bl = permute_residual(Bu, L, np.arange(n))  # B's own residual order; layers' permutations applied below
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        if k in A:
            C += A[k].astype(np.float64).T @ Bl[k].astype(np.float64)
    C += np.outer(A["model.norm.weight"], Bl["model.norm.weight"])
    for l, (mlp, head, group, hd) in enumerate(perms):
        P = permute_layer(parts(Bl, l), mlp, head, group, hd)
        p = "model.layers.%d." % l
        for k in RES_VEC:
            if p + k in A:
                C += np.outer(A[p + k], Bl[p + k])
        for k in RES_IN:
            C += A[p + k].astype(np.float64).T @ P[k].astype(np.float64)
        for k in RES_OUT:
            C += A[p + k].astype(np.float64) @ P[k].astype(np.float64).T
    best = hungarian_max(C)
    got_r, best_r = C[np.arange(n), res].sum(), C[np.arange(n), best].sum()
    if R.get("residual", True) and R.get("iterations", 1) < 20 and got_r < best_r - 1e-5 * np.abs(C).sum() / n:
        fail("residual assignment scores %.9g, the optimum given the layers is %.9g" % (got_r, best_r))
    for k in B:
        if k not in moved and not np.array_equal(B[k], O[k]):
            fail("%s changed" % k)
    if set(O) != set(B):
        fail("the output's tensors are not B's")
    print("ok align (%d layers, residual moved %d)" % (L, (res != np.arange(n)).sum()))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "permute":
        permute(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "check":
        check(*sys.argv[2:6])
    else:
        fail("unknown command")
