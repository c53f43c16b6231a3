"""Which route each served row takes, and so which calibration temperature divides its logits.

The routes (:data:`model.format.calibration.ROUTES`): ``text`` (the text head), ``fused`` (the
fusion Transformer: comments with media, or with nothing) and ``char`` (text-only comments in
the character expert's language: the head plus :mod:`model.serving.char_expert`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.format.calibration import ROUTE_CHAR, ROUTE_FUSED, ROUTE_TEXT

__all__ = ["route_temperatures", "row_routes"]


def row_routes(
    n: int, expert_rows: torch.Tensor | None = None, char_rows: Sequence[int] = ()
) -> torch.Tensor:
    """``(n,)`` int64 route ids: ``expert_rows`` ``(n,)`` bool (the multimodal model's text-only
    rows; None: a text model, every row on the text route) are ``text``, the others ``fused``;
    ``char_rows`` (indices) are ``char``."""
    if expert_rows is None:
        routes = torch.full((n,), ROUTE_TEXT, dtype=torch.int64)
    else:
        routes = torch.full((n,), ROUTE_FUSED, dtype=torch.int64)
        routes[expert_rows.bool().cpu()] = ROUTE_TEXT
    if len(char_rows):
        routes[torch.as_tensor(list(char_rows), dtype=torch.int64)] = ROUTE_CHAR
    return routes


def route_temperatures(routes: torch.Tensor, temperatures: Sequence[float]) -> torch.Tensor:
    """``(n, 1)`` float32: each row's temperature, ``temperatures`` indexed by route id."""
    return torch.tensor([float(t) for t in temperatures], dtype=torch.float32)[routes][:, None]
