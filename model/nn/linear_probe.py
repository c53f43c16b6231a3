"""A linear probe: standardised features -> one linear layer -> class logits.

The fallback head for languages a model was not trained on (:mod:`model.format.fallback_head`)
is one of these on the USE-m3 block of the text features: USE-m3 maps sixteen languages into
one space, so a linear map fitted on English sentences reads a Spanish or Japanese one too (on
Chinese, which it never saw, it was right 70% of the time on validation reviews, where the full
head, leaning on MiniLM, was at chance).

1. **standardise**: ``(x - mean) / std`` with the training rows' mean and std (std floored);
2. **score**: ``W z + b``, one logit per class;
3. **fit** (:func:`fit_linear_probe`): multinomial logistic regression, mean cross-entropy plus
   ``lam * ||W||^2``, by full-batch L-BFGS in float64. Deterministic: no random state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["LinearProbe", "fit_linear_probe"]


class LinearProbe(nn.Module):
    """``forward(x (N, D)) -> logits (N, C)``; ``mean``, ``std``, ``weight``, ``bias`` are its
    whole state (buffers: nothing here trains by backprop once fitted)."""

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.register_buffer("weight", torch.zeros(n_classes, in_dim))
        self.register_buffer("bias", torch.zeros(n_classes))

    @property
    def in_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.bias.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.float() - self.mean) / self.std  # (N, D)
        return z @ self.weight.T + self.bias  # (N, C)


def fit_linear_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    lam: float = 1e-3,
    max_iter: int = 300,
    log: Callable[[str], None] | None = None,
) -> LinearProbe:
    """Fit a :class:`LinearProbe` on features ``x`` ``(N, D)`` and label ids ``y`` ``(N,)``."""
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need (N, D) features and N labels, got {tuple(x.shape)} / {len(y)}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    x64 = x.double()
    mean = x64.mean(0)
    std = x64.std(0).clamp(min=1e-6) if len(x) > 1 else torch.ones_like(mean)
    z = (x64 - mean) / std  # (N, D)
    y = y.long()
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z @ w.T + b, y) + lam * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    if log is not None:
        with torch.no_grad():
            loss = nn.functional.cross_entropy(z @ w.T + b, y) + lam * (w * w).sum()
        log(f"linear probe: {len(x)} rows x {x.shape[1]}, lam {lam:g}, loss {float(loss):.4f}")
    probe = LinearProbe(x.shape[1], n_classes)
    probe.mean.copy_(mean.float())
    probe.std.copy_(std.float())
    probe.weight.copy_(w.detach().float())
    probe.bias.copy_(b.detach().float())
    return probe.eval()
