#!/usr/bin/python3
"""An independent GGUF reader and check of `graft convert --to gguf` (tests/gguf-e2e.sh).

  gguf_ref.py check HF_FOLDER FILE.gguf TYPE    every tensor of the HF folder is in the file under
        llama.cpp's name, q/k rows permuted as llama.cpp's converter does (Llama/Mistral), 1-D tensors
        F32, matrices TYPE (f32, f16, bf16: exact rounding; q8_0, q4_0: the bytes of ggml's reference
        quantizers, recomputed here; a quantized type falls back to F16 when rows are not multiples of
        32); metadata from config.json; the tokenizer's tokens by id; merges for byte-level BPE.
  gguf_ref.py q8vec FILE.gguf NAME OUT.gguf    a copy whose 1-D F32 tensor NAME is stored as Q8_0 (its
        values quantized, the later tensors moved up) — a file llama.cpp's converter never writes.
  gguf_ref.py kvedit FILE.gguf OUT.gguf [-KEY | KEY=f32:V | KEY=u32:V | KEY=str:V | KEY=bool:0|1]...   a copy with
        metadata keys removed or set (tensor infos and data as they were, the data re-aligned).
"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_ref import load  # noqa: E402

TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 8: ("Q8_0", 32, 34), 30: ("BF16", 1, 2)}


def read_gguf(path):
    b = open(path, "rb").read()
    assert b[:4] == b"GGUF", "magic"
    ver, nt, nkv = struct.unpack_from("<IQQ", b, 4)
    at = 24

    def rstr():
        nonlocal at
        n, = struct.unpack_from("<Q", b, at)
        s = b[at + 8:at + 8 + n].decode("utf-8")
        at += 8 + n
        return s
    fmt = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def rval(t):
        nonlocal at
        if t == 8:
            return rstr()
        if t == 9:
            et, n = struct.unpack_from("<IQ", b, at)
            at += 12
            return [rval(et) for _ in range(n)]
        v, = struct.unpack_from("<" + fmt[t], b, at)
        at += struct.calcsize(fmt[t])
        return v
    kv = {}
    for _ in range(nkv):
        k = rstr()
        t, = struct.unpack_from("<I", b, at)
        at += 4
        kv[k] = rval(t)
    infos = []
    for _ in range(nt):
        name = rstr()
        nd, = struct.unpack_from("<I", b, at)
        ne = struct.unpack_from("<%dQ" % nd, b, at + 4)
        typ, off = struct.unpack_from("<IQ", b, at + 4 + 8 * nd)
        at += 4 + 8 * nd + 12
        infos.append((name, ne, typ, off))
    align = kv.get("general.alignment", 32)
    data = (at + align - 1) // align * align
    tensors = {}
    for name, ne, typ, off in infos:
        n = int(np.prod(ne))
        _, blck, size = TYPES[typ]
        tensors[name] = (ne, typ, b[data + off:data + off + n // blck * size])
    return kv, tensors


def f16_bits(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def bf16_bytes(x):
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even (no NaNs here)
    return r.tobytes()


def q8_0(x):
    out = bytearray()
    for blk in x.reshape(-1, 32):
        amax = np.float32(np.abs(blk).max())
        d = np.float32(amax / np.float32(127))
        idv = np.float32(1) / d if d != 0 else np.float32(0)
        out += f16_bits(d).tobytes()
        v = blk * idv
        q = np.where(v >= 0, np.floor(v + np.float32(0.5)), -np.floor(-v + np.float32(0.5)))  # roundf: ties away from zero
        out += q.astype(np.int8).tobytes()
    return bytes(out)


def q4_0(x):
    out = bytearray()
    for blk in x.reshape(-1, 32):
        amax, mx = np.float32(0), np.float32(0)
        for v in blk:
            if amax < abs(v):
                amax, mx = np.float32(abs(v)), v
        d = np.float32(mx / np.float32(-8))
        idv = np.float32(1) / d if d != 0 else np.float32(0)
        out += f16_bits(d).tobytes()
        q = np.minimum(15, np.trunc(blk * idv + np.float32(8.5)).astype(np.int64))
        out += bytes(int(q[j]) | (int(q[j + 16]) << 4) for j in range(16))
    return bytes(out)


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


ARCH = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "MixtralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
        "Qwen3ForCausalLM": "qwen3", "Phi3ForCausalLM": "phi3", "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2",
        "Gemma3ForCausalLM": "gemma3", "Gemma3ForConditionalGeneration": "gemma3"}
# Gemma3TextConfig's defaults (a published vision-language config's text_config leaves most out)
GEMMA3_TEXT = {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8,
               "num_key_value_heads": 4, "head_dim": 256, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
               "sliding_window": 4096, "sliding_window_pattern": 6, "query_pre_attn_scalar": 256, "max_position_embeddings": 131072,
               "final_logit_softcapping": None}


def text_config(c):
    """The decoder's config: Gemma 3's text_config (with its class defaults) for the vision-language model."""
    if c["architectures"][0] == "Gemma3ForConditionalGeneration":
        return dict(GEMMA3_TEXT, **c["text_config"], architectures=c["architectures"])
    if c["architectures"][0] == "Gemma3ForCausalLM":
        return dict(GEMMA3_TEXT, **c)
    return c


def text_name(n, c):
    """A Gemma 3 vision-language tensor under the text model's name; None for the vision tower / projector."""
    if c["architectures"][0] != "Gemma3ForConditionalGeneration":
        return n
    for p in ("language_model.model.", "model.language_model."):
        if n.startswith(p):
            return "model." + n[len(p):]
    return "lm_head.weight" if n in ("language_model.lm_head.weight", "lm_head.weight") else None


