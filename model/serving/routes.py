"""Which route each served row takes, and so which calibration temperature divides its logits.

The routes (:data:`model.format.calibration.ROUTES`): ``text`` (the text head), ``fused`` (the
fusion Transformer: comments with media, or with nothing), ``char`` (text-only comments in
the character expert's language: the head plus :mod:`model.serving.char_expert`) and
``fallback`` (text-only comments in a language the model was not trained on, answered by its
fallback head: :mod:`model.serving.fallback`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from model.format.calibration import ROUTE_CHAR, ROUTE_FALLBACK, ROUTE_FUSED, ROUTE_TEXT
from model.format.char_expert import CharExpert
from model.format.fallback_head import FallbackHead
from model.serving.char_expert import apply_char_expert, char_expert_rows
from model.serving.fallback import apply_fallback, fallback_rows
from model.serving.language import Language

__all__ = ["calibrated_probs", "route_temperatures", "row_routes"]


def row_routes(
    n: int,
    expert_rows: torch.Tensor | None = None,
    char_rows: Sequence[int] = (),
    fallback: Sequence[int] = (),
) -> torch.Tensor:
    """``(n,)`` int64 route ids: ``expert_rows`` ``(n,)`` bool (the multimodal model's text-only
    rows; None: a text model, every row on the text route) are ``text``, the others ``fused``;
    ``char_rows`` (indices) are ``char``, ``fallback`` (indices) ``fallback``."""
    if expert_rows is None:
        routes = torch.full((n,), ROUTE_TEXT, dtype=torch.int64)
    else:
        routes = torch.full((n,), ROUTE_FUSED, dtype=torch.int64)
        routes[expert_rows.bool().cpu()] = ROUTE_TEXT
    if len(char_rows):
        routes[torch.as_tensor(list(char_rows), dtype=torch.int64)] = ROUTE_CHAR
    if len(fallback):
        routes[torch.as_tensor(list(fallback), dtype=torch.int64)] = ROUTE_FALLBACK
    return routes


def route_temperatures(routes: torch.Tensor, temperatures: Sequence[float]) -> torch.Tensor:
    """``(n, 1)`` float32: each row's temperature, ``temperatures`` indexed by route id."""
    return torch.tensor([float(t) for t in temperatures], dtype=torch.float32)[routes][:, None]


def calibrated_probs(
    logits: torch.Tensor,
    labels: Sequence[str],
    temperatures: Sequence[float],
    *,
    texts: Sequence[str] | None = None,
    prepare: Callable[[str], str] = str,
    char_expert: CharExpert | None = None,
    expert_rows: torch.Tensor | None = None,
    fallback: FallbackHead | None = None,
    languages: Sequence[Language] | None = None,
    features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The served probabilities ``(N, C)`` of sentiment ``logits`` (CPU) and each row's route:
    the character expert on the rows it reads (text-only, ``expert_rows`` when given, and in its
    language; ``texts`` None skips it), the fallback head on the text-only rows whose language
    the gate found unsupported (``languages``; it reads the text ``features`` ``(N, F)``; None
    skips it), then each row divided by its route's temperature. One tail for both classifiers
    and the evaluator's ``fusion_scores``."""
    eligible = None if expert_rows is None else expert_rows.tolist()
    rows = char_expert_rows(char_expert, texts, eligible) if texts is not None else []
    logits = apply_char_expert(logits, char_expert, labels, texts or [], prepare, rows)
    foreign = fallback_rows(fallback, languages, eligible, rows) if features is not None else []
    if foreign:
        assert features is not None
        logits = apply_fallback(logits, fallback, features, foreign)
    routes = row_routes(len(logits), expert_rows, rows, foreign)
    return torch.softmax(logits / route_temperatures(routes, temperatures), dim=-1), routes
