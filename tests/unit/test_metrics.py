"""The numpy metrics agree with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from model.evaluation.metrics import classification_metrics, confusion_matrix, format_report

LABELS = ("negative", "neutral", "positive")


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, size=200))
    m = classification_metrics(y, p, LABELS)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, p, average="weighted"))
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=[0, 1, 2], zero_division=0)
    for i, lab in enumerate(LABELS):
        assert m["per_class"][lab]["precision"] == pytest.approx(prec[i])
        assert m["per_class"][lab]["recall"] == pytest.approx(rec[i])
        assert m["per_class"][lab]["f1"] == pytest.approx(f1[i])
        assert m["per_class"][lab]["support"] == sup[i]
    assert m["confusion_matrix"] == sk_confusion_matrix(y, p, labels=[0, 1, 2]).tolist()


def test_class_never_predicted_or_absent() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 0, 0, 1])  # class 2 absent in both
    m = classification_metrics(y, p, LABELS)
    assert m["macro_f1"] == pytest.approx(
        f1_score(y, p, labels=[0, 1, 2], average="macro", zero_division=0)
    )
    assert m["per_class"]["positive"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert "macro-F1" in format_report(m)


def test_confusion_matrix_validates() -> None:
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)
