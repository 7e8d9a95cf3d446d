#!/usr/bin/python3
"""Independent NumPy reference of MergeKit's 20 merge methods (graft cross-check and NumPy baseline).

    merge_ref.py CONFIG.yml OUT_DIR [--seed S]      merge; writes OUT_DIR/model.safetensors
    merge_ref.py --compare GOT_DIR REF_DIR          compare two model folders tensor by tensor
    merge_ref.py --batch JOBS                       merge and compare many configs (tests/ref/check.sh)

Written from shared/methods-mergekit.md §1.4 and §2 (the MergeKit formulas), with graft's documented
decisions (docs/merge.md): compute in float32 whatever `dtype:` says; top-k ties kept lowest element
index first; breadcrumbs with floor(gamma*numel) = 0 keeps the top floor(density*numel); della ranks
ties by position and a one-column row has rank_norm 0; arcee_fusion uses exact quantiles; random
methods draw graft's counter-based uniforms (src/core/rng.c), the only piece mirrored from graft.
Whole tensors, one tensor name at a time, NumPy vector operations only. Python 3 + NumPy + PyYAML.
"""
import json
import math
import mmap
import os
import re
import struct
import sys

import numpy as np
import yaml

F32, F64 = np.float32, np.float64

# ---- safetensors -------------------------------------------------------------------------------------

ST_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2)}
OUT_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


class SafeFile:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.base = 8 + n
        self.meta = hdr.pop("__metadata__", None) or {}
        self.tensors = hdr

    def raw(self, name):
        info = self.tensors[name]
        dt, size = ST_DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        arr = np.frombuffer(self.mm, dtype=dt, count=(b - a) // size, offset=self.base + a)
        return info["dtype"], arr.reshape(info["shape"])


def to_f32(dtype, arr):
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)


class Model:
    """A model folder: model.safetensors or model.safetensors.index.json + shards."""

    def __init__(self, path):
        self.path = path
        idx = os.path.join(path, "model.safetensors.index.json")
        files = {}
        self.where = {}
        if os.path.exists(idx):
            with open(idx) as f:
                wm = json.load(f)["weight_map"]
            for name, fn in wm.items():
                if fn not in files:
                    files[fn] = SafeFile(os.path.join(path, fn))
                self.where[name] = files[fn]
        else:
            sf = SafeFile(os.path.join(path, "model.safetensors"))
            for name in sf.tensors:
                self.where[name] = sf
        # safetensors headers are sorted by name; keep the file's order
        self.names = list(self.where)
        self.prefix, self.n_layers = self.layers(self.names)

    @staticmethod
    def layers(names):
        """(layer prefix, layer count) of a list of names: the first ".N." prefix seen."""
        prefix, n = None, 0
        for nm in names:
            s = split_layer(nm)
            if s is None:
                continue
            if prefix is None:
                prefix = s[0]
            if s[0] == prefix:
                n = max(n, s[1] + 1)
        return prefix, n

    def shape(self, name):
        return tuple(self.where[name].tensors[name]["shape"])

    def dtype(self, name):
        return self.where[name].tensors[name]["dtype"]

    def load(self, name):
        return to_f32(*self.where[name].raw(name))


LAYER_RE = re.compile(r"^(.*?)\.(\d+)\.(.+)$")


def split_layer(name):
    m = LAYER_RE.match(name)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


