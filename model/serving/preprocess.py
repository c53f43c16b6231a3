"""The preprocessing every path shares: text cleaning, media decoding, resampling.

Training, evaluation, feature extraction and serving all call these, so a comment is prepared the
same way wherever it is classified.
"""

from __future__ import annotations

import html
import io
import re
import unicodedata
from pathlib import Path

import numpy as np

from schemas.errors import CommentflowError

__all__ = ["FeatureError", "clean_text", "decode_audio", "decode_image", "resample"]

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w{1,30}")
_WS = re.compile(r"\s+")


class FeatureError(CommentflowError):
    """A media file of a data set that cannot be decoded."""


def _strip_control(s: str) -> str:
    # Cc (control) and Cf (format: zero-width, bidi marks) go; whitespace becomes a space first.
    return "".join(
        " " if ch.isspace() else ch
        for ch in s
        if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )


def clean_text(s: str) -> str:
    """Normalise one comment for training and inference.

    NFKC, HTML entities unescaped (``&amp;`` -> ``&``), control/format characters removed, URLs ->
    ``http``, @mentions -> ``@user``, whitespace collapsed and stripped. Case is kept (the encoder
    lower-cases itself).
    """
    if not s:
        return ""
    s = _WS.sub(" ", unicodedata.normalize("NFKC", html.unescape(s)))
    if not s.isprintable():  # rare: only then look at every character
        s = _strip_control(s)
    s = _URL.sub(" http ", s)
    s = _MENTION.sub("@user", s)
    return _WS.sub(" ", s).strip()


def decode_image(data: bytes, path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except Exception as exc:  # PIL raises many types for broken files
        raise FeatureError(f"cannot decode image {path}: {exc}") from exc


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited (FFT) resampling of a whole mono clip."""
    if sr_in == sr_out or len(x) == 0:
        return x
    n_out = round(len(x) * sr_out / sr_in)
    spec = np.fft.rfft(x.astype(np.float64))
    keep = np.zeros(n_out // 2 + 1, np.complex128)
    m = min(len(spec), len(keep))
    keep[:m] = spec[:m]
    return (np.fft.irfft(keep, n_out) * (n_out / len(x))).astype(np.float32)


def decode_audio(data: bytes, path: Path, sr: int) -> np.ndarray:
    import soundfile as sf

    try:
        wave, file_sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/...
        raise FeatureError(f"cannot decode audio {path}: {exc}") from exc
    return resample(wave.mean(axis=1), int(file_sr), sr)
