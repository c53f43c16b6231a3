"""Classification metrics in numpy (checked against scikit-learn in the tests), plus reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.base import LABELS
from model.data.kinds import KINDS

__all__ = [
    "classification_metrics",
    "confusion_matrix",
    "format_report",
    "metrics_by_kind",
    "plot_confusion_matrix",
]


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int
) -> np.ndarray:
    """``(C, C)`` int64 counts; rows are true classes, columns predicted ones."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class ids must be in [0, {n_classes})")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # 0/0 -> 0, as scikit-learn's zero_division=0
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted F1, confusion matrix."""
    c = len(labels)
    cm = confusion_matrix(y_true, y_pred, c)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)  # true counts per class
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    n = cm.sum()
    return {
        "n": int(n),
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
        "per_class": {
            lab: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, lab in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
    }


def format_report(m: dict[str, Any]) -> str:
    """A plain-text report: per-class table, accuracy, macro-F1 and the confusion matrix."""
    labels = m["labels"]
    w = max(10, *(len(x) for x in labels))
    lines = [f"{'':<{w}}  precision  recall      f1  support"]
    for lab in labels:
        pc = m["per_class"][lab]
        lines.append(
            f"{lab:<{w}}  {pc['precision']:9.4f}  {pc['recall']:6.4f}  {pc['f1']:6.4f}"
            f"  {pc['support']:7d}"
        )
    lines += [
        "",
        f"accuracy  {m['accuracy']:.4f}   macro-F1  {m['macro_f1']:.4f}   "
        f"weighted-F1  {m['weighted_f1']:.4f}   n={m['n']}",
        "",
        "confusion matrix (rows: true, columns: predicted)",
    ]
    cw = max(8, w)
    lines.append(f"{'':<{w}}" + "".join(f"{lab:>{cw}}" for lab in labels))
    for lab, row in zip(labels, m["confusion_matrix"], strict=True):
        lines.append(f"{lab:<{w}}" + "".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)


def plot_confusion_matrix(m: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Save the confusion matrix (counts and row-normalised colours) as a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(m["confusion_matrix"], dtype=np.float64)
    labels = m["labels"]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=120)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{norm[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        title or f"accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}", fontsize=10
    )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def metrics_by_kind(
    y: np.ndarray, pred: np.ndarray, kinds: np.ndarray, labels: Sequence[str] = LABELS
) -> dict[str, Any]:
    """:func:`classification_metrics` overall plus ``by_kind``: every kind present in ``kinds``."""
    m = classification_metrics(y, pred, labels)
    m["by_kind"] = {
        k: classification_metrics(y[kinds == k], pred[kinds == k], labels)
        for k in KINDS
        if (kinds == k).any()
    }
    return m
