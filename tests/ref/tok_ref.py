#!/usr/bin/python3
"""An independent tokenizer.json BPE encoder and small tokenizer builders (tests/eval-e2e.sh).

  tok_ref.py make KIND DIR           write DIR/tokenizer.json (+ tokenizer_config.json) of a BPE trained
                                     here on CORPUS; KIND: llama3 | gpt2 | qwen2 | spm | metaspace
  tok_ref.py encode DIR TEXTFILE     print the ids (space-separated, no BOS) of the text

The encoder follows the `tokenizers` library's documented pipeline with a deliberately plain
algorithm (Python's `regex` module, the textbook BPE loop that merges the lowest-ranked leftmost pair
one at a time), so it shares no code or data structure with graft's heap-based C version.
"""
import json
import os
import sys
import unicodedata

import regex

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SP = "\u2581"

CORPUS = """The quick brown fox jumps over the lazy dog. It's a test: they'll see what we've done, isn't it?
Merging models is the art of combining weights; the theory says the task vectors add up.
Der schnelle braune Fuchs springt über den faulen Hund. Größe, Mädchen, Übung.
Le renard brun rapide saute par-dessus le chien paresseux. Élève, garçon, où?
Быстрая коричневая лиса прыгает через ленивую собаку.
敏捷的棕色狐狸跳过了懒狗。模型合并很有趣。
素早い茶色の狐がのろまな犬を飛び越える。
الثعلب البني السريع يقفز فوق الكلب الكسول
Numbers 12345 and 2024-11-29, 3.14159, 1,000,000.
    indented code: for (int i = 0; i < n; i++) { x += y; }
the the the then there these those other another mother brother
"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def train(words, n_merges, base):
    """Textbook BPE training: words as symbol tuples with counts; merge the most frequent pair."""
    words = {tuple(w): c for w, c in words.items()}
    vocab = list(base)
    seen = set(vocab)
    merges = []
    for _ in range(n_merges):
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        if best[0] + best[1] not in seen:
            seen.add(best[0] + best[1])
            vocab.append(best[0] + best[1])
        nw = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nw[tuple(out)] = nw.get(tuple(out), 0) + c
        words = nw
    return vocab, merges


def make(kind, d):
    os.makedirs(d, exist_ok=True)
    tc = {}
    if kind in ("llama3", "gpt2", "qwen2"):
        pat = {"llama3": LLAMA3, "gpt2": GPT2, "qwen2": QWEN2}[kind]
        text = unicodedata.normalize("NFC", CORPUS) if kind == "qwen2" else CORPUS
        words = {}
        for w in regex.findall(pat, text):
            w = "".join(B2U[b] for b in w.encode())
            words[w] = words.get(w, 0) + 1
        base = [B2U[b] for b in range(256)]
        vocab, merges = train(words, 300, base)
        ids = {t: i for i, t in enumerate(vocab)}
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"] if kind != "qwen2" else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        added = [{"id": len(vocab) + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for i, s in enumerate(specials)]
        if kind == "gpt2":
            pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
            mlist = ["%s %s" % m for m in merges]
        else:
            pre = {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
            mlist = [list(m) for m in merges]
        post = None
        if kind == "llama3":
            bos = added[0]
            post = {"type": "Sequence", "processors": [
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                {"type": "TemplateProcessing",
                 "single": [{"SpecialToken": {"id": bos["content"], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                 "pair": [], "special_tokens": {bos["content"]: {"id": bos["content"], "ids": [bos["id"]], "tokens": [bos["content"]]}}}]}
        tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
               "normalizer": {"type": "NFC"} if kind == "qwen2" else None, "pre_tokenizer": pre, "post_processor": post,
               "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
               "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                         "ignore_merges": kind == "llama3", "vocab": ids, "merges": mlist}}
        if kind == "qwen2":
            tc = {"add_bos_token": False, "bos_token": None, "eos_token": "<|endoftext|>"}
    else:  # SentencePiece-style BPE with byte fallback
        text = (SP + CORPUS.replace(" ", SP)) if kind == "spm" else CORPUS.replace(" ", SP)
        words = {}
        if kind == "spm":
            for line in text.split("\n"):
                if line:
                    words[line] = words.get(line, 0) + 1
        else:
            for w in regex.findall(SP + "?[^" + SP + "]+|" + SP, text):
                words[w] = words.get(w, 0) + 1
        chars = sorted(set(text) - {"\n"}, key=lambda c: (-text.count(c), c))[:120]  # some characters stay unknown
        base = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + chars
        wl = {}
        for w, c in words.items():
            if all(ch in chars for ch in w):
                wl[w] = c
        vocab, merges = train(wl, 250, base)
        ids = {t: i for i, t in enumerate(vocab)}
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                  "special": True} for i, s in enumerate(["<unk>", "<s>", "</s>"])]
        if kind == "spm":
            norm = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SP},
                                                        {"type": "Replace", "pattern": {"String": " "}, "content": SP}]}
            pre = None
            dec = {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": SP}, "content": " "},
                                                    {"type": "ByteFallback"}, {"type": "Fuse"},
                                                    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        else:
            norm = None
            pre = {"type": "Metaspace", "replacement": SP, "prepend_scheme": "first", "split": False}
            dec = {"type": "Sequence", "decoders": [{"type": "ByteFallback"},
                                                    {"type": "Metaspace", "replacement": SP, "prepend_scheme": "first", "split": False}]}
        tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": norm,
               "pre_tokenizer": pre, "post_processor": {
                   "type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                   "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
               "decoder": dec,
               "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                         "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                         "vocab": ids, "merges": ["%s %s" % m for m in merges]}}
        tc = {"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>"}
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tc, f)


# ---- the encoder -------------------------------------------------------------------------------------

def find_iter(pat, s):
    """Matches as the onig crate's find_iter yields them to HF tokenizers: empty ones included, except
    the first empty match after a non-empty one, wherever it falls."""
    out, at, skip = [], 0, False
    while at <= len(s):
        m = pat.search(s, at)
        if m is None:
            break
        b, e = m.span()
        at = e
        if b == e:
            at += 1
            if skip:
                skip = False
                continue
        else:
            skip = True
        out.append((b, e))
    return out


def split(pat, s, behavior="Isolated", invert=False):
    """HF's NormalizedString::split: gaps and matches in order, folded by the behavior, empty pieces dropped."""
    if not s:
        return []
    segs, pos = [], 0
    for b, e in find_iter(pat, s):
        if b != pos:
            segs.append(((pos, b), invert))
        segs.append(((b, e), not invert))
        pos = e
    if pos != len(s):
        segs.append(((pos, len(s)), invert))
    if behavior == "Isolated":
        out = [o for o, _ in segs]
    elif behavior == "Removed":
        out = [o for o, hit in segs if not hit]
    elif behavior in ("Contiguous", "MergedWithPrevious", "MergedWithNext"):
        out, prev = [], False
        for o, hit in (reversed(segs) if behavior == "MergedWithNext" else segs):
            merge = hit == prev if behavior == "Contiguous" else hit and not prev
            if merge and out:
                out[-1] = (o[0], out[-1][1]) if behavior == "MergedWithNext" else (out[-1][0], o[1])
            else:
                out.append(o)
            prev = hit
        if behavior == "MergedWithNext":
            out.reverse()
    else:
        raise SystemExit("behavior " + behavior)
    return [s[b:e] for b, e in out if e > b]


