"""``commentflow train-char-expert``: fit a text model's character n-gram expert for one language.

::

    commentflow train-char-expert --model models/text-multilingual --data mix:-hutto_amazon

1. The rows of ``DATA:train`` written in ``--language`` (by script,
   :func:`~model.serving.language.script_language`) and labelled negative or positive, read as
   the model's encoders read them (its normaliser), fit :func:`~model.nn.char_ngram.fit_char_ngram`.
2. On the same language's rows of ``DATA:val``: the model's own positive-negative logit margin
   (no temperature, no expert), the expert's log-odds, and for each candidate weight ``w`` the
   polarity accuracy of ``margin + w x log-odds``. The best ``w`` is kept (the smallest among
   equals; 0 means the expert does not help, and serving then skips it).
3. The expert and its weight are written into the model directory
   (:mod:`model.format.char_expert`); refit the temperature afterwards
   (``commentflow evaluate --calibrate-on ... --save-temperature``), as the scores moved.

Validation only: no test row is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.data.specs import load_spec
from model.data.text import DEFAULT_SEED, Example
from model.format.char_expert import write_char_expert
from model.nn.char_ngram import CharNgramConfig, fit_char_ngram
from model.serving.language import script_language
from model.serving.text import load_text

__all__ = ["WEIGHTS", "train_char_expert"]

#: Candidate weights of the expert's log-odds in the logits (chosen on validation).
WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
_POLAR = ("negative", "positive")


def _rows(spec: str, language: str, seed: int) -> list[Example]:
    rows, _ = load_spec(spec, seed=seed)
    return [r for r in rows if r.label in _POLAR and script_language(r.text) == language]


def train_char_expert(
    model_dir: str | Path,
    data: str,
    *,
    language: str = "zh",
    c: float = 4.0,
    weights: Sequence[float] = WEIGHTS,
    config: CharNgramConfig | None = None,
    split_seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Fit, choose the weight on validation, write into ``model_dir``; return the report."""
    clf = load_text(model_dir, device="cpu")
    clf.char_expert, clf.temperature = None, 1.0  # the head's own margin
    train = _rows(f"{data}:train", language, split_seed)
    val = _rows(f"{data}:val", language, split_seed)
    if not train or not val:
        raise SystemExit(f"{data}: no {language} rows labelled negative/positive in train or val")
    print(f"char expert ({language}): {len(train)} train rows, {len(val)} validation rows")
    model = fit_char_ngram(
        [clf.normalise(r.text) for r in train],
        [r.label == "positive" for r in train],
        config,
        c=c,
        log=print,
    )
    y = np.array([r.label == "positive" for r in val])
    p = clf.predict_proba([r.text for r in val]).numpy().astype(np.float64)
    labels = list(clf.labels)
    margin = np.log(p[:, labels.index("positive")]) - np.log(p[:, labels.index("negative")])
    odds = model([clf.normalise(r.text) for r in val]).numpy().astype(np.float64)
    table = {float(w): float(((margin + w * odds > 0) == y).mean()) for w in sorted(weights)}
    best = max(table, key=lambda w: (table[w], -w))
    report = {
        "fitted_on": f"{data}:train",
        "n_train": len(train),
        "chosen_on": f"{data}:val",
        "n_val": len(val),
        "c": c,
        "val_polarity_accuracy": {
            "model": round(table.get(0.0, float(((margin > 0) == y).mean())), 4),
            "expert_alone": round(float(((odds > 0) == y).mean()), 4),
            "by_weight": {f"{w:g}": round(a, 4) for w, a in table.items()},
        },
    }
    for w, a in table.items():
        mark = " <-" if w == best else ""
        print(f"  weight {w:<5g} validation polarity accuracy {a:.4f}{mark}")
    path = write_char_expert(model_dir, model, language=language, weight=best, **report)
    print(f"wrote {path} (weight {best:g}); refit the temperature: the scores moved")
    return {"weight": best, **report}