def f32_to_bf16(x):
    """Round-to-nearest-even float32 -> bfloat16 bits; NaN stays a (quiet) NaN."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = ((b + np.uint32(0x7FFF) + ((b >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        r[nan] = ((b[nan] >> 16) | np.uint32(0x40)).astype(np.uint16)
    return r


def write_safetensors(path, tensors, data):
    """tensors: [(name, st_dtype, shape)]; data(i) -> ndarray of tensor i in its storage dtype."""
    hdr, off, sizes = {"__metadata__": {"format": "pt"}}, 0, []
    for name, dt, shape in tensors:
        n = ST_DTYPES[dt][1] * int(np.prod(shape, dtype=np.int64))
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
        sizes.append(n)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for i, n in enumerate(sizes):
            b = np.ascontiguousarray(data(i)).tobytes()
            if len(b) != n:
                raise Fail("%s: %d bytes, expected %d" % (tensors[i][0], len(b), n))
            f.write(b)


def encode(x, st_dtype):
    if st_dtype == "F32":
        return x.astype(np.float32)
    if st_dtype == "F16":
        return x.astype(np.float16)
    return f32_to_bf16(x)

# ---- graft's counter-based generator (src/core/rng.c, src/core/impl.h graft__rng_u64) -----------

M64 = (1 << 64) - 1


def _mix64_int(z):
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def rng_key(seed, model, name):
    h = 0xCBF29CE484222325  # FNV-1a of the tensor name
    for c in name.encode():
        h = ((h ^ c) * 0x100000001B3) & M64
    return _mix64_int(_mix64_int(seed ^ 0x6A09E667F3BCC909) ^ _mix64_int(model + 0x9E3779B97F4A7C15) ^ h)


def _mix64_np(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash32_np(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def rng_uniform(key, n):
    """float32 uniforms in [0, 1) (24 bits) for counters 0..n-1 under key (graft's src/core/impl.h):
    u(key, i) = H(H(lo32(i) ^ lo32(key)) ^ K) >> 8 · 2^-24, H = lowbias32, K = hi32(mix64(key + hi32(i)))."""
    assert n < 2 ** 32
    with np.errstate(over="ignore"):
        k0 = np.uint32(key & 0xFFFFFFFF)
        k1 = np.uint32(_mix64_int(key) >> 32)  # hi32(i) = 0 for every tensor here
        x = _hash32_np(_hash32_np(np.arange(n, dtype=np.uint32) ^ k0) ^ k1)
    return (x >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)


# ---- parameters (methods-mergekit.md §1.4) -----------------------------------------------------------


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def evaluate(setting, name, t):
    """MergeKit evaluate_setting: scalar, gradient list, or list of {filter, value}; None = no match."""
    if setting is None:
        return None
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(x, dict) for x in setting):
            for c in setting:
                f = c.get("filter")
                if f is None or f == "*" or f in name:
                    return evaluate(c.get("value"), name, t)
            return None
        n = len(setting)
        if all(_is_num(x) for x in setting):
            p = t * (n - 1)
            i0 = int(p)
            i1 = min(n - 1, i0 + 1)
            f = p - i0
            return (1 - f) * setting[i0] + f * setting[i1]
        return setting[int(t * (n - 1))]
    return setting


# method: (global params {name: default}, per-model params {name: default}); REQ = required
REQ = object()
GTA_G = {"rescale": False, "lambda": 1.0, "int8_mask": False}
METHODS = {
    "linear": ({"normalize": True}, {"weight": REQ}),
    "slerp": ({"t": REQ}, {}),
    "nuslerp": ({"nuslerp_flatten": True, "nuslerp_row_wise": False}, {"weight": REQ}),
    "multislerp": ({"normalize_weights": True, "eps": 1e-8}, {"weight": REQ}),
    "karcher": ({"max_iter": 10, "tol": 1e-5}, {}),
    "task_arithmetic": (dict(GTA_G, normalize=False), {"weight": REQ, "density": 1.0}),
    "ties": (dict(GTA_G, normalize=True), {"weight": REQ, "density": 1.0}),
    "dare_ties": (dict(GTA_G, normalize=False, rescale=True), {"weight": REQ, "density": 1.0}),
    "dare_linear": (dict(GTA_G, normalize=False, rescale=True), {"weight": REQ, "density": 1.0}),
    "breadcrumbs": (dict(GTA_G, normalize=False), {"weight": REQ, "density": 1.0, "gamma": 0.01}),
    "breadcrumbs_ties": (dict(GTA_G, normalize=False), {"weight": REQ, "density": 1.0, "gamma": 0.01}),
    "della": (dict(GTA_G, normalize=True, rescale=True), {"weight": REQ, "density": 1.0, "epsilon": 0.15}),
    "della_linear": (dict(GTA_G, normalize=False, rescale=True), {"weight": REQ, "density": 1.0, "epsilon": 0.15}),
    "sce": ({"select_topk": 1.0, "int8_mask": False}, {}),
    "ram": ({"epsilon": 1e-5}, {}),
    "ramplus_tl": ({"r": 0.1, "alpha": 0.2, "epsilon": 1e-5}, {}),
    "model_stock": ({"filter_wise": False}, {}),
    "nearswap": ({"t": REQ}, {}),
    "arcee_fusion": ({}, {}),
    "passthrough": ({}, {"scale": None}),
    "iso_c": ({"scaling_factor": 1.0}, {}),
    "iso_cts": ({"scaling_factor": 1.0, "common_space_fraction": 0.8}, {}),
    "tsv": ({"scaling_factor": 1.0}, {}),
    "pcb": ({"pcb_ratio": 0.1, "clip_ratio": 1e-4, "per_tensor": False}, {"weight": 1.0}),
    "regmean": ({"reduce_non_diagonal": 0.1}, {"weight": 1.0, "gram": None}),
    "mats": ({"iterations": 100, "model_lambda": 1.0, "init_lambda": 0.3}, {"gram": None}),
    "fisher": ({"fisher_floor": 1e-6, "favor_target_model": True, "normalize_fishers": True}, {"weight": 1.0, "fisher": None}),
}
BASE_REQUIRED = {"slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties",
                 "della", "della_linear", "sce", "ram", "ramplus_tl", "model_stock", "nearswap", "arcee_fusion",
                 "iso_c", "iso_cts", "tsv", "pcb"}


class Fail(Exception):
    pass

# ---- methods: each gets the input arrays (float32), the base position (or None), per-model params,
# ---- global params, and a context (output tensor name, model indices, seed) ----------------------------


def fsum(arrs):
    out = arrs[0].copy()
    for a in arrs[1:]:
        out += a
    return out


def norm(x):
    return math.sqrt(float(np.dot(x.ravel().astype(F64), x.ravel().astype(F64))))


def dot(x, y):
    return float(np.dot(x.ravel().astype(F64), y.ravel().astype(F64)))


def m_linear(X, base, pm, gp, ctx):
    w = [F32(p["weight"]) for p in pm]
    r = fsum([wi * x for wi, x in zip(w, X)])
    if gp["normalize"]:
        r = r / F32(sum(float(p["weight"]) for p in pm))
    return r


def m_passthrough(X, base, pm, gp, ctx):
    if len(X) != 1:
        raise Fail("passthrough takes exactly one input")
    s = pm[0]["scale"]
    return X[0] * F32(s) if s is not None else X[0]


def m_slerp(X, base, pm, gp, ctx):
    if len(X) == 1:
        return X[0]
    if len(X) != 2:
        raise Fail("slerp needs exactly 2 models")
    v0, v1 = X[base], X[1 - base]
    t = float(gp["t"])
    n0, n1 = norm(v0), norm(v1)
    d = dot(v0, v1) / ((n0 if n0 > 1e-8 else 1.0) * (n1 if n1 > 1e-8 else 1.0))
    if abs(d) > 0.9995:
        return F32(1 - t) * v0 + F32(t) * v1
    th0 = math.acos(d)
    tht = th0 * t
    s0 = math.sin(th0 - tht) / math.sin(th0)
    s1 = math.sin(tht) / math.sin(th0)
    return F32(s0) * v0 + F32(s1) * v1


def _vectors(x, flatten, row_wise):
    """View as [n_vectors, len] (float64) per nuslerp's modes."""
    if flatten or x.ndim < 2:
        return x.reshape(1, -1).astype(F64), lambda r: r.reshape(x.shape)
    if row_wise:  # vectors are v[:, j] (dim-0 slices)
        m = x.reshape(x.shape[0], -1).T.astype(F64)
        return m, lambda r: r.T.reshape(x.shape)
    m = x.reshape(-1, x.shape[-1]).astype(F64)
    return m, lambda r: r.reshape(x.shape)


def m_nuslerp(X, base, pm, gp, ctx):
    idx = [i for i in range(len(X)) if i != base]
    if len(idx) != 2:
        raise Fail("nuslerp needs exactly 2 models besides the base")
    a, b = idx
    wa, wb = float(pm[a]["weight"]), float(pm[b]["weight"])
    t = 0.5 if abs(wa + wb) < 1e-6 else wb / (wa + wb)
    va, vb = X[a], X[b]
    if base is not None:
        va, vb = va - X[base], vb - X[base]
    A, back = _vectors(va, gp["nuslerp_flatten"], gp["nuslerp_row_wise"])
    Bv, _ = _vectors(vb, gp["nuslerp_flatten"], gp["nuslerp_row_wise"])
    na = np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-7)
    nb = np.maximum(np.linalg.norm(Bv, axis=1, keepdims=True), 1e-7)
    c = np.clip(np.sum((A / na) * (Bv / nb), axis=1, keepdims=True), -1, 1)
    th = np.arccos(c)
    s = np.sin(th)
    lin = np.abs(s) < 1e-8
    ss = np.where(lin, 1.0, s)
    res = np.where(lin, (1 - t) * A + t * Bv, (np.sin((1 - t) * th) * A + np.sin(t * th) * Bv) / ss)
    res = back(res).astype(F32)
    return res + X[base] if base is not None else res


def m_multislerp(X, base, pm, gp, ctx):
    idx = [i for i in range(len(X)) if i != base]
    if len(idx) == 1:
        return X[idx[0]]
    eps = float(gp["eps"])
    w = np.array([float(pm[i]["weight"]) for i in idx])
    if gp["normalize_weights"]:
        w = w / w.sum()
    F = np.stack([(X[i] - X[base] if base is not None else X[i]).ravel() for i in idx]).astype(F64)
    n = np.linalg.norm(F, axis=1)
    U = F / (n[:, None] + eps)
    m = w @ U
    mn = np.linalg.norm(m)
    if mn < eps:
        if len(idx) == 2:
            r = (w[0] * F[0] + w[1] * F[1]).astype(F32).reshape(X[idx[0]].shape)
            return r + X[base] if base is not None else r
        raise Fail("multislerp: weighted sum of the unit vectors is zero")
    m = m / mn
    T = U - (U @ m)[:, None] * m[None, :]
    tau = w @ T
    r = np.linalg.norm(tau) + eps
    res = (m * math.cos(r) + tau * (math.sin(r) / r)) * float(w @ n)
    res = res.astype(F32).reshape(X[idx[0]].shape)
    return res + X[base] if base is not None else res


