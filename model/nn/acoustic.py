"""Log-mel spectrograms and the small trainable acoustic encoder of the fusion model.

:func:`log_mel` / :func:`log_mel_batch` turn 16 kHz mono waveforms into ``log(mel power + 1e-6)``
frames with ``torch.stft`` and a triangular mel filterbank built here (no torchaudio: its wheels
link CUDA and break on a CPU torch). The mel scale is the **HTK** formula
``mel = 2595 * log10(1 + f / 700)`` with unnormalised triangles of peak 1 (torchaudio's
``melscale_fbanks(norm=None, mel_scale="htk")``), from ``f_min=0`` to ``sr / 2``.

Framing: a Hann window of ``n_fft`` samples every ``hop`` samples, centred (each clip is
reflect-padded by ``n_fft // 2`` on both sides), so a clip of ``n`` samples gives
``n // hop + 1`` frames. The batched version reflect-pads every clip on its own *before* the
zero padding to the batch's longest clip, so a clip's valid frames are the frames :func:`log_mel`
computes for it alone (up to float rounding), whatever it is batched with.

:class:`AcousticEncoder` is a small CNN over ``(mel, time)``: 4 blocks of stride-2 3x3
convolution, channel-wise LayerNorm and ReLU (16x fewer frames at the end); padded frames are
zeroed after every block and the output is the masked mean over the valid frames, so a clip's
embedding does not depend on its padding (in train mode too: no statistic is taken across frames
or items). Trained by the fusion trainer: ~100 clips/s forward, ~30 clips/s forward + backward
on 2 CPU threads at 10 s clips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

__all__ = [
    "LOG_EPS",
    "AcousticEncoder",
    "AcousticEncoderConfig",
    "MelConfig",
    "hz_to_mel",
    "log_mel",
    "log_mel_batch",
    "mel_filterbank",
    "mel_to_hz",
    "n_frames",
]

#: Added to the mel power before the log: silence (and padding) sits at ``log(1e-6) = -13.8``.
LOG_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class MelConfig:
    """How waveforms become log-mel frames (stored with the features and in checkpoints)."""

    sr: int = 16000
    n_mels: int = 64
    n_fft: int = 400  # 25 ms
    hop: int = 160  # 10 ms: 100 frames a second
    max_seconds: float = 10.0  # clips are cropped to their first max_seconds

    @property
    def max_samples(self) -> int:
        return int(round(self.max_seconds * self.sr))

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def _filterbank_np(sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)  # (F,) STFT bin centres
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))  # (M + 2,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    up = (freqs[None, :] - lower) / (centre - lower)  # (M, F)
    down = (upper - freqs[None, :]) / (upper - centre)  # (M, F)
    fb = np.maximum(0.0, np.minimum(up, down)).T  # (F, M)
    if (fb.max(axis=0) == 0).any():
        raise ValueError(
            f"n_mels={n_mels} is too many for n_fft={n_fft}: some mel filters cover no STFT bin"
        )
    fb.setflags(write=False)
    return fb


def mel_filterbank(
    sr: int = 16000,
    n_fft: int = 400,
    n_mels: int = 64,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> torch.Tensor:
    """Triangular HTK mel filters ``(n_fft // 2 + 1, n_mels)`` float32, peak 1, no area norm."""
    fb = _filterbank_np(sr, n_fft, n_mels, float(f_min), float(f_max or sr / 2))
    return torch.from_numpy(fb.astype(np.float32))


def n_frames(n_samples: int | np.ndarray, hop: int = 160) -> np.ndarray | int:
    """Frames a centred STFT gives for ``n_samples`` (0 for an empty clip)."""
    n = np.asarray(n_samples)
    out = np.where(n > 0, n // hop + 1, 0)
    return int(out) if out.ndim == 0 else out


def _as_tensor(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(audio)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform (n_samples,), got shape {tuple(x.shape)}")
    return x.to(torch.float32)


def _centre_pad(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Reflect-pad one clip by ``n_fft // 2`` each side (zero-extend clips too short to reflect)."""
    half = n_fft // 2
    if x.numel() <= half:  # reflect needs more samples than the pad
        x = torch.nn.functional.pad(x, (0, half + 1 - x.numel()))
    return torch.nn.functional.pad(x[None, None], (half, half), mode="reflect")[0, 0]


def log_mel_batch(
    audio: Sequence[np.ndarray | torch.Tensor],
    sr: int = 16000,
    n_mels: int = 64,
    n_fft: int = 400,
    hop: int = 160,
    max_seconds: float | None = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel frames of several clips: ``(B, T_max, n_mels)`` float32 and lengths ``(B,)`` int64.

    Each clip is cropped to its first ``max_seconds`` (``None``: no crop); ``T_max`` is the
    longest clip's frame count (at least 1, so an all-empty batch still has a time axis).
    Padded frames hold ``log(LOG_EPS)``. An empty clip has length 0.
    """
    b = len(audio)
    limit = None if max_seconds is None else int(round(max_seconds * sr))
    clips = [_as_tensor(a)[:limit] for a in audio]
    lengths = torch.as_tensor([n_frames(c.numel(), hop) for c in clips], dtype=torch.int64)  # (B,)
    t_max = max(1, int(lengths.max()) if b else 1)
    fb = mel_filterbank(sr, n_fft, n_mels)  # (F, M)
    if b == 0:
        return torch.empty((0, t_max, n_mels)), lengths
    # Every clip is centre-padded on its own, then zero-padded to a common width for one STFT:
    # a valid frame only reads its own clip's samples, so batching never changes it.
    width = (t_max - 1) * hop + n_fft
    wave = torch.zeros((b, width), dtype=torch.float32)  # (B, L)
    for i, c in enumerate(clips):
        if c.numel():
            padded = _centre_pad(c, n_fft)[:width]
            wave[i, : padded.numel()] = padded
    window = torch.hann_window(n_fft, periodic=True)
    spec = torch.stft(
        wave, n_fft=n_fft, hop_length=hop, window=window, center=False, return_complex=True
    )  # (B, F, T)
    power = spec.real.square() + spec.imag.square()  # (B, F, T)
    mel = torch.matmul(power.transpose(1, 2), fb)  # (B, T, M)
    mel = torch.log(mel + LOG_EPS)
    valid = torch.arange(mel.shape[1])[None, :] < lengths[:, None]  # (B, T)
    mel = mel.masked_fill(~valid[..., None], math.log(LOG_EPS))
    return mel, lengths


def log_mel(
    audio: np.ndarray | torch.Tensor,
    sr: int = 16000,
    n_mels: int = 64,
    n_fft: int = 400,
    hop: int = 160,
    max_seconds: float | None = 10.0,
) -> torch.Tensor:
    """Log-mel frames ``(frames, n_mels)`` float32 of one mono clip (``frames = n // hop + 1``)."""
    mel, lengths = log_mel_batch([audio], sr, n_mels, n_fft, hop, max_seconds)
    return mel[0, : int(lengths[0])]


# --------------------------------------------------------------------------- encoder


@dataclass(frozen=True, slots=True)
class AcousticEncoderConfig:
    """Shape of :class:`AcousticEncoder` (stored in the fusion checkpoint)."""

    n_mels: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)  # ~114k parameters
    dim: int = 128
    dropout: float = 0.1
    # Fixed input standardisation of log-mel values (valid frames of the espeak clips of
    # data/multimodal: mean -4.6, std 4.7); a constant keeps cross-frame statistics out.
    input_mean: float = -4.5
    input_std: float = 4.5

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("AcousticEncoderConfig.channels must not be empty")
        if self.n_mels < 2 ** len(self.channels):
            raise ValueError(
                f"n_mels={self.n_mels} is too small for {len(self.channels)} stride-2 blocks"
            )

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_json(cls, data: dict[str, object]) -> AcousticEncoderConfig:
        d = dict(data)
        if "channels" in d:
            d["channels"] = tuple(d["channels"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


class _ChannelNorm(nn.Module):
    """LayerNorm over channels at every (mel, time) cell: no statistic crosses frames."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, M, T)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _Block(nn.Module):
    """3x3 conv with stride 2 over (mel, time), channel LayerNorm, ReLU; padded frames to 0."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = _ChannelNorm(c_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Output frame j reads input frames 2j-1..2j+1: all valid (or the zero border) exactly
        # when j < lengths // 2, so those frames do not depend on how much padding follows.
        x = self.act(self.norm(self.conv(x)))  # (B, C, M / 2, T / 2)
        lengths = lengths // 2
        return _mask_time(x, lengths), lengths


def _mask_time(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    valid = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]  # (B, T)
    return x * valid[:, None, None, :].to(x.dtype)


class AcousticEncoder(nn.Module):
    """Log-mel frames ``(B, T, n_mels)`` + lengths ``(B,)`` -> an embedding ``(B, dim)``.

    A clip with no valid frame (no audio, or shorter than ``2 ** len(channels)`` frames) gets
    the embedding of an all-zero pooled vector; the fusion model's presence mask says to ignore
    it.
    """

    def __init__(self, config: AcousticEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AcousticEncoderConfig()
        chans = (1, *cfg.channels)
        self.blocks = nn.ModuleList(
            _Block(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.channels[-1], cfg.dim)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if mel.ndim != 3 or mel.shape[-1] != cfg.n_mels:
            raise ValueError(f"expected mel (B, T, {cfg.n_mels}), got {tuple(mel.shape)}")
        lengths = lengths.to(device=mel.device, dtype=torch.int64)
        x = (mel.float() - cfg.input_mean) / cfg.input_std  # (B, T, M)
        x = x.transpose(1, 2).unsqueeze(1)  # (B, 1, M, T)
        x = _mask_time(x, lengths)
        for block in self.blocks:
            x, lengths = block(x, lengths)  # (B, C, M', T')
        x = x.mean(dim=2)  # (B, C, T') over mel bands
        valid = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(
            x.dtype
        )  # (B, T')
        pooled = (x * valid[:, None, :]).sum(-1) / valid.sum(-1, keepdim=True).clamp(min=1.0)
        return self.proj(self.dropout(pooled))  # (B, dim)
