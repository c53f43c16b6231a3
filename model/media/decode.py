"""Decode media bytes into model inputs: ``(H, W, 3) uint8`` RGB or mono ``float32`` audio.

The one decoder of commentflow: the worker (:mod:`workers.media_decode`, which runs it in a
bounded thread pool), offline scoring (``commentflow predict``) and training-feature extraction
(:mod:`model.data.featurise`) all call :func:`decode_input`, with the :class:`DecodeConfig` of
the model: the parameters that shape features (``image_max_side``, ``audio_sample_rate``,
``audio_max_seconds``: :meth:`DecodeConfig.preprocess`) are saved in the model's
``config.json`` (``preprocess``), so a model is served with the preprocessing it was trained on.

The real type comes from the magic bytes only (Content-Type and the URL extension are ignored).
Decoding is CPU work and blocks. Memory is bounded by design, whatever the input:

* images: the pixel count (``image_max_pixels``, 16 MP in production) is read from the header
  and checked before any pixel is decoded; a JPEG decodes straight to a reduced size (DCT
  ``draft``); every other format is reduced right after its single full-size decode, before EXIF
  transpose, alpha compositing and RGB conversion, so those copies are of the small image. Peak:
  about one decoded frame (<= 4 bytes/pixel, 5 for a palette image with transparency) plus the
  body. The decompression-bomb case costs nothing: its header is refused.
* audio: only the common sample rates of :data:`~model.media.resample.AUDIO_RATES` are accepted
  (``unsupported_sample_rate`` otherwise, read from the header before any frame is decoded), and
  resampled by :func:`~model.media.resample.resample`. At most ``audio_max_seconds`` is read.

Failures raise :class:`~model.media.errors.MediaDecodeError` with ``unsupported_type`` (not the
asked kind, or not a format we read), ``too_large`` (pixel limit), ``unsupported_sample_rate`` or
``decode_error`` (truncated, corrupt).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, Literal

import numpy as np
from PIL import Image, ImageOps

from model.media.errors import MediaDecodeError
from model.media.resample import AUDIO_RATES, resample

__all__ = [
    "AUDIO_FORMATS",
    "IMAGE_FORMATS",
    "DecodeConfig",
    "MediaKind",
    "decode",
    "decode_audio",
    "decode_image",
    "decode_input",
    "kind_of",
    "pcm_to_float",
    "quantize_pcm16",
    "sniff",
]

MediaKind = Literal["image", "audio"]

#: Sniffed format -> the Pillow plugin allowed to open it.
IMAGE_FORMATS: Final[dict[str, str]] = {
    "png": "PNG",
    "jpeg": "JPEG",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
}
AUDIO_FORMATS: Final[frozenset[str]] = frozenset({"wav", "flac", "ogg"})
_BMP_DIB_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})  # "BM" alone is too weak


@dataclass(frozen=True, slots=True)
class DecodeConfig:
    """How media are decoded: what shapes features (saved with the model) and safety limits.

    :meth:`fingerprint` keys anything cached from decoded media (the worker's decoded payloads,
    the OCR texts, embeddings and transcripts of training features).
    """

    image_max_side: int = 448  # longer side after resizing (OCR and the image encoder see this)
    image_max_pixels: int = 16_000_000  # source width * height, checked before decoding
    audio_sample_rate: int = 16_000  # output rate; must be one of AUDIO_RATES
    audio_max_seconds: float = 30.0  # longer audio is truncated
    audio_max_channels: int = 32

    #: The fields that shape features: config.json's ``preprocess`` section. The others are
    #: limits on hostile input, set by the deployment.
    PREPROCESS: ClassVar[tuple[str, ...]] = (
        "image_max_side",
        "audio_sample_rate",
        "audio_max_seconds",
    )

    def __post_init__(self) -> None:
        if self.audio_sample_rate not in AUDIO_RATES:
            raise ValueError(f"audio_sample_rate {self.audio_sample_rate} not in AUDIO_RATES")
        if self.image_max_side < 1 or self.audio_max_seconds <= 0:
            raise ValueError("image_max_side >= 1 and audio_max_seconds > 0")

    @classmethod
    def from_preprocess(
        cls, section: Mapping[str, Any] | None = None, **limits: Any
    ) -> DecodeConfig:
        """A config.json ``preprocess`` section (``None`` or missing keys: the defaults, what
        models saved before the section existed were served with) plus the limits ``limits``.

        Raises ``ValueError`` for an unknown key or a value out of range.
        """
        section = dict(section or {})
        unknown = set(section) - set(cls.PREPROCESS)
        if unknown:
            raise ValueError(f"unknown preprocess keys {sorted(unknown)}")
        bad = set(limits) & set(cls.PREPROCESS)
        if bad:
            raise ValueError(f"{sorted(bad)} come from the model's preprocess section")
        known = {f.name for f in fields(cls)}
        if set(limits) - known:
            raise ValueError(f"unknown decode limits {sorted(set(limits) - known)}")
        default = {f.name: f.default for f in fields(cls)}
        kinds = {"image_max_side": int, "audio_sample_rate": int, "audio_max_seconds": float}
        try:
            typed = {k: kinds[k](section.get(k, default[k])) for k in cls.PREPROCESS}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad preprocess section {section}: {exc}") from exc
        return cls(**typed, **limits)

    def preprocess(self) -> dict[str, Any]:
        """The ``preprocess`` section of config.json: the fields that shape features."""
        return {name: getattr(self, name) for name in self.PREPROCESS}

    def fingerprint(self) -> str:
        # v2: the worker's cached media are re-encoded (PNG, 16-bit FLAC), no longer raw arrays
        return (
            f"img{self.image_max_side}-aud{self.audio_sample_rate}-{self.audio_max_seconds:g}s-v2"
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
    raise MediaDecodeError("unsupported_type", f"unknown media kind {kind!r}")


def decode_input(data: bytes, kind: str, config: DecodeConfig = DecodeConfig()) -> np.ndarray:  # noqa: B008
    """What the model gets from ``data``: :func:`decode`, audio put on the 16-bit grid.

    Every path calls this (worker, offline scoring, training features), so a feature never
    depends on which path made it; the 16-bit grid (:func:`quantize_pcm16`) is what the
    worker's media cache stores losslessly, so a cache hit equals a fresh decode.
    """
    array = decode(data, kind, config)
    return quantize_pcm16(array) if kind == "audio" else array


# -- images


def decode_image(data: bytes, config: DecodeConfig = DecodeConfig()) -> np.ndarray:  # noqa: B008
    """PNG/JPEG/GIF/WEBP/BMP -> ``(H, W, 3) uint8`` RGB, EXIF-upright, longer side <= max side.

    Animated images give their first frame; transparency is composited on white.
    """
    fmt = sniff(data)
    if fmt not in IMAGE_FORMATS:
        raise MediaDecodeError("unsupported_type", f"not an image ({fmt or 'unknown'})")
    try:
        im = Image.open(io.BytesIO(data), formats=[IMAGE_FORMATS[fmt]])
    except Image.DecompressionBombError as exc:
        raise MediaDecodeError("too_large", "image pixels over Pillow's limit") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error ...
        raise MediaDecodeError("decode_error", f"unreadable {fmt} header") from exc
    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise MediaDecodeError("decode_error", "empty image")
        if width * height > config.image_max_pixels:
            raise MediaDecodeError("too_large", f"{width}x{height} pixels")
        try:
            return _image_to_array(im, config.image_max_side)
        except MediaDecodeError:
            raise
        except Image.DecompressionBombError as exc:
            raise MediaDecodeError("too_large", "image pixels over Pillow's limit") from exc
        except Exception as exc:  # truncated data: OSError; corrupt: ValueError, SyntaxError ...
            raise MediaDecodeError("decode_error", f"corrupt {fmt}") from exc


def _image_to_array(im: Image.Image, max_side: int) -> np.ndarray:
    if im.format == "JPEG" and max(im.size) > max_side:
        # DCT-domain downscale (1/2, 1/4, 1/8) while decoding, never below the final size:
        # big photos decode several times faster, into an eighth of the memory.
        scale = max_side / max(im.size)
        im.draft("RGB", (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale)))
    im.load()  # the one full-size decode
    small = _reduce(im, max_side)
    try:
        upright = ImageOps.exif_transpose(small)
    except Exception:  # a broken EXIF block does not make the pixels unusable
        upright = small
    rgb = _to_rgb(upright)
    arr = np.asarray(rgb, dtype=np.uint8)  # (H, W, 3)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise MediaDecodeError("decode_error", f"unexpected decoded shape {arr.shape}")
    return np.ascontiguousarray(arr)


_NATIVE_MODES: Final = ("RGB", "L", "I", "F")  # reduced by Pillow's C core, no full-size copy
_STRIP_PIXELS: Final = 1 << 20  # source pixels per strip in _reduce_in_strips


def _reduce(im: Image.Image, max_side: int) -> Image.Image:
    """``im`` with its longer side <= ``max_side``; ``info`` (EXIF) kept for the transpose.

    First an integer box-filter :meth:`~PIL.Image.Image.reduce` to between 2x and 4x the target,
    then a bilinear resize (Pillow widens the filter when downscaling: no aliasing). Pillow
    premultiplies alpha (RGBA -> RGBa) and converts palettes with a full-size copy, so those modes
    are reduced strip by strip: nothing full-size is allocated besides the decode itself.
    """
    factor = max(im.size) // (2 * max_side)
    if factor >= 2:
        im = im.reduce(factor) if im.mode in _NATIVE_MODES else _reduce_in_strips(im, factor)
    if im.mode not in (*_NATIVE_MODES, "RGBA", "LA"):
        im = _to_filterable(im)  # small now (at most 4x the target per side)
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return im


def _reduce_in_strips(im: Image.Image, factor: int) -> Image.Image:
    width, height = im.size
    rows = factor * max(1, _STRIP_PIXELS // (width * factor))  # a multiple of the factor
    out: Image.Image | None = None
    for top in range(0, height, rows):
        strip = im.crop((0, top, width, min(height, top + rows)))  # copies one strip
        if strip.mode not in ("RGB", "RGBA", "L", "LA"):
            strip = _to_filterable(strip)
        part = strip.reduce(factor)
        if out is None:
            out = Image.new(part.mode, (-(-width // factor), -(-height // factor)))
        out.paste(part, (0, top // factor))
    assert out is not None  # noqa: S101 - height >= 1, checked by decode_image
    out.info = dict(im.info)
    return out


def _to_filterable(im: Image.Image) -> Image.Image:
    if im.mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("PA", "RGBa"):
        return im.convert("RGBA")
    if im.mode in ("1", "La"):
        return im.convert("L" if im.mode == "1" else "LA")
    return im.convert("RGB")


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
        raise MediaDecodeError("unsupported_type", f"not audio ({fmt or 'unknown'})")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            if not 1 <= channels <= config.audio_max_channels:
                raise MediaDecodeError("decode_error", f"implausible stream {rate} Hz x {channels}")
            if rate not in AUDIO_RATES:  # before any frame is read: refused in microseconds
                raise MediaDecodeError("unsupported_sample_rate", f"{rate} Hz")
            # Only what survives truncation is read, block by block, downmixed as it comes: a
            # header claiming hours (or lying about its length) allocates nothing up front.
            frames = math.ceil(config.audio_max_seconds * rate)
            blocks = [
                block.mean(axis=1, dtype=np.float32)  # (B, C) -> (B,)
                for block in f.blocks(
                    blocksize=65_536, frames=frames, dtype="float32", always_2d=True
                )
            ]
    except MediaDecodeError:
        raise
    except Exception as exc:  # sf.LibsndfileError (RuntimeError), TypeError on odd headers ...
        raise MediaDecodeError("decode_error", f"corrupt {fmt}") from exc
    mono = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)  # (T,)
    if mono.size == 0:
        raise MediaDecodeError("decode_error", "no audio frames")
    out = resample(mono, rate, config.audio_sample_rate)
    out = out[: int(config.audio_max_seconds * config.audio_sample_rate)]
    np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(out, -1.0, 1.0, out=out)
    return np.ascontiguousarray(out, dtype=np.float32)


def quantize_pcm16(x: np.ndarray) -> np.ndarray:
    """``x`` clipped to [-1, 1] on the 16-bit grid (``k / 32767``), as ``float32``.

    :func:`decode_input` hands decoded audio out on this grid (an error under
    1.6e-5, far below what the models hear) so that the cache stores it losslessly as 16-bit
    FLAC: a cache hit is bit-identical to a fresh decode.
    """
    pcm = np.rint(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    return pcm_to_float(pcm)


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """16-bit PCM -> ``float32`` on the grid of :func:`quantize_pcm16` (its exact inverse)."""
    return np.ascontiguousarray(pcm.astype(np.float32) / np.float32(32767.0))
