#!/usr/bin/python3
"""Independent check of `graft synth --like-config`: the tensors transformers saves for a config.json.

    layout_ref.py check CONFIG.json MODEL_DIR SHARD_BYTES [key=value ...]
    layout_ref.py index CONFIG.json REAL_INDEX.json DTYPE

`index` compares the full-size layout of CONFIG.json in DTYPE (5 GB shards, as transformers'
save_pretrained) with a model.safetensors.index.json published on the Hugging Face Hub: every tensor's
shard and metadata.total_size. `check` compares a model graft synth wrote:

CONFIG.json is the original file, key=value the overrides given to synth (layers, hidden, intermediate,
heads, kv, head_dim, vocab, experts, dtype). The expected state dict is built here from transformers'
module definitions (each module's parameters in registration order, as `model.state_dict()` lists them),
then compared with MODEL_DIR: every tensor name, shape and dtype; the shard of every tensor as
huggingface_hub's split_torch_state_dict_into_shards assigns them for SHARD_BYTES (a new shard when the
next tensor would overflow the current one), metadata.total_size of the index; config.json holding the
overrides and otherwise the original values; generation_config.json's token ids.
"""
import json
import os
import struct
import sys

DEFAULTS = {  # transformers' *Config defaults for keys a config.json may leave out
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, tie=False),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, tie=False),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, tie=False),
    "qwen3": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, head_dim=128, tie=False),
    "gemma": dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=16, head_dim=256, tie=True),
    "gemma2": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                   num_key_value_heads=4, head_dim=256, tie=True),
    "gemma3_text": dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                        num_key_value_heads=4, head_dim=256, tie=True),
    "phi3": dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32, tie=False),
    "mixtral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, num_local_experts=8, tie=False),
}
OVR = dict(layers="num_hidden_layers", hidden="hidden_size", intermediate="intermediate_size", heads="num_attention_heads",
           kv="num_key_value_heads", head_dim="head_dim", vocab="vocab_size", experts="num_local_experts")
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
TORCH = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "f32": "F32", "f16": "F16", "bf16": "BF16"}


