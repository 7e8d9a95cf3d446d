#!/usr/bin/python3
"""Function-space merges of MLPs for bench/evolve-family.sh (docs/eval.md, "Why one model stops there").

    parallel-mlp.py ATTN OUT W MODEL...

OUT is ATTN (a merged Llama folder: its attention, norms and embeddings) with every layer's MLP
replaced by the concatenation of the MODELs' MLPs, each one's post-attention norm folded into its
gate/up rows and its down_proj scaled by its weight: the MLP's output is sum_i w_i MLP_i(x), an
average of functions rather than of weights. W is one weight for every MODEL, or a comma-separated
list. Written in F32 with intermediate_size = the sum of the MODELs'.
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from lora_ref import load  # noqa: E402
from merge_ref import write_safetensors  # noqa: E402


def main():
    attn, out, ws, models = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
    ws = [float(w) for w in (ws * len(models) if len(ws) == 1 else ws)]
    if len(ws) != len(models):
        sys.exit("parallel-mlp.py: %d weights for %d models" % (len(ws), len(models)))
    t, xs = load(attn), [load(m) for m in models]
    cfg = json.load(open(os.path.join(attn, "config.json")))
    for layer in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        norms = [x[p + "post_attention_layernorm.weight"][None, :] for x in xs]
        t[p + "mlp.gate_proj.weight"] = np.concatenate([x[p + "mlp.gate_proj.weight"] * g for x, g in zip(xs, norms)])
        t[p + "mlp.up_proj.weight"] = np.concatenate([x[p + "mlp.up_proj.weight"] * g for x, g in zip(xs, norms)])
        t[p + "mlp.down_proj.weight"] = np.concatenate([x[p + "mlp.down_proj.weight"] * w for x, w in zip(xs, ws)], axis=1)
        t[p + "post_attention_layernorm.weight"] = np.ones_like(t[p + "post_attention_layernorm.weight"])
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(attn, out, ignore=shutil.ignore_patterns("*.safetensors", "model.safetensors.index.json"))
    cfg["intermediate_size"] = sum(json.load(open(os.path.join(m, "config.json")))["intermediate_size"] for m in models)
    cfg["torch_dtype"] = "float32"
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    names = sorted(t)
    write_safetensors(os.path.join(out, "model.safetensors"), [(n, "F32", t[n].shape) for n in names],
                      lambda i: t[names[i]].astype(np.float32))


if __name__ == "__main__":
    main()
