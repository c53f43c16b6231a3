"""Text models on the validation split, clean and with object emoji appended, side by side.

    .venv/bin/python tools/object_emoji_val.py \
        --out docs/eval/text-multilingual/object-emoji-val.json RUN_DIR [RUN_DIR ...]

How the number of object-emoji training rows (``commentflow train --object-emoji-augment N``)
was chosen without the test sets: each candidate model reads the validation rows of
``--data`` (default ``mix:-hutto_amazon``, the split training used) as they are and with 1-3
emoji of :data:`model.data.emoji_set.OBJECT_EMOJI` appended (the training list: the obfuscation
check's emoji are never looked at here), and with emoji of
:data:`~model.data.emoji_set.VALIDATION_OBJECT_EMOJI` appended (things no model trained on:
whether "things say nothing" carries over, which the training list alone cannot show). Prints
and saves accuracy and macro-F1 of each and the drops in accuracy points.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

from model import load_classifier
from model.base import CommentInput
from model.data.emoji_set import OBJECT_EMOJI, VALIDATION_OBJECT_EMOJI
from model.data.mix import mix_splits
from model.evaluation.metrics import classification_metrics


def emoji_tail(rng: random.Random, emoji: tuple[str, ...] = OBJECT_EMOJI) -> str:
    k = rng.randint(1, 3)
    if rng.random() < 0.5:
        return rng.choice(emoji) * k
    return "".join(rng.choice(emoji) for _ in range(k))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="text model folders (training runs)")
    parser.add_argument("--data", default="mix:-hutto_amazon")
    parser.add_argument("--seed", type=int, default=13, help="the split seed training used")
    parser.add_argument("--out", default="runs/object-emoji-val.json")
    args = parser.parse_args()
    val = mix_splits(args.data, args.seed)[0]["val"]
    rng = random.Random("object-emoji-val")
    clean = [r.raw or r.text for r in val]
    variants = {"clean": clean, "objects": [f"{t} {emoji_tail(rng)}" for t in clean]}
    unseen = random.Random("object-emoji-val-unseen")
    variants["unseen_objects"] = [
        f"{t} {emoji_tail(unseen, VALIDATION_OBJECT_EMOJI)}" for t in clean
    ]
    results = {}
    for path in args.models:
        clf = load_classifier(path, device="cpu")
        index = {label: i for i, label in enumerate(clf.labels)}
        y = np.array([index[r.label] for r in val])
        row: dict[str, dict[str, float] | float] = {}
        for name, texts in variants.items():
            pred = []
            for i in range(0, len(texts), 128):
                out = clf.predict([CommentInput(t) for t in texts[i : i + 128]])
                pred += [index[p.label] for p in out]
            m = classification_metrics(y, np.array(pred), list(clf.labels))
            row[name] = {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4)}
        for name, key in (("objects", "drop_points"), ("unseen_objects", "unseen_drop_points")):
            row[key] = round(100 * (row["clean"]["accuracy"] - row[name]["accuracy"]), 2)
        print(path, json.dumps(row), flush=True)
        results[path] = row
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"data": f"{args.data} val ({len(val)} rows)", "models": results}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
