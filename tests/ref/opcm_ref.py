#!/usr/bin/env python3
"""Independent OPCM (methods-research.md A9, fusion_bench's opcm with full SVDs) in float64 NumPy on
single-file model folders; compares with graft's output.
Usage: opcm_ref.py GRAFT_OUT ALPHA BASE MODEL..."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from analyze_ref import load  # noqa: E402  (the same single-file safetensors reader)

EMB = ("embed_tokens", "wte.", "wpe.", "embed_in", "word_embeddings", "tok_embeddings", "embeddings.")


def main(a):
    got, alpha, base, models = load(a[0]), float(a[1]), load(a[2]), [load(m) for m in a[3:]]
    M = {k: models[0][k] - base[k] for k in base}
    norms = [np.sqrt(sum((t ** 2).sum() for t in M.values()))]
    lam = 1.0
    for m in models[1:]:
        tau = {k: m[k] - base[k] for k in base}
        norms.append(np.sqrt(sum((t ** 2).sum() for t in tau.values())))
        nu = np.mean(norms)
        new = {}
        for k in base:
            if M[k].ndim == 2 and not any(e in k for e in EMB):
                U, S, Vh = np.linalg.svd(M[k], full_matrices=True)
                c = np.cumsum(S) / S.sum()
                r = int(np.argmax(c > alpha)) if (c > alpha).any() else len(S)
                P = U.T @ tau[k] @ Vh.T
                d = np.arange(min(P.shape))
                P[d, d] = 0
                P[:r, :r] = 0
                new[k] = lam * M[k] + U @ P @ Vh
            else:
                new[k] = lam * M[k] + tau[k]
        lam = np.sqrt(sum((t ** 2).sum() for t in new.values())) / nu
        M = {k: v / lam for k, v in new.items()}
    worst = 0.0
    for k in base:
        ref = base[k] + M[k]
        err = np.abs(got[k] - ref).max() / max(1.0, np.abs(ref).max())
        worst = max(worst, err)
    print("worst relative difference %.3g over %d tensors" % (worst, len(base)))
    return 0 if worst < 2e-5 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
