#!/usr/bin/python3
"""An independent NumPy forward pass of a Llama-family decoder (tests/ops-e2e.sh; float64): Llama,
Mistral, Qwen2, Qwen3 (RMSNorm of each q and k head before RoPE), Phi-3 (fused qkv_proj and
gate_up_proj, LongRoPE), Mixtral and MiniCPM (μP scalars: embeddings × scale_emb, residual branches ×
scale_depth/√L, the final state ÷ hidden/dim_model_base), as transformers' modeling files compute them.

  llama_ref.py same MODEL_A MODEL_B TOL    logits of A and B on a fixed token sequence agree within TOL
                                           (relative to the largest |logit|)
  llama_ref.py ppl MODEL IDS CTX BOS STRIDE LOGITS RESULT TOL
                                           windows of the token ids in file IDS as graft eval cuts them
                                           (BOS id or -1; STRIDE 0 = non-overlapping): the logits graft
                                           dumped (LOGITS, f32) agree within TOL relative to the largest
                                           |logit| of each window, and graft's mean NLL (RESULT, its
                                           --json output) within 0.1 %
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_ref import load  # noqa: E402


def rmsnorm(x, g, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * g


def inv_freq(c, hd, T=0):
    """The rotary frequencies, and the factor on cos and sin (LongRoPE's attention factor, else 1)."""
    inv = 1.0 / c.get("rope_theta", 10000.0) ** (np.arange(0, hd, 2) / hd)
    rs = c.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind in ("longrope", "su"):  # Phi-3: long_factor once the sequence outgrows the original context
        orig = rs.get("original_max_position_embeddings", c.get("original_max_position_embeddings"))
        ext = np.array(rs["long_factor"] if T > orig else rs["short_factor"])
        f = c["max_position_embeddings"] / orig
        m = rs.get("attention_factor") or (1.0 if f <= 1 else np.sqrt(1 + np.log(f) / np.log(orig)))
        return inv / ext, m
    if kind == "linear":
        inv = inv / rs["factor"]
    elif kind == "llama3":  # Llama 3.1: long wavelengths slowed by `factor`, a smooth ramp between
        f, lo, hi, old = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0), rs.get("original_max_position_embeddings", 8192)
        wl = 2 * np.pi / inv
        smooth = (old / wl - lo) / (hi - lo)
        mid = (1 - smooth) * inv / f + smooth * inv
        inv = np.where(wl < old / hi, inv, np.where(wl > old / lo, inv / f, mid))
    return inv, 1.0


def rope(x, pos, inv, m=1.0):
    hd = x.shape[-1]
    ang = np.outer(pos, inv)
    cos, sin = m * np.cos(np.concatenate([ang, ang], -1)), m * np.sin(np.concatenate([ang, ang], -1))
    rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
    return x * cos[:, None, :] + rot * sin[:, None, :]