def text_params(cfg, ovr):
    vl = cfg.get("model_type") == "gemma3" and "text_config" in cfg
    t = cfg["text_config"] if vl else cfg
    mt = "gemma3_text" if vl else t["model_type"]
    d = DEFAULTS[mt]
    g = lambda k: ovr.get(k, t.get(k, d.get(k)))
    P = {k: g(k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
    P["num_key_value_heads"] = g("num_key_value_heads") or P["num_attention_heads"]
    if "head_dim" in ovr:
        P["head_dim"] = ovr["head_dim"]
    elif "hidden_size" in ovr or "num_attention_heads" in ovr or not (t.get("head_dim") or d.get("head_dim")):
        P["head_dim"] = P["hidden_size"] // P["num_attention_heads"]
    else:
        P["head_dim"] = t.get("head_dim") or d["head_dim"]
    P["experts"] = g("num_local_experts")
    P["tie"] = t.get("tie_word_embeddings", cfg.get("tie_word_embeddings", d["tie"]))
    P["attention_bias"] = t.get("attention_bias", False)
    P["mlp_bias"] = t.get("mlp_bias", False) if mt == "llama" else False
    return mt, vl, P


def linear(pfx, o, i, bias=False):
    yield pfx + ".weight", [o, i]
    if bias:
        yield pfx + ".bias", [o]


def decoder(mt, P, pre):
    h, f, hd = P["hidden_size"], P["intermediate_size"], P["head_dim"]
    q, kv = P["num_attention_heads"] * hd, P["num_key_value_heads"] * hd
    yield pre + "embed_tokens.weight", [P["vocab_size"], h]
    for l in range(P["num_hidden_layers"]):
        L = "%slayers.%d." % (pre, l)
        if mt == "phi3":  # Phi3Attention: o_proj is created before qkv_proj
            yield from linear(L + "self_attn.o_proj", h, q)
            yield from linear(L + "self_attn.qkv_proj", q + 2 * kv, h)
        else:
            qkvb = P["attention_bias"] or mt == "qwen2"
            yield from linear(L + "self_attn.q_proj", q, h, qkvb)
            yield from linear(L + "self_attn.k_proj", kv, h, qkvb)
            yield from linear(L + "self_attn.v_proj", kv, h, qkvb)
            yield from linear(L + "self_attn.o_proj", h, q, P["attention_bias"])
            if mt in ("qwen3", "gemma3_text"):
                yield L + "self_attn.q_norm.weight", [hd]
                yield L + "self_attn.k_norm.weight", [hd]
        if mt == "phi3":
            yield from linear(L + "mlp.gate_up_proj", 2 * f, h)
            yield from linear(L + "mlp.down_proj", h, f)
        elif mt == "mixtral":
            yield from linear(L + "block_sparse_moe.gate", P["experts"], h)
            for e in range(P["experts"]):
                E = L + "block_sparse_moe.experts.%d." % e
                yield from linear(E + "w1", f, h)
                yield from linear(E + "w2", h, f)
                yield from linear(E + "w3", f, h)
        else:
            yield from linear(L + "mlp.gate_proj", f, h, P["mlp_bias"])
            yield from linear(L + "mlp.up_proj", f, h, P["mlp_bias"])
            yield from linear(L + "mlp.down_proj", h, f, P["mlp_bias"])
        yield L + "input_layernorm.weight", [h]
        yield L + "post_attention_layernorm.weight", [h]
        if mt in ("gemma2", "gemma3_text"):
            yield L + "pre_feedforward_layernorm.weight", [h]
            yield L + "post_feedforward_layernorm.weight", [h]
    yield pre + "norm.weight", [h]


def siglip(V, text_hidden):
    h, f, p, img, ch = V["hidden_size"], V["intermediate_size"], V["patch_size"], V["image_size"], V.get("num_channels", 3)
    pre = "vision_tower.vision_model."
    yield pre + "embeddings.patch_embedding.weight", [h, ch, p, p]
    yield pre + "embeddings.patch_embedding.bias", [h]
    yield pre + "embeddings.position_embedding.weight", [(img // p) ** 2, h]
    for l in range(V["num_hidden_layers"]):
        L = pre + "encoder.layers.%d." % l
        for k in ("k_proj", "v_proj", "q_proj", "out_proj"):
            yield from linear(L + "self_attn." + k, h, h, True)
        yield from (("%slayer_norm1.%s" % (L, w), [h]) for w in ("weight", "bias"))
        yield from linear(L + "mlp.fc1", f, h, True)
        yield from linear(L + "mlp.fc2", h, f, True)
        yield from (("%slayer_norm2.%s" % (L, w), [h]) for w in ("weight", "bias"))
    yield pre + "post_layernorm.weight", [h]
    yield pre + "post_layernorm.bias", [h]
    yield "multi_modal_projector.mm_input_projection_weight", [h, text_hidden]
    yield "multi_modal_projector.mm_soft_emb_norm.weight", [h]


def expected(cfg, ovr):
    mt, vl, P = text_params(cfg, {OVR[k]: v for k, v in ovr.items() if k in OVR})
    out = []
    if vl:
        V = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, patch_size=16, image_size=224)
        V.update(cfg.get("vision_config", {}))
        if set(ovr) & {"hidden", "heads", "layers", "intermediate", "vocab"}:  # a reshaped model gets a small tower (synth's rule)
            V.update(hidden_size=32, intermediate_size=64, num_hidden_layers=P["num_hidden_layers"], image_size=4 * V["patch_size"])
        out += list(siglip(V, P["hidden_size"]))
    out += list(decoder(mt, P, "language_model.model." if vl else "model."))
    if not P["tie"]:
        out.append(("language_model.lm_head.weight" if vl else "lm_head.weight", [P["vocab_size"], P["hidden_size"]]))
    return out, P


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def plan(want, dt, shard_bytes):
    """The shards of the state dict `want` [(name, shape)] in dtype dt: huggingface_hub's
    split_torch_state_dict_into_shards (a new shard when the next tensor would overflow this one)."""
    shards, cur, size = [], [], 0
    for n, shape in want:
        b = SIZES[dt]
        for s in shape:
            b *= s
        if cur and size + b > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(n)
        size += b
    shards.append(cur)
    return shards


def index(cfg_path, real_path, dtype):
    want, _ = expected(json.load(open(cfg_path)), {})
    real = json.load(open(real_path))
    dt = TORCH[dtype]
    shards = plan(want, dt, 5000000000)
    wm = {n: "model-%05d-of-%05d.safetensors" % (i + 1, len(shards)) for i, sh in enumerate(shards) for n in sh}
    diff = sorted(n for n in set(wm) | set(real["weight_map"]) if wm.get(n) != real["weight_map"].get(n))
    assert not diff, "%d tensors differ, first %s: %s vs %s" % (len(diff), diff[0], wm.get(diff[0]), real["weight_map"].get(diff[0]))
    total = sum(SIZES[dt] * _prod(shape) for _, shape in want)
    assert total == real["metadata"]["total_size"], (total, real["metadata"]["total_size"])
    print("ok: %d tensors in %d shards, total_size %d as published" % (len(want), len(shards), total))


def _prod(shape):
    p = 1
    for s in shape:
        p *= s
    return p


def check(cfg_path, model, shard_bytes, ovr):
    cfg = json.load(open(cfg_path))
    want, P = expected(cfg, ovr)
    dt = TORCH.get(ovr.get("dtype") or cfg.get("torch_dtype") or "float32")
    idx = os.path.join(model, "model.safetensors.index.json")
    got, shard_of = {}, {}
    if os.path.exists(idx):
        index = json.load(open(idx))
        for f in sorted(set(index["weight_map"].values())):
            for k, v in header(os.path.join(model, f)).items():
                got[k] = v
                shard_of[k] = f
        assert index["weight_map"] == shard_of, "weight_map does not match the shards' headers"
        total = sum(v["data_offsets"][1] - v["data_offsets"][0] for v in got.values())
        assert index["metadata"]["total_size"] == total, (index["metadata"]["total_size"], total)
    else:
        got = header(os.path.join(model, "model.safetensors"))
        shard_of = {k: "model.safetensors" for k in got}
    names = [n for n, _ in want]
    assert len(set(names)) == len(names), "duplicate names in the expectation"
    missing, extra = sorted(set(names) - set(got)), sorted(set(got) - set(names))
    assert not missing and not extra, "missing %s, unexpected %s" % (missing[:5], extra[:5])
    for n, shape in want:
        assert got[n]["shape"] == shape, (n, got[n]["shape"], shape)
        assert got[n]["dtype"] == dt, (n, got[n]["dtype"], dt)
    shards = plan(want, dt, shard_bytes)  # huggingface_hub's rule over the state dict order
    if len(shards) == 1:
        assert set(shard_of.values()) == {"model.safetensors"}, "one shard expected"
    else:
        for i, sh in enumerate(shards):
            fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
            for n in sh:
                assert shard_of[n] == fn, (n, shard_of[n], fn)
    # config.json: the overrides, everything else as in the original
    out = json.load(open(os.path.join(model, "config.json")))
    vl = cfg.get("model_type") == "gemma3" and "text_config" in cfg
    t_in, t_out = (cfg["text_config"], out["text_config"]) if vl else (cfg, out)
    for k, v in ovr.items():
        if k in OVR:
            assert t_out[OVR[k]] == v, (k, t_out.get(OVR[k]), v)
    for k, v in t_in.items():
        if k not in OVR.values() or not any(OVR[o] == k for o in ovr):
            if k == "head_dim" and ("hidden" in ovr or "heads" in ovr):
                assert t_out[k] == P["head_dim"], (k, t_out[k], P["head_dim"])
                continue
            assert t_out.get(k) == v, (k, t_out.get(k), v)
    if "head_dim" in t_out or P["head_dim"] != P["hidden_size"] // P["num_attention_heads"]:
        assert t_out.get("head_dim") == P["head_dim"], ("head_dim", t_out.get("head_dim"), P["head_dim"])
    gen = json.load(open(os.path.join(model, "generation_config.json")))
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        v = cfg.get(k, t_in.get(k))
        if v is not None:
            assert gen.get(k) == v, (k, gen.get(k), v)
    print("ok: %d tensors, %d shard(s)" % (len(want), len(shards)))


def main(a):
    if len(a) == 4 and a[0] == "index":
        index(a[1], a[2], a[3])
        return 0
    if len(a) < 4 or a[0] != "check":
        sys.stderr.write(__doc__)
        return 2
    ovr = {}
    for kv in a[4:]:
        k, v = kv.split("=", 1)
        ovr[k] = v if k == "dtype" else int(v)
    check(a[1], a[2], int(a[3]), ovr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
