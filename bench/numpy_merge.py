#!/usr/bin/python3
"""Baseline for bench/merge.sh: a straightforward NumPy merge, per tensor, the way MergeKit does it
with torch (load every model's tensor, stack, compute in float32, argsort for magnitude top-k, write).

Usage: numpy_merge.py METHOD OUT.safetensors BASE_DIR MODEL_DIR... [--density D] [--seed S]
METHOD: linear | task_arithmetic | ties | dare_ties. Weights are 1/len(models) (linear) or 1 (others);
ties/dare_ties use normalize=true. Inputs: BF16/F16/F32 safetensors folders (single file or index).
"""
import json
import os
import struct
import sys

import numpy as np


def open_model(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    tensors = {}
    for f in files:
        path = os.path.join(d, f)
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            hdr = json.loads(fh.read(n))
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        for name, info in hdr.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            tensors[name] = (info["dtype"], info["shape"], mm[8 + n + b:8 + n + e])
    return tensors


def to_f32(t):
    dtype, shape, raw = t
    if dtype == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if dtype == "F16":
        return raw.view(np.float16).astype(np.float32).reshape(shape)
    return np.array(raw.view(np.float32)).reshape(shape)


def to_bf16(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), r)


def magnitude_mask(d, density):
    k = int(density * d.size)
    mask = np.zeros(d.size, dtype=bool)
    if k > 0:
        mask[np.argsort(-np.abs(d).reshape(-1), kind="stable")[:k]] = True
    return mask.reshape(d.shape)


def dare_mask(d, density, rng):
    return rng.random(d.shape, dtype=np.float32) < density


def merge(method, base, xs, density, rng):
    if method == "linear":
        return sum(xs) / len(xs)
    deltas = [x - base for x in xs]
    if method == "task_arithmetic":
        return base + sum(deltas)
    if method == "ties":
        deltas = [d * magnitude_mask(d, density) for d in deltas]
    else:  # dare_ties: drop at random, rescale by 1/density
        deltas = [d * dare_mask(d, density, rng) / density for d in deltas]
    st = np.stack(deltas)
    sign = np.sign(st.sum(axis=0))
    sign[sign == 0] = 1
    keep = np.sign(st) == sign
    mixed = (st * keep).sum(axis=0)
    div = keep.astype(np.float32).sum(axis=0)
    div[div == 0] = 1
    return base + mixed / div


def main():
    args = sys.argv[1:]
    density, seed = 0.5, 0
    if "--density" in args:
        i = args.index("--density"); density = float(args[i + 1]); del args[i:i + 2]
    if "--seed" in args:
        i = args.index("--seed"); seed = int(args[i + 1]); del args[i:i + 2]
    method, out, base_dir, dirs = args[0], args[1], args[2], args[3:]
    base = open_model(base_dir)
    models = [open_model(d) for d in dirs]
    rng = np.random.default_rng(seed)
    header, blobs, off = {}, [], 0
    for name in sorted(base):
        b = to_f32(base[name])
        xs = [to_f32(m[name]) for m in models]
        data = to_bf16(merge(method, b, xs, density, rng)).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(b.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)


if __name__ == "__main__":
    main()
