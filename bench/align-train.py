#!/usr/bin/python3
"""A second byte-level base, trained like demo/family/base (scripts/train-demo-family.py: same data,
architecture and schedule) but from another initialisation and batch order — an independently
trained model for bench/align.sh. Usage: bench/align-train.py OUT [INIT_SEED] [DATA_SEED]"""
import importlib.util
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out, init_seed, data_seed = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 7, int(sys.argv[3]) if len(sys.argv) > 3 else 2
argv, sys.argv = sys.argv, [sys.argv[0], out]
spec = importlib.util.spec_from_file_location("fam", os.path.join(ROOT, "scripts", "train-demo-family.py"))
fam = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fam)
torch.set_num_threads(2)
data = [torch.tensor(list(fam.split(d)[0]), dtype=torch.long) for d in ("c", "docs", "python")]
torch.manual_seed(init_seed)
m = fam.Llama()
fam.train(m, data, 1000, 3e-3, data_seed)
fam.save(m, out)
