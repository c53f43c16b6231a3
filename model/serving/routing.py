"""Comments in a language MiniLM cannot read: served with USE-m3 alone.

all-MiniLM-L6-v2 reads English word pieces; a Spanish, French or German comment gives it noise,
and its lower layers (``text_encoder.layers``) turned that noise into confident wrong labels
(text model 1.2.0 read 13 of 18 such spot checks right, 1.1.0 16). The multilingual expert
(USE-m3, 16 languages) reads them. A text model trained with MiniLM dropout (``commentflow train
--minilm-dropout P``: training rows read MiniLM's block at its training mean with probability P,
so the head also learnt to decide from USE-m3 alone) says so in its ``config.json``::

    "minilm_unsupported": "mean"

and then a comment whose language the :class:`~model.serving.language.LanguageGate` finds
*unsupported* (confidently detected, not in the model's ``languages``; the prediction already
says ``confidence: "low"``) is classified with MiniLM's block at the head's training mean
(zero after the head's standardisation). English, Chinese and undetermined text (short, emoji)
are served as trained: nothing of theirs changes. Absent key (every model before text 1.4.0):
MiniLM is read for every comment.

:func:`minilm_route` reads the key (``None``: no routing), :func:`route_features` applies it to a
batch of text features; the text classifier and the default model's text slot both use them, so
a text-only comment gets the same logits from either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from model.encoders.experts import TextConfig, minilm_columns
from model.errors import ModelFormatError

__all__ = ["ROUTE_KEY", "minilm_route", "route_features"]

#: The ``config.json`` key, and its one value besides the default ``"read"``.
ROUTE_KEY = "minilm_unsupported"
_VALUES = ("read", "mean")


def minilm_route(config: Mapping[str, Any], text: TextConfig) -> slice | None:
    """MiniLM's columns in the text features when ``config`` routes unsupported languages past
    it, else None. Raises :class:`ModelFormatError` for an unknown value, or a route on a text
    section without MiniLM beside another expert."""
    value = config.get(ROUTE_KEY, "read")
    if value not in _VALUES:
        raise ModelFormatError(f"config.json {ROUTE_KEY} must be one of {_VALUES}, not {value!r}")
    if value == "read":
        return None
    cols = minilm_columns(text)
    if cols is None:
        raise ModelFormatError(f"{ROUTE_KEY}: 'mean' needs MiniLM beside another text expert")
    return cols


def route_features(
    x: torch.Tensor, unsupported: Sequence[bool], cols: slice | None, mean: torch.Tensor
) -> torch.Tensor:
    """``x`` (N, F) with MiniLM's columns of the ``unsupported`` rows set to ``mean[cols]``
    (the head's training mean); ``x`` itself when nothing is routed."""
    if cols is None or not any(unsupported):
        return x
    rows = torch.tensor(list(unsupported), dtype=torch.bool, device=x.device)  # (N,)
    x = x.clone()
    x[rows, cols] = mean[cols].to(device=x.device, dtype=x.dtype)
    return x
