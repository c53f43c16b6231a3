"""The one resampler: band-limited polyphase resampling of mono audio between common rates.

Every path that changes a sample rate calls :func:`resample`: the worker's audio decoding,
training-feature extraction (both through :mod:`model.media.decode`) and the synthesized speech
of the data builder (:func:`model.data.media.resample`). Only the rates of :data:`AUDIO_RATES`
are decoded: with them the ratio ``up/down`` (after gcd) stays small, so each polyphase filter is
a few hundred kB at most and the filter cache (:func:`_polyphase`, 16 entries) is bounded too.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import numpy as np

from model.media.errors import MediaDecodeError

__all__ = ["AUDIO_RATES", "resample"]

#: Sample rates we resample from (and to). Any pair has a small up/down ratio after gcd (at
#: most 640/441, 11025 -> 16000), so a resampling filter stays small; an odd rate such as
#: 191,999 Hz would need a filter of ~3 M taps (seconds and hundreds of MB): refused instead.
AUDIO_RATES: Final[frozenset[int]] = frozenset(
    {8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 88_200, 96_000}
)
_MAX_RATIO_TERM: Final = 4_096  # resample() refuses up or down (after gcd) above this
_ZERO_CROSSINGS: Final = 8  # sinc lobes each side, at the lower of the two rates
_CHUNK: Final = 16_384  # outputs computed per vectorised step (bounds the temporary memory)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited polyphase resampling of mono ``x`` ``(T,)`` from ``rate_in`` to ``rate_out``.

    Output sample ``n`` sits at input time ``n * rate_in / rate_out`` (``T * up // down``
    samples); a Kaiser-windowed sinc low-pass at 0.95 x the lower Nyquist frequency prevents
    aliasing when downsampling. The ratio after gcd is bounded (``up`` and ``down`` <= 4096,
    the filter <= ~64 k taps, ~1 MB): beyond it :class:`MediaDecodeError`
    ``unsupported_sample_rate``. Returns a new ``float32`` array.
    """
    x = np.asarray(x, dtype=np.float32)
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    if max(up, down) > _MAX_RATIO_TERM:  # the filter would have ~16 x max(up, down) taps
        raise MediaDecodeError("unsupported_sample_rate", f"{rate_in} -> {rate_out} Hz")
    coef, half = _polyphase(up, down)  # (up, taps)
    taps = coef.shape[1]
    n_out = (x.size * up) // down
    pad = taps + 1
    xp = np.concatenate([np.zeros(pad, np.float32), x, np.zeros(pad, np.float32)])
    windows = np.lib.stride_tricks.sliding_window_view(xp, taps)  # windows[i] = xp[i : i + taps]
    out = np.empty(n_out, dtype=np.float32)
    for start in range(0, n_out, _CHUNK):
        t = np.arange(start, min(start + _CHUNK, n_out), dtype=np.int64) * down + half  # (C,)
        first = t // up + pad - (taps - 1)  # first input sample of each output's window
        out[start : start + t.size] = np.einsum("ct,ct->c", windows[first], coef[t % up])
    return out


@lru_cache(maxsize=16)  # entries bounded by _MAX_RATIO_TERM: at most ~16 MB in all
def _polyphase(up: int, down: int) -> tuple[np.ndarray, int]:
    """The low-pass split into ``up`` phases: row ``p`` weighs one output's input window."""
    half = _ZERO_CROSSINGS * max(up, down)
    m = np.arange(-half, half + 1, dtype=np.float64)
    cutoff = 0.95 * 0.5 / max(up, down)  # cycles per sample at the upsampled rate
    h = 2 * cutoff * np.sinc(2 * cutoff * m) * np.kaiser(m.size, 8.0) * up
    table = np.concatenate([h, [0.0]])  # the trailing zero stands for "outside the support"
    taps = (2 * half) // up + 2
    offsets = np.arange(up)[:, None] + np.arange(taps)[None, :] * up  # (up, taps)
    coef = table[np.minimum(offsets, 2 * half + 1)][:, ::-1].astype(np.float32)  # oldest first
    coef.setflags(write=False)
    return coef, half
