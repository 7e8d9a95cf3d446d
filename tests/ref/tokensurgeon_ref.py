#!/usr/bin/python3
"""Independent NumPy check of graft tokensurgeon (tests/eval-e2e.sh).

  tokensurgeon_ref.py check MODEL DONOR OUT APPROACH K REPORT.json
      OUT's embedding (and untied lm_head) against rows recomputed here: the donor's vocabulary normalised
      (word-start marker Ġ or ▁, whichever more tokens start with); a donor token is MODEL's token of the
      same string, else (bos/eos/unk/pad of tokenizer_config.json, else special_tokens_map.json) MODEL's
      token of the same role; exact tokens from MODEL, the others by APPROACH — omp (greedy atoms
      by |correlation| with the residual, at most min(K, shared tokens, the donor's width) of them, least
      squares on the chosen donor rows, the coefficients on
      MODEL's rows; NumPy's lstsq), mean, zero, subword (the donor token's text — byte-level: its bytes;
      Metaspace: ▁ as spaces; byte fallback: the byte; not UTF-8: a zero row — encoded by tok_ref.py's own
      encoder, the mean of those rows) — rows without a token zero; every other tensor unchanged; vocab_size and
      the tokenizer files the donor's; the reported counts.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_ref import load  # noqa: E402
from tok_ref import B2U, encode  # noqa: E402

U2B = {c: b for b, c in B2U.items()}
ROLES = ("bos_token", "eos_token", "unk_token", "pad_token")


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


def vocab(d):
    tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    v = {i: t for t, i in tok["model"]["vocab"].items()}
    for a in tok.get("added_tokens") or []:
        v[a["id"]] = a["content"]
    special, seen = {}, set()
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        tc = json.load(open(os.path.join(d, f))) if os.path.exists(os.path.join(d, f)) else {}
        for r in ROLES:
            s = tc.get(r)
            if isinstance(s, dict):
                s = s.get("content")
            if isinstance(s, str) and s and r not in seen:
                special.setdefault(s, []).append(r)
                seen.add(r)
    g = sum(t.startswith("\u0120") for t in v.values())
    u = sum(t.startswith("\u2581") for t in v.values())
    ws = "\u2581" if u > g else "\u0120"
    keys, roles = {}, {}
    for i, t in sorted(v.items()):
        keys[i] = ("W", t[len(ws):]) if t.startswith(ws) else ("T", t)
        roles[i] = [("S", r) for r in special.get(t, [])]
    return tok, v, keys, roles


def dws(v):
    g = sum(t.startswith("\u0120") for t in v.values())
    u = sum(t.startswith("\u2581") for t in v.values())
    return "\u2581" if u > g else "\u0120"


def omp(y, C, k):
    """Greedy atoms (largest |<residual, candidate>|, lowest index on ties), least squares on them."""
    sel, r = [], y.copy()
    for _ in range(k):
        c = np.abs(C @ r)
        c[sel] = -1
        sel.append(int(np.argmax(c)))
        A = C[sel].T
        coef = np.linalg.lstsq(A, y, rcond=None)[0]
        r = y - A @ coef
    return sel, coef, np.linalg.norm(r) / max(np.linalg.norm(y), 1e-300)


def check(model, donor, out, approach, k, report):
    k = int(k)
    M, D, O = ({kk: v.astype(np.float64) for kk, v in load(p).items()} for p in (model, donor, out))
    mtok, mv, mkeys, mroles = vocab(model)
    dtok, dv, dkeys, droles = vocab(donor)
    mrows, drows = M["model.embed_tokens.weight"].shape[0], D["model.embed_tokens.weight"].shape[0]
    mmap = {}
    for i, key in sorted(mkeys.items()):
        for kk in [key] + mroles[i]:
            if i < mrows and kk not in mmap:
                mmap[kk] = i
    exact, todo = {}, []
    for i, key in sorted(dkeys.items()):
        if i >= drows:
            continue
        hit = next((kk for kk in [key] + droles[i] if kk in mmap), None)
        if hit is not None:
            exact[i] = mmap[hit]
        else:
            todo.append(i)
    rep = json.load(open(report))
    if (rep["exact"], rep["approximated"], rep["vocab"]) != (len(exact), len(todo), drows):
        fail("counts: graft %s, expected exact %d approximated %d vocab %d" % (rep, len(exact), len(todo), drows))
    shared = sorted(exact)
    tied_m = "lm_head.weight" not in M
    mats = [("model.embed_tokens.weight", "model.embed_tokens.weight", "model.embed_tokens.weight")]
    if not tied_m:
        mats.append(("lm_head.weight", "lm_head.weight" if "lm_head.weight" in D else "model.embed_tokens.weight", "lm_head.weight"))
    elif "lm_head.weight" in O:
        fail("a tied model gained an lm_head")
    resid = []
    for mname, dname, oname in mats:
        Mm, Dm, Om = M[mname], D[dname], O[oname]
        if Om.shape != (drows, Mm.shape[1]):
            fail("%s: shape %s, expected %s" % (oname, Om.shape, (drows, Mm.shape[1])))
        want = np.zeros_like(Om)
        for i, j in exact.items():
            want[i] = Mm[j]
        C = Dm[[i for i in shared]]
        Mrows = Mm[[exact[i] for i in shared]]
        for i in todo:
            if approach == "omp":
                sel, coef, r = omp(Dm[i], C, min(k, len(shared), Dm.shape[1]))
                want[i] = coef @ Mrows[sel]
                if oname == "model.embed_tokens.weight":
                    resid.append(r)
            elif approach == "mean":
                want[i] = Mm.mean(0)
            elif approach == "subword":
                t = dv[i]
                if t.startswith("<0x") and t.endswith(">") and len(t) == 6:  # SentencePiece byte fallback
                    raw = bytes([int(t[3:5], 16)])
                elif dws(dv) == "\u0120":  # byte-level: the alphabet's bytes (a special token: as it is)
                    raw = bytes(U2B[ch] for ch in t) if all(ch in U2B for ch in t) else t.encode()
                else:  # Metaspace: ▁ is a space
                    raw = t.replace("\u2581", " ").encode()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:  # a partial character: no text, a zero row
                    want[i] = 0
                    continue
                ids = [t for t in encode(mtok, text) if t < Mm.shape[0]]
                want[i] = Mm[ids].mean(0) if ids else 0
        err = np.abs(Om - want).max() / max(np.abs(want).max(), 1e-30)
        if err > 1e-4:
            bad = int(np.argmax(np.abs(Om - want).max(1)))
            fail("%s: rows differ by %.3g (relative), worst donor id %d (%s)" % (oname, err, bad, "exact" if bad in exact else "approximated"))
    if approach == "omp" and resid and abs(np.mean(resid) - rep["omp_residual"]) > 1e-4:
        fail("omp residual: graft %.6g, here %.6g" % (rep["omp_residual"], np.mean(resid)))
    for kk in M:
        if kk not in ("model.embed_tokens.weight", "lm_head.weight") and not np.array_equal(M[kk], O[kk]):
            fail("%s changed" % kk)
    c = json.load(open(os.path.join(out, "config.json")))
    if c["vocab_size"] != drows:
        fail("config.json vocab_size %s, expected %d" % (c["vocab_size"], drows))
    if open(os.path.join(out, "tokenizer.json"), "rb").read() != open(os.path.join(donor, "tokenizer.json"), "rb").read():
        fail("tokenizer.json is not the donor's")
    print("ok %s: %d exact, %d approximated" % (approach, len(exact), len(todo)))


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(*sys.argv[2:8])
    else:
        fail("unknown command")
