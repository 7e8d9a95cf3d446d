#!/usr/bin/python3
"""Independent NumPy checks for graft extract-lora / apply-lora (tests/lora-e2e.sh).

  lora_ref.py extract BASE FT ADAPTER REPORT.json RANK    every low-rank module: B·A = best rank-r approximation of
                                                          W_ft − W_base (numpy SVD, float64) and the reported error
  lora_ref.py randomized BASE FT ADAPTER REPORT.json RANK X   --svd randomized: every module's reported error is the
                                                          error of the factors written, and within a factor 1 + X
                                                          of the best rank-r error (numpy SVD)
  lora_ref.py energy BASE FT REPORT.json E                reported ranks are the fewest holding fraction E of ‖Δ‖²
  lora_ref.py close A B REF TOL                           every tensor of model A within TOL·max|A−REF| of model B
  lora_ref.py make-adapter BASE OUT KIND                  write a PEFT adapter by hand (KIND: patterns, fanin)
  lora_ref.py apply BASE ADAPTER OUT SCALE                OUT = W + s·B·A etc., recomputed here from the adapter
"""
import json
import os
import struct
import sys

import numpy as np


def load(path):
    if os.path.isdir(path):
        names = [f for f in os.listdir(path) if f.endswith(".safetensors")]
        out = {}
        for f in names:
            out.update(load(os.path.join(path, f)))
        return out
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    d = b[8 + n:]
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        raw = d[s:e]
        if v["dtype"] == "F32":
            a = np.frombuffer(raw, dtype=np.float32)
        elif v["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif v["dtype"] == "F16":
            a = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        elif v["dtype"] == "I64":
            a = np.frombuffer(raw, dtype=np.int64)
        else:
            raise SystemExit("unsupported dtype " + v["dtype"])
        out[k] = a.reshape(v["shape"])
    return out


def save(path, tensors):
    """F32 tensors (int64 arrays stay I64)."""
    hdr, off, blobs = {}, 0, []
    for k in sorted(tensors):
        i64 = np.asarray(tensors[k]).dtype == np.int64
        a = np.ascontiguousarray(tensors[k], dtype=np.int64 if i64 else np.float32)
        hdr[k] = {"dtype": "I64" if i64 else "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


P = "base_model.model."


def extract(base, ft, adapter, report, rank):
    B0, F0, A0 = load(base), load(ft), load(os.path.join(adapter, "adapter_model.safetensors"))
    rep = {m["name"]: m for m in json.load(open(report))["modules"]}
    cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    checked = 0
    for name, m in rep.items():
        if m["kind"] == "whole":
            if not np.array_equal(A0[P + name + ".weight"], F0[name + ".weight"]):
                fail(name + ": saved whole but differs from the fine-tune")
            continue
        d = F0[name + ".weight"].astype(np.float64) - B0[name + ".weight"].astype(np.float64)
        if m["kind"] == "embedding":
            d = d.T
            a, b = A0[P + name + ".lora_embedding_A"], A0[P + name + ".lora_embedding_B"]
        else:
            a, b = A0[P + name + ".lora_A.weight"], A0[P + name + ".lora_B.weight"]
        r = min(rank, min(d.shape))
        if a.shape != (r, d.shape[1]) or b.shape != (d.shape[0], r) or m["rank"] != r:
            fail("%s: factor shapes %s %s for rank %d" % (name, a.shape, b.shape, r))
        u, s, vt = np.linalg.svd(d, full_matrices=False)
        best = (u[:, :r] * s[:r]) @ vt[:r]
        ba = b.astype(np.float64) @ a.astype(np.float64)
        scale = max(np.abs(best).max(), 1e-30)
        if np.abs(ba - best).max() > 2e-5 * scale:
            fail("%s: B·A differs from the best rank-%d approximation by %.3g of its largest entry" % (name, r, np.abs(ba - best).max() / scale))
        err = np.sqrt((s[r:] ** 2).sum() / max((s ** 2).sum(), 1e-300))
        if abs(err - m["rel_error"]) > 1e-5 + 1e-4 * err:
            fail("%s: reported relative error %.9g, numpy %.9g" % (name, m["rel_error"], err))
        # distribute_scale: A and B carry √S each, so their row / column norms are equal
        if not np.allclose(np.linalg.norm(a.astype(np.float64), axis=1), np.linalg.norm(b.astype(np.float64), axis=0), rtol=1e-4, atol=1e-7):
            fail(name + ": A and B do not share the singular values equally")
        checked += 1
    if cfg["r"] != max([m["rank"] for m in rep.values() if m["kind"] != "whole"]) or cfg["lora_alpha"] != cfg["r"]:
        fail("adapter_config r / lora_alpha")
    if cfg["peft_type"] != "LORA" or cfg["task_type"] != "CAUSAL_LM":
        fail("adapter_config peft_type / task_type")
    print("ok extract: %d low-rank modules match numpy's SVD" % checked)


def randomized(base, ft, adapter, report, rank, extra):
    B0, F0, A0 = load(base), load(ft), load(os.path.join(adapter, "adapter_model.safetensors"))
    rep = {m["name"]: m for m in json.load(open(report))["modules"]}
    worst, checked = 0.0, 0
    for name, m in rep.items():
        if m["kind"] != "lora":
            continue
        d = F0[name + ".weight"].astype(np.float64) - B0[name + ".weight"].astype(np.float64)
        a, b = A0[P + name + ".lora_A.weight"].astype(np.float64), A0[P + name + ".lora_B.weight"].astype(np.float64)
        r = min(rank, min(d.shape))
        if a.shape != (r, d.shape[1]) or b.shape != (d.shape[0], r):
            fail("%s: factor shapes %s %s for rank %d" % (name, a.shape, b.shape, r))
        nd = max(np.linalg.norm(d), 1e-300)
        got = np.linalg.norm(d - b @ a) / nd
        if abs(got - m["rel_error"]) > 1e-5 + 1e-3 * got:
            fail("%s: reported error %.9g, the factors written give %.9g" % (name, m["rel_error"], got))
        s = np.linalg.svd(d, compute_uv=False)
        best = np.sqrt((s[r:] ** 2).sum()) / nd
        if got > best * (1 + extra) + 1e-7:
            fail("%s: error %.9g is more than %.3g above the best rank-%d error %.9g" % (name, got, extra, r, best))
        worst = max(worst, (got - best) / max(best, 1e-300))
        checked += 1
    print("ok randomized: %d modules, worst extra error %.3g %% of the best" % (checked, 100 * worst))


def energy(base, ft, report, e):
    B0, F0 = load(base), load(ft)
    for m in json.load(open(report))["modules"]:
        if m["kind"] == "whole":
            continue
        d = F0[m["name"] + ".weight"].astype(np.float64) - B0[m["name"] + ".weight"].astype(np.float64)
        s2 = np.linalg.svd(d, compute_uv=False) ** 2
        c = np.cumsum(s2)
        want = int(np.searchsorted(c, e * s2.sum() * (1 - 1e-12))) + 1
        if m["rank"] != max(1, min(want, len(s2))):
            fail("%s: rank %d, numpy says %d for energy %g" % (m["name"], m["rank"], want, e))
    print("ok energy")


def close(a, b, ref, tol):
    A, B, R = load(a), load(b), load(ref)
    worst = 0.0
    for k in A:
        den = max(np.abs(A[k] - R[k]).max(), 1e-12)
        worst = max(worst, np.abs(A[k] - B[k]).max() / den)
    if worst > tol:
        fail("models differ by %.3g of the largest difference to the reference" % worst)
    print("ok close (%.3g)" % worst)


def make_adapter(base, out, kind):
    W = load(base)
    rng = np.random.default_rng(5)
    T, cfg = {}, {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": False, "fan_in_fan_out": False,
                  "rank_pattern": {}, "alpha_pattern": {}, "target_modules": ["q_proj", "down_proj"], "task_type": "CAUSAL_LM"}
    mods = [k[:-7] for k in W if k.endswith(".weight") and W[k].ndim == 2 and ("q_proj" in k or "down_proj" in k)]
    for m in sorted(mods):
        out_d, in_d = W[m + ".weight"].shape
        r = 2 if "layers.1.self_attn.q_proj" in m else 4
        if kind == "fanin":  # weights stored [in, out] (GPT-2 Conv1D style): A is r × rows, B is cols × r
            T[P + m + ".lora_A.weight"] = rng.standard_normal((r, out_d)).astype(np.float32) * 0.1
            T[P + m + ".lora_B.weight"] = rng.standard_normal((in_d, r)).astype(np.float32) * 0.1
        else:
            T[P + m + ".lora_A.weight"] = rng.standard_normal((r, in_d)).astype(np.float32) * 0.1
            T[P + m + ".lora_B.weight"] = rng.standard_normal((out_d, r)).astype(np.float32) * 0.1
        if r == 2:
            cfg["rank_pattern"][m.split(".", 2)[2]] = 2  # "layers.1.self_attn.q_proj": matched after a dot
            cfg["alpha_pattern"][m.split(".", 2)[2]] = 3
    emb = [k for k in W if k.endswith("embed_tokens.weight")][0]
    v, dim = W[emb].shape
    T[P + emb[:-7] + ".lora_embedding_A"] = rng.standard_normal((4, v)).astype(np.float32) * 0.1
    T[P + emb[:-7] + ".lora_embedding_B"] = rng.standard_normal((dim, 4)).astype(np.float32) * 0.1
    norm = [k for k in W if k.endswith("model.norm.weight")][0]
    T[P + norm] = np.full(W[norm].shape, 0.5, dtype=np.float32)  # modules_to_save
    if kind == "fanin":
        cfg["fan_in_fan_out"] = True
    else:
        cfg["use_rslora"] = True
    if kind == "baselayer":  # PEFT's X.base_layer.weight of a LoRA-wrapped module: replaces X.weight, X's factors on top
        q0 = [m for m in sorted(mods) if "layers.0.self_attn.q_proj" in m][0]
        T[P + q0 + ".base_layer.weight"] = (W[q0 + ".weight"] * 1.5).astype(np.float32)
    os.makedirs(out, exist_ok=True)
    save(os.path.join(out, "adapter_model.safetensors"), T)
    json.dump(cfg, open(os.path.join(out, "adapter_config.json"), "w"))
    print("ok made adapter")


def pattern(pat, m, default):
    import re
    for k, v in pat.items():
        if re.match(r"(.*\.)?(%s)$" % k, m):
            return v
    return default


def apply(base, adapter, out, scale):
    W, A, O = load(base), load(os.path.join(adapter, "adapter_model.safetensors")), load(out)
    cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    want = {k: v.astype(np.float64) for k, v in W.items()}
    for k, v in A.items():  # whole tensors first (modules_to_save; PEFT's base_layer ones under the module's name)
        m = k[len(P):]
        if not (m.endswith(".lora_A.weight") or m.endswith(".lora_B.weight") or "lora_embedding" in m):
            want[m.replace(".base_layer.", ".")] = v.astype(np.float64)
    for k, v in A.items():
        m = k[len(P):]
        for suf in (".lora_A.weight", ".lora_embedding_A"):
            if m.endswith(suf):
                mod = m[: -len(suf)]
                b = A[P + mod + (".lora_B.weight" if suf == ".lora_A.weight" else ".lora_embedding_B")].astype(np.float64)
                r = pattern(cfg["rank_pattern"], mod, cfg["r"])
                alpha = pattern(cfg["alpha_pattern"], mod, cfg["lora_alpha"])
                s = (alpha / np.sqrt(r) if cfg["use_rslora"] else alpha / r) * scale
                delta = b @ v.astype(np.float64)
                if suf == ".lora_embedding_A" or cfg["fan_in_fan_out"]:
                    delta = delta.T
                want[mod + ".weight"] += s * delta
    worst = 0.0
    for k in W:
        d = np.abs(O[k].astype(np.float64) - want[k]).max() / max(np.abs(want[k]).max(), 1e-30)
        worst = max(worst, d)
    if worst > 1e-6:
        fail("apply differs from numpy by %.3g (relative to the largest entry)" % worst)
    print("ok apply (%.3g)" % worst)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "extract":
        extract(a[1], a[2], a[3], a[4], int(a[5]))
    elif a[0] == "randomized":
        randomized(a[1], a[2], a[3], a[4], int(a[5]), float(a[6]))
    elif a[0] == "energy":
        energy(a[1], a[2], a[3], float(a[4]))
    elif a[0] == "close":
        close(a[1], a[2], a[3], float(a[4]))
    elif a[0] == "make-adapter":
        make_adapter(a[1], a[2], a[3])
    elif a[0] == "apply":
        apply(a[1], a[2], a[3], float(a[4]))
    else:
        raise SystemExit(__doc__)
