"""The text preprocessing every path shares: :func:`clean_text`.

Training, evaluation, feature extraction and serving all call it, so a comment is prepared the
same way wherever it is classified. Media are prepared by the one decoder,
:mod:`model.media.decode`, with the parameters saved in the model's ``config.json``.
"""

from __future__ import annotations

import html
import re
import unicodedata

from schemas.errors import CommentflowError

__all__ = ["FeatureError", "clean_text"]

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
