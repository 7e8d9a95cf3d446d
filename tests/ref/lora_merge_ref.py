#!/usr/bin/python3
"""Independent NumPy checks for graft merge-lora (tests/lora-merge.sh).

  lora_merge_ref.py make BASE OUT SEED KIND RANK   a PEFT adapter with random factors for BASE's q_proj, v_proj
                                                   and down_proj (KIND: plain, rslora, patterns, fanin, bias,
                                                   embed, whole, scaled — see make())
  lora_merge_ref.py check CONFIG.yml OUT REPORT.json [SEED]
                                                   OUT against the densified reference of CONFIG's combination:
                                                   exact types ΔW within 1e-5 relative; *_svd types: ‖ΔW_ref − B·A‖
                                                   equals the discarded singular values' energy, B·A is numpy's best
                                                   rank-r approximation, the reported errors are numpy's

Written from PEFT's add_weighted_adapter (lora/model.py) and merge_utils.py semantics, with graft's
documented decisions (docs/lora.md): each ΔWᵢ = sᵢ·Bᵢ·Aᵢ is weighted by wᵢ once in the *_svd types (PEFT:
wᵢ·sᵢ, unless peft_svd_scaling), DARE masks are graft's counter-based uniforms (mirrored from merge_ref.py),
magnitude ties keep the lowest index. Python 3 + NumPy + PyYAML.
"""
import json
import os
import re
import sys

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_ref import load, save, P  # noqa: E402  (safetensors I/O only)
from merge_ref import rng_key, rng_uniform  # noqa: E402  (graft's generator)

F32 = np.float32


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


# ---- adapters ------------------------------------------------------------------------------------------

def make(base, out, seed, kind, rank):
    """Random factors (scale ~0.1) for every q_proj, v_proj and down_proj of BASE.
    plain: lora_alpha = 2r; rslora: use_rslora; patterns: layer 1's q_proj rank r−1 (rank_pattern) and alpha 3;
    fanin: fan_in_fan_out (A is r × rows); bias: lora_B.bias on v_proj; embed: lora_embedding_A/B on the
    embedding; whole: model.norm saved whole (0.5 + seed/10); scaled: lora_alpha = r/2, only q_proj; int: entries k/8
    (|k| ≤ 7, scale 2), so that ΔW and its pruning are exact in f32 on any CPU."""
    W = load(base)
    rng = np.random.default_rng(seed)
    cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "use_rslora": kind == "rslora", "fan_in_fan_out": kind == "fanin",
           "rank_pattern": {}, "alpha_pattern": {}, "target_modules": ["q_proj", "v_proj", "down_proj"], "task_type": "CAUSAL_LM",
           "base_model_name_or_path": "base-%d" % seed, "bias": "none"}
    if kind == "scaled":
        cfg["lora_alpha"] = rank / 2
        cfg["target_modules"] = ["q_proj"]
    names = ("q_proj",) if kind == "scaled" else ("q_proj", "v_proj", "down_proj")
    T = {}
    for k in sorted(W):
        if not (k.endswith(".weight") and W[k].ndim == 2 and any(n in k for n in names)):
            continue
        m = k[:-7]
        rows, cols = W[k].shape
        r = rank - 1 if kind == "patterns" and "layers.1.self_attn.q_proj" in m else rank
        if kind == "fanin":
            rows, cols = cols, rows
        if kind == "int":  # k/8, |k| ≤ 7: every product and sum below is exact in f32, whatever the BLAS
            T[P + m + ".lora_A.weight"] = (rng.integers(-7, 8, (r, cols)) / 8).astype(F32)
            T[P + m + ".lora_B.weight"] = (rng.integers(-7, 8, (rows, r)) / 8).astype(F32)
        else:
            T[P + m + ".lora_A.weight"] = (rng.standard_normal((r, cols)) * 0.1).astype(F32)
            T[P + m + ".lora_B.weight"] = (rng.standard_normal((rows, r)) * 0.1).astype(F32)
        if kind == "bias" and "v_proj" in m:
            T[P + m + ".lora_B.bias"] = (rng.standard_normal(rows) * 0.1).astype(F32)
            cfg["lora_bias"] = True
        if r != rank:
            cfg["rank_pattern"]["layers.1.self_attn.q_proj"] = r
            cfg["alpha_pattern"]["layers.1.self_attn.q_proj"] = 3
    if kind == "embed":
        emb = [k for k in W if k.endswith("embed_tokens.weight")][0]
        v, dim = W[emb].shape
        T[P + emb[:-7] + ".lora_embedding_A"] = (rng.standard_normal((rank, v)) * 0.1).astype(F32)
        T[P + emb[:-7] + ".lora_embedding_B"] = (rng.standard_normal((dim, rank)) * 0.1).astype(F32)
        cfg["target_modules"].append("embed_tokens")
    if kind == "whole":
        norm = [k for k in W if k.endswith("model.norm.weight")][0]
        T[P + norm] = np.full(W[norm].shape, 0.5 + seed / 10, dtype=F32)
        cfg["modules_to_save"] = ["norm"]
    os.makedirs(out, exist_ok=True)
    save(os.path.join(out, "adapter_model.safetensors"), T)
    json.dump(cfg, open(os.path.join(out, "adapter_config.json"), "w"))
    print("ok made adapter")


