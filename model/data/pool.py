"""Rows of cached features as tensors, and the fusion model's input batches drawn from them.

A :class:`Pool` holds a data set's features (a multimodal ``.npz`` of :mod:`model.data.featurise`
or text-only encoder features); :func:`gather` builds the fusion input dict of some rows and
:func:`concat` joins such dicts. Training and evaluation both read their data this way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.data.featurise import FeatureSet
from model.data.kinds import KINDS
from model.nn.acoustic import LOG_EPS
from model.nn.fusion import PRESENCE

__all__ = ["KINDS", "Pool", "concat", "gather"]

_TEXT = PRESENCE.index("text")


@dataclass
class Pool:
    """Rows of features as tensors (``None``: all zeros); ``fs`` holds the log-mel if any."""

    text: torch.Tensor  # (N, Dt) float16
    image: torch.Tensor | None  # (N, Di)
    ocr: torch.Tensor | None  # (N, Dt)
    speech: torch.Tensor | None  # (N, Dt)
    present: torch.Tensor  # (N, 5) bool
    y: torch.Tensor  # (N,) int64
    kinds: np.ndarray  # (N,) str
    fs: FeatureSet | None = None
    rows: np.ndarray | None = None  # row of each item in fs

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @classmethod
    def from_features(cls, fs: FeatureSet, rows: np.ndarray | None = None) -> Pool:
        rows = np.arange(len(fs)) if rows is None else np.asarray(rows)
        ok = rows[fs.label_ids[rows] >= 0]
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a[ok]))  # noqa: E731
        return cls(
            text=t(fs.text),
            image=t(fs.image),
            ocr=t(fs.ocr),
            speech=t(fs.speech),
            present=t(fs.present).bool(),
            y=t(fs.label_ids).long(),
            kinds=fs.kinds[ok],
            fs=fs,
            rows=ok,
        )

    @classmethod
    def from_text(cls, feats: np.ndarray, y: np.ndarray) -> Pool:
        present = torch.zeros(len(y), len(PRESENCE), dtype=torch.bool)
        present[:, _TEXT] = True
        return cls(
            text=torch.from_numpy(feats.astype(np.float16)),
            image=None,
            ocr=None,
            speech=None,
            present=present,
            y=torch.from_numpy(np.asarray(y, np.int64)),
            kinds=np.full(len(y), "text"),
        )


def gather(
    pool: Pool,
    idx: torch.Tensor,
    dims: tuple[int, int],
    *,
    crop_frames: int | None = None,
    gen: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The fusion input dict of ``pool[idx]``; ``crop_frames``: random log-mel window."""
    dt, di = dims
    b = len(idx)

    def col(t: torch.Tensor | None, width: int) -> torch.Tensor:
        return torch.zeros(b, width) if t is None else t[idx].float()

    batch = {
        "text": col(pool.text, dt),
        "image": col(pool.image, di),
        "ocr": col(pool.ocr, dt),
        "speech": col(pool.speech, dt),
        "present": pool.present[idx].clone(),
        "y": pool.y[idx],
    }
    if pool.fs is not None:
        mel, lengths = pool.fs.mel_batch(pool.rows[idx.numpy()])  # (B, T, M), (B,)
        mel_t, len_t = torch.from_numpy(mel), torch.from_numpy(lengths.astype(np.int64))
        if crop_frames is not None and mel_t.shape[1] > crop_frames:
            out = torch.full((b, crop_frames, mel_t.shape[2]), float(np.log(LOG_EPS)))
            span = (len_t - crop_frames).clamp(min=0)  # (B,)
            start = (torch.rand(b, generator=gen) * (span + 1).float()).long()  # (B,)
            for i in range(b):  # a handful of clips per batch
                n = int(min(len_t[i], crop_frames))
                out[i, :n] = mel_t[i, start[i] : start[i] + n]
            mel_t, len_t = out, len_t.clamp(max=crop_frames)
        batch["mel"], batch["mel_lengths"] = mel_t, len_t
    else:
        batch["mel"] = torch.full((b, 1, 64), float(np.log(LOG_EPS)))
        batch["mel_lengths"] = torch.zeros(b, dtype=torch.int64)
    return batch


def concat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate input dicts along the batch, padding log-mel to the longest."""
    t = max(p["mel"].shape[1] for p in parts)
    out: dict[str, torch.Tensor] = {}
    for k in parts[0]:
        if k == "mel":
            padded = [
                torch.nn.functional.pad(
                    p["mel"], (0, 0, 0, t - p["mel"].shape[1]), value=float(np.log(LOG_EPS))
                )
                for p in parts
            ]
            out[k] = torch.cat(padded)
        else:
            out[k] = torch.cat([p[k] for p in parts])
    return out
