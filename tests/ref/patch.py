#!/usr/bin/python3
"""Overwrite float32 elements of tensors in a .safetensors file in place (test inputs holding NaN, Inf or
huge values).
    patch.py FILE NAME_REGEX VALUE [INDEX...]    every F32 tensor whose name matches (re.search); the
                                                 listed flat indices, or every element; VALUE: any float
                                                 Python reads (nan, inf, 1e38)
"""
import json
import re
import struct
import sys


def main(a):
    if len(a) < 3:
        sys.stderr.write(__doc__)
        return 2
    path, rx, val, idx = a[0], re.compile(a[1]), struct.pack("<f", float(a[2])), [int(i) for i in a[3:]]
    b = bytearray(open(path, "rb").read())
    n = struct.unpack("<Q", b[:8])[0]
    hits = 0
    for name, t in json.loads(b[8:8 + n]).items():
        if name == "__metadata__" or t["dtype"] != "F32" or not rx.search(name):
            continue
        lo, hi = t["data_offsets"]
        for i in idx or range((hi - lo) // 4):
            b[8 + n + lo + 4 * i:8 + n + lo + 4 * i + 4] = val
        hits += 1
    open(path, "wb").write(b)
    return 0 if hits else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