def normalize(n, s):
    if n is None:
        return s
    t = n["type"]
    if t == "Sequence":
        for x in n["normalizers"]:
            s = normalize(x, s)
        return s
    if t in ("NFC", "NFD", "NFKC", "NFKD"):
        return unicodedata.normalize(t, s)
    if t == "Lowercase":
        return "".join(c.lower() for c in s)  # Rust's char::to_lowercase, one character at a time (no final sigma)
    if t == "Prepend":
        return n["prepend"] + s if s else s
    if t == "Replace":
        p = n["pattern"]
        return s.replace(p["String"], n["content"]) if "String" in p else regex.sub(p["Regex"], n["content"], s)
    raise SystemExit("normalizer " + t)


def pretok(p, pieces, first):
    if p is None:
        return pieces
    t = p["type"]
    if t == "Sequence":
        for x in p["pretokenizers"]:
            pieces = pretok(x, pieces, first)
        return pieces
    out = []
    for i, s in enumerate(pieces):
        if t == "Split":
            pat = p["pattern"]
            rx = regex.compile(pat["Regex"] if "Regex" in pat else regex.escape(pat["String"]))
            out += split(rx, s, p.get("behavior", "Isolated"), p.get("invert", False))
        elif t == "ByteLevel":
            if p.get("add_prefix_space", True) and not s.startswith(" "):
                s = " " + s
            parts = regex.findall(GPT2, s) if p.get("use_regex", True) else [s]
            out += ["".join(B2U[b] for b in x.encode()) for x in parts]
        elif t == "Metaspace":
            r = p.get("replacement", SP)
            s = s.replace(" ", r)
            scheme = p.get("prepend_scheme", "always")
            if (scheme == "always" or (scheme == "first" and i == 0 and first)) and not s.startswith(r):
                s = r + s
            out += split(regex.compile(regex.escape(r)), s, "MergedWithNext") if p.get("split", True) else [s]
        else:
            raise SystemExit("pre_tokenizer " + t)
    return [x for x in out if x]


