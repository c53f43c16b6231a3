"""Tiny random multimodal model directories and light fake media components, for tests.

The fakes are deterministic functions of the media content (so caches and batching can be
checked) and count their calls; they load nothing. A format-v2 directory whose
``encoders.image/ocr/asr`` say ``"source": "fake"`` builds them instead of EfficientNet, RapidOCR
and Whisper, so ``model.load_classifier`` works on it in unit tests.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.encoders import registry
from model.encoders.text import TextEncoderConfig
from model.format.multimodal import save_multimodal_dir
from model.nn.acoustic import AcousticEncoderConfig, MelConfig
from model.nn.fusion import FusionConfig, FusionModel
from model.nn.heads import HeadConfig, MLPHead

__all__ = ["FakeAsr", "FakeImageEncoder", "FakeOcr", "fake_components", "make_tiny_multimodal_dir"]

_WORDS = ("great", "awful", "delay", "love", "hate", "flight", "ok", "music", "thanks", "worst")


def _digest(a: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).digest()


def _phrase(a: np.ndarray, n: int = 3) -> str:
    d = _digest(a)
    return " ".join(_WORDS[b % len(_WORDS)] for b in d[:n])


class FakeImageEncoder:
    """``encode(images) -> (N, dim)``: a pseudo-random unit vector per distinct image."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = int(dim)
        self.identity = f"fake-image-{dim}"
        self.calls = 0
        self.items = 0

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        self.calls += 1
        self.items += len(images)
        out = [
            np.random.default_rng(int.from_bytes(_digest(im)[:8], "little")).standard_normal(
                self.dim
            )
            for im in images
        ]
        return np.asarray(out, np.float32).reshape(len(images), self.dim)


class FakeOcr:
    """``read(images)``: ``""`` for a uniform image, else three words picked by content."""

    identity = "fake-ocr"

    def __init__(self) -> None:
        self.calls = 0
        self.items = 0

    def read(self, images: Sequence[np.ndarray]) -> list[str]:
        self.calls += 1
        self.items += len(images)
        return ["" if np.ptp(im) == 0 else _phrase(im) for im in images]


class FakeAsr:
    """``transcribe(audio)``: ``""`` for silence (peak < 1e-3), else three words by content."""

    identity = "fake-asr"

    def __init__(self) -> None:
        self.calls = 0
        self.items = 0

    def transcribe(self, audio: Sequence[np.ndarray]) -> list[str]:
        self.calls += 1
        self.items += len(audio)
        return ["" if np.abs(a).max(initial=0.0) < 1e-3 else _phrase(a) for a in audio]


def fake_components(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Fakes for the ``encoders`` sections named (``image``, ``ocr``, ``asr``)."""
    makers = {
        "image": lambda sec: FakeImageEncoder(int(sec.get("dim", 16))),
        "ocr": lambda sec: FakeOcr(),
        "asr": lambda sec: FakeAsr(),
    }
    return {role: makers[role](sec) for role, sec in sections.items() if role in makers}


for _role in ("image", "ocr", "asr"):
    registry.register(_role, "fake", lambda sec, ctx, _r=_role: fake_components({_r: sec})[_r])
# Worker processes that tests start load fake directories too: they import this module on the
# first "fake" source (see model.encoders.registry).
os.environ.setdefault(registry.PLUGINS_ENV, __name__)


def tiny_fusion_config(
    text_dim: int = 32,
    image_dim: int = 16,
    text_expert_hidden: int = 0,
    *,
    text_expert_members: int = 1,
    text_only_expert: bool = False,
) -> FusionConfig:
    return FusionConfig(
        text_expert_hidden=text_expert_hidden,
        text_expert_members=text_expert_members,
        text_only_expert=text_only_expert,
        text_dim=text_dim,
        image_dim=image_dim,
        acoustic=AcousticEncoderConfig(channels=(4, 8), dim=16),
        d_model=32,
        n_heads=2,
        n_layers=1,
        ff_mult=2,
        dropout=0.1,
        modality_dropout=0.3,
    )


def make_tiny_multimodal_dir(path: str | Path, seed: int = 0) -> Path:
    """A complete format-v2 directory: tiny random BERT, tiny random fusion, fake media models.

    ``model.load_classifier(path)`` works on it without RapidOCR or Whisper; outputs are
    meaningless but deterministic for ``seed``.
    """
    from model.testing import TINY_BERT, make_tiny_model_dir

    out = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        v1 = make_tiny_model_dir(Path(tmp) / "v1", seed=seed)
        torch.manual_seed(seed)
        dim = TINY_BERT["hidden_size"]
        fusion = FusionModel(tiny_fusion_config(text_dim=dim, text_expert_hidden=8)).eval()
        # As if trained: a random text expert, and a head and gates that are not at their init.
        expert = MLPHead(HeadConfig(dim, 8, standardize=True))
        expert.set_standardization(torch.randn(dim) * 0.1, torch.rand(dim) + 0.5)
        fusion.load_text_expert({f"heads.sentiment.{k}": v for k, v in expert.state_dict().items()})
        with torch.no_grad():
            for p in (*fusion.heads.parameters(), *fusion.expert_gate.parameters()):
                p.normal_(0.0, 0.2)
        text = TextEncoderConfig(
            source="path",
            package=None,
            path="text_encoder",
            max_length=64,
            pooling="mean",
            dim=TINY_BERT["hidden_size"],
        )
        save_multimodal_dir(
            out,
            name="tiny-multimodal-test",
            version=f"0.0.0+seed{seed}",
            fusion=fusion,
            encoders={
                "text": text.to_json(),
                "image": {"source": "fake", "dim": 16},
                "ocr": {"source": "fake"},
                "asr": {"source": "fake"},
                "acoustic": MelConfig().to_json(),
            },
            metrics={"note": "random weights, for tests only"},
            model_card="# tiny-multimodal-test\n\nRandom weights for tests.\n",
            text_encoder_src=v1 / "text_encoder",
        )
    return out
