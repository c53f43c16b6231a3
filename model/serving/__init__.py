"""Serving: load a model directory into a :class:`~model.base.Classifier` and run it.

:func:`load_classifier` is the one loader: it reads ``config.json`` once and dispatches on the
layout it names (:data:`LOADERS`: format v1 text, format v2 multimodal).
:func:`decode_config_for` reads, without loading the model, how media must be decoded for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from model.base import Classifier
from model.format.directory import open_model_dir

if TYPE_CHECKING:
    from model.media.decode import DecodeConfig

__all__ = ["LOADERS", "decode_config_for", "load_classifier"]


def _text(path: Any, device: str, **kwargs: Any) -> Classifier:
    from model.serving.text import load_text

    return load_text(path, device=device, **kwargs)


def _multimodal(path: Any, device: str, **kwargs: Any) -> Classifier:
    from model.serving.multimodal import load_multimodal

    return load_multimodal(path, device=device, **kwargs)


#: The layout named by :func:`model.format.directory.model_kind` -> its loader.
LOADERS: dict[str, Callable[..., Classifier]] = {"text": _text, "multimodal": _multimodal}


def load_classifier(
    model_dir: str | os.PathLike[str], device: str = "auto", **kwargs: Any
) -> Classifier:
    """Load the classifier stored in ``model_dir`` on ``device`` (``auto``: CUDA when present).

    Raises :class:`~model.errors.ModelFormatError` for a directory it cannot read (unknown
    format or version) and :class:`~model.errors.UnsafeWeightsError` for pickles. ``kwargs`` go
    to the layout's loader (``precision``, both; ``batch_size``; ``threads``, ``cache_size``,
    ``components``).
    """
    path, _cfg, kind = open_model_dir(model_dir)
    return LOADERS[kind](path, device, **kwargs)


def decode_config_for(model_dir: str | os.PathLike[str]) -> DecodeConfig:
    """How media bytes must be decoded for the model in ``model_dir``: its config.json
    ``preprocess`` section (:func:`~model.format.multimodal.read_preprocess`; the defaults for a
    text model or a directory written before the section existed). Reads config.json only."""
    from model.format.multimodal import read_preprocess

    path, cfg, _kind = open_model_dir(model_dir)
    return read_preprocess(cfg, f"{path}/config.json")
