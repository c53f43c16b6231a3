"""What every commentflow classifier takes and returns.

A batch of :class:`CommentInput` goes in (text plus any decoded images and audio), one
:class:`ClassOutput` per comment comes out, in order. Implementations must be safe to call from
one dedicated inference thread (never the event loop) and must not keep per-call state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["LABELS", "MODALITIES", "SENTIMENT_HEAD", "ClassOutput", "Classifier", "CommentInput"]

#: The sentiment labels, in the order of every score vector.
LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
#: Every modality a comment can carry.
MODALITIES: tuple[str, ...] = ("text", "image", "audio")
#: The head whose output is the sentiment prediction (in model directories and networks).
SENTIMENT_HEAD = "sentiment"


@dataclass(frozen=True, slots=True)
class CommentInput:
    """One comment as the model sees it.

    ``images`` are decoded RGB arrays ``(H, W, 3) uint8``; ``audio`` are mono ``float32`` arrays
    at the model's sample rate. Media that failed to fetch or decode is simply absent here.
    """

    text: str
    images: tuple[np.ndarray, ...] = field(default=())
    audio: tuple[np.ndarray, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ClassOutput:
    """The model's answer for one comment.

    ``language`` is the comment text's detected language (ISO 639-1, ``und`` when it cannot be
    told, None when the classifier does not detect languages); ``language_supported`` is False
    when that language is confidently one the model was not trained and validated on, so the
    answer is a guess (the prediction then says ``confidence: "low"``). ``ocr_text`` and
    ``transcript`` are what the model read from the comment's pictures and heard in its voice
    notes (joined, as the text encoder saw them; empty when none or not a multimodal model): the
    worker's entity stage reads them.
    """

    label: str
    scores: dict[str, float]  # label -> probability, sums to 1
    modalities: tuple[str, ...]  # the modalities the model actually used
    language: str | None = None
    language_score: float = 0.0  # the detector's confidence in ``language``
    language_supported: bool = True
    ocr_text: str = ""
    transcript: str = ""


@runtime_checkable
class Classifier(Protocol):
    """A loaded model: batch in, one output per comment out."""

    name: str
    version: str
    labels: tuple[str, ...]
    device: str

    def predict(self, batch: Sequence[CommentInput]) -> list[ClassOutput]:
        """Classify ``batch``; blocking (run it off the event loop)."""
        ...
