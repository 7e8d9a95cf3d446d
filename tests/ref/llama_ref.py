#!/usr/bin/python3
"""An independent NumPy forward pass of a Llama-family decoder (tests/ops-e2e.sh; float64).

  llama_ref.py same MODEL_A MODEL_B TOL    logits of A and B on a fixed token sequence agree within TOL
                                           (relative to the largest |logit|)
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_ref import load  # noqa: E402


def rmsnorm(x, g, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * g


def rope(x, pos, theta):
    hd = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(pos, inv)
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
    return x * cos[:, None, :] + rot * sin[:, None, :]


def logits(path, tokens):
    W = {k: v.astype(np.float64) for k, v in load(path).items()}
    c = json.load(open(os.path.join(path, "config.json")))
    H, nh, nkv, L = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
    hd = c.get("head_dim") or H // nh
    eps, theta = c.get("rms_norm_eps", 1e-6), c.get("rope_theta", 10000.0)
    T = len(tokens)
    pos = np.arange(T)
    x = W["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(L):
        p = "model.layers.%d." % l
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T + W.get(p + "self_attn.q_proj.bias", 0)).reshape(T, nh, hd)
        k = (h @ W[p + "self_attn.k_proj.weight"].T + W.get(p + "self_attn.k_proj.bias", 0)).reshape(T, nkv, hd)
        v = (h @ W[p + "self_attn.v_proj.weight"].T + W.get(p + "self_attn.v_proj.bias", 0)).reshape(T, nkv, hd)
        q, k = rope(q, pos, theta), rope(k, pos, theta)
        k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
        s = np.einsum("thd,uhd->htu", q, k) / np.sqrt(hd) + mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum("htu,uhd->thd", a, v).reshape(T, nh * hd)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return x @ head.T


if __name__ == "__main__":
    a = sys.argv[1:]
    toks = np.array([1, 5, 9, 3, 17, 42, 7, 2, 11, 30])
    la, lb = logits(a[1], toks), logits(a[2], toks)
    d = np.abs(la - lb).max() / np.abs(la).max()
    if d > float(a[3]):
        sys.exit("FAIL: logits differ by %.3g (relative to the largest)" % d)
    print("ok same logits (%.3g)" % d)
