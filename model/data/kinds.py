"""The kinds of comment in a multimodal data set: which modalities carry the label."""

from __future__ import annotations

__all__ = ["KINDS"]

#: In report order.
KINDS: tuple[str, ...] = (
    "text",
    "image_only",
    "audio_only",
    "text_image",
    "text_audio",
    "meme",  # a carrier text; the sentence as a meme (caps, outline) on a photo
    "noisy_audio",  # a carrier text; the sentence spoken over strong noise (SNR 0-10 dB)
    "text_photo",  # the sentence; a photo without text (labelled by the text)
    "text_unrelated",  # the sentence; a picture of unrelated neutral text ("ORDER #4411 ...")
    "text_mismatch",  # the sentence; another sentence of another label, pictured or spoken
    "photo_only",  # a carrier text (or none); a photo without text: neutral
    "no_signal",  # no text or a carrier; a noise/flat picture or silence/noise: neutral
)