def m_karcher(X, base, pm, gp, ctx):
    M = len(X)
    tol, max_iter = float(gp["tol"]), int(gp["max_iter"])
    F = np.stack([x.ravel() for x in X]).astype(F64)
    alpha = np.full(M, 1.0 / M)
    n = np.linalg.norm(F, axis=1)
    U = np.where(n[:, None] > 0, F / np.where(n > 0, n, 1)[:, None], 0.0)
    valid = n > tol
    if not valid.any():
        return np.zeros_like(X[0])
    a = np.where(valid, alpha, 0.0) / alpha[valid].sum()
    u = a @ U
    un = np.linalg.norm(u)
    u = U[int(np.argmax(valid))] if un < tol else u / un
    for _ in range(max_iter):
        c = np.clip(U @ u, -1, 1)
        th = np.arccos(c)
        use = valid & (th >= tol)
        coef = np.where(use, a * th / np.where(use, np.sin(th), 1.0), 0.0)
        T = coef @ U - (coef @ c) * u
        tn = np.linalg.norm(T)
        if tn < tol:
            break
        u = math.cos(tn) * u + math.sin(tn) * (T / tn)
        un = np.linalg.norm(u)
        if un > tol:
            u = u / un
    return (float(alpha @ n) * u).astype(F32).reshape(X[0].shape)


def m_model_stock(X, base, pm, gp, ctx):
    idx = [i for i in range(len(X)) if i != base]
    if not idx:
        return X[base]
    if len(idx) < 2:
        raise Fail("model_stock needs at least 2 models besides the base")
    w0 = X[base]
    N = len(idx)
    if gp["filter_wise"]:
        rows = lambda x: x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    else:
        rows = lambda x: x.reshape(1, -1)
    O = [rows(X[i] - w0).astype(F64) for i in idx]
    nrm = [np.linalg.norm(o, axis=1) for o in O]
    cs, npairs = 0.0, 0
    for i in range(N):
        for j in range(i + 1, N):
            cs = cs + np.clip(np.sum(O[i] * O[j], axis=1) / np.maximum(nrm[i] * nrm[j], 1e-6), -1, 1)
            npairs += 1
    cos = cs / npairs
    t = N * cos / (1 + (N - 1) * cos)
    mean = fsum([X[i] for i in idx]) / F32(N)
    if gp["filter_wise"]:
        t = t.astype(F32).reshape(w0.shape[:-1] + (1,)) if w0.ndim > 1 else F32(t[0])
    else:
        t = F32(t[0])
    return t * mean + (F32(1) - t) * w0


def _the_other(X, base, method):
    idx = [i for i in range(len(X)) if i != base]
    if len(idx) != 1:
        raise Fail(method + " takes exactly one model besides the base")
    return X[idx[0]]


def m_nearswap(X, base, pm, gp, ctx):
    B, b = X[base], _the_other(X, base, "nearswap")
    w = np.clip(F32(gp["t"]) / np.maximum(np.abs(B - b), F32(1e-6)), 0, 1).astype(F32)
    return w * b + (F32(1) - w) * B


def m_arcee_fusion(X, base, pm, gp, ctx):
    a, b = X[base], _the_other(X, base, "arcee_fusion")
    diff = np.abs(b - a)

    def softmax(x):
        x = x.astype(F64)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    p = softmax(b) + 1e-8
    q = softmax(a) + 1e-8
    kl = np.sum(p * np.log(p / q), axis=-1)
    imp = diff * np.asarray(kl).astype(F32)[..., None]  # kl: one value per row (a scalar for 1-D)
    s = np.sort(imp.ravel())
    n = s.size
    q25, q50, q75 = (s[int(q * (n - 1))] for q in (0.25, 0.5, 0.75))
    thr = q50 + F32(1.5) * (q75 - q25)
    mask = (imp >= thr).astype(F32)
    return a + (b - a) * mask


def m_sce(X, base, pm, gp, ctx):
    B = X[base]
    T = np.stack([X[i] - B for i in range(len(X)) if i != base])
    N = T.shape[0]
    k_frac = float(gp["select_topk"])
    if k_frac < 1:
        flat = T.reshape(N, -1)
        mean = flat.mean(axis=0, dtype=F64)
        var = (((flat - mean) ** 2).mean(axis=0)).astype(F32)  # population variance (f64, rounded to f32)
        keep = np.zeros(var.size, dtype=bool)
        if k_frac > 0:
            k = int(F32(np.count_nonzero(var)) * F32(k_frac))  # MergeKit: a count tensor × a float is a float32 product
            if k > 0:
                keep[topk_mask_idx(np.abs(var), k)] = True
        T = T * keep.reshape((1,) + B.shape)
    S = T.sum(axis=0)
    maj = np.where(S >= 0, F32(1), F32(-1))
    E = (np.sign(T) == maj).astype(F32)
    s = np.array([float(np.mean(t.astype(F64) ** 2)) for t in T])
    W = s / s.sum() if s.sum() >= 1e-6 else np.full(N, 1.0 / N)
    num = fsum([T[i] * F32(W[i]) * E[i] for i in range(N)])
    den = fsum([F32(W[i]) * E[i] for i in range(N)])
    return B + num / np.maximum(den, F32(1e-6))


def _ram(X, base, gp, plus):
    B = X[base]
    T = [X[i] - B for i in range(len(X)) if i != base]
    eps = float(gp["epsilon"])
    A = [np.abs(t) > eps for t in T]
    c = np.sum(A, axis=0)
    uniq, over = c == 1, c > 1
    cdiv = np.maximum(c, 1).astype(F32)
    out = np.zeros_like(B)
    for t, a in zip(T, A):
        lam = 1.0
        if plus:
            shared = int(np.count_nonzero(a & over))
            un = int(np.count_nonzero(a & uniq))
            rho = shared / max(un, eps)
            lam = 1 + float(gp["r"]) * min(max(rho, 0.0), float(gp["alpha"]))
        out += np.where(a & uniq, F32(lam) * t, 0) + np.where(a & over, t / cdiv, 0)
    return B + out


def m_ram(X, base, pm, gp, ctx):
    return _ram(X, base, gp, False)


def m_ramplus_tl(X, base, pm, gp, ctx):
    return _ram(X, base, gp, True)

# ---- GTA family ----------------------------------------------------------------------------------------


GTA = {  # name: (sparsification, sign consensus)
    "task_arithmetic": (None, False), "ties": ("magnitude", True), "dare_ties": ("random", True),
    "dare_linear": ("random", False), "breadcrumbs": ("outliers", False), "breadcrumbs_ties": ("outliers", True),
    "della": ("della", True), "della_linear": ("della", False),
}


def topk_mask_idx(mag, k):
    """Flat indices of the k largest of mag; ties at the threshold: lowest index first."""
    order = np.argsort(-mag.ravel(), kind="stable")
    return order[:k]


