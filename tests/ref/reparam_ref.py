#!/usr/bin/python3
"""Independent NumPy check of graft reparam (tests/ops-e2e.sh), with its own tiny convolution.

  reparam_ref.py make OUT.safetensors        a checkpoint with conv+BN pairs (named conv/bn, conv1/bn1, a numbered
                                             Sequential), a linear layer, RepVGG blocks (groups 1 and 2) and
                                             weight-normalised tensors (NAME_g/NAME_v and parametrizations)
  reparam_ref.py check MODE IN OUT           MODE bn | repvgg | mobileone | weight-norm: outputs of the folded layers on a
                                             random input equal the original layers' (eval-mode BN, zero padding)
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_ref import load as load_f32, save  # noqa: E402

EPS = 1e-5


def load(path):
    """Every tensor as float64 (int64 kept)."""
    return {k: v if v.dtype == np.int64 else v.astype(np.float64) for k, v in load_f32(path).items()}


def bn(rng, c, name, t):
    t[name + ".weight"] = rng.uniform(0.5, 1.5, c)
    t[name + ".bias"] = rng.normal(0, 0.1, c)
    t[name + ".running_mean"] = rng.normal(0, 0.2, c)
    t[name + ".running_var"] = rng.uniform(0.5, 2.0, c)
    t[name + ".num_batches_tracked"] = np.array(100, dtype=np.int64)


def make(out):
    rng = np.random.default_rng(1)
    t = {}
    t["stem.conv.weight"] = rng.normal(0, 0.3, (8, 3, 3, 3)); bn(rng, 8, "stem.bn", t)
    t["layer.conv1.weight"] = rng.normal(0, 0.3, (8, 8, 3, 3)); t["layer.conv1.bias"] = rng.normal(0, 0.1, 8); bn(rng, 8, "layer.bn1", t)
    t["features.0.weight"] = rng.normal(0, 0.3, (4, 8, 1, 1)); t["features.0.bias"] = rng.normal(0, 0.1, 4); bn(rng, 4, "features.1", t)
    t["fc.weight"] = rng.normal(0, 0.3, (10, 4)); t["fc.bias"] = rng.normal(0, 0.1, 10)
    # BNs no rule pairs: pre-activation (timm ResNetV2 / DenseNet: norm1 *before* conv1), and a numbered
    # Sequential conv, PReLU, BN (the PReLU before the BN is not a conv)
    bn(rng, 8, "pre.norm1", t); t["pre.conv1.weight"] = rng.normal(0, 0.3, (8, 8, 3, 3))
    t["seq.0.weight"] = rng.normal(0, 0.3, (4, 8, 1, 1)); t["seq.1.weight"] = rng.uniform(0.1, 0.3, 4); bn(rng, 4, "seq.2", t)
    for name, g in (("block", 1), ("gblock", 2)):
        t[name + ".rbr_dense.conv.weight"] = rng.normal(0, 0.3, (8, 8 // g, 3, 3)); bn(rng, 8, name + ".rbr_dense.bn", t)
        t[name + ".rbr_1x1.conv.weight"] = rng.normal(0, 0.3, (8, 8 // g, 1, 1)); bn(rng, 8, name + ".rbr_1x1.bn", t)
        bn(rng, 8, name + ".rbr_identity", t)
    t["gblock.rbr_dense.conv.bias"] = rng.normal(0, 0.1, 8); t["gblock.rbr_1x1.conv.bias"] = rng.normal(0, 0.1, 8)  # bias=True convs
    # MobileOne blocks: three 3×3 branches, a 1×1 scale branch and an identity BN (groups 1 and
    # depthwise); a 1×1 block with two branches and no scale; FastViT's 7×7 large kernel + 3×3 small one
    for name, g in (("mo", 1), ("modw", 8)):
        for n in range(3):
            t[name + ".rbr_conv.%d.conv.weight" % n] = rng.normal(0, 0.3, (8, 8 // g, 3, 3)); bn(rng, 8, name + ".rbr_conv.%d.bn" % n, t)
        t[name + ".rbr_scale.conv.weight"] = rng.normal(0, 0.3, (8, 8 // g, 1, 1)); bn(rng, 8, name + ".rbr_scale.bn", t)
        bn(rng, 8, name + ".rbr_skip", t)
    for n in range(2):
        t["mopw.rbr_conv.%d.conv.weight" % n] = rng.normal(0, 0.3, (6, 8, 1, 1)); bn(rng, 6, "mopw.rbr_conv.%d.bn" % n, t)
    t["lk.lkb_origin.conv.weight"] = rng.normal(0, 0.3, (8, 1, 7, 7)); bn(rng, 8, "lk.lkb_origin.bn", t)
    t["lk.small_conv.conv.weight"] = rng.normal(0, 0.3, (8, 1, 3, 3)); bn(rng, 8, "lk.small_conv.bn", t)
    t["wn.weight_g"] = rng.uniform(0.5, 2, (6, 1, 1)); t["wn.weight_v"] = rng.normal(0, 1, (6, 4, 3))
    t["wn2.weight_g"] = rng.uniform(0.5, 2, (1, 5, 1)); t["wn2.weight_v"] = rng.normal(0, 1, (3, 5, 2))   # dim = 1
    t["pw.parametrizations.weight.original0"] = np.array(1.7); t["pw.parametrizations.weight.original1"] = rng.normal(0, 1, (5, 3))  # dim=None
    save(out, t)
    print("ok made")


def conv(x, w, b=None, groups=1):
    """x [Cin, H, W], w [Cout, Cin/g, k, k], zero padding k//2, stride 1."""
    cout, cg, k, _ = w.shape
    groups = x.shape[0] // cg
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    H, W = x.shape[1:]
    y = np.zeros((cout, H, W))
    per = cout // groups
    for o in range(cout):
        g = o // per
        for i in range(cg):
            for u in range(k):
                for v in range(k):
                    y[o] += w[o, i, u, v] * xp[g * cg + i, u:u + H, v:v + W]
        if b is not None:
            y[o] += b[o]
    return y


