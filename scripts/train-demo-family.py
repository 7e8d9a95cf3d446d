#!/usr/bin/python3
"""Train the demo's model family (issue 24): a byte-level Llama base of ~0.8 M parameters and three
domain fine-tunes, on text this repository holds, with fixed seeds.

    /usr/bin/python3 scripts/train-demo-family.py [OUT]      (default demo/family; ~16 min on 2 cores)

Needs Debian's python3-torch (and numpy); `make demo` does not run it — it uses the committed result.

- Domains: `c` (the C sources, src/ and include/), `docs` (docs/*.md and README.md, English prose) and
  `python` (the Python references, tests/ref/*.py). Files are sorted; every fifth one is held out,
  and the first 12 KiB of each domain's held-out files become OUT/eval/DOMAIN.txt (what the demo
  scores), the first 12 KiB of its training files OUT/calib/DOMAIN.txt (the demo's RegMean Grams).
- Tokens are bytes (ids 0–255; 256 = <s> begins every window, 257 = </s>): a byte-level BPE
  tokenizer.json without merges, which graft and llama.cpp both read.
- The model is transformers' LlamaForCausalLM, written out here (RMSNorm, rotate-half RoPE θ = 10000,
  grouped-query attention, SwiGLU, tied embeddings): hidden 128, 4 layers, 4 heads / 2 KV heads,
  intermediate 352, vocabulary 258, context 256. Its folders (config.json, model.safetensors in
  BF16, tokenizer files) load in transformers and in graft alike.
- base: 1000 AdamW steps (lr 3e-3, cosine to 10 %, batch 16 windows of 128 tokens, weight decay 0.1)
  on the three domains in equal parts; each fine-tune: 300 steps from base on its domain alone
  (lr 1e-3). Seeds are fixed: the same torch build gives the same bytes.
"""
import json
import math
import os
import struct
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
from tok_ref import B2U  # noqa: E402  GPT-2's byte → character table of byte-level BPE vocabularies
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "demo", "family")
H, L, NH, NKV, FF, V, CTX, THETA, EPS = 128, 4, 4, 2, 352, 258, 256, 10000.0, 1e-5
HD = H // NH
BOS, EOS = 256, 257
SEQ, BATCH = 128, 16