def sparsify(d, kind, p, rescale, key):
    dens = float(p["density"])
    if kind is None or dens >= 1:
        return d
    flat = d.ravel()
    n = flat.size
    mag = np.abs(flat)
    if kind == "magnitude":
        k = int(dens * n)
        if k <= 0:
            raise Fail("ties: density gives k = 0")
        keep = np.zeros(n, dtype=bool)
        keep[topk_mask_idx(mag, k)] = True
    elif kind == "outliers":
        target = int(dens * n)
        n_top = int(float(p["gamma"]) * n)
        n_bot = n - target - n_top
        if n_bot < 0:
            n_top += n_bot
            n_bot = 0
        order = np.argsort(-mag, kind="stable")  # descending; ties lowest index first
        keep = np.zeros(n, dtype=bool)
        keep[order[n_top:n_top + target]] = True  # == MergeKit's idx[n_bot : -n_top]; n_top = 0 -> top target
    elif kind == "random":
        keep = rng_uniform(key, n) < F32(dens)
    elif kind == "della":
        eps = float(p["epsilon"])
        if dens <= 0:
            return np.zeros_like(d)
        if not (dens - eps > 0 and dens + eps < 1):
            raise Fail("della: need 0 < density - epsilon and density + epsilon < 1")
        L = d.shape[-1] if d.ndim else 1
        m2 = mag.reshape(-1, L)
        rank = np.empty(m2.shape, dtype=np.int64)
        order = np.argsort(m2, axis=1, kind="stable")  # ascending, ties by position
        np.put_along_axis(rank, order, np.arange(L)[None, :], axis=1)
        rn = rank / (L - 1) if L > 1 else np.zeros(m2.shape)
        pk = ((dens - eps) + rn * 2 * eps).astype(F32)
        keep = rng_uniform(key, n) < pk.ravel()
    m = np.where(keep, flat, F32(0))
    if rescale:
        before = float(np.sum(mag, dtype=F64))
        after = float(np.sum(np.abs(m), dtype=F64))
        if before >= 1e-7 and after >= 1e-7:
            m = m * F32(before / after)
    return m.reshape(d.shape)


def m_gta(X, base, pm, gp, ctx):
    kind, consensus = GTA[ctx["method"]]
    B = X[base]
    idx = [i for i in range(len(X)) if i != base]
    if not idx:
        return B
    D, w = [], []
    for i in idx:
        d = X[i] - B
        key = rng_key(ctx["seed"], ctx["models"][i], ctx["name"])
        D.append(sparsify(d, kind, pm[i], gp["rescale"], key))
        w.append(F32(pm[i]["weight"]))
    WD = [wi * d for wi, d in zip(w, D)]
    if consensus:
        S = fsum(WD)
        maj = np.where(S >= 0, F32(1), F32(-1))
        Mk = [np.sign(x) == maj for x in WD]
        mixed = fsum([np.where(m, x, F32(0)) for m, x in zip(Mk, WD)])
        div = fsum([np.where(m, wi, F32(0)).astype(F32) for m, wi in zip(Mk, w)])
        div[div == 0] = 1
    else:
        mixed = fsum(WD)
        div = F32(sum(float(x) for x in w))
        if abs(div) < 1e-8:
            div = F32(1)
    if gp["normalize"]:
        mixed = mixed / div
    lam = float(gp["lambda"])
    if lam != 1:
        mixed = mixed * F32(lam)
    return B + mixed


# ---- SVD-based task-vector merges (methods-research.md A7, A8), in float64 with NumPy's own SVD --------

def _tasks(X, base):
    B = X[base]
    return B, [(X[i] - B).astype(F64) for i in range(len(X)) if i != base]


def _is_matrix(x, ctx):
    return x.ndim == 2 and "text_projection" not in ctx["name"]


# Error bounds. graft runs these methods in float32 with LAPACK's sgesdd, whose result depends on the
# BLAS kernels and the CPU (and the spectra of random test matrices make them ill-conditioned: nearly
# equal singular values at a cut, nearly dependent stacked singular vectors before a polar factor).
# The comparison allows, per tensor, the error the algorithm's float32 arithmetic can cause on this
# very input, and no more. It is measured by perturbation (statistical condition estimation, Kenney
# & Laub 1994): the float64 computation is repeated TRIALS times with every SVD's input perturbed by
# a random matrix E of norm ‖E‖₂ = p·u·‖A‖₂ with p = max(m, n) and u = 2⁻²⁴ (the backward error of a
# float32 SVD, LAPACK Users' Guide §4.9, with the classical size factor of Householder reductions),
# and each task vector rounded as float32 arithmetic rounds it (relative u); the largest change of
# the result, times SAFETY, bounds graft's difference on top of the output's own rounding
# (compare()). SAFETY covers directions luckier than the worst: by Kenney & Laub, one random
# direction underestimates by more than a factor γ with probability about 2/(πγ), so all of 3 trials
# do so by more than 4× with probability below 0.5 %. A bound that is not small against the merged delta fails the comparison:
# then it would prove nothing.
U32 = 2.0 ** -24
U64 = 2.0 ** -53
INF = float("inf")
TRIALS, SAFETY = 3, 4.0
_PERTURB = []  # while a trial runs: [numpy Generator]


def _norm2(a, rng):
    """‖a‖₂ by 30 power iterations (within a few % from below, at a fraction of an SVD's cost)."""
    v = rng.standard_normal(a.shape[1])
    for _ in range(30):
        v = a.T @ (a @ v)
        n = np.linalg.norm(v)
        if n == 0:
            return 0.0
        v /= n
    return float(np.linalg.norm(a @ v))


def perturb_svd_input(a, rng):
    """a plus a random matrix of norm max(m, n)·u·‖a‖₂: the backward error of a float32 SVD of a."""
    g = rng.standard_normal(a.shape)  # ‖g‖₂ ≈ √m + √n (Davidson–Szarek)
    return a + g * (max(a.shape) * U32 * _norm2(a, rng) / (math.sqrt(a.shape[0]) + math.sqrt(a.shape[1])))


def _svd(a):
    return np.linalg.svd(perturb_svd_input(a, _PERTURB[0]) if _PERTURB else a, full_matrices=False)


def _polar(a):
    p, _, qh = _svd(a)
    return p @ qh


def _lowrank(X, base, gp, ctx, delta_fn):
    B, tv = _tasks(X, base)
    T = len(tv)
    alpha = float(gp["scaling_factor"])
    if _is_matrix(B, ctx):
        d = delta_fn(tv)
        spread = 0.0
        for trial in range(TRIALS):
            rng = np.random.default_rng([trial, sum(map(ord, ctx["name"]))])
            _PERTURB.append(rng)
            try:
                dp = delta_fn([t * (1 + U32 * rng.standard_normal(t.shape)) for t in tv])
            finally:
                _PERTURB.clear()
            spread = max(spread, np.abs(dp - d).max())
        bnd = SAFETY * spread
    else:
        d = tv[0].copy()
        for i in range(1, len(tv)):
            d += (tv[i] - d) / (i + 1)
        bnd = (2 * T + 2) * U32 * max(np.abs(t).max() for t in tv)  # f32 running mean: rounding per step
    # graft adds α·Δ to θ0 in f32: one more rounding of α·Δ (the sum's is the output's own, compare())
    ctx["bound"] = (abs(alpha) * (bnd + U32 * np.abs(d).max()), abs(alpha) * np.abs(d).max())
    return (B.astype(F64) + alpha * d).astype(F32)


