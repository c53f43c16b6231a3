"""The character n-gram expert of a model directory: ``char_expert.safetensors`` + a config block.

::

    "char_expert": {"file": "char_expert.safetensors", "language": "zh", "weight": 0.75,
                    "n_min": 1, "n_max": 3, "buckets": 262144, "fitted_on": "...", ...}

The serving path (:mod:`model.serving.char_expert`) adds ``weight`` x the expert's polarity
log-odds to the sentiment logits of comments written in ``language`` (and only those). Absent
means no expert, so directories written before it serve exactly as they did. Written by
``commentflow train-char-expert`` into a text model; ``train-fusion`` copies it into the
multimodal model built on that text model (:func:`copy_char_expert`). Safetensors only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from model.errors import ModelFormatError
from model.format.directory import copy_config_part, declared_safetensors, replace_config
from model.nn.char_ngram import CharNgramConfig, CharNgramModel

__all__ = [
    "CHAR_EXPERT_KEY",
    "CharExpert",
    "copy_char_expert",
    "read_char_expert",
    "write_char_expert",
]

CHAR_EXPERT_KEY = "char_expert"
_FILE = "char_expert.safetensors"
_TENSORS = ("idf", "weight", "bias")


@dataclass(frozen=True)
class CharExpert:
    """A loaded expert: the n-gram model, the language it reads and its weight in the logits."""

    model: CharNgramModel
    language: str
    weight: float


def read_char_expert(model_dir: str | Path, config: Mapping[str, Any]) -> CharExpert | None:
    """The expert a loaded ``config.json`` declares (None when it declares none)."""
    block = config.get(CHAR_EXPERT_KEY)
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise ModelFormatError(f"{CHAR_EXPERT_KEY} must be an object: {block!r}")
    try:
        ngram = CharNgramConfig(int(block["n_min"]), int(block["n_max"]), int(block["buckets"]))
        language, weight = str(block["language"]), float(block["weight"])
        name = str(block["file"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{CHAR_EXPERT_KEY} is incomplete or mistyped: {exc}") from None
    if not math.isfinite(weight) or weight < 0 or not language:
        raise ModelFormatError(f"{CHAR_EXPERT_KEY}: weight must be >= 0, language named: {block}")
    path = declared_safetensors(model_dir, CHAR_EXPERT_KEY, name)
    tensors = load_file(str(path))
    model = CharNgramModel(ngram)
    try:
        model.load_state_dict({k: tensors[k] for k in _TENSORS}, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise ModelFormatError(f"{path} does not match {CHAR_EXPERT_KEY}: {exc}") from None
    return CharExpert(model.eval(), language, weight)


def write_char_expert(
    model_dir: str | Path, model: CharNgramModel, *, language: str, weight: float, **facts: Any
) -> Path:
    """Save ``model`` into ``model_dir`` and declare it in its ``config.json`` (the rest of the
    file kept); refuses what could not be read back."""
    out = Path(model_dir)
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    tensors = {k: getattr(model, k).detach().contiguous() for k in _TENSORS}
    save_file(tensors, str(out / _FILE), metadata={"format": "commentflow.char_expert"})
    cfg[CHAR_EXPERT_KEY] = {
        "file": _FILE,
        "language": language,
        "weight": round(float(weight), 6),
        **model.config.to_json(),
        **facts,
    }
    read_char_expert(out, cfg)
    replace_config(out, cfg)
    return out / _FILE


def copy_char_expert(src_dir: str | Path, dst_dir: str | Path) -> bool:
    """Copy the expert of ``src_dir`` (a text model) into ``dst_dir``'s files and config; False
    when ``src_dir`` has none."""
    return copy_config_part(src_dir, dst_dir, CHAR_EXPERT_KEY, read_char_expert)
