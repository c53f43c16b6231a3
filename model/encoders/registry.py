"""One registry from a config's encoder ``source`` to the factory that builds it.

``config.json`` names each encoder by role (``text``, ``image``, ``ocr``, ``asr``) and a
``source``: ``package`` (the pip-packaged model) or ``path`` (a local text encoder); a ``text``
section may also be ``experts``, several text encoders concatenated (the text sections:
:mod:`model.encoders.experts`; the package decides the architecture: MiniLM or USE-m3).
Other sources are plugins: :func:`register` adds one (``model.testing`` registers ``fake``).
A process that did not import the plugin itself (a worker started by a test) imports the modules
named in the ``COMMENTFLOW_ENCODER_PLUGINS`` environment variable (comma-separated) on the first
unknown source.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.errors import ModelFormatError

__all__ = ["PLUGINS_ENV", "BuildContext", "Factory", "build", "media_threads", "register"]

PLUGINS_ENV = "COMMENTFLOW_ENCODER_PLUGINS"
ROLES = ("text", "image", "ocr", "asr")


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a factory may need besides its config section."""

    model_dir: Path
    device: str
    threads: int
    precision: str = "auto"  # the text encoders' float format (model.precision)


Factory = Callable[[Mapping[str, Any], BuildContext], Any]
_FACTORIES: dict[tuple[str, str], Factory] = {}


def register(role: str, source: str, factory: Factory) -> None:
    """Build ``role`` encoders whose config says ``"source": source`` with ``factory``."""
    if role not in ROLES:
        raise ValueError(f"unknown encoder role {role!r} (one of {ROLES})")
    _FACTORIES[(role, source)] = factory


def _load_plugins() -> None:
    for name in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)


def build(role: str, section: Mapping[str, Any], ctx: BuildContext) -> Any:
    """The ``role`` encoder that its config ``section`` names; ModelFormatError if unknown."""
    source = str(section.get("source", "package"))
    if (role, source) not in _FACTORIES:
        _load_plugins()
    factory = _FACTORIES.get((role, source))
    if factory is None:
        known = sorted(s for r, s in _FACTORIES if r == role)
        raise ModelFormatError(
            f"encoders.{role}.source {source!r} is unknown ({' | '.join(known)})"
        )
    return factory(section, ctx)


# -- the built-in sources; each imports its heavy package only when it builds -------------------


def _text(section: Mapping[str, Any], ctx: BuildContext) -> Any:
    from model.encoders.experts import build_text_encoder, text_config_from_json

    config = text_config_from_json(section)
    return build_text_encoder(
        config, base_dir=ctx.model_dir, device=ctx.device, precision=ctx.precision
    )


def _image(section: Mapping[str, Any], ctx: BuildContext) -> Any:
    from model.encoders.image import ImageEncoder

    return ImageEncoder(device=ctx.device)


def media_threads(threads: int) -> tuple[int, int]:
    """CPU threads of OCR and of ASR out of ``threads``: the feature extractor runs them at once
    (:meth:`~model.serving.features.FeatureExtractor.read_media`), so they split the cores.

    The ``ocr`` / ``asr`` sections may override: ``threads``; ``batched`` (OCR) and ``window``
    (ASR), which ``bench-model`` sets to measure the one-clip-at-a-time path beside the default.
    """
    threads = max(1, int(threads))
    return max(1, threads - threads // 2), max(1, threads // 2)


def _ocr(section: Mapping[str, Any], ctx: BuildContext) -> Any:
    from model.encoders.ocr import OcrReader

    return OcrReader(
        threads=int(section.get("threads", media_threads(ctx.threads)[0])),
        max_side=int(section.get("max_side", 640)),
        min_score=float(section.get("min_score", 0.5)),
        unglue=bool(section.get("unglue", False)),
        device=ctx.device,
        batched=bool(section.get("batched", True)),
    )


def _asr(section: Mapping[str, Any], ctx: BuildContext) -> Any:
    from model.encoders.asr import SpeechRecognizer

    return SpeechRecognizer(
        threads=int(section.get("threads", media_threads(ctx.threads)[1])),
        device=ctx.device,
        window=str(section.get("window", "speech")),
    )


register("text", "package", _text)
register("text", "path", _text)
register("text", "experts", _text)
register("image", "package", _image)
register("ocr", "package", _ocr)
register("asr", "package", _asr)