def m_iso_c(X, base, pm, gp, ctx):
    def delta(tv):
        u, s, vh = _svd(sum(tv))
        return s.mean() * (u @ vh)
    return _lowrank(X, base, gp, ctx, delta)


def m_iso_cts(X, base, pm, gp, ctx):
    def delta(tv):
        T = len(tv)
        m, n = tv[0].shape
        r = min(m, n)
        kc = int(r * float(gp["common_space_fraction"]))
        kts = round((r - kc) / T) * T  # Python rounds half to even, as the reference
        kc = r - kts
        s_t = kts // T
        u, s, vh = _svd(sum(tv))
        uc, sc, vc = u[:, :kc], s[:kc], vh[:kc]
        U, S, V = np.zeros((m, r)), np.zeros(r), np.zeros((r, n))
        for t, x in enumerate(tv):
            xt = x - uc @ (uc.T @ x)
            ut, st, vt = _svd(xt)
            U[:, t * s_t:(t + 1) * s_t], S[t * s_t:(t + 1) * s_t], V[t * s_t:(t + 1) * s_t] = ut[:, :s_t], st[:s_t], vt[:s_t]
        U[:, T * s_t:], S[T * s_t:], V[T * s_t:] = uc, sc, vc
        return S.mean() * (_polar(U) @ _polar(V))
    return _lowrank(X, base, gp, ctx, delta)


def m_tsv(X, base, pm, gp, ctx):
    def delta(tv):
        T = len(tv)
        m, n = tv[0].shape
        r = min(m, n)
        k = r // T
        if k == 0:
            return sum(tv)  # graft's guard (the reference would give 0)
        U, S, V = np.zeros((m, r)), np.zeros(r), np.zeros((r, n))
        for t, x in enumerate(tv):
            u, s, vh = _svd(x)
            U[:, t * k:(t + 1) * k], S[t * k:(t + 1) * k], V[t * k:(t + 1) * k] = u[:, :k], s[:k], vh[:k]
        return _polar(U) @ np.diag(S) @ _polar(V)
    return _lowrank(X, base, gp, ctx, delta)


def _pcb_parts(X, base):
    B = X[base]
    idx = [i for i in range(len(X)) if i != base]
    return B, idx, np.stack([(X[i] - B).ravel() for i in idx]).astype(F32)


def _pcb_beta(tv, lo, hi):
    n = tv.shape[0]
    A = np.minimum(np.maximum(np.abs(tv), lo), hi)
    den = hi - lo
    nm = np.where(den > 0, (A - lo) / np.where(den > 0, den, F32(1)), F32(0)).astype(F32)
    col = tv[0].copy()
    for k in range(1, n):
        col = col + tv[k]
    return A, (np.exp(F32(n) * nm ** 2) * np.tanh(tv * col)).astype(F32)


def _kth(v, q):
    """The reference's sorted(v)[int(q)] (int() truncates toward zero; clamped to the last index)."""
    return np.sort(v)[min(max(int(q), 0), v.size - 1)]


def pcb_global(jobs, load, c, r):
    """Whole-model thresholds: per task, |τ| clip bounds and the β drop bound over every merged tensor."""
    parts = [_pcb_parts(load(j), j[2]) for j in jobs]
    n = parts[0][2].shape[0]
    flat = np.concatenate([p[2] for p in parts], axis=1)
    d = flat.shape[1]
    lo = np.array([_kth(np.abs(flat[k]), d * c) for k in range(n)], F32)[:, None]
    hi = np.array([_kth(np.abs(flat[k]), d * (1 - c) - 1) for k in range(n)], F32)[:, None]
    beta = np.concatenate([_pcb_beta(p[2], lo, hi)[1] for p in parts], axis=1)
    bl = np.array([_kth(beta[k], d * (1 - r)) for k in range(n)], F32)[:, None]
    bh = beta.max(axis=1).astype(F32)[:, None]
    return lo, hi, bl, bh


def m_pcb(X, base, pm, gp, ctx):
    """PCB_merge of the official code (pcb-merging.py): order statistics over the whole flattened
    model (ctx["pcb_global"]) or, with per_tensor, over this tensor; a constant row normalises to 0
    (graft's guard for the NaN)."""
    B, idx, tv = _pcb_parts(X, base)
    n, d = tv.shape
    c, r = float(gp["clip_ratio"]), float(gp["pcb_ratio"])
    if ctx.get("pcb_global") is not None:
        lo, hi, bl, bh = ctx["pcb_global"]
    else:
        lo = np.array([_kth(np.abs(tv[k]), d * c) for k in range(n)], F32)[:, None]
        hi = np.array([_kth(np.abs(tv[k]), d * (1 - c) - 1) for k in range(n)], F32)[:, None]
    A, beta = _pcb_beta(tv, lo, hi)
    tc = (np.sign(tv) * A).astype(F32)
    if ctx.get("pcb_global") is None:
        bl = np.array([_kth(beta[k], d * (1 - r)) for k in range(n)], F32)[:, None]
        bh = beta.max(axis=1).astype(F32)[:, None]
    cl = np.minimum(np.maximum(beta, bl), bh)
    den = bh - bl
    scale = np.where(den > 0, (cl - bl) / np.where(den > 0, den, F32(1)), F32(0)).astype(F32)
    lam = np.array([pm[i]["weight"] for i in idx], dtype=F32)[:, None]
    num = np.zeros(d, F32)
    den = np.zeros(d, F32)
    for k in range(n):
        num = num + lam[k] * tc[k] * scale[k]
        den = den + scale[k]
    return (B.ravel() + num / np.maximum(den, F32(1e-12))).reshape(B.shape).astype(F32)


_STATS = {}


def stats_tensor(ctx, path, name):
    """Tensor `name` of a statistics file (relative to the config) as float64, or None."""
    p = os.path.normpath(os.path.join(ctx["cfg_dir"], path))
    if p not in _STATS:
        _STATS[p] = SafeFile(p if p.endswith(".safetensors") else os.path.join(p, "model.safetensors"))
    sf = _STATS[p]
    if name not in sf.tensors:
        return None
    x = to_f32(*sf.raw(name)).astype(F64)
    meta = sf.meta if hasattr(sf, "meta") else {}
    if meta.get("graft_statistics") == "gram" and meta.get("graft_tokens"):
        x = x / float(meta["graft_tokens"])  # graft's files hold Σ x xᵀ over graft_tokens tokens
    return x


def m_regmean(X, base, pm, gp, ctx):
    """RegMean (bloomberg/dataless-model-merging regmean_mean_params) with graft's per-model weights."""
    w = [float(p["weight"]) for p in pm]
    G = [stats_tensor(ctx, pm[i]["gram"], ctx["in_names"][i]) if X[i].ndim == 2 else None for i in range(len(X))]
    if any(g is None for g in G):
        r = sum(F64(w[i]) * X[i].astype(F64) for i in range(len(X))) / sum(w)
        ctx["bound"] = _mean_bound(X, w)
        return r.astype(F32)
    a = float(gp["reduce_non_diagonal"])
    A, Bm = 0, 0
    for i, g in enumerate(G):
        gt = w[i] * (a * g + (1 - a) * np.diag(np.diag(g)))
        A = A + gt
        Bm = Bm + gt @ X[i].astype(F64).T
    sol = np.linalg.solve(A, Bm)
    # graft solves the same system in double (LU, dgesv): backward stable, so each column of the
    # solution is within c·n·u₆₄·κ(A) of the exact one (c = 4 for forming A and B in another order)
    ctx["bound"] = (4 * A.shape[0] * U64 * np.linalg.cond(A) * np.linalg.norm(sol, axis=0).max(), np.abs(sol).max())
    return sol.T.astype(F32)


