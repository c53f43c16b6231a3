"""The classification head: a small MLP (or an ensemble of them) over frozen features."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from model.base import LABELS
from model.errors import ModelFormatError

__all__ = ["HeadConfig", "MLPHead"]


@dataclass(frozen=True, slots=True)
class HeadConfig:
    """Shape of one classification head; stored in ``config.json`` under ``heads.<name>``.

    ``hidden_dim=0`` makes the head a single linear layer (multinomial logistic regression).
    ``standardize`` stores the training features' mean and std as buffers and applies them first.
    ``members`` > 1 makes the head an ensemble of that many MLPs whose logits are averaged.
    """

    in_dim: int
    hidden_dim: int = 256
    dropout: float = 0.1
    standardize: bool = False
    members: int = 1
    labels: tuple[str, ...] = LABELS
    input: str = "text"
    type: str = "mlp"

    def __post_init__(self) -> None:
        if self.type != "mlp":
            raise ModelFormatError(f"unknown head type {self.type!r} (this version knows 'mlp')")
        if (
            self.in_dim <= 0
            or self.hidden_dim < 0
            or self.members < 1
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ModelFormatError(f"bad head dimensions: {self}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ModelFormatError(f"a head needs >= 2 distinct labels, got {self.labels}")

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeadConfig:
        try:
            return cls(**{**data, "labels": tuple(data.get("labels", LABELS))})
        except TypeError as exc:
            raise ModelFormatError(f"bad head section: {exc}") from exc


class MLPHead(nn.Module):
    """Features ``(B, in_dim)`` -> logits ``(B, n_classes)``.

    [standardize] -> dropout -> Linear -> GELU -> dropout -> Linear (one Linear if hidden_dim=0),
    ``members`` times in parallel, logits averaged.
    """

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("feat_mean", torch.zeros(c.in_dim), persistent=c.standardize)
        self.register_buffer("feat_std", torch.ones(c.in_dim), persistent=c.standardize)
        self.nets = nn.ModuleList(self._mlp(c) for _ in range(c.members))

    @staticmethod
    def _mlp(c: HeadConfig) -> nn.Sequential:
        if c.hidden_dim == 0:
            return nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.in_dim, c.n_classes))
        return nn.Sequential(
            nn.Dropout(c.dropout / 2),  # light input dropout regularises frozen features
            nn.Linear(c.in_dim, c.hidden_dim),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden_dim, c.n_classes),
        )

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp(min=1e-6))

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in_dim)
        """Each member's logits ``(M, B, n_classes)`` (training sums the members' losses)."""
        if self.config.standardize:
            x = (x - self.feat_mean) / self.feat_std  # (B, in_dim)
        return torch.stack([net(x) for net in self.nets])  # (M, B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in_dim)
        return self.member_logits(x).mean(0)  # (B, C)