def pattern(pat, m, default):
    for k, v in (pat or {}).items():
        if re.match(r"(.*\.)?(%s)$" % k, m):
            return v
    return default


def scale(cfg, m, r):
    alpha = pattern(cfg.get("alpha_pattern"), m, cfg.get("lora_alpha", 8))
    return alpha / np.sqrt(r) if cfg.get("use_rslora") else alpha / r


def modules(T):
    """module → {"A", "B", "bias"} (factor orientation: ΔM = B·A), and whole tensors."""
    mods, whole = {}, {}
    for k, v in T.items():
        n = k[len(P):] if k.startswith(P) else k
        for suf, what in ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_B.bias", "bias"), (".lora_embedding_A", "A"),
                          (".lora_embedding_B", "B")):
            if n.endswith(suf):
                mods.setdefault(n[: -len(suf)], {})[what] = v.astype(np.float64)
                break
        else:
            whole[n] = v.astype(np.float64)
    return mods, whole


# ---- PEFT's merge_utils on NumPy arrays ------------------------------------------------------------------

def prune_mag(x, d):
    if d >= 1:
        return x
    k = int(d * x.size)
    flat = x.ravel()
    order = np.lexsort((np.arange(flat.size), -np.abs(flat)))  # largest first, lowest index first on ties
    keep = np.zeros(flat.size, bool)
    keep[order[:k]] = True
    return np.where(keep, flat, 0).reshape(x.shape)


def prune_rand(x, d, key):
    if d >= 1:
        return x
    keep = rng_uniform(key, x.size) < F32(d)
    return np.where(keep.reshape(x.shape), x / d, 0.0)


def elect(ts, ws, frequency):
    ts = np.stack(ts)
    sign = np.sign(ts)
    mag = sign.sum(0) if frequency else ts.sum(0)
    maj = np.where(mag >= 0, 1.0, -1.0)
    mask = sign == maj
    w = np.asarray(ws).reshape((-1,) + (1,) * (ts.ndim - 1))
    return (ts * w * mask).sum(0) / np.maximum(mask.sum(0), 1)


def combine(comb, ts, ws, dens, keys, frequency):
    """PEFT's task_arithmetic / ties / dare_linear / dare_ties / magnitude_prune on a list of arrays."""
    base = comb.replace("_svd", "")
    if base in ("ties", "magnitude_prune"):
        ts = [prune_mag(t, d) for t, d in zip(ts, dens)]
    elif base in ("dare_linear", "dare_ties"):
        ts = [prune_rand(t, d, k) for t, d, k in zip(ts, dens, keys)]
    if base in ("ties", "dare_ties"):
        return elect(ts, ws, frequency)
    return sum(w * t for w, t in zip(ws, ts))


# ---- check ----------------------------------------------------------------------------------------------

