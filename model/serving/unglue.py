"""Spaces back into words that OCR glued together: ``USSITTINGONTHEPLANE`` -> ``US SITTING ON
THE PLANE``.

The OCR model (PP-OCR, a character-level recogniser) often drops the spaces of big, bold,
tightly set text: memes, captions, banners. A sentence glued into one token is a string of
``[UNK]``-like word pieces to MiniLM and a rare token to USE-m3, so the comment's sentiment is
lost. :func:`unglue` splits every run of 6 or more ASCII letters that is not one English word
into the most probable words (``wordninja``, MIT: a unigram model of English Wikipedia
frequencies); anything else (digits, punctuation, non-Latin scripts, real long words) is kept.
A model applies it to the text read in pictures when its ``encoders.ocr`` section says
``"unglue": true`` (:class:`~model.serving.features.FeatureExtractor`), in training and serving
alike.
"""

from __future__ import annotations

import functools
import re

__all__ = ["unglue"]

_RUN = re.compile(r"[A-Za-z]{6,}")


@functools.lru_cache(maxsize=1)
def _splitter():  # noqa: ANN202 - wordninja has no types
    import wordninja  # loads its 0.5 MB word list once

    return wordninja.split


def _split(m: re.Match[str]) -> str:
    run = m.group(0)
    parts = _splitter()(run)
    if len(parts) < 2 or "".join(parts) != run:
        return run
    return " ".join(parts)


def unglue(text: str) -> str:
    """``text`` with glued English words split; unchanged when there is nothing to split."""
    return _RUN.sub(_split, text) if text else text
