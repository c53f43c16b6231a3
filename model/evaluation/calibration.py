"""Calibration: temperature scaling, expected calibration error, the reliability diagram.

Dashboards and moderators threshold on the scores, so a score of 0.9 should be right about 90% of
the time. Temperature scaling (Guo et al., 2017) divides the logits by one scalar ``T`` fitted on
validation data by minimising the negative log-likelihood; it never changes the argmax, so every
accuracy figure stays as it is. ``T`` is found by golden-section search on ``beta = 1 / T``: the
NLL is convex in ``beta`` (a log-sum-exp of functions linear in ``beta``, minus a linear term),
so the search finds the global minimum in the bracket.

Served probabilities are ``softmax(z)``; ``log p`` differs from ``z`` by a per-row constant, so
``softmax(log p / T) == softmax(z / T)``: calibration is fitted on the scores the serving path
returns (:func:`logits_from_probs`), and no access to the network's logits is needed.

ECE uses 15 equal-width confidence bins ``(i/15, (i+1)/15]`` (a confidence of exactly 0 falls in
the first): ``sum_b |acc_b - conf_b| * n_b / n`` over the top-label confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, interval, resample_indices

__all__ = [
    "N_BINS",
    "apply_temperature",
    "ece_interval",
    "expected_calibration_error",
    "fit_shared_temperature",
    "fit_temperature",
    "logits_from_probs",
    "nll",
    "plot_reliability",
    "reliability_bins",
]

N_BINS = 15
T_BOUNDS = (0.05, 20.0)
_GOLDEN = (math.sqrt(5) - 1) / 2


def logits_from_probs(probs: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``log p``: logits up to a per-row constant (enough for any temperature)."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0))


def _per_row(temperature: float | np.ndarray) -> np.ndarray:
    """A scalar ``T`` as is, a per-row ``(N,)`` one as ``(N, 1)`` (it divides ``(N, C)``)."""
    t = np.asarray(temperature, dtype=np.float64)
    return t[:, None] if t.ndim == 1 else t


def apply_temperature(logits: np.ndarray, temperature: float | np.ndarray) -> np.ndarray:
    """``softmax(logits / T)`` in float64; ``T`` a scalar or one per row ``(N,)``."""
    z = np.asarray(logits, dtype=np.float64) / _per_row(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float | np.ndarray = 1.0) -> float:
    """Mean negative log-likelihood of the labels ``y`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, dtype=np.float64) / _per_row(temperature)
    zmax = z.max(axis=1, keepdims=True)
    lse = (zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True)))[:, 0]
    return float((lse - z[np.arange(len(y)), np.asarray(y)]).mean())


def fit_temperature(
    logits: np.ndarray, y: Sequence[int] | np.ndarray, bounds: tuple[float, float] = T_BOUNDS
) -> float:
    """The ``T`` in ``bounds`` that minimises the NLL of ``y`` (golden section on ``1 / T``)."""
    return fit_shared_temperature([(logits, y)], bounds)


def fit_shared_temperature(
    groups: Sequence[tuple[np.ndarray, Sequence[int] | np.ndarray]],
    bounds: tuple[float, float] = T_BOUNDS,
) -> float:
    """The ``T`` in ``bounds`` that minimises the mean over ``groups`` of each group's mean NLL.

    Each ``(logits, y)`` group weighs the same, whatever its size: e.g. the validation rows of
    the sources a model trained on, and the rows of a source a model of the same recipe never
    saw (a test set of unknown origin is either). A sum of convex functions of ``1 / T`` is
    convex, so the golden-section search still finds the global minimum."""
    parts = [(np.asarray(z), np.asarray(y, dtype=np.int64)) for z, y in groups]
    parts = [(z, y) for z, y in parts if len(y)]
    if not parts:
        raise ValueError("no rows to fit a temperature on")
    a, b = 1.0 / bounds[1], 1.0 / bounds[0]

    def f(beta: float) -> float:
        return sum(nll(z, y, 1.0 / beta) for z, y in parts) / len(parts)

    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > 1e-7:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return float(1.0 / ((a + b) / 2))


def _bins(conf: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_bins(
    probs: np.ndarray, y: Sequence[int] | np.ndarray, n_bins: int = N_BINS
) -> dict[str, list[float]]:
    """Per confidence bin: row count, mean confidence and accuracy (0 for empty bins)."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y)).astype(np.float64)
    b = _bins(conf, n_bins)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(b, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(b, weights=correct, minlength=n_bins)
    safe = np.maximum(count, 1)
    return {
        "count": count.astype(int).tolist(),
        "confidence": (conf_sum / safe).tolist(),
        "accuracy": (acc_sum / safe).tolist(),
    }


def expected_calibration_error(
    probs: np.ndarray, y: Sequence[int] | np.ndarray, n_bins: int = N_BINS
) -> float:
    """ECE over ``n_bins`` equal-width bins of the top-label confidence."""
    r = reliability_bins(probs, y, n_bins)
    count = np.asarray(r["count"], dtype=np.float64)
    gap = np.abs(np.asarray(r["accuracy"]) - np.asarray(r["confidence"]))
    return float((gap * count).sum() / max(count.sum(), 1))


def ece_interval(
    probs: np.ndarray,
    y: Sequence[int] | np.ndarray,
    n_bins: int = N_BINS,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> dict[str, float]:
    """ECE with its bootstrap interval ``{"value", "lo", "hi"}`` (all resamples vectorised)."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y)).astype(np.float64)
    b = _bins(conf, n_bins)
    n = len(conf)
    samples = []
    for idx in resample_indices(n, n_resamples, seed):
        k = idx.shape[0]
        flat = (np.arange(k)[:, None] * n_bins + b[idx]).ravel()
        size = k * n_bins
        conf_sum = np.bincount(flat, weights=conf[idx].ravel(), minlength=size)
        acc_sum = np.bincount(flat, weights=correct[idx].ravel(), minlength=size)
        samples.append(np.abs(conf_sum - acc_sum).reshape(k, n_bins).sum(axis=1) / n)
    lo, hi = interval(np.concatenate(samples), level)
    value = expected_calibration_error(probs, y, n_bins)
    return {"value": round(value, 4), "lo": round(lo, 4), "hi": round(hi, 4)}


def plot_reliability(
    panels: dict[str, dict[str, Any]], path: str | Path, n_bins: int = N_BINS
) -> Path:
    """Reliability diagrams, one panel per entry of ``panels``: ``{title: {"curves":
    {name: reliability_bins(...)}, "ece": {name: float}}}``; accuracy against confidence per bin,
    bins with no rows left out, the diagonal is perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(panels))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.9 * rows), dpi=100, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (title, panel) in zip(axes.ravel(), panels.items(), strict=False):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for (name, r), marker in zip(panel["curves"].items(), "os^", strict=False):
            count = np.asarray(r["count"])
            keep = count > 0
            ece = panel.get("ece", {}).get(name)
            label = f"{name} (ECE {ece:.3f})" if ece is not None else name
            ax.plot(
                np.asarray(r["confidence"])[keep],
                np.asarray(r["accuracy"])[keep],
                marker=marker,
                ms=4,
                lw=1.2,
                label=label,
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top score)")
        ax.set_ylabel("accuracy")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"reliability ({n_bins} bins)", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
