#!/usr/bin/env python3
"""Independent OPCM (methods-research.md A9, fusion_bench's opcm with full SVDs) in float64 NumPy on
single-file model folders; compares with graft's output within the error its float32 SVDs can cause
on this input (estimated by perturbation, as merge_ref.py's bounds).
Usage: opcm_ref.py GRAFT_OUT ALPHA BASE MODEL..."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from analyze_ref import load  # noqa: E402  (the same single-file safetensors reader)
from merge_ref import SAFETY, TRIALS, U32, perturb_svd_input  # noqa: E402  (the same error bounds)

EMB = ("embed_tokens", "wte.", "wpe.", "embed_in", "word_embeddings", "tok_embeddings", "embeddings.")


def merge(base, models, alpha, rng=None):
    """The merged task vector M (float64). With rng: every SVD's input perturbed by a random matrix of
    norm max(m, n)·u·‖A‖₂ and every float32 value graft stores rounded (relative u): one trial of the
    statistical condition estimate that bounds graft's float32 result."""
    def f32(x):
        return x * (1 + U32 * rng.standard_normal(x.shape)) if rng is not None else x

    def svd(a):
        return np.linalg.svd(perturb_svd_input(a, rng) if rng is not None else a, full_matrices=True)

    M = {k: f32(models[0][k] - base[k]) for k in base}
    norms = [np.sqrt(sum((t ** 2).sum() for t in M.values()))]
    lam = 1.0
    for m in models[1:]:
        tau = {k: f32(m[k] - base[k]) for k in base}
        norms.append(np.sqrt(sum((t ** 2).sum() for t in tau.values())))
        nu = np.mean(norms)
        new = {}
        for k in base:
            if M[k].ndim == 2 and not any(e in k for e in EMB):
                U, S, Vh = svd(M[k])
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
        M = {k: f32(v / lam) for k, v in new.items()}
    return M


def main(a):
    got, alpha, base, models = load(a[0]), float(a[1]), load(a[2]), [load(m) for m in a[3:]]
    M = merge(base, models, alpha)
    spread = {k: 0.0 for k in base}
    for trial in range(TRIALS):
        Mp = merge(base, models, alpha, np.random.default_rng(trial))
        for k in base:
            spread[k] = max(spread[k], np.abs(Mp[k] - M[k]).max())
    # graft's difference: within SAFETY × the spread, plus the last rounding of θ0 + M (2 ulps in f32)
    worst, where, ok = 0.0, "", True
    for k in base:
        ref = base[k] + M[k]
        mag = np.abs(M[k]).max()
        b = SAFETY * spread[k]
        if mag and not b <= 0.01 * mag:
            print("%s: error bound %.3g is not small against %.3g (ill-conditioned test data)" % (k, b, mag))
            ok = False
        allow = b + 2 * np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
        e = (np.abs(got[k] - ref) / allow).max()
        if e > worst:
            worst, where = e, "%s (bound %.3g = %.2g of max %.3g)" % (k, b, b / mag if mag else 0, mag)
    print("worst %.3g of the allowed difference over %d tensors: %s" % (worst, len(base), where))
    return 0 if ok and worst <= 1 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
