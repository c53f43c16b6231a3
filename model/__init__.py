"""The comment classifier: interface, model directory format, training and evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

from model.base import LABELS, MODALITIES, Classifier, ClassOutput, CommentInput

__all__ = ["LABELS", "MODALITIES", "ClassOutput", "Classifier", "CommentInput", "load_classifier"]


def load_classifier(model_dir: str | os.PathLike[str], device: str = "auto") -> Classifier:
    """Load the classifier stored in ``model_dir`` on ``device`` (``auto``: CUDA when present).

    Dispatches on ``config.json``: format v2 ``kind: multimodal`` is the fusion model
    (:mod:`model.multimodal`); anything else goes to the text classifier, which checks the
    format and refuses what it cannot read with a clear error.
    """
    config = Path(model_dir) / "config.json"
    try:
        meta = json.loads(config.read_text())
    except (OSError, ValueError):
        meta = {}
    if isinstance(meta, dict) and meta.get("kind") == "multimodal":
        from model.multimodal import load_classifier as load_multimodal

        return load_multimodal(model_dir, device=device)
    from model.classifier import load_classifier as load_text

    return load_text(model_dir, device=device)
