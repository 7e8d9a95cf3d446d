#!/usr/bin/python3
"""A BPE-tokenized donor for bench/tokensurgeon.sh: a byte-level BPE tokenizer (GPT-2 pre-split, MERGES
merges) trained on the demo family's training text, and a model of the demo base's architecture
trained on that text with it (scripts/train-demo-family.py's model, schedule and data; 1000 steps).
Ids: bytes 0–255 as the demo base has them, <s> 256, </s> 257, merged tokens from 258 — so the two
vocabularies share the bytes and the special tokens and differ by the merges.
Usage: bench/tokensurgeon-train.py OUT [MERGES]"""
import importlib.util
import json
import os
import sys

import regex
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
from tok_ref import GPT2, train as bpe_train  # noqa: E402

out, n_merges = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 512
sys.argv = [sys.argv[0], out]
spec = importlib.util.spec_from_file_location("fam", os.path.join(ROOT, "scripts", "train-demo-family.py"))
fam = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fam)
torch.set_num_threads(2)
B2U = fam.B2U
texts = [fam.split(d)[0].decode("utf-8", "replace") for d in ("c", "docs", "python")]
words = {}
for t in texts:
    for w in regex.findall(GPT2, t):
        w = "".join(B2U[b] for b in w.encode())
        words[w] = words.get(w, 0) + 1
vocab, merges = bpe_train(words, n_merges, [B2U[b] for b in range(256)])
ids = {B2U[b]: b for b in range(256)}
for tkn in vocab[256:]:
    ids[tkn] = len(ids) + 2  # after <s> 256 and </s> 257
rank = {m: i for i, m in enumerate(merges)}
cache = {}


def enc_word(w):
    if w not in cache:
        sym = list(w)
        while len(sym) > 1:
            best = min(((rank.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(sym, sym[1:]))))
            if best[0] == 1 << 30:
                break
            i = best[1]
            sym[i:i + 2] = [sym[i] + sym[i + 1]]
        cache[w] = [ids[s] for s in sym]
    return cache[w]


data = []
for t in texts:
    toks = []
    for w in regex.findall(GPT2, t):
        toks += enc_word("".join(B2U[b] for b in w.encode()))
    data.append(torch.tensor(toks, dtype=torch.long))
    print("%d bytes → %d tokens" % (len(t.encode()), len(toks)), flush=True)
fam.V = 258 + len(vocab) - 256
torch.manual_seed(3)
m = fam.Llama()
fam.train(m, data, 1000, 3e-3, 4)
fam.save(m, out)
special = lambda i, s: {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [special(256, "<s>"), special(257, "</s>")], "normalizer": None,
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}, "post_processor": None,
       "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
       "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
                 "byte_fallback": False, "ignore_merges": False, "vocab": ids, "merges": ["%s %s" % mm for mm in merges]}}
json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