def check(config, out, report, seed=0):
    C = yaml.safe_load(open(config))
    cdir = os.path.dirname(config)
    comb = C.get("combination", C.get("combination_type", "svd"))
    freq = C.get("majority_sign_method", "total") == "frequency"
    peft_scaling = bool(C.get("peft_svd_scaling", False))
    ads = []
    for e in C["adapters"]:
        if isinstance(e, str):
            e = {"adapter": e}
        path = os.path.join(cdir, e.get("adapter", e.get("path")))
        cfg = json.load(open(os.path.join(path, "adapter_config.json")))
        mods, whole = modules(load(os.path.join(path, "adapter_model.safetensors")))
        ads.append({"cfg": cfg, "mods": mods, "whole": whole, "w": float(e.get("weight", 1.0)), "d": float(e.get("density", C.get("density", 1.0)))})
    O = load(os.path.join(out, "adapter_model.safetensors"))
    ocfg = json.load(open(os.path.join(out, "adapter_config.json")))
    omods, owhole = modules(O)
    rep = {m["name"]: m for m in json.load(open(report))["modules"]}
    if ocfg.get("use_rslora"):
        fail("use_rslora must be off in the merged adapter")
    names = sorted(set(m for a in ads for m in a["mods"]))
    if sorted(omods) != names:
        fail("modules %s, expected %s" % (sorted(omods), names))
    maxr = max(a["mods"][m]["A"].shape[0] for a in ads for m in a["mods"])
    worst = 0.0
    for m in names:
        have = [(i, a) for i, a in enumerate(ads) if m in a["mods"]]
        o = omods[m]
        r_out = o["A"].shape[0]
        s_out = scale({**ocfg, "lora_alpha": ocfg["lora_alpha"]}, m, pattern(ocfg.get("rank_pattern"), m, ocfg["r"]))
        if pattern(ocfg.get("rank_pattern"), m, ocfg["r"]) != r_out or abs(s_out - 1) > 1e-12:
            fail("%s: config rank/alpha give scale %g rank %s for factors of rank %d" % (m, s_out, pattern(ocfg.get("rank_pattern"), m, ocfg["r"]), r_out))
        got = o["B"] @ o["A"]
        ss = [scale(a["cfg"], m, a["mods"][m]["A"].shape[0]) for _, a in have]
        ws = [a["w"] for _, a in have]
        dens = [a["d"] for _, a in have]
        # bias: Σ wᵢ·sᵢ·biasᵢ
        bias_ref = sum(w * s * a["mods"][m]["bias"] for (_, a), w, s in zip(have, ws, ss) if "bias" in a["mods"][m])
        if not isinstance(bias_ref, int) or "bias" in o:
            if "bias" not in o or np.abs(o["bias"] - bias_ref).max() > 1e-6 * max(1, np.abs(bias_ref).max()):
                fail("%s: lora_B.bias differs from Σ w·s·bias" % m)
        if comb == "cat" or comb in ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"):
            if comb == "cat":
                want = sum(w * s * (a["mods"][m]["B"] @ a["mods"][m]["A"]) for (_, a), w, s in zip(have, ws, ss))
            else:
                wa = [np.sign(w * s) * np.sqrt(abs(w * s)) for w, s in zip(ws, ss)]
                wb = [np.sqrt(abs(w * s)) for w, s in zip(ws, ss)]
                ka = [rng_key(seed, i, m + ".lora_A") for i, _ in have]
                kb = [rng_key(seed, i, m + ".lora_B") for i, _ in have]
                A = combine(comb, [a["mods"][m]["A"].astype(F32).astype(np.float64) for _, a in have], wa, dens, ka, freq)
                B = combine(comb, [a["mods"][m]["B"].astype(F32).astype(np.float64) for _, a in have], wb, dens, kb, freq)
                want = B @ A
            den = max(np.linalg.norm(want), 1e-30)
            err = np.linalg.norm(got - want) / den
            worst = max(worst, err)
            if err > 1e-5:
                fail("%s: ΔW of the merged adapter differs from the reference by %.3g (relative)" % (m, err))
            if abs(rep[m]["rel_error"]) > 0:
                fail("%s: an exact combination reported error %g" % (m, rep[m]["rel_error"]))
            continue
        # *_svd: the reference ΔW, densified
        wsv = [w * (s if peft_scaling else 1.0) for w, s in zip(ws, ss)]
        deltas = [s * (a["mods"][m]["B"] @ a["mods"][m]["A"]).astype(F32).astype(np.float64) for (_, a), s in zip(have, ss)]
        keys = [rng_key(seed, i, m) for i, _ in have]
        want = combine(comb, deltas, wsv, dens, keys, freq)
        U, S, Vt = np.linalg.svd(want, full_matrices=False)
        r = min(int(C.get("rank", C.get("svd_rank", maxr))), *want.shape)
        if comb == "svd":
            r = min(r, sum(a["mods"][m]["A"].shape[0] for _, a in have))
        if r_out != r:
            fail("%s: rank %d, expected %d" % (m, r_out, r))
        energy = (S ** 2).sum()
        tail = np.sqrt((S[r:] ** 2).sum())
        err = np.linalg.norm(want - got)
        scale_ = max(np.sqrt(energy), 1e-30)
        if "svd_clamp" not in C:
            if abs(err - tail) > 2e-5 * scale_:
                fail("%s: ‖ΔW − B·A‖ = %.6g, the discarded singular values hold %.6g" % (m, err, tail))
            best = (U[:, :r] * S[:r]) @ Vt[:r]
            if r < len(S) and S[r - 1] - S[r] < 1e-3 * S[0]:
                pass  # a near-tie at the cut: the best approximation is not unique
            elif np.linalg.norm(best - got) > 2e-5 * scale_ * max(1.0, S[0] / max(S[r - 1] - (S[r] if r < len(S) else 0), 1e-30)):
                fail("%s: B·A is not the best rank-%d approximation (%.3g)" % (m, r, np.linalg.norm(best - got) / scale_))
        if "svd_clamp" in C:  # PEFT's clamp of U·S and Vᵀ to ±(their quantile), signs as graft fixes them
            US, V = U[:, :r] * S[:r], Vt[:r].copy()
            for c in range(r):
                short = US[:, c] if want.shape[0] <= want.shape[1] else V[c]
                if short[np.argmax(np.abs(short))] < 0:
                    US[:, c], V[c] = -US[:, c], -V[c]
            hi = np.quantile(np.concatenate([US.ravel(), V.ravel()]), float(C["svd_clamp"]))
            ref = np.clip(US, -hi, hi) @ np.clip(V, -hi, hi)
            if np.linalg.norm(ref - got) > 1e-4 * max(np.linalg.norm(ref), 1e-30):
                fail("%s: clamped factors differ from the reference (%.3g)" % (m, np.linalg.norm(ref - got) / np.linalg.norm(ref)))
        rel = tail / scale_
        if abs(rep[m]["rel_error"] - rel) > 1e-4 * max(rel, 1e-3):
            fail("%s: reported error %.6g, numpy %.6g" % (m, rep[m]["rel_error"], rel))
        worst = max(worst, err / scale_)
    # whole tensors: identical ones copied; different ones base + Σ w·(W − base)
    wnames = sorted(set(n for a in ads for n in a["whole"]))
    if sorted(owhole) != wnames:
        fail("whole tensors %s, expected %s" % (sorted(owhole), wnames))
    for n in wnames:
        have = [a for a in ads if n in a["whole"]]
        if all(np.array_equal(h["whole"][n], have[0]["whole"][n]) for h in have):
            want = have[0]["whole"][n]
        else:
            Wb = load(os.path.join(cdir, C["base_model"]))[n].astype(np.float64)
            want = Wb + sum(h["w"] * (h["whole"][n] - Wb) for h in have)
        if np.abs(owhole[n] - want).max() > 1e-6 * max(1.0, np.abs(want).max()):
            fail("whole tensor %s differs" % n)
    print("ok %s (%d modules, worst %.3g)" % (comb, len(names), worst))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
    elif cmd == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    else:
        fail("unknown command " + cmd)
