#!/usr/bin/python3
"""A fine-tune whose deltas are low-rank plus noise, as LoRA-style fine-tunes are (for tests and benches
of extract-lora's SVD routes).

    lowrank.py BASE_DIR OUT_DIR RANK SCALE NOISE SEED [DECAY]

Every 2-D floating tensor W [m, n] of BASE_DIR's single model.safetensors (F32 or BF16) becomes
W + U·diag(s)·Vᵀ + NOISE·N(0, 1), U and V orthonormal random [m, RANK] / [n, RANK], s_j = SCALE·DECAY^j
(a decaying spectrum, DECAY 0.8 by default); 1-D tensors are copied. Side files (config.json, tokenizer…) are copied.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np


def bf16_to_f32(u):
    return (u.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(f):
    u = f.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def main(a):
    if len(a) not in (6, 7):
        sys.stderr.write(__doc__)
        return 2
    src, dst, rank, scale, noise, seed = a[0], a[1], int(a[2]), float(a[3]), float(a[4]), int(a[5])
    decay = float(a[6]) if len(a) == 7 else 0.8
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if f != "model.safetensors" and os.path.isfile(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    b = open(os.path.join(src, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = bytearray(b)
    rng = np.random.default_rng(seed)
    for name in sorted(k for k in h if k != "__metadata__"):
        t = h[name]
        lo, hi = t["data_offsets"]
        if len(t["shape"]) != 2 or t["dtype"] not in ("F32", "BF16"):
            continue
        m, k = t["shape"]
        raw = np.frombuffer(b[8 + n + lo:8 + n + hi], dtype=np.float32 if t["dtype"] == "F32" else np.uint16)
        W = (raw if t["dtype"] == "F32" else bf16_to_f32(raw)).reshape(m, k).astype(np.float32)
        r = min(rank, m, k)
        U, _ = np.linalg.qr(rng.standard_normal((m, r), dtype=np.float32))
        V, _ = np.linalg.qr(rng.standard_normal((k, r), dtype=np.float32))
        s = (scale * decay ** np.arange(r)).astype(np.float32)
        W = W + (U * s) @ V.T + noise * rng.standard_normal((m, k), dtype=np.float32)
        enc = W.astype(np.float32).tobytes() if t["dtype"] == "F32" else f32_to_bf16(W).tobytes()
        out[8 + n + lo:8 + n + hi] = enc
    open(os.path.join(dst, "model.safetensors"), "wb").write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
