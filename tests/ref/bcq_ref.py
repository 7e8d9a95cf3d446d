#!/usr/bin/python3
"""Independent NumPy checks of graft quantize --scheme bcq (tests/ops-e2e.sh).

  bcq_ref.py check IN QUANT DEQUANT BITS GROUP SHIFT REPORT
      For every quantized tensor, decoded here from the documented layout (NAME U8 [rows, bits, cols/8] bit
      planes, NAME_alpha F32 [rows, groups, bits]):
      - α of each group sorted descending, ≥ 0; with SHIFT = 1 powers of two;
      - every code is the nearest of the 2^bits levels Σ ±α_k (the alternation's last step; with no
        rounds and no shift the greedy codes stand);
      - without shift, the error is at most the greedy initialisation's and within 1 % of this file's own
        run of the same alternating algorithm (greedy, then least squares / nearest levels, 15 rounds);
      - the reported error (printed to 4 digits) is ‖w − ŵ‖/‖w‖ of the decoded ŵ, and the reported round-to-nearest error is that
        of min-max asymmetric RTN at BITS recomputed here;
      - DEQUANT (f32) equals ŵ = Σ_k ±α_k summed in float32, k ascending, bit for bit;
      - untouched tensors hold the same values.
Written from ShiftAddLLM's description of BCQ (greedy init, alternating least squares for α and binary
search for the codes) and graft's documented storage (docs/quantize-prune.md). Python 3 + NumPy.
"""
import json
import os
import re
import struct
import sys

import numpy as np

F32 = np.float32


