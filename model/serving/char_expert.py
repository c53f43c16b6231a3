"""Serving the character n-gram expert (:mod:`model.nn.char_ngram`, its files:
:mod:`model.format.char_expert`).

A model directory that declares ``char_expert`` gets, for each comment whose text is written in
the expert's language (by script: :func:`~model.serving.language.script_language`, the rule the
language detector applies to Chinese, Japanese and Korean), ``weight x s / 2`` added to its
*positive* logit and subtracted from its *negative* one, where ``s`` is the expert's polarity
log-odds on the comment text as the encoders read it (the model's normaliser): the
positive-negative margin moves by ``weight x s``; *neutral* is left alone. Every other comment
is untouched. The temperature applies after this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from model.errors import ModelFormatError
from model.format.char_expert import CharExpert
from model.serving.language import script_language

__all__ = ["apply_char_expert", "char_expert_rows", "is_active"]


def is_active(expert: CharExpert | None) -> bool:
    """Whether ``expert`` moves any score (present, with a weight above 0)."""
    return expert is not None and expert.weight > 0


def char_expert_rows(
    expert: CharExpert | None, texts: Sequence[str], eligible: Sequence[bool] | None = None
) -> list[int]:
    """Indices of the ``texts`` (raw, as the comments came) the expert reads; ``eligible``
    limits them further (the multimodal model: the rows its text expert answers)."""
    if not is_active(expert):
        return []
    return [
        i
        for i, t in enumerate(texts)
        if (eligible is None or eligible[i]) and script_language(t) == expert.language
    ]


def apply_char_expert(
    logits: torch.Tensor,
    expert: CharExpert | None,
    labels: Sequence[str],
    raw: Sequence[str],
    prepare: Callable[[str], str],
    rows: Sequence[int],
) -> torch.Tensor:
    """``logits`` ``(N, C)`` with the expert's margin added on ``rows`` (from
    :func:`char_expert_rows`; a new tensor when any row changes). The expert reads
    ``prepare(raw[i])`` (the model's normaliser, as the encoders do), of those rows only."""
    if not rows:
        return logits
    assert expert is not None
    if "positive" not in labels or "negative" not in labels:
        raise ModelFormatError(f"a char expert needs 'positive' and 'negative' labels: {labels}")
    pos, neg = list(labels).index("positive"), list(labels).index("negative")
    half = expert.model([prepare(raw[i]) for i in rows]).to(logits.device, logits.dtype)  # (k,)
    half = half * (expert.weight / 2.0)
    idx = torch.tensor(rows, device=logits.device)
    out = logits.clone()
    out[idx, pos] += half
    out[idx, neg] -= half
    return out
