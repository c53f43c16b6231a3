"""The comment classifier: interface, model directory format, training and evaluation.

The public surface is this module: :func:`load_classifier` and the types of :mod:`model.base`.
The sub-packages, bottom up: ``encoders`` and ``nn`` (the networks), ``format`` (the model
directory), ``serving`` (classifiers and preprocessing), ``data``, ``training``, ``evaluation``,
``testing`` (tiny models and fakes for tests).
"""

from __future__ import annotations

import os

from model.base import LABELS, MODALITIES, Classifier, ClassOutput, CommentInput

__all__ = ["LABELS", "MODALITIES", "ClassOutput", "Classifier", "CommentInput", "load_classifier"]


def load_classifier(
    model_dir: str | os.PathLike[str], device: str = "auto", **kwargs: object
) -> Classifier:
    """Load the classifier stored in ``model_dir``: see :func:`model.serving.load_classifier`."""
    from model.serving import load_classifier as load

    return load(model_dir, device, **kwargs)