def files(domain):
    out = []
    if domain == "c":
        for top in ("src", "include"):
            for d, _, fs in os.walk(os.path.join(ROOT, top)):
                out += [os.path.join(d, f) for f in fs if f.endswith((".c", ".h"))]
    elif domain == "docs":
        out = [os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")]
        out.append(os.path.join(ROOT, "README.md"))
    else:
        out = [os.path.join(ROOT, "tests", "ref", f) for f in os.listdir(os.path.join(ROOT, "tests", "ref")) if f.endswith(".py")]
    return sorted(out)


def split(domain):
    fs = files(domain)
    held = [f for i, f in enumerate(fs) if i % 5 == 4]
    train = [f for i, f in enumerate(fs) if i % 5 != 4]
    read = lambda lst: b"".join(open(f, "rb").read() for f in lst)
    return read(train), read(held)


class RMSNorm(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight


def rope(x, cos, sin):  # transformers' rotate_half convention
    a, b = x[..., :HD // 2], x[..., HD // 2:]
    return x * cos + torch.cat((-b, a), -1) * sin


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(H), RMSNorm(H)
        self.q_proj = torch.nn.Linear(H, NH * HD, bias=False)
        self.k_proj = torch.nn.Linear(H, NKV * HD, bias=False)
        self.v_proj = torch.nn.Linear(H, NKV * HD, bias=False)
        self.o_proj = torch.nn.Linear(NH * HD, H, bias=False)
        self.gate_proj = torch.nn.Linear(H, FF, bias=False)
        self.up_proj = torch.nn.Linear(H, FF, bias=False)
        self.down_proj = torch.nn.Linear(FF, H, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, NH, HD).transpose(1, 2)
        k = self.k_proj(h).view(B, T, NKV, HD).transpose(1, 2)
        v = self.v_proj(h).view(B, T, NKV, HD).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k, v = k.repeat_interleave(NH // NKV, 1), v.repeat_interleave(NH // NKV, 1)
        a = (q @ k.transpose(-1, -2)) / math.sqrt(HD) + mask
        o = (a.softmax(-1) @ v).transpose(1, 2).reshape(B, T, NH * HD)
        x = x + self.o_proj(o)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(torch.nn.functional.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(V, H)
        self.layers = torch.nn.ModuleList(Layer() for _ in range(L))
        self.norm = RMSNorm(H)
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        T = ids.shape[1]
        inv = 1.0 / THETA ** (torch.arange(0, HD, 2, dtype=torch.float32) / HD)
        f = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        cos, sin = torch.cat((f, f), -1).cos(), torch.cat((f, f), -1).sin()
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x) @ self.embed_tokens.weight.T  # tied lm_head


def batches(data, gen):
    """BATCH windows: <s> then SEQ − 1 bytes of a random domain (equal parts) at a random offset."""
    while True:
        ids = torch.empty(BATCH, SEQ, dtype=torch.long)
        ids[:, 0] = BOS
        for b in range(BATCH):
            d = data[int(torch.randint(len(data), (1,), generator=gen))]
            o = int(torch.randint(len(d) - SEQ, (1,), generator=gen))
            ids[b, 1:] = d[o:o + SEQ - 1]
        yield ids


def train(model, data, steps, lr, seed):
    gen = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    it = batches(data, gen)
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))
        ids = next(it)
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s % 100 == 0 or s == steps - 1:
            print("  step %4d  loss %.3f" % (s, loss.item()), flush=True)


def save(model, d):
    os.makedirs(d, exist_ok=True)
    sd = {"model.embed_tokens.weight": model.embed_tokens.weight, "model.norm.weight": model.norm.weight}
    for i, ly in enumerate(model.layers):
        p = "model.layers.%d." % i
        sd.update({p + "input_layernorm.weight": ly.input_layernorm.weight, p + "post_attention_layernorm.weight": ly.post_attention_layernorm.weight,
                   p + "self_attn.q_proj.weight": ly.q_proj.weight, p + "self_attn.k_proj.weight": ly.k_proj.weight,
                   p + "self_attn.v_proj.weight": ly.v_proj.weight, p + "self_attn.o_proj.weight": ly.o_proj.weight,
                   p + "mlp.gate_proj.weight": ly.gate_proj.weight, p + "mlp.up_proj.weight": ly.up_proj.weight,
                   p + "mlp.down_proj.weight": ly.down_proj.weight})
    head, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k in sorted(sd):
        raw = sd[k].detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
        head[k] = {"dtype": "BF16", "shape": list(sd[k].shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hj = json.dumps(head, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": FF, "num_hidden_layers": L,
           "num_attention_heads": NH, "num_key_value_heads": NKV, "vocab_size": V, "max_position_embeddings": CTX, "rms_norm_eps": EPS,
           "rope_theta": THETA, "hidden_act": "silu", "tie_word_embeddings": True, "bos_token_id": BOS, "eos_token_id": EOS,
           "attention_bias": False, "mlp_bias": False, "torch_dtype": "bfloat16"}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": BOS, "eos_token_id": EOS}, open(os.path.join(d, "generation_config.json"), "w"), indent=2)
    special = lambda i, s: {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [special(BOS, "<s>"), special(EOS, "</s>")],
           "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
           "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                     "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": {B2U[b]: b for b in range(256)}, "merges": []}}
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
    json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "model_max_length": CTX,
               "tokenizer_class": "PreTrainedTokenizerFast"}, open(os.path.join(d, "tokenizer_config.json"), "w"), indent=2)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    domains = ["c", "docs", "python"]
    train_data, held = {}, {}
    for dom in domains:
        tr, he = split(dom)
        train_data[dom] = torch.tensor(list(tr), dtype=torch.long)
        held[dom] = he
        for sub, text in (("eval", he), ("calib", tr)):
            os.makedirs(os.path.join(OUT, sub), exist_ok=True)
            open(os.path.join(OUT, sub, dom + ".txt"), "wb").write(text[:12288].decode("utf-8", "ignore").encode())
        print("%s: %d training bytes, %d held out" % (dom, len(tr), len(he)), flush=True)
    base = Llama()
    print("base: %d parameters" % sum(p.numel() for p in base.parameters()), flush=True)
    train(base, [train_data[d] for d in domains], 1000, 3e-3, 1)
    save(base, os.path.join(OUT, "base"))
    for i, dom in enumerate(domains):
        ft = Llama()
        ft.load_state_dict(base.state_dict())
        print("fine-tune %s:" % dom, flush=True)
        train(ft, [train_data[dom]], 300, 1e-3, 10 + i)
        save(ft, os.path.join(OUT, dom))


if __name__ == "__main__":
    main()