def load(path):
    """{name: array} of every .safetensors file of a folder (F32, BF16, F16, U8, I8)."""
    out = {}
    for f in sorted(os.listdir(path)):
        if not f.endswith(".safetensors"):
            continue
        b = open(os.path.join(path, f), "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        d = b[8 + n:]
        for k, v in h.items():
            if k == "__metadata__":
                continue
            s, e = v["data_offsets"]
            raw = d[s:e]
            t = v["dtype"]
            if t == "F32":
                a = np.frombuffer(raw, dtype=np.float32)
            elif t == "BF16":
                a = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif t == "F16":
                a = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
            elif t in ("U8", "I8"):
                a = np.frombuffer(raw, dtype=np.uint8 if t == "U8" else np.int8)
            else:
                raise SystemExit("unsupported dtype " + t)
            out[k] = (a.reshape(v["shape"]), raw, t)
    return out


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


def value(alpha, signs):
    """Σ_k ±α_k in float32, k ascending (signs: [..., b] of ±1)."""
    v = np.zeros(signs.shape[:-1], dtype=F32)
    for k in range(signs.shape[-1]):
        v = (v + (signs[..., k] * alpha[..., k]).astype(F32)).astype(F32)
    return v


def patterns(b):
    return np.array([[1.0 if (s >> k) & 1 else -1.0 for k in range(b)] for s in range(1 << b)], dtype=F32)


def nearest(w, alpha, b):
    """The codes (as ±1 [n, b]) of the nearest level for each element; levels in float32."""
    P = patterns(b)
    lev = value(np.broadcast_to(alpha, (len(P), b)), P)
    order = np.argsort(lev, kind="stable")
    ls = lev[order]
    mids = ((ls[:-1] + ls[1:]) / F32(2)).astype(F32)
    idx = np.searchsorted(mids, w, side="right")  # w == mid goes up
    return P[order[idx]]


def bcq(w, b, rounds=15):
    """The alternating algorithm on one group (float32 values, double least squares)."""
    r = w.astype(F32).copy()
    alpha = np.zeros(b, dtype=F32)
    S = np.zeros((len(w), b), dtype=F32)
    for k in range(b):
        alpha[k] = F32(np.abs(r.astype(np.float64)).mean())
        S[:, k] = np.where(r >= 0, 1, -1)
        r = (r - S[:, k] * alpha[k]).astype(F32)
    greedy = S.copy(), alpha.copy()
    for _ in range(rounds if b > 1 else 0):
        prev = S.copy()
        M = S.astype(np.float64).T @ S.astype(np.float64)
        if abs(np.linalg.det(M)) > 1e-6 * len(w) ** b:
            alpha = np.abs(np.linalg.solve(M, S.astype(np.float64).T @ w.astype(np.float64))).astype(F32)
        alpha = -np.sort(-alpha)
        S = nearest(w, alpha, b)
        if np.array_equal(prev, S):
            break
    return S, alpha, greedy


def rtn_err2(w, b):
    mn, mx = w.min(), w.max()
    L = F32((1 << b) - 1)
    s = F32((mx - mn) / L)
    if not s > 0:
        return 0.0
    z = np.rint(F32(-mn / s))
    q = np.clip(np.rint((w / s).astype(F32)) + z, 0, L)
    return float(((w.astype(np.float64) - ((q - z) * s).astype(F32).astype(np.float64)) ** 2).sum())


def check(src, quant, deq, bits, group, shift, report):
    I, Q, D = load(src), load(quant), load(deq)
    rounds = json.load(open(os.path.join(quant, "config.json")))["quantization_config"].get("rounds", 15)
    rep = {}
    for line in open(report):
        m = re.match(r"(\S+)\s+rel\. error (\S+)\s+\(round-to-nearest at \d bits: (\S+)\)", line)
        if m:
            rep[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    nq = 0
    for name, (w, raw, t) in I.items():
        if name + "_alpha" not in Q:
            if name not in Q or not np.array_equal(Q[name][0], w):  # (IN may be a float32 copy of a bf16 model)
                fail("%s: not quantized, but changed" % name)
            continue
        nq += 1
        codes, alpha = Q[name][0], Q[name + "_alpha"][0]
        rows, cols = w.shape
        if codes.shape != (rows, bits, cols // 8) or alpha.shape != (rows, (cols + group - 1) // group, bits):
            fail("%s: stored shapes %s %s" % (name, codes.shape, alpha.shape))
        bitsarr = np.unpackbits(codes, axis=2, bitorder="little")[:, :, :cols]  # [rows, bits, cols]
        signs = np.where(bitsarr.transpose(0, 2, 1) == 1, 1.0, -1.0).astype(F32)  # [rows, cols, bits]
        A = np.repeat(alpha, group, axis=1)[:, :cols, :]
        what = value(A, signs)
        if not np.array_equal(D[name][0].view(np.uint32), what.view(np.uint32)):
            fail("%s: dequantized values differ from Σ ±α (decoded here)" % name)
        if np.any(alpha < 0) or np.any(alpha[:, :, :-1] < alpha[:, :, 1:]):
            fail("%s: α not sorted descending / not ≥ 0" % name)
        if shift:
            nz = alpha[alpha > 0]
            if not np.array_equal(nz, np.exp2(np.round(np.log2(nz))).astype(F32)):
                fail("%s: --shift α are not powers of two" % name)
        e2 = g2 = o2 = t2 = 0.0
        w = w.astype(F32)
        for r in range(rows):
            for g in range(alpha.shape[1]):
                c0, c1 = g * group, min(cols, (g + 1) * group)
                wg = w[r, c0:c1]
                best = nearest(wg, alpha[r, g], bits)
                got = value(np.broadcast_to(alpha[r, g], best.shape), signs[r, c0:c1])
                want = value(np.broadcast_to(alpha[r, g], best.shape), best)
                if (rounds or shift) and np.any(np.abs(wg - got) > np.abs(wg - want) + 1e-7 * max(float(alpha[r, g, 0]), 1e-30)):
                    fail("%s row %d group %d: a code is not the nearest level" % (name, r, g))
                e2 += float(((wg.astype(np.float64) - got.astype(np.float64)) ** 2).sum())
                t2 += rtn_err2(wg, bits)
                if not shift:
                    S, al, (S0, a0) = bcq(wg, bits, rounds)
                    o2 += float(((wg.astype(np.float64) - value(np.broadcast_to(al, S.shape), S).astype(np.float64)) ** 2).sum())
                    g2 += float(((wg.astype(np.float64) - value(np.broadcast_to(a0, S0.shape), S0).astype(np.float64)) ** 2).sum())
        n2 = float((w.astype(np.float64) ** 2).sum())
        rel, rtn = np.sqrt(e2 / n2), np.sqrt(t2 / n2)
        if name not in rep or abs(rep[name][0] - rel) > 6e-4 * rel + 1e-7 or abs(rep[name][1] - rtn) > 6e-4 * rtn + 1e-7:
            fail("%s: reported %s, recomputed %.6g / rtn %.6g" % (name, rep.get(name), rel, rtn))
        if not shift:
            if e2 > g2 * (1 + 1e-6):
                fail("%s: error %.6g above the greedy initialisation's %.6g" % (name, e2, g2))
            if e2 > o2 * 1.01 + 1e-12:
                fail("%s: error %.6g, this reference's alternation reaches %.6g" % (name, e2, o2))
    if nq == 0:
        fail("nothing quantized")
    print("ok bcq%d (%d tensors)" % (bits, nq))


if __name__ == "__main__":
    if sys.argv[1] == "check":
        a = sys.argv[2:]
        check(a[0], a[1], a[2], int(a[3]), int(a[4]), a[5] == "1", a[6])
    else:
        fail("unknown command")