def gguf_name(hf, arch):
    """llama.cpp's name (gguf-py's tensor_mapping.py for that architecture), and the expert index of a
    Mixtral expert's matrix (stacked into one tensor), else None."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf], None
    lay = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
           "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
           "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm", "block_sparse_moe.gate": "ffn_gate_inp",
           "self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up"}
    if arch in ("gemma2", "gemma3"):
        lay.update({"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm"})
    parts = hf.split(".")
    if parts[3] == "block_sparse_moe" and parts[4] == "experts":
        return "blk.%s.%s.weight" % (parts[2], {"w1": "ffn_gate_exps", "w2": "ffn_down_exps", "w3": "ffn_up_exps"}[parts[6]]), int(parts[5])
    mod, suf = ".".join(parts[3:-1]), parts[-1]
    return "blk.%s.%s.%s" % (parts[2], lay[mod], suf), None


def check(folder, path, typ):
    kv, T = read_gguf(path)
    c = text_config(json.load(open(os.path.join(folder, "config.json"))))
    W = {}
    for k, v in load(folder).items():
        if text_name(k, c) is not None:
            W[text_name(k, c)] = v
    arch = ARCH[c["architectures"][0]]
    gemma = arch.startswith("gemma")
    nh, nkv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    want_kv = {"general.architecture": arch, "%s.block_count" % arch: c["num_hidden_layers"], "%s.embedding_length" % arch: c["hidden_size"],
               "%s.attention.head_count" % arch: nh, "%s.attention.head_count_kv" % arch: nkv,
               "%s.feed_forward_length" % arch: c["intermediate_size"], "%s.context_length" % arch: c["max_position_embeddings"]}
    if "num_local_experts" in c:
        want_kv.update({"llama.expert_count": c["num_local_experts"], "llama.expert_used_count": c["num_experts_per_tok"]})
    if gemma:
        want_kv.update({"%s.attention.key_length" % arch: c["head_dim"], "%s.attention.value_length" % arch: c["head_dim"]})
    if arch in ("gemma2", "gemma3"):
        want_kv.update({"%s.attention.sliding_window" % arch: c["sliding_window"]})
    if arch == "gemma3":
        want_kv.update({"gemma3.attention.sliding_window_pattern": c["sliding_window_pattern"]})
        if abs(kv["gemma3.rope.freq_base_swa"] - c["rope_local_base_freq"]) > 1e-3 * c["rope_local_base_freq"] or "gemma3.attn_logit_softcapping" in kv:
            sys.exit("FAIL: gemma3 rope.freq_base_swa / attn_logit_softcapping")
    if arch == "phi3":
        want_kv.update({"phi3.rope.scaling.original_context_length": c["original_max_position_embeddings"],
                        "phi3.attention.sliding_window": c.get("sliding_window") or 0})
    for k, v in want_kv.items():
        if kv.get(k) != v:
            sys.exit("FAIL: %s = %r, want %r" % (k, kv.get(k), v))
    if abs(kv["%s.rope.freq_base" % arch] - c.get("rope_theta", 10000.0)) > 1e-3 * c.get("rope_theta", 10000.0):
        sys.exit("FAIL: rope.freq_base")
    rs = c.get("rope_scaling") or {}
    if (rs.get("rope_type") or rs.get("type")) == "linear" and (kv.get("%s.rope.scaling.type" % arch) != "linear" or kv["%s.rope.scaling.factor" % arch] != rs["factor"]):
        sys.exit("FAIL: linear rope scaling")
    if arch == "gemma2":
        for k in ("attn_logit_softcapping", "final_logit_softcapping"):
            if abs(kv["gemma2." + k] - c[k]) > 1e-6 * c[k]:
                sys.exit("FAIL: gemma2.%s" % k)
    tok = json.load(open(os.path.join(folder, "tokenizer.json"), encoding="utf-8"))
    ids = dict(tok["model"]["vocab"])
    for a in tok.get("added_tokens") or []:
        ids[a["content"]] = a["id"]
    toks = kv["tokenizer.ggml.tokens"]
    if len(toks) != W["model.embed_tokens.weight"].shape[0] or any(toks[i] != t for t, i in ids.items()):
        sys.exit("FAIL: tokenizer.ggml.tokens do not match tokenizer.json's ids")
    if kv["tokenizer.ggml.model"] == "gpt2" and len(kv["tokenizer.ggml.merges"]) != len(tok["model"]["merges"]):
        sys.exit("FAIL: merges")
    gt = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2}[typ]
    # what the file must hold: the HF tensors under llama.cpp's names, Mixtral's experts stacked in index order
    want_t, stacks = {}, {}
    for name, w in W.items():
        if arch in ("gemma", "gemma2") and name == "lm_head.weight":
            continue  # Gemma 1/2 tie it; the converter drops it
        g, e = gguf_name(name, arch)
        x = w.astype(np.float32)
        if arch == "llama" and (".attn_q." in g or ".attn_k." in g):
            x = permute(x, nh if ".attn_q." in g else nkv)
        if gemma and name.endswith("norm.weight"):
            x = x + np.float32(1)  # stored as 1 + w
        if e is None:
            want_t[g] = x
        else:
            stacks.setdefault(g, {})[e] = x
    for g, d in stacks.items():
        if sorted(d) != list(range(c["num_local_experts"])):
            sys.exit("FAIL: %s: experts %s" % (g, sorted(d)))
        want_t[g] = np.stack([d[e] for e in range(len(d))])
    if arch == "phi3" and c.get("rope_scaling"):
        for k in ("long", "short"):
            want_t["rope_factors_%s.weight" % k] = np.array(c["rope_scaling"]["%s_factor" % k], dtype=np.float32)
        scale = c["max_position_embeddings"] / c["original_max_position_embeddings"]
        af = np.sqrt(1 + np.log(scale) / np.log(c["original_max_position_embeddings"])) if scale > 1 else 1.0
        if abs(kv["phi3.rope.scaling.attn_factor"] - af) > 1e-6:
            sys.exit("FAIL: phi3.rope.scaling.attn_factor %r, want %r" % (kv["phi3.rope.scaling.attn_factor"], af))
    extra = set(T) - set(want_t) - {"rope_freqs.weight"}
    if extra:
        sys.exit("FAIL: unexpected tensors %s" % sorted(extra))
    n = 0
    for g, x in want_t.items():
        if g not in T:
            sys.exit("FAIL: %s missing" % g)
        ne, t, raw = T[g]
        if tuple(ne) != tuple(reversed(x.shape)):
            sys.exit("FAIL: %s shape %s, want %s reversed" % (g, ne, x.shape))
        wt = 0 if x.ndim == 1 or ".ffn_gate_inp." in g else gt  # 1-D and the router stay F32
        if wt in (2, 8) and x.shape[-1] % 32:
            wt = 1
        if t != wt:
            sys.exit("FAIL: %s stored as type %d, want %d" % (g, t, wt))
        flat = np.ascontiguousarray(x).reshape(-1)
        want = {0: lambda v: v.astype("<f4").tobytes(), 1: lambda v: f16_bits(v).tobytes(), 30: bf16_bytes, 8: q8_0, 2: q4_0}[t](flat)
        if raw != want:
            sys.exit("FAIL: %s bytes differ from the reference (%s)" % (g, TYPES[t][0]))
        n += 1
    print("ok %d tensors, metadata and tokenizer (%s)" % (n, typ))


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "check":
        check(a[1], a[2], a[3])
    elif a[0] == "q8vec":
        src = open(a[1], "rb").read()
        kv, tensors = read_gguf(a[1])
        align = kv.get("general.alignment", 32)
        ne, typ, _ = tensors[a[2]]
        assert len(ne) == 1 and typ == 0 and ne[0] % 32 == 0, "a 1-D F32 tensor of 32·k values"
        # the infos: each one's type field position and offset, in file order (names are unique keys)
        b = bytearray(src)
        pos = {}
        for name in tensors:
            at = src.index(struct.pack("<Q", len(name)) + name.encode())
            pos[name] = at + 8 + len(name) + 4 + 8 * len(tensors[name][0])
        data = (max(pos.values()) + 12 + align - 1) // align * align
        out, off = bytearray(), {}
        for name in sorted(tensors, key=lambda n: struct.unpack_from("<Q", src, pos[n] + 4)[0]):
            raw = tensors[name][2]
            if name == a[2]:
                raw = q8_0(np.frombuffer(raw, dtype="<f4"))
                struct.pack_into("<I", b, pos[name], 8)
            struct.pack_into("<Q", b, pos[name] + 4, len(out))
            out += raw + bytes((-len(raw)) % align)
        open(a[3], "wb").write(bytes(b[:data]) + bytes(out))
    elif a[0] == "kvedit":
        src = open(a[1], "rb").read()
        ver, nt, nkv = struct.unpack_from("<IQQ", src, 4)
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

        def skip(at, t):  # the end of a value of type t at `at`
            if t == 8:
                return at + 8 + struct.unpack_from("<Q", src, at)[0]
            if t == 9:
                et, n = struct.unpack_from("<IQ", src, at)
                at += 12
                for _ in range(n):
                    at = skip(at, et)
                return at
            return at + sizes[t]
        at, entries = 24, {}
        for _ in range(nkv):
            n, = struct.unpack_from("<Q", src, at)
            key = src[at + 8:at + 8 + n].decode()
            t, = struct.unpack_from("<I", src, at + 8 + n)
            end = skip(at + 12 + n, t)
            entries[key] = src[at:end]
            at = end
        infos_at = at
        for _ in range(nt):
            n, = struct.unpack_from("<Q", src, at)
            nd, = struct.unpack_from("<I", src, at + 8 + n)
            at += 8 + n + 4 + 8 * nd + 12
        kv, _ = read_gguf(a[1])
        align = kv.get("general.alignment", 32)
        old_data = (at + align - 1) // align * align
        for e in a[3:]:
            if e.startswith("-"):
                entries.pop(e[1:], None)
                continue
            key, val = e.split("=", 1)
            typ, v = val.split(":", 1)
            kb = struct.pack("<Q", len(key.encode())) + key.encode()
            if typ == "f32":
                entries[key] = kb + struct.pack("<If", 6, float(v))
            elif typ == "u32":
                entries[key] = kb + struct.pack("<II", 4, int(v))
            elif typ == "bool":
                entries[key] = kb + struct.pack("<IB", 7, int(v))
            else:
                entries[key] = kb + struct.pack("<IQ", 8, len(v.encode())) + v.encode()
        head = src[:4] + struct.pack("<IQQ", ver, nt, len(entries)) + b"".join(entries.values()) + src[infos_at:at]
        open(a[2], "wb").write(head + bytes((-len(head)) % align) + src[old_data:])
    else:
        raise SystemExit(__doc__)