def _mean_bound(X, w=None):
    """graft's f32 weighted mean Σ w_i x_i / Σ w_i: (n + 2)·u·Σ|w_i x_i| / Σ w_i per element."""
    w = w or [1.0] * len(X)
    mag = sum(abs(wi) * np.abs(x.astype(F64)) for wi, x in zip(w, X)) / abs(sum(w))
    return ((len(X) + 2) * U32 * mag.max(), mag.max())


def stats_norm(ctx, path):
    p = os.path.normpath(os.path.join(ctx["cfg_dir"], path))
    stats_tensor(ctx, path, "")  # opens it
    sf = _STATS[p]
    return math.sqrt(sum(float((to_f32(*sf.raw(k)).astype(F64) ** 2).sum()) for k in sf.tensors))


def m_fisher(X, base, pm, gp, ctx):
    """mmatena/model_merging merging.py: coefficients over the Fisher norms, floor, rhs / lhs (float32)."""
    n = len(X)
    F = [stats_tensor(ctx, pm[i]["fisher"], ctx["in_names"][i]).astype(F32) for i in range(n)]
    c = [float(pm[i]["weight"]) for i in range(n)]
    if gp["normalize_fishers"]:
        c = [c[i] / stats_norm(ctx, pm[i]["fisher"]) for i in range(n)]
    lhs, rhs = np.zeros(X[0].shape, F32), np.zeros(X[0].shape, F32)
    for i in range(n):
        f = F[i]
        if not gp["favor_target_model"] or i == 0:
            f = np.maximum(f, F32(gp["fisher_floor"]))
        cf = F32(c[i]) * f
        lhs, rhs = lhs + cf, rhs + cf * X[i]
    return (rhs / lhs).astype(F32)


def m_mats(X, base, pm, gp, ctx):
    """MaTS blockwise: CG on Σ scale(G_i)·V = Σ scale(G_i)·W_iᵀ as scipy's cg (rtol 1e-5), started from
    task arithmetic (init_lambda) with a base, else the average."""
    idx = [i for i in range(len(X)) if i != base]
    G = [stats_tensor(ctx, pm[i]["gram"], ctx["in_names"][i]) if X[i].ndim == 2 else None for i in idx]
    if any(g is None for g in G):
        ctx["bound"] = _mean_bound([X[i] for i in idx])
        return (sum(X[i].astype(F64) for i in idx) / len(idx)).astype(F32)
    lam = float(gp["model_lambda"])
    sc = [lam * g + (1 - lam) * np.diag(np.diag(g)) for g in G]
    A = sum(sc)
    b = sum(s_ @ X[i].astype(F64).T for s_, i in zip(sc, idx))
    if base is not None:
        B = X[base].astype(F64)
        x = (B + float(gp["init_lambda"]) * sum(X[i].astype(F64) - B for i in idx)).T.copy()
    else:
        x = (sum(X[i].astype(F64) for i in idx) / len(idx)).T.copy()
    r = b - A @ x
    tol = 1e-5 * np.linalg.norm(b)
    p = None
    rho_prev = None
    iters = int(gp["iterations"])
    xs, rn = [x], []  # iterates and residual norms, one step past the stop for the bound below
    k, it = None, 0
    while True:
        rn.append(np.linalg.norm(r))
        if k is None and (rn[it] < tol or it == iters):
            k = it  # the reference's result: iterate k
        rho = float((r * r).sum())
        if k is not None and it == k + 1:
            break
        if rho == 0:
            break
        p = r.copy() if it == 0 else r + (rho / rho_prev) * p
        q = A @ p
        alpha = rho / float((p * q).sum())
        x = x + alpha * p
        r = r - alpha * q
        rho_prev = rho
        xs.append(x)
        it += 1
    # graft runs the same conjugate gradients in double. Rounding in another BLAS kernel moves every
    # iterate by about k·n·u₆₄·κ(A)·‖x‖; it can also flip a stop test whose residual norm sits within
    # that of the tolerance, and then graft stops one iteration earlier or later.
    drift = k * A.shape[0] * U64 * np.linalg.cond(A)
    bnd = 4 * drift * np.linalg.norm(xs[k])
    for j in (k - 1, k):
        if 0 <= j < iters and abs(rn[j] - tol) <= 4 * drift * max(rn[j], tol):
            bnd += np.abs(xs[j + 1] - xs[j]).max() if j + 1 < len(xs) else 0.0
    ctx["bound"] = (bnd, np.abs(xs[k]).max())
    return xs[k].T.astype(F32)


IMPL = {"mats": m_mats, "fisher": m_fisher, "regmean": m_regmean, "pcb": m_pcb, "iso_c": m_iso_c, "iso_cts": m_iso_cts, "tsv": m_tsv, "linear": m_linear, "passthrough": m_passthrough, "slerp": m_slerp, "nuslerp": m_nuslerp,
        "multislerp": m_multislerp, "karcher": m_karcher, "model_stock": m_model_stock, "nearswap": m_nearswap,
        "arcee_fusion": m_arcee_fusion, "sce": m_sce, "ram": m_ram, "ramplus_tl": m_ramplus_tl}
for _n in GTA:
    IMPL[_n] = m_gta

# ---- planning (methods-mergekit.md §1.2–1.4) -----------------------------------------------------------

PRE_PAT = ("embed_tokens", "wte.", "wpe.", "embed_in", "word_embeddings", "tok_embeddings", "embeddings.")


# ---- modules (docs/merge.md "Multi-module models") ----------------------------------------------------

MODULE_MARKS = {
    "text_decoder": ["language_model"], "language_model": ["language_model"],
    "vision_tower": ["vision_tower", "vision_model", "visual"], "vision_model": ["vision_model", "vision_tower", "visual"],
    "multi_modal_projector": ["multi_modal_projector", "visual.merger", "mm_projector"],
    "encoder": ["encoder"], "decoder": ["decoder"], "shared": ["shared"],
}
MODULE_FALLBACK = ["text_decoder", "language_model", "shared", "decoder"]


def module_of(name, listed):
    """The listed module owning tensor `name`; ("!", other) when an unlisted known module owns it."""
    parts = name.split(".")
    for j in range(len(parts)):
        best, blen = None, 0
        cands = [(m, mk, True) for m in listed for mk in MODULE_MARKS.get(m, [m])]
        cands += [(m, mk, False) for m, mks in MODULE_MARKS.items() for mk in mks]
        for m, mk, is_listed in cands:
            k = mk.split(".")
            if parts[j:j + len(k)] == k and len(mk) > blen:
                best, blen = (m, is_listed), len(mk)
        if best:
            return best[0] if best[1] else ("!", best[0])
    for m in MODULE_FALLBACK:
        if m in listed:
            return m
    return ("!", None)



