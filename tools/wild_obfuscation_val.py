"""An obfuscation probe written apart from the normaliser: text models on validation rows.

    .venv/bin/python tools/wild_obfuscation_val.py \
        --out docs/eval/text-multilingual/wild-obfuscation-val.json MODEL_DIR [MODEL_DIR ...]

The obfuscation check of ``commentflow evaluate`` (``model.evaluation.obfuscation``) was written
with the v2 normaliser, so v2 undoes its first four kinds by construction. This probe was written
without looking at the normaliser, from what "fancy text" generators, filters-dodgers and hasty
typists do, to find what it misses: 1,200 validation rows of ``--data`` (the split training used;
no test row), each kind applied to up to two words of 4+ letters (or the whole text), and the
accuracy drop in points against the clean rows, per model, side by side. Its first run (text
model 1.2.0, v2) found small capitals (-31 points), letters spaced by a middle dot, wider
leetspeak and Greek look-alikes, which the v3 normaliser now undoes; typos, a censored letter and
appended ``!!!`` are the model's to learn, not a normaliser's (reported, not undone).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model import load_classifier
from model.data.mix import mix_splits

_WORD = re.compile(r"(?<![\w@#])[A-Za-z]{4,}(?!\w)")
_SMALL = dict(zip("abcdefghijklmnopqrstuvwxyz", "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘǫʀꜱᴛᴜᴠᴡxʏᴢ", strict=True))
_GREEK = {"a": "α", "o": "ο", "v": "ν", "p": "ρ", "t": "τ", "i": "ι", "k": "κ", "n": "η", "u": "υ"}
_LEET = {"a": "@", "e": "€", "i": "!", "o": "()", "s": "$", "t": "+", "l": "1", "b": "8", "g": "9"}

Edit = Callable[[str, random.Random], str]


def _words(edit: Edit, k: int = 2) -> Edit:
    """Apply ``edit`` to up to ``k`` random words of 4+ letters."""

    def apply(text: str, rng: random.Random) -> str:
        spans = [m.span() for m in _WORD.finditer(text)]
        for a, b in sorted(rng.sample(spans, min(k, len(spans))), reverse=True):
            text = text[:a] + edit(text[a:b], rng) + text[b:]
        return text

    return apply


def _elongate(w: str, rng: random.Random) -> str:
    i = max(i for i, c in enumerate(w) if c.lower() in "aeiouy" or i == len(w) - 1)
    return w[: i + 1] + w[i] * rng.randint(3, 6) + w[i + 1 :]


def _bold(c: str) -> str:
    if "a" <= c <= "z":
        return chr(0x1D41A + ord(c) - 97)
    return chr(0x1D400 + ord(c) - 65) if "A" <= c <= "Z" else c


KINDS: dict[str, Edit] = {
    "elongate": _words(_elongate),
    "random_case": _words(
        lambda w, r: "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(w)), 3
    ),  # fmt: skip
    "upper": lambda t, r: t.upper(),
    "small_caps": lambda t, r: "".join(_SMALL.get(c, c) for c in t.lower()),
    "math_bold": lambda t, r: "".join(_bold(c) for c in t),
    "fullwidth": lambda t, r: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in t),
    "accents": _words(lambda w, r: "".join(c + ("\u0301" if c in "aeiou" else "") for c in w)),
    "greek": _words(lambda w, r: "".join(_GREEK.get(c, c) for c in w), 3),
    "leet_wide": _words(
        lambda w, r: "".join(_LEET.get(c, c) if r.random() < 0.5 else c for c in w)
    ),  # fmt: skip
    "censor": _words(lambda w, r: (i := r.randrange(1, len(w) - 1)) and w[:i] + "*" + w[i + 1 :]),
    "typo": _words(
        lambda w, r: (i := r.randrange(1, len(w) - 2)) and w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    ),  # fmt: skip
    "split_word": _words(lambda w, r: (i := r.randrange(2, len(w) - 1)) and w[:i] + " " + w[i:], 1),
    "sep_dash": _words(lambda w, r: "-".join(w), 1),
    "sep_middle_dot": _words(lambda w, r: "·".join(w), 1),
    "sep_double_space": _words(lambda w, r: "  ".join(w), 1),
    "zero_width_joiner": _words(lambda w, r: "\u200d".join(w), 3),
    "soft_hyphen": _words(lambda w, r: "\u00ad".join(w), 3),
    "hashtag": _words(lambda w, r: "#" + w),
    "exclamations": lambda t, r: t + " " + "!" * r.randint(3, 8),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="text model folders")
    parser.add_argument("--data", default="mix:-hutto_amazon")
    parser.add_argument("--seed", type=int, default=13, help="the split seed training used")
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--out", default="runs/wild-obfuscation-val.json")
    args = parser.parse_args()
    val = list(mix_splits(args.data, args.seed)[0]["val"])
    rows = random.Random(7).sample(val, min(args.rows, len(val)))
    clean = [r.raw or r.text for r in rows]
    variants = {k: [edit(t, random.Random(f"{k}:{t}")) for t in clean] for k, edit in KINDS.items()}
    results: dict[str, dict[str, float]] = {}
    for path in args.models:
        clf = load_classifier(path, device="cpu")
        index = {label: i for i, label in enumerate(clf.labels)}
        y = np.array([index[r.label] for r in rows])

        def accuracy(texts: list[str], clf=clf, y=y) -> float:
            return float((clf.predict_proba(texts).argmax(-1).numpy() == y).mean())

        base = accuracy(clean)
        row = {"clean_accuracy": round(base, 4)}
        for kind, texts in variants.items():
            row[kind] = round(100 * (base - accuracy(texts)), 2)
            print(f"{path}  {kind:<18} drop {row[kind]:6.2f} points", flush=True)
        results[path] = row
    names = list(results)
    print(f"\n{'kind':<18} " + " ".join(f"{Path(n).name[:14]:>14}" for n in names))
    for kind in ["clean_accuracy", *KINDS]:
        print(f"{kind:<18} " + " ".join(f"{results[n][kind]:>14}" for n in names))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "data": f"{args.data} val, {len(rows)} rows (seed 7 sample)",
        "unit": "accuracy drop in points against the clean rows (clean_accuracy: a fraction)",
        "models": results,
    }
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
