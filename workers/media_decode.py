"""Decode fetched bytes into model inputs: ``(H, W, 3) uint8`` RGB or mono ``float32`` audio.

The real type comes from the magic bytes only (Content-Type and the URL extension are ignored).
Decoding is CPU work and blocks: :func:`decode` is synchronous; :func:`decode_async` runs it in
the executor it is given, never on the event loop.

Failures raise :class:`~workers.address_policy.DecodeFailed` with ``unsupported_type`` (not the
asked kind, or not a format we read), ``too_large`` (pixel limit, checked from the header before
any pixel is decoded: decompression bombs) or ``decode_error`` (truncated, corrupt).
"""

from __future__ import annotations

import asyncio
import io
import math
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

import numpy as np
from PIL import Image, ImageOps

from workers.address_policy import DecodeFailed

__all__ = [
    "AUDIO_FORMATS",
    "IMAGE_FORMATS",
    "DecodeConfig",
    "MediaKind",
    "decode",
    "decode_async",
    "decode_audio",
    "decode_image",
    "resample",
    "sniff",
]

MediaKind = Literal["image", "audio"]

#: Sniffed format -> the Pillow plugin allowed to open it.
IMAGE_FORMATS: Final[dict[str, str]] = {
    "png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP",
}
AUDIO_FORMATS: Final[frozenset[str]] = frozenset({"wav", "flac", "ogg"})
_BMP_DIB_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})  # "BM" alone is too weak


@dataclass(frozen=True, slots=True)
class DecodeConfig:
    """Decoding limits; :meth:`fingerprint` keys cached decoded payloads."""

    image_max_side: int = 448  # longer side after resizing
    image_max_pixels: int = 40_000_000  # source width * height, checked before decoding
    audio_sample_rate: int = 16_000
    audio_max_seconds: float = 30.0  # longer audio is truncated
    audio_max_channels: int = 32

    def fingerprint(self) -> str:
        return (
            f"img{self.image_max_side}-aud{self.audio_sample_rate}-{self.audio_max_seconds:g}s"
        )


def sniff(data: bytes) -> str | None:
    """The format named by the leading magic bytes, or ``None`` (HTML, text, unknown)."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_DIB_SIZES:
        return "bmp"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    return None


def kind_of(fmt: str | None) -> MediaKind | None:
    if fmt in IMAGE_FORMATS:
        return "image"
    if fmt in AUDIO_FORMATS:
        return "audio"
    return None


def decode(data: bytes, kind: str, config: DecodeConfig = DecodeConfig()) -> np.ndarray:  # noqa: B008
    """Decode ``data`` as ``kind`` (``image`` or ``audio``); blocking."""
    if kind == "image":
        return decode_image(data, config)
    if kind == "audio":
        return decode_audio(data, config)
    raise DecodeFailed("unsupported_type", f"unknown media kind {kind!r}")


async def decode_async(
    data: bytes, kind: str, config: DecodeConfig, executor: Executor | None
) -> np.ndarray:
    """:func:`decode` in ``executor`` (``None``: the loop's default thread pool)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, decode, data, kind, config)


# -- images


def decode_image(data: bytes, config: DecodeConfig = DecodeConfig()) -> np.ndarray:  # noqa: B008
    """PNG/JPEG/GIF/WEBP/BMP -> ``(H, W, 3) uint8`` RGB, EXIF-upright, longer side <= max side.

    Animated images give their first frame; transparency is composited on white.
    """
    fmt = sniff(data)
    if fmt not in IMAGE_FORMATS:
        raise DecodeFailed("unsupported_type", f"not an image ({fmt or 'unknown'})")
    try:
        im = Image.open(io.BytesIO(data), formats=[IMAGE_FORMATS[fmt]])
    except Image.DecompressionBombError as exc:
        raise DecodeFailed("too_large", "image pixels over Pillow's limit") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error ...
        raise DecodeFailed("decode_error", f"unreadable {fmt} header") from exc
    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise DecodeFailed("decode_error", "empty image")
        if width * height > config.image_max_pixels:
            raise DecodeFailed("too_large", f"{width}x{height} pixels")
        try:
            return _image_to_array(im, config.image_max_side)
        except DecodeFailed:
            raise
        except Image.DecompressionBombError as exc:
            raise DecodeFailed("too_large", "image pixels over Pillow's limit") from exc
        except Exception as exc:  # truncated data: OSError; corrupt: ValueError, SyntaxError ...
            raise DecodeFailed("decode_error", f"corrupt {fmt}") from exc


def _image_to_array(im: Image.Image, max_side: int) -> np.ndarray:
    if im.format == "JPEG" and max(im.size) > max_side:
        # DCT-domain downscale (1/2, 1/4, 1/8) while decoding, never below the final size:
        # big photos decode several times faster.
        scale = max_side / max(im.size)
        im.draft("RGB", (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale)))
    im.load()
    try:
        upright = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block does not make the pixels unusable
        upright = im
    rgb = _to_rgb(upright)
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    arr = np.asarray(rgb, dtype=np.uint8)  # (H, W, 3)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DecodeFailed("decode_error", f"unexpected decoded shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


# -- audio


def decode_audio(data: bytes, config: DecodeConfig = DecodeConfig()) -> np.ndarray:  # noqa: B008
    """WAV/FLAC/OGG -> mono ``float32`` at ``audio_sample_rate``, at most ``audio_max_seconds``."""
    import soundfile as sf  # imported here: libsndfile is only needed where audio is decoded

    fmt = sniff(data)
    if fmt not in AUDIO_FORMATS:
        raise DecodeFailed("unsupported_type", f"not audio ({fmt or 'unknown'})")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            if not 1_000 <= rate <= 192_000 or not 1 <= channels <= config.audio_max_channels:
                raise DecodeFailed("decode_error", f"implausible stream {rate} Hz x {channels}")
            # Only what survives truncation is read, block by block, downmixed as it comes: a
            # header claiming hours (or lying about its length) allocates nothing up front.
            frames = math.ceil(config.audio_max_seconds * rate)
            blocks = [
                block.mean(axis=1, dtype=np.float32)  # (B, C) -> (B,)
                for block in f.blocks(
                    blocksize=65_536, frames=frames, dtype="float32", always_2d=True
                )
            ]
    except DecodeFailed:
        raise
    except Exception as exc:  # sf.LibsndfileError (RuntimeError), TypeError on odd headers ...
        raise DecodeFailed("decode_error", f"corrupt {fmt}") from exc
    mono = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)  # (T,)
    if mono.size == 0:
        raise DecodeFailed("decode_error", "no audio frames")
    out = resample(mono, rate, config.audio_sample_rate)
    out = out[: int(config.audio_max_seconds * config.audio_sample_rate)]
    np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(out, -1.0, 1.0, out=out)
    return np.ascontiguousarray(out, dtype=np.float32)


_ZERO_CROSSINGS: Final = 8  # sinc lobes each side, at the lower of the two rates
_CHUNK: Final = 16_384  # outputs computed per vectorised step (bounds the temporary memory)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited polyphase resampling of mono ``x`` ``(T,)`` from ``rate_in`` to ``rate_out``.

    Output sample ``n`` sits at input time ``n * rate_in / rate_out``; a Kaiser-windowed sinc
    low-pass at 0.95 x the lower Nyquist frequency prevents aliasing when downsampling.
    """
    x = np.asarray(x, dtype=np.float32)
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
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


@lru_cache(maxsize=16)
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