def merge(cfg_path, out_dir, seed=0):
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)
    cdir = os.path.dirname(os.path.abspath(cfg_path))
    method = cfg["merge_method"]
    if method not in METHODS:
        raise Fail("unknown merge_method %s" % method)
    gdef, mdef = METHODS[method]
    top = cfg.get("parameters") or {}

    models, paths = [], {}  # model index order: base first, then sources in order (graft's planner order)

    def open_model(ref):
        p = os.path.realpath(ref if os.path.isabs(ref) else os.path.join(cdir, ref))
        if p not in paths:
            paths[p] = len(models)
            models.append(Model(p))
        return paths[p]

    base = open_model(cfg["base_model"]) if cfg.get("base_model") else None
    if method in BASE_REQUIRED and base is None:
        raise Fail("%s needs base_model" % method)
    # groups: the whole model, or each entry of `modules:` (name, its config, its parameters)
    if "modules" in cfg:
        groups = [(name, g, g.get("parameters") or {}) for name, g in cfg["modules"].items()]
    else:
        groups = [(None, cfg, {})]
    listed = [g[0] for g in groups]

    def owner(nm):
        return None if listed == [None] else module_of(nm, listed)

    def group_slices(g, mod):
        slices = []  # [(slice params, [(model idx, layer start, params)], L)]
        if "models" in g:
            srcs = [(open_model(m["model"]), m.get("parameters") or {}) for m in g["models"]]
            if base is not None and base not in [s[0] for s in srcs]:
                srcs.append((base, {}))
            L = layers_of(srcs[0][0], mod)[1]
            slices.append(({}, [(mi, 0, p) for mi, p in srcs], L))
        else:
            for sl in g["slices"]:
                srcs = []
                for s in sl["sources"]:
                    r = s.get("layer_range")
                    srcs.append((open_model(s["model"]), r[0], s.get("parameters") or {}, r[1] - r[0]))
                slices.append((sl.get("parameters") or {}, [(a, b, c) for a, b, c, _ in srcs], srcs[0][3]))
        return slices

    layer_cache = {}

    def layers_of(mi, mod):
        if (mi, mod) not in layer_cache:
            layer_cache[(mi, mod)] = Model.layers([nm for nm in models[mi].names if owner(nm) == mod])
        return layer_cache[(mi, mod)]

    all_slices = [group_slices(g, name) for name, g, _ in groups]
    donor = base if base is not None else all_slices[0][0][1][0][0]
    for nm in models[donor].names:
        if isinstance(owner(nm), tuple):
            raise Fail("tensor %s belongs to no listed module" % nm)
    out_dt = cfg.get("out_dtype") or cfg.get("dtype")
    if out_dt:
        out_dt = OUT_NAMES[out_dt.replace("torch.", "")]

    def resolve(sl_params, mod_params, srcs, in_names, out_name, t):
        gp = {}
        for k, d in gdef.items():
            v = None
            for level in (sl_params, mod_params, top):
                if v is None:
                    v = evaluate(level.get(k), out_name, t)
            if v is None:
                if d is REQ:
                    raise Fail("missing parameter %s for %s" % (k, out_name))
                v = d
            gp[k] = v
        pm = []
        for (mi, _, sp), nm in zip(srcs, in_names):
            p = {}
            for k, d in mdef.items():
                v = evaluate(sp.get(k), nm, t)
                for level in (sl_params, mod_params, top):
                    if v is None:
                        v = evaluate(level.get(k), nm, t)
                if v is None:
                    if d is REQ and mi != base:
                        raise Fail("missing parameter %s for %s" % (k, nm))
                    v = None if d is REQ else d
                p[k] = v
            pm.append(p)
        return gp, pm

    out = []

    def do_tensor(out_name, sl_params, mod_params, srcs, in_names, t):
        keep = [(s, nm) for s, nm in zip(srcs, in_names) if nm in models[s[0]].where]
        if not keep:
            return
        srcs, in_names = [k[0] for k in keep], [k[1] for k in keep]
        # deduplicate the same model (MergeKit's inputs are a dict keyed by model)
        seen, s2, n2 = set(), [], []
        for s, nm in zip(srcs, in_names):
            if s[0] not in seen:
                seen.add(s[0]), s2.append(s), n2.append(nm)
        srcs, in_names = s2, n2
        mids = [s[0] for s in srcs]
        bpos = mids.index(base) if base in mids else None
        gp, pm = resolve(sl_params, mod_params, srcs, in_names, out_name, t)
        ref = mids.index(base) if bpos is not None else 0
        odt = out_dt or models[mids[ref]].dtype(in_names[ref])
        out.append((out_name, odt, models[mids[ref]].shape(in_names[ref]), (mids, in_names, bpos, pm, gp)))

    glob = {}
    bounds = {}  # name: [absolute error bound, magnitude of what the bound is about] (methods that set one)

    def compute(out_name, odt, shape, job):
        mids, in_names, bpos, pm, gp = job
        X = [models[m].load(nm) for m, nm in zip(mids, in_names)]
        if bpos is not None and len(mids) == 1 and method != "passthrough":
            r = X[0]  # only the base has it: copied
        else:
            ctx = {"method": method, "name": out_name, "models": mids, "seed": seed, "cfg_dir": cdir, "in_names": in_names,
                   "pcb_global": glob.get("pcb")}
            r = IMPL[method](X, bpos, pm, gp, ctx)
            if "bound" in ctx:
                bounds[out_name] = [float(v) for v in ctx["bound"]]
        return encode(np.asarray(r, dtype=F32).reshape(shape), odt)

    def loose(sl, mod, mod_params, pre):
        sp, srcs, _ = sl
        done = set(o[0] for o in out)
        for s in srcs:
            m = models[s[0]]
            prefix = layers_of(s[0], mod)[0]
            for nm in m.names:
                sp_ = split_layer(nm)
                if owner(nm) != mod or (sp_ is not None and sp_[0] == prefix) or any(p in nm for p in PRE_PAT) != pre or nm in done:
                    continue
                done.add(nm)
                do_tensor(nm, sp, mod_params, srcs, [nm] * len(srcs), 0.0)

    for (mod, _, mod_params), slices in zip(groups, all_slices):
        loose(slices[0], mod, mod_params, True)
        out_layer = 0
        for sl in slices:
            sp, srcs, L = sl
            prefixes = [layers_of(s[0], mod)[0] for s in srcs]
            for k in range(L):
                t = 1.0 if L == 1 else k / (L - 1)
                rests = []
                for s, pf in zip(srcs, prefixes):
                    for nm in models[s[0]].names:
                        x = split_layer(nm)
                        if x and owner(nm) == mod and x[0] == pf and x[1] == s[1] + k and x[2] not in rests:
                            rests.append(x[2])
                for rest in rests:
                    in_names = ["%s.%d.%s" % (pf, s[1] + k, rest) for s, pf in zip(srcs, prefixes)]
                    do_tensor("%s.%d.%s" % (prefixes[0], out_layer, rest), sp, mod_params, srcs, in_names, t)
                out_layer += 1
        loose(slices[-1], mod, mod_params, False)
    if method == "pcb" and out and not out[0][3][4]["per_tensor"]:
        merged = [o[3] for o in out if not (o[3][2] is not None and len(o[3][0]) == 1)]
        g0 = merged[0][4]
        glob["pcb"] = pcb_global(merged, lambda j: [models[m].load(nm) for m, nm in zip(j[0], j[1])], float(g0["clip_ratio"]), float(g0["pcb_ratio"]))
    os.makedirs(out_dir, exist_ok=True)
    # plan complete: header first, then one tensor at a time (memory: the inputs of one tensor)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), [(o[0], o[1], o[2]) for o in out],
                      lambda i: compute(*out[i]))
    if bounds:
        with open(os.path.join(out_dir, "bounds.json"), "w") as f:
            json.dump(bounds, f, indent=0, sort_keys=True)
    return len(out)