def bpe(model, ranks, word):
    vocab = model["vocab"]
    if model.get("ignore_merges") and word in vocab:
        return [vocab[word]]
    syms = []
    for ch in word:
        if ch in vocab:
            syms.append(ch)
        elif model.get("byte_fallback") and all("<0x%02X>" % b in vocab for b in ch.encode()):
            syms += ["<0x%02X>" % b for b in ch.encode()]
        elif model.get("unk_token"):
            if not (model.get("fuse_unk") and syms and syms[-1] is None):
                syms.append(None)  # unk
    while True:
        best = None
        for i in range(len(syms) - 1):
            r = ranks.get((syms[i], syms[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    return [vocab[model["unk_token"]] if s is None else vocab[s] for s in syms]


def encode(tok, text):
    model = tok["model"]
    ranks = {}
    for r, m in enumerate(model["merges"]):
        if isinstance(m, str) and m.startswith("#version"):
            continue  # a merges.txt header line
        a, b = m.split(" ") if isinstance(m, str) else m
        ranks[(a, b)] = r  # a repeated merge: its last rank (HF's merge map)
    added = sorted(tok.get("added_tokens") or [], key=lambda a: -len(a["content"]))
    ids, seg, i = [], 0, 0

    def plain(s, first):
        if not s:
            return []
        out = []
        for piece in pretok(tok.get("pre_tokenizer"), [normalize(tok.get("normalizer"), s)], first):
            out += bpe(model, ranks, piece)
        return out

    while i < len(text):
        hit = next((a for a in added if text.startswith(a["content"], i)), None)
        if hit is None:
            i += 1
            continue
        ids += plain(text[seg:i], seg == 0)
        ids.append(hit["id"])
        seg = i = i + len(hit["content"])
    ids += plain(text[seg:], seg == 0)
    return ids


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "make":
        make(a[1], a[2])
    elif a[0] == "encode":
        tok = json.load(open(os.path.join(a[1], "tokenizer.json"), encoding="utf-8"))
        print(" ".join(map(str, encode(tok, open(a[2], encoding="utf-8", newline="").read()))))
    else:
        raise SystemExit(__doc__)
