"""The comment classifier: interface, model directory format, training and evaluation.

The public surface is this module: :func:`load_classifier` and the types of :mod:`model.base`.
The sub-packages, bottom up: ``encoders`` and ``nn`` (the networks), ``media`` (the one media
decoder), ``format`` (the model directory), ``serving`` (classifiers and preprocessing),
``data``, ``training``, ``evaluation``, ``testing`` (tiny models and fakes for tests).
Importing this module loads no torch.
"""

from __future__ import annotations

from model.base import LABELS, MODALITIES, Classifier, ClassOutput, CommentInput
from model.serving import load_classifier

__all__ = ["LABELS", "MODALITIES", "ClassOutput", "Classifier", "CommentInput", "load_classifier"]
