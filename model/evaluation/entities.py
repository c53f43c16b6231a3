"""The entity stage on its held-out gold set: precision, recall and F1, with 95% intervals.

``commentflow evaluate --data entities`` (or ``--entities`` after a sentiment evaluation). The
gold set, ``model/data/entities_gold.jsonl`` (built by ``tools/entities_gold.py``, whose
docstring says how and what it is worth), holds comment texts, OCR texts (upper case, no
punctuation) and transcripts (lower case) with their gold spans; each goes to the stage as the
text of its modality (:class:`~model.entities.EntitySource`), as the worker would send it.

Two matchings, micro-averaged over the mentions:

* ``strict``: same ``start``, ``end`` and label (CoNLL-style exact match);
* ``key``: same :func:`~model.entities.entity_key`, any label: what the Redis aggregates and the
  dashboard count ("the Samsung Galaxy" tagged FAC still counts for ``samsung galaxy``).

Gold labels outside the stage's label set never occur; predicted entities outside it are not
produced. Intervals: percentile bootstrap over comments (1,000 resamples by default).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from model.entities import EntityRecognizer, EntitySource, entity_key

__all__ = ["GOLD", "evaluate_entities", "format_entities", "load_gold", "score_entities"]

#: The packaged gold set (model/data/entities_gold.jsonl).
GOLD = "entities_gold.jsonl"


def load_gold(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The gold items (``text``, ``modality``, ``entities`` with start/end/label/text)."""
    if path is None:
        raw = resources.files("model.data").joinpath(GOLD).read_text(encoding="utf-8")
    else:
        raw = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def _source(item: dict[str, Any]) -> EntitySource:
    text = item["text"]
    return {
        "text": EntitySource(text=text),
        "image": EntitySource(ocr_text=text),
        "audio": EntitySource(transcript=text),
    }[item["modality"]]


def _counts(gold: set[Any], pred: set[Any]) -> tuple[int, int, int]:
    tp = len(gold & pred)
    return tp, len(pred) - tp, len(gold) - tp


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def score_entities(
    recognizer: EntityRecognizer,
    items: Sequence[dict[str, Any]],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every number: overall and per modality (strict and key), per gold label (strict and
    key recall), and bootstrap intervals of the overall F1s."""
    results = recognizer.recognise([_source(i) for i in items])
    rows = []  # per item: (modality, strict tp/fp/fn, key tp/fp/fn, per-label)
    for item, res in zip(items, results, strict=True):
        gold_strict = {(e["start"], e["end"], e["label"]) for e in item["entities"]}
        pred_strict = {(e.start, e.end, e.label) for e in res.entities}
        gold_key = {entity_key(e["text"]) for e in item["entities"]}
        pred_key = {e.key for e in res.entities}
        rows.append(
            (item["modality"], _counts(gold_strict, pred_strict), _counts(gold_key, pred_key))
        )
    out: dict[str, Any] = {"items": len(items), "mentions": sum(len(i["entities"]) for i in items)}

    def block(selected: list[int]) -> dict[str, Any]:
        s = np.array([rows[i][1] for i in selected], dtype=np.int64).reshape(-1, 3).sum(0)
        k = np.array([rows[i][2] for i in selected], dtype=np.int64).reshape(-1, 3).sum(0)
        return {
            "items": len(selected),
            "strict": {**_prf(*map(int, s)), "tp": int(s[0]), "fp": int(s[1]), "fn": int(s[2])},
            "key": {**_prf(*map(int, k)), "tp": int(k[0]), "fp": int(k[1]), "fn": int(k[2])},
        }

    every = list(range(len(items)))
    out["overall"] = block(every)
    out["by_modality"] = {
        m: block([i for i in every if rows[i][0] == m])
        for m in ("text", "image", "audio")
        if any(rows[i][0] == m for i in every)
    }
    # recall per gold label (strict: span and label; key: found under any label)
    per_label: dict[str, list[int]] = {}
    for item, res in zip(items, results, strict=True):
        pred_strict = {(e.start, e.end, e.label) for e in res.entities}
        pred_key = {e.key for e in res.entities}
        for e in item["entities"]:
            c = per_label.setdefault(e["label"], [0, 0, 0])
            c[0] += 1
            c[1] += (e["start"], e["end"], e["label"]) in pred_strict
            c[2] += entity_key(e["text"]) in pred_key
    out["recall_by_label"] = {
        label: {"gold": n, "strict": s / n, "key": k / n}
        for label, (n, s, k) in sorted(per_label.items())
    }
    rng = np.random.default_rng(seed)
    strict = np.array([r[1] for r in rows], dtype=np.int64).reshape(-1, 3)
    keyed = np.array([r[2] for r in rows], dtype=np.int64).reshape(-1, 3)
    f1s: dict[str, list[float]] = {"strict": [], "key": []}
    for _ in range(n_resamples):
        idx = rng.integers(0, len(rows), len(rows))
        for name, arr in (("strict", strict), ("key", keyed)):
            f1s[name].append(_prf(*map(int, arr[idx].sum(0)))["f1"])
    if n_resamples:
        out["f1_interval_95"] = {
            name: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
            for name, v in f1s.items()
        }
    out["model"] = {"name": recognizer.name, "version": recognizer.version}
    return out


def format_entities(r: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    lines = [
        f"entity stage ({r['model']['name']} {r['model']['version']}) on the held-out gold set: "
        f"{r['items']} comments, {r['mentions']} gold mentions",
        f"{'':>10} {'strict P':>9} {'R':>6} {'F1':>6}   {'key P':>6} {'R':>6} {'F1':>6}",
    ]
    blocks = {"overall": r["overall"], **r["by_modality"]}
    for name, b in blocks.items():
        s, k = b["strict"], b["key"]
        lines.append(
            f"{name:>10} {s['precision']:9.3f} {s['recall']:6.3f} {s['f1']:6.3f}   "
            f"{k['precision']:6.3f} {k['recall']:6.3f} {k['f1']:6.3f}   ({b['items']} comments)"
        )
    if "f1_interval_95" in r:
        iv = r["f1_interval_95"]
        lines.append(
            f"95% intervals of F1 (bootstrap over comments): strict "
            f"[{iv['strict'][0]:.3f}, {iv['strict'][1]:.3f}], key "
            f"[{iv['key'][0]:.3f}, {iv['key'][1]:.3f}]"
        )
    lines.append(
        "recall by gold label (strict / key): "
        + ", ".join(
            f"{label} {v['strict']:.2f}/{v['key']:.2f} (n={v['gold']})"
            for label, v in r["recall_by_label"].items()
        )
    )
    lines.append(
        "strict: same span and label; key: same grouping key, any label (what the aggregates count)"
    )
    return "\n".join(lines)


def evaluate_entities(
    recognizer: EntityRecognizer | None = None,
    *,
    gold: str | Path | None = None,
    out: str | Path | None = None,
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """Score ``recognizer`` (default: the packaged one) on the gold set; print the report and,
    with ``out``, save it as ``entities.json`` there."""
    if recognizer is None:
        from model.entities import load_packaged_recognizer

        recognizer = load_packaged_recognizer()
    report = score_entities(recognizer, load_gold(gold), n_resamples=n_resamples)
    print(format_entities(report))
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        (path / "entities.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"saved {path / 'entities.json'}")
    return report