def bn_apply(y, t, name):
    s = t[name + ".weight"] / np.sqrt(t[name + ".running_var"] + EPS)
    return (y - t[name + ".running_mean"][:, None, None]) * s[:, None, None] + t[name + ".bias"][:, None, None]


def check(mode, inp, out):
    I, O = load(inp), load(out)
    rng = np.random.default_rng(2)
    worst = 0.0

    def cmp(a, b):
        nonlocal worst
        worst = max(worst, np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))

    if mode == "bn":
        for conv_n, bn_n, cin in (("stem.conv", "stem.bn", 3), ("layer.conv1", "layer.bn1", 8), ("features.0", "features.1", 8)):
            x = rng.normal(0, 1, (cin, 5, 5))
            ref = bn_apply(conv(x, I[conv_n + ".weight"], I.get(conv_n + ".bias")), I, bn_n)
            cmp(ref, conv(x, O[conv_n + ".weight"], O[conv_n + ".bias"]))
            if any(k.startswith(bn_n + ".") for k in O):
                sys.exit("FAIL: BN tensors of %s are still there" % bn_n)
        for k in ("fc.weight", "pre.conv1.weight", "pre.norm1.running_mean", "seq.0.weight", "seq.1.weight", "seq.2.running_var"):
            if k not in O or not np.array_equal(O[k], I[k]):
                sys.exit("FAIL: %s changed or gone (no fold pairs it)" % k)
        if "seq.1.bias" in O:
            sys.exit("FAIL: the PReLU gained a bias")
    elif mode == "repvgg":
        for name, g in (("block", 1), ("gblock", 2)):
            x = rng.normal(0, 1, (8, 6, 6))
            ref = bn_apply(conv(x, I[name + ".rbr_dense.conv.weight"], I.get(name + ".rbr_dense.conv.bias"), groups=g), I, name + ".rbr_dense.bn")
            ref += bn_apply(conv(x, I[name + ".rbr_1x1.conv.weight"], I.get(name + ".rbr_1x1.conv.bias"), groups=g), I, name + ".rbr_1x1.bn")
            ref += bn_apply(x, I, name + ".rbr_identity")
            cmp(ref, conv(x, O[name + ".rbr_reparam.weight"], O[name + ".rbr_reparam.bias"], groups=g))
            if any(k.startswith(name + ".rbr_dense") or k.startswith(name + ".rbr_1x1") or k.startswith(name + ".rbr_identity") for k in O):
                sys.exit("FAIL: branch tensors of %s are still there" % name)
    elif mode == "mobileone":
        def branch(x, name):
            return bn_apply(conv(x, I[name + ".conv.weight"]), I, name + ".bn")
        for name, cin in (("mo", 8), ("modw", 8), ("mopw", 8)):
            x = rng.normal(0, 1, (cin, 6, 6))
            ref = sum(branch(x, name + ".rbr_conv.%d" % n) for n in range(3) if name + ".rbr_conv.%d.conv.weight" % n in I)
            if name + ".rbr_scale.conv.weight" in I:
                ref = ref + branch(x, name + ".rbr_scale")
            if name + ".rbr_skip.running_mean" in I:
                ref = ref + bn_apply(x, I, name + ".rbr_skip")
            cmp(ref, conv(x, O[name + ".reparam_conv.weight"], O[name + ".reparam_conv.bias"]))
            if any(k.startswith(name + ".rbr_") for k in O):
                sys.exit("FAIL: branch tensors of %s are still there" % name)
        x = rng.normal(0, 1, (8, 9, 9))
        cmp(branch(x, "lk.lkb_origin") + branch(x, "lk.small_conv"), conv(x, O["lk.lkb_reparam.weight"], O["lk.lkb_reparam.bias"]))
        if any(k.startswith("lk.lkb_origin") or k.startswith("lk.small_conv") for k in O):
            sys.exit("FAIL: large-kernel branch tensors are still there")
    else:
        v, g = I["wn.weight_v"], I["wn.weight_g"]
        cmp(g * v / np.sqrt((v ** 2).sum(axis=(1, 2), keepdims=True)), O["wn.weight"])
        v, g = I["wn2.weight_v"], I["wn2.weight_g"]
        cmp(g * v / np.sqrt((v ** 2).sum(axis=(0, 2), keepdims=True)), O["wn2.weight"])
        v, g = I["pw.parametrizations.weight.original1"], I["pw.parametrizations.weight.original0"]
        cmp(g * v / np.sqrt((v ** 2).sum()), O["pw.weight"])
        if any(k.endswith("_g") or k.endswith("_v") or "parametrizations" in k for k in O):
            sys.exit("FAIL: weight_norm tensors are still there")
    if worst > 2e-6:
        sys.exit("FAIL %s: folded layers differ by %.3g (relative)" % (mode, worst))
    print("ok %s (%.3g)" % (mode, worst))


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "make":
        make(a[1])
    else:
        check(a[1], a[2], a[3])
