"""Serving the fallback head (:mod:`model.nn.linear_probe`, its files:
:mod:`model.format.fallback_head`) to comments in languages the model was not trained on.

The text head leans on MiniLM, which reads English word pieces: on a language it never saw
(Chinese left out of training) it was at chance, and a Spanish or German comment is noise that
can look like a confident English label. USE-m3 maps sixteen languages into one space, and a
linear probe on its block alone, fitted on English, carries over (Chinese, never seen: 70% on
validation). So a text-only comment that the language gate finds *unsupported*, in one of the
fallback's ``languages``, gets the probe's logits on its USE-m3 features instead of the head's.
Such a comment is still served ``confidence: "low"``: the fallback is a better guess, not a
validated one. Everything else is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.format.fallback_head import FallbackHead
from model.serving.language import Language

__all__ = ["apply_fallback", "fallback_rows"]


def fallback_rows(
    head: FallbackHead | None,
    languages: Sequence[Language] | None,
    eligible: Sequence[bool] | None = None,
    exclude: Sequence[int] = (),
) -> list[int]:
    """Indices of the rows the fallback answers: the gate found their language unsupported
    and the head serves it; ``eligible`` limits them (the multimodal model: its text-only rows),
    ``exclude`` drops rows another route already took."""
    if head is None or not languages:
        return []
    skip = set(exclude)
    return [
        i
        for i, lang in enumerate(languages)
        if not lang.supported
        and lang.code in head.languages
        and (eligible is None or eligible[i])
        and i not in skip
    ]


def apply_fallback(
    logits: torch.Tensor, head: FallbackHead | None, features: torch.Tensor, rows: Sequence[int]
) -> torch.Tensor:
    """``logits`` ``(N, C)`` with ``rows`` replaced by the probe's logits on their USE-m3
    columns of ``features`` ``(N, F)`` (a new tensor when any row changes)."""
    if not rows:
        return logits
    assert head is not None
    idx = torch.tensor(list(rows), dtype=torch.long)
    x = features[idx.to(features.device), head.columns].float().cpu()  # (k, Du)
    out = logits.clone()
    out[idx.to(out.device)] = head.probe(x).to(out.device, out.dtype)
    return out