def stored_dtype(path, name):
    """The safetensors dtype of tensor `name` in the model folder `path`."""
    import struct
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            with open(os.path.join(path, f), "rb") as fh:
                h = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
            if name in h:
                return h[name]["dtype"]
    return "F32"


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def gemma_logits(path, tokens, W, taps, c):
    """Gemma 2 / Gemma 3 (text decoder, also inside Gemma3ForConditionalGeneration): embeddings × √hidden
    (rounded to their dtype), RMSNorm × (1 + w), attention scaled by query_pre_attn_scalar^-½ and
    soft-capped (Gemma 2), sliding windows on alternate layers (Gemma 2: even ones; Gemma 3: all but
    every sliding_window_pattern-th, with the local RoPE base), q/k norms (Gemma 3), norms after the
    attention and around the GeGLU MLP, soft-capped logits (Gemma 2)."""
    vl = c["architectures"][0] == "Gemma3ForConditionalGeneration"
    g3 = c["architectures"][0].startswith("Gemma3")
    t = c["text_config"] if vl else c
    pre = "language_model.model." if vl else "model."
    d = dict(num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, rope_theta=1000000.0,
             rope_local_base_freq=10000.0, sliding_window=4096, sliding_window_pattern=6, rms_norm_eps=1e-6) if g3 else {}
    g = lambda k, dflt=None: t.get(k, d.get(k, dflt))
    H, nh, nkv, L, hd = t["hidden_size"], g("num_attention_heads"), g("num_key_value_heads"), t["num_hidden_layers"], g("head_dim", 256)
    eps, T = g("rms_norm_eps", 1e-6), len(tokens)
    pos = np.arange(T)
    norm = lambda x, w: rmsnorm(x, 1 + W[w], eps)
    sc = np.float32(np.sqrt(H))
    dt = stored_dtype(path, pre + "embed_tokens.weight")
    if dt == "BF16":  # the embedding's scale is a tensor of the embedding's dtype: round to nearest even
        u = int(np.array([sc], np.float32).view(np.uint32)[0])
        sc = np.array([((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16], np.uint32).view(np.float32)[0]
    elif dt == "F16":
        sc = np.float32(np.float16(sc))
    x = W[pre + "embed_tokens.weight"][tokens] * float(sc)
    tg = dict(t)
    tg.setdefault("rope_theta", g("rope_theta", 10000.0))
    inv_g, _ = inv_freq(tg, hd, T)
    inv_l = 1.0 / g("rope_local_base_freq", 10000.0) ** (np.arange(0, hd, 2) / hd)
    cap, fcap = t.get("attn_logit_softcapping"), t.get("final_logit_softcapping")
    types = t.get("layer_types")
    for l in range(L):
        p = "%slayers.%d." % (pre, l)
        tap = (lambda k, v: taps.setdefault((l, k), []).append(v)) if taps is not None else (lambda k, v: None)
        slide = types[l] == "sliding_attention" if types else (l % 2 == 0 if not g3 else (l + 1) % g("sliding_window_pattern") != 0)
        tap(-1, x)
        h = norm(x, p + "input_layernorm.weight")
        tap(0, h)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
        if g3:
            q, k = norm(q, p + "self_attn.q_norm.weight"), norm(k, p + "self_attn.k_norm.weight")
        inv = inv_l if (g3 and slide) else inv_g
        q, k = rope(q, pos, inv), rope(k, pos, inv)
        k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
        s = np.einsum("thd,uhd->htu", q, k) * g("query_pre_attn_scalar", 256) ** -0.5
        if cap:
            s = cap * np.tanh(s / cap)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        if slide:
            mask = mask + np.tril(np.full((T, T), -np.inf), -g("sliding_window", 4096))
        s = s + mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum("htu,uhd->thd", a, v).reshape(T, nh * hd)
        tap(1, o)
        x = x + norm(o @ W[p + "self_attn.o_proj.weight"].T, p + "post_attention_layernorm.weight")
        h = norm(x, p + "pre_feedforward_layernorm.weight")
        tap(2, h)
        act = gelu_tanh(h @ W[p + "mlp.gate_proj.weight"].T) * (h @ W[p + "mlp.up_proj.weight"].T)
        tap(3, act)
        x = x + norm(act @ W[p + "mlp.down_proj.weight"].T, p + "post_feedforward_layernorm.weight")
    x = norm(x, pre + "norm.weight")
    lg = x @ W.get("language_model.lm_head.weight" if vl else "lm_head.weight", W[pre + "embed_tokens.weight"]).T
    return fcap * np.tanh(lg / fcap) if fcap else lg


def logits(path, tokens, W=None, taps=None, res_scale=None):
    """res_scale[l] (optional): the residual stream is multiplied by it at layer l's input (the
    evolutionary model merge paper's data-flow scaling)."""
    if W is None:
        W = {k: v.astype(np.float64) for k, v in load(path).items()}
    c = json.load(open(os.path.join(path, "config.json")))
    if c["architectures"][0].startswith("Gemma"):
        if res_scale is not None:
            raise ValueError("res_scale is not implemented for Gemma")
        return gemma_logits(path, tokens, W, taps, c)
    H, nh, nkv, L = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
    hd = c.get("head_dim") or H // nh
    T = len(tokens)
    eps, (inv, msc) = c.get("rms_norm_eps", 1e-6), inv_freq(c, hd, T)
    pos = np.arange(T)
    x = W["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    arch = c["architectures"][0]
    mu = arch == "MiniCPMForCausalLM"  # MiniCPMConfig's defaults are 1, 1, 1
    x = x * (c.get("scale_emb", 1) if mu else 1)
    cb = c.get("scale_depth", 1) / np.sqrt(L) if mu else 1.0
    sw = c.get("sliding_window") if (arch in ("MistralForCausalLM", "MixtralForCausalLM", "Phi3ForCausalLM") or c.get("use_sliding_window")) else None
    if sw:
        mask = mask + np.tril(np.full((T, T), -np.inf), -sw)
    for l in range(L):
        p = "model.layers.%d." % l
        tap = (lambda k, v: taps.setdefault((l, k), []).append(v)) if taps is not None else (lambda k, v: None)
        if res_scale is not None:
            x = x * res_scale[l]
        tap(-1, x)
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        tap(0, h)
        if p + "self_attn.qkv_proj.weight" in W:  # Phi-3: one projection, split q | k | v
            qkv = h @ W[p + "self_attn.qkv_proj.weight"].T
            q, k, v = qkv[:, :nh * hd], qkv[:, nh * hd:(nh + nkv) * hd], qkv[:, (nh + nkv) * hd:]
            q, k, v = q.reshape(T, nh, hd), k.reshape(T, nkv, hd), v.reshape(T, nkv, hd)
        else:
            q = (h @ W[p + "self_attn.q_proj.weight"].T + W.get(p + "self_attn.q_proj.bias", 0)).reshape(T, nh, hd)
            k = (h @ W[p + "self_attn.k_proj.weight"].T + W.get(p + "self_attn.k_proj.bias", 0)).reshape(T, nkv, hd)
            v = (h @ W[p + "self_attn.v_proj.weight"].T + W.get(p + "self_attn.v_proj.bias", 0)).reshape(T, nkv, hd)
        if p + "self_attn.q_norm.weight" in W:  # Qwen3: RMSNorm over each head's head_dim
            q, k = rmsnorm(q, W[p + "self_attn.q_norm.weight"], eps), rmsnorm(k, W[p + "self_attn.k_norm.weight"], eps)
        q, k = rope(q, pos, inv, msc), rope(k, pos, inv, msc)
        k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
        s = np.einsum("thd,uhd->htu", q, k) / np.sqrt(hd) + mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum("htu,uhd->thd", a, v).reshape(T, nh * hd)
        tap(1, o)
        x = x + cb * (o @ W[p + "self_attn.o_proj.weight"].T + W.get(p + "self_attn.o_proj.bias", 0))
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        if c.get("num_local_experts"):  # Mixtral: softmax router, top-k renormalised, experts summed
            E, K = c["num_local_experts"], c.get("num_experts_per_tok", 2)
            r = h @ W[p + "block_sparse_moe.gate.weight"].T
            r = np.exp(r - r.max(-1, keepdims=True))
            r /= r.sum(-1, keepdims=True)
            out = np.zeros_like(x)
            for t in range(T):
                top = sorted(range(E), key=lambda e: (-r[t, e], e))[:K]
                for e in top:
                    q_ = "block_sparse_moe.experts.%d." % e
                    g = W[p + q_ + "w1.weight"] @ h[t]
                    out[t] += r[t, e] / r[t, top].sum() * (W[p + q_ + "w2.weight"] @ (g / (1 + np.exp(-g)) * (W[p + q_ + "w3.weight"] @ h[t])))
            x = x + out
            continue
        tap(2, h)
        if p + "mlp.gate_up_proj.weight" in W:  # Phi-3: gate | up in one projection
            gu = h @ W[p + "mlp.gate_up_proj.weight"].T
            g, u = gu[:, :gu.shape[1] // 2], gu[:, gu.shape[1] // 2:]
        else:
            g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        act = g / (1 + np.exp(-g)) * u
        tap(3, act)
        x = x + cb * (act @ W[p + "mlp.down_proj.weight"].T)
    if taps is not None:  # the last layer's output, before the final norm (hidden_states[L] un-normed)
        taps.setdefault((L, -1), []).append(x)
    x = rmsnorm(x, W["model.norm.weight"], eps)
    if mu:
        x = x / (H / c.get("dim_model_base", 1))
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return x @ head.T


def windows(ids, ctx, bos, stride):
    """(tokens, first scored position) per window, each of ctx tokens with the BOS."""
    C = ctx - (bos >= 0)
    step = min(stride or C, C)
    out, done, b = [], 0, 0
    while b < len(ids):
        e = min(b + C, len(ids))
        first = max(done, b)
        if bos < 0 and first == b:
            first = b + 1
        out.append(([bos] if bos >= 0 else []) + ids[b:e])
        out[-1] = (out[-1], first - b + (bos >= 0))
        done = e
        if e == len(ids):
            break
        b += step
    return out


def ppl(a):
    path, ids, ctx, bos, stride, dump, res, tol = a[0], a[1], int(a[2]), int(a[3]), int(a[4]), a[5], a[6], float(a[7])
    ids = [int(t) for t in open(ids).read().split()]
    W = {k: v.astype(np.float64) for k, v in load(path).items()}
    got = np.fromfile(dump, dtype="<f4")
    at, nll, n, worst = 0, 0.0, 0, 0.0
    for toks, first in windows(ids, ctx, bos, stride):
        lg = logits(path, np.array(toks), W)
        g = got[at:at + lg.size].reshape(lg.shape)
        at += lg.size
        worst = max(worst, np.abs(g - lg).max() / np.abs(lg).max())
        ls = lg - lg.max(-1, keepdims=True)
        ls = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
        for i in range(max(first, 1), len(toks)):
            nll -= ls[i - 1, toks[i]]
            n += 1
    if at != got.size:
        sys.exit("FAIL: graft dumped %d logits, the windows have %d" % (got.size, at))
    r = json.load(open(res))
    mean = nll / n
    if worst > tol:
        sys.exit("FAIL: logits differ by %.3g relative (tolerance %g)" % (worst, tol))
    if r["tokens_scored"] != n or abs(np.exp(r["nll"]) / np.exp(mean) - 1) > 1e-3:
        sys.exit("FAIL: graft scored %d tokens, perplexity %.6f; the reference %d, %.6f" % (r["tokens_scored"], np.exp(r["nll"]), n, np.exp(mean)))
    print("ok logits within %.2g, perplexity %.6f vs %.6f (%d tokens)" % (worst, np.exp(r["nll"]), np.exp(mean), n))


def stats(a):
    """graft eval --collect KIND FILE: every linear's input statistics over all window positions."""
    path, ids, ctx, bos, kind, f = a[0], a[1], int(a[2]), int(a[3]), a[4], a[5]
    ids = [int(t) for t in open(ids).read().split()]
    W = {k: v.astype(np.float64) for k, v in load(path).items()}
    taps = {}
    for toks, _ in windows(ids, ctx, bos, 0):
        logits(path, np.array(toks), W, taps)
    got = load(f)
    names = {0: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], 1: ["self_attn.o_proj"],
             2: ["mlp.gate_proj", "mlp.up_proj"], 3: ["mlp.down_proj"]}
    if "model.layers.0.self_attn.qkv_proj.weight" in W:  # Phi-3's fused projections
        names = {0: ["self_attn.qkv_proj"], 1: ["self_attn.o_proj"], 2: ["mlp.gate_up_proj"], 3: ["mlp.down_proj"]}
    worst, n = 0.0, 0
    for (l, k), xs in taps.items():
        if k < 0:
            continue
        X = np.concatenate(xs, 0)
        want = X.T @ X if kind == "gram" else (X * X).sum(0)
        for nm in names[k]:
            g = got["model.layers.%d.%s.weight" % (l, nm)].astype(np.float64)
            worst = max(worst, np.abs(g - want).max() / np.abs(want).max())
            n += 1
    if n != len(got):
        sys.exit("FAIL: %d statistics written, %d expected" % (len(got), n))
    if worst > 1e-4:
        sys.exit("FAIL: %s statistics differ by %.3g relative" % (kind, worst))
    print("ok %d %s statistics within %.2g" % (n, kind, worst))


def gates(a):
    """graft moe with gate_mode hidden / hidden_last / hidden_avg / cheap_embed: the routers, as MergeKit's
    router.py computes them: each prompt is tokenizer.bos_token (tokenizer_config.json, else
    special_tokens_map.json; none: nothing) + text; hidden*: the mean over the positive prompts of each
    prompt's vector minus the same over the negative ones; cheap_embed: the sum of the embedding rows of
    every token of every positive prompt, normalised, minus the same of the negative prompts; then
    normalised per layer."""
    import yaml
    from tok_ref import encode
    base, out, cfgp = a[0], a[1], a[2]
    cfg = yaml.safe_load(open(cfgp))
    mode = cfg["gate_mode"]
    tok = json.load(open(os.path.join(base, "tokenizer.json"), encoding="utf-8"))
    W = {k: v.astype(np.float64) for k, v in load(base).items()}
    L = json.load(open(os.path.join(base, "config.json")))["num_hidden_layers"]
    sets = cfg["experts"] + cfg.get("shared_experts", [])
    bos = ""
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        pth = os.path.join(base, f)
        b = json.load(open(pth)).get("bos_token") if os.path.exists(pth) else None
        b = b.get("content") if isinstance(b, dict) else b
        if isinstance(b, str) and not bos:
            bos = b

    def vec(prompt):
        ids = encode(tok, bos + prompt)  # one text, as MergeKit's tokenizer(bos_token + p, add_special_tokens=False)
        if mode == "cheap_embed":
            return np.repeat(W["model.embed_tokens.weight"][ids].sum(0)[None], L, 0)
        taps = {}
        logits(base, np.array(ids), W, taps)
        xs = np.stack([taps[(l, -1)][0] for l in range(L)])  # L × T × H
        return xs.mean(1) if mode == "hidden_avg" else xs[:, -1]

    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)

    def side(prompts):  # cheap_embed: one normalised sum; hidden*: the mean of the prompts' vectors
        vs = [vec(p) for p in prompts]
        return unit(sum(vs)) if mode == "cheap_embed" else sum(vs) / len(vs)
    want = []
    for e in sets:
        v = side(e["positive_prompts"])
        if e.get("negative_prompts"):
            v = v - side(e["negative_prompts"])
        want.append(unit(v))
    got = load(out)
    E = len(cfg["experts"])
    worst = 0.0
    for l in range(L):
        r = got.get("model.layers.%d.block_sparse_moe.gate.weight" % l, got.get("model.layers.%d.mlp.gate.weight" % l))
        worst = max(worst, np.abs(r - np.stack([w[l] for w in want[:E]])).max())
        if len(sets) > E:
            worst = max(worst, np.abs(got["model.layers.%d.mlp.shared_expert_gate.weight" % l][0] - want[E][l]).max())
    if worst > 1e-5:
        sys.exit("FAIL: %s routers differ by %.3g" % (mode, worst))
    print("ok %s routers within %.2g" % (mode, worst))


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "gates":
        gates(a[1:])
        sys.exit(0)
    if a[0] == "ppl":
        ppl(a[1:])
        sys.exit(0)
    if a[0] == "stats":
        stats(a[1:])
        sys.exit(0)
    toks = np.array([1, 5, 9, 3, 17, 42, 7, 2, 11, 30])
    la, lb = logits(a[1], toks), logits(a[2], toks)
    d = np.abs(la - lb).max() / np.abs(la).max()
    if d > float(a[3]):
        sys.exit("FAIL: logits differ by %.3g (relative to the largest)" % d)
    print("ok same logits (%.3g)" % d)