# ---- comparison ------------------------------------------------------------------------------------------


def ordered_bits(bits, nbits):
    b = bits.astype(np.int64)
    sign = np.int64(1) << (nbits - 1)
    return np.where(b & sign, -(b & (sign - 1)), b)


def ulp(x, dtype):
    """The spacing of dtype's numbers at |x| (float64 array)."""
    if dtype == "F32":
        return np.spacing(np.abs(x).astype(F32)).astype(F64)
    if dtype == "F16":
        return np.spacing(np.abs(x).astype(np.float16)).astype(F64)
    e = np.floor(np.log2(np.maximum(np.abs(x), 2.0 ** -126)))  # bf16: 8 significant bits
    return 2.0 ** (e - 7)


BOUND_POWER = 0.01  # a bound over 1 % of the magnitude it is about would prove nothing


def compare(got_dir, ref_dir, rtol=1e-5, ulps=1, max_bad_frac=0.0):
    """Returns (ok, message). f32: |got-ref| <= rtol*max(1,|ref|); f16/bf16: <= `ulps` ulps.
    max_bad_frac: fraction of elements per tensor allowed over that (documented legitimate differences).
    Tensors with an error bound from the reference (REF_DIR/bounds.json: methods whose result depends on
    the BLAS/LAPACK kernels) instead allow |got-ref| <= bound + the output's rounding (2 ulps in f32: the
    reference's and graft's last rounding; 1 ulp in f16/bf16: both round the same f32-level values)."""
    G, R = Model(got_dir), Model(ref_dir)
    gn, rn = set(G.where), set(R.where)
    if gn != rn:
        return False, "tensor sets differ: only graft %s, only ref %s" % (sorted(gn - rn)[:3], sorted(rn - gn)[:3])
    bpath = os.path.join(ref_dir, "bounds.json")
    bounds = json.load(open(bpath)) if os.path.exists(bpath) else {}
    worst, worst_info, failed = (-1.0, False), "", False
    bworst, bworst_info = -1.0, ""
    for name in sorted(rn):
        gd, ga = G.where[name].raw(name)
        rd, ra = R.where[name].raw(name)
        if gd != rd or list(ga.shape) != list(ra.shape):
            return False, "%s: dtype/shape %s%s vs ref %s%s" % (name, gd, list(ga.shape), rd, list(ra.shape))
        gf, rf = to_f32(gd, ga).astype(F64), to_f32(rd, ra).astype(F64)
        if name in bounds:
            b, mag = bounds[name]
            if not b <= BOUND_POWER * mag:
                return False, "%s: error bound %.3g is not small against %.3g (ill-conditioned test data)" % (name, b, mag)
            allow = b + (2 if gd == "F32" else 1) * ulp(np.maximum(np.abs(gf), np.abs(rf)), gd)
            err = np.abs(gf - rf) / allow
            err = np.where(np.isnan(gf) | np.isnan(rf), np.inf, err).ravel()
            j = int(np.argmax(err)) if err.size else 0
            if err.size and err[j] > 1:
                failed = True
            if err.size and (err[j] > 1, err[j]) > (bworst > 1, bworst):
                bworst = err[j]
                bworst_info = "%s[%d] graft %.9g ref %.9g (%.3g of the allowed %.3g; bound %.3g = %.2g of max %.3g)" % (
                    name, j, gf.ravel()[j], rf.ravel()[j], err[j], allow.ravel()[j], b, b / mag if mag else 0, mag)
            continue
        if gd == "F32":
            err, lim, unit = np.abs(gf - rf) / np.maximum(1.0, np.abs(rf)), rtol, "rel"
        else:
            err = np.abs(ordered_bits(ga.view(np.uint16), 16) - ordered_bits(ra.view(np.uint16), 16)).astype(F64)
            lim, unit = ulps, "ulp"
        ng, nr = np.isnan(gf), np.isnan(rf)
        err = np.where(ng & nr, 0.0, np.where(ng | nr, np.inf, err)).ravel()
        if not err.size:
            continue
        bad = int(np.count_nonzero(err > lim))
        fail = bad > max_bad_frac * err.size
        j = int(np.argmax(err))
        failed |= fail
        if (fail, err[j]) > worst:
            worst = (fail, err[j])
            worst_info = "%s[%d] graft %.9g ref %.9g (%s diff %.3g, %d/%d elements over %g)" % (
                name, j, gf.ravel()[j], rf.ravel()[j], unit, err[j], bad, err.size, lim)
    msg = []
    if bworst_info:
        msg.append("worst against the bound: " + bworst_info)
    if worst_info:
        msg.append("worst " + worst_info)
    return not failed, "; ".join(msg) if msg else "no tensors"


def compare_opts(argv):
    kw, opts = {}, {"--rtol": "rtol", "--ulps": "ulps", "--max-bad-frac": "max_bad_frac"}
    for i in range(0, len(argv) - 1, 2):
        if argv[i] in opts:
            kw[opts[argv[i]]] = float(argv[i + 1])
    return kw


def batch(path):
    """One process for a whole check.sh run (NumPy is imported once): each line of `path` is a JSON
    object {name, config, ref, args, compare, got: [[label, dir], ...]}; merges the reference and
    prints PASS/FAIL per graft output."""
    for line in open(path):
        job = json.loads(line)
        args = job["args"]
        seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 0
        try:
            merge(job["config"], job["ref"], seed)
        except Exception as e:  # noqa: BLE001 — reported as the config's failure
            for label, _ in job["got"]:
                print("FAIL %-34s merge_ref.py failed: %s" % (label, e), flush=True)
            continue
        for label, got in job["got"]:
            try:
                ok, msg = compare(got, job["ref"], **compare_opts(job["compare"]))
            except Exception as e:  # noqa: BLE001
                ok, msg = False, "comparison failed: %s" % e
            print("%s %-34s %s" % ("PASS" if ok else "FAIL", label, msg), flush=True)
    return 0


def main(argv):
    if len(argv) == 2 and argv[0] == "--batch":
        return batch(argv[1])
    if len(argv) >= 1 and argv[0] == "--compare":
        args, kw, i = [], {}, 1
        opts = {"--rtol": "rtol", "--ulps": "ulps", "--max-bad-frac": "max_bad_frac"}
        while i < len(argv):
            if argv[i] in opts:
                kw[opts[argv[i]]] = float(argv[i + 1])
                i += 2
            else:
                args.append(argv[i])
                i += 1
        ok, msg = compare(args[0], args[1], **kw)
        print(msg)
        return 0 if ok else 1
    seed = 0
    if "--seed" in argv:
        i = argv.index("--seed")
        seed = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    try:
        merge(argv[0], argv[1], seed)
    except Fail as e:
        sys.stderr.write("merge_ref: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
