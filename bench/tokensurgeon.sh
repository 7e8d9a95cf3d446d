#!/bin/sh
# Figures for graft tokensurgeon (docs/merge.md): perplexity per byte on the demo family's held-out texts
# of the demo base (byte-level vocabulary) before and after giving it the tokenizer of a BPE donor —
# a model of the same architecture trained on the same text with a 512-merge byte-level BPE
# (bench/tokensurgeon-train.py, about 10 minutes on 2 cores; kept in WORKDIR) — for each approach.
# Per byte, so that models with different tokenizers compare: exp(mean NLL · tokens scored / bytes).
# Usage: bench/tokensurgeon.sh [WORKDIR]
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
G="$ROOT/build/graft"
W=${1:-"$ROOT/build/bench-ts"}
PY=${PYTHON:-/usr/bin/python3}
F="$ROOT/demo/family"
mkdir -p "$W"
cd "$W"
[ -f donor/tokenizer.json ] || "$PY" "$ROOT/bench/tokensurgeon-train.py" donor 512
ppb() { for t in c docs python; do
            "$G" eval "$1" --text "$F/eval/$t.txt" --ctx 256 --threads 2 --json 2>/dev/null |
                "$PY" -c 'import json, math, sys; r = json.load(sys.stdin); print("%.3f" % math.exp(r["nll"] * r["tokens_scored"] / int(sys.argv[1])))' \
                      "$(wc -c < "$F/eval/$t.txt")"
        done | tr '\n' ' '; }
printf '%-44s %8s %8s %8s\n' model c docs python
printf '%-44s %s\n' "base (its byte-level tokenizer)" "$(ppb "$F/base")"
printf '%-44s %s\n' "donor (BPE, trained)" "$(ppb donor)"
for ap in omp subword mean zero; do
    rm -rf base-$ap && "$G" tokensurgeon "$F/base" donor base-$ap --approach $ap --json --threads 2 > base-$ap.json 2>/dev/null
    printf '%-44s %s   %s\n' "base with the donor's tokenizer, $ap" "$(ppb base-$ap)" "$(cat base-$ap.json)"
done
for k in 4 16; do
    rm -rf base-omp$k && "$G" tokensurgeon "$F/base" donor base-omp$k --k $k --json --threads 2 > base-omp$k.json 2>/dev/null
    printf '%-44s %s   %s\n' "base with the donor's tokenizer, omp k=$k" "$(ppb base-omp$k)" "$(cat base-omp$k.json)"
done
for e in c docs python; do
    rm -rf $e-omp && "$G" tokensurgeon "$F/$e" donor $e-omp --threads 2 > /dev/null 2>&1
    printf '%-44s %s\n' "expert $e (own tokenizer)" "$(ppb "$F/$e")"
    printf '%-44s %s\n' "expert $e with the donor's tokenizer, omp" "$(ppb $e-omp)"
done
