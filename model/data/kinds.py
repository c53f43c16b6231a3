"""The kinds of comment in a multimodal data set: which modalities carry the label."""

from __future__ import annotations

__all__ = ["KINDS"]

#: In report order.
KINDS: tuple[str, ...] = ("text", "image_only", "audio_only", "text_image", "text_audio")
