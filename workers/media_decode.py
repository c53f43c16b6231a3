"""Decode fetched bytes into model inputs: ``(H, W, 3) uint8`` RGB or mono ``float32`` audio.

The real type comes from the magic bytes only (Content-Type and the URL extension are ignored).
Decoding is CPU work and blocks: :func:`decode` is synchronous; :class:`DecodePool` runs it off
the event loop in a bounded pool (:func:`decode_async` in any executor, for simple callers).

Memory is bounded by design, whatever the input:

* images: the pixel count (``image_max_pixels``, 16 MP in production) is read from the header
  and checked before any pixel is decoded; a JPEG decodes straight to a reduced size (DCT
  ``draft``); every other format is reduced right after its single full-size decode, before EXIF
  transpose, alpha compositing and RGB conversion, so those copies are of the small image. Peak:
  about one decoded frame (<= 4 bytes/pixel, 5 for a palette image with transparency) plus the
  body. The decompression-bomb case costs nothing: its header is refused.
* audio: only the common sample rates of :data:`AUDIO_RATES` are accepted
  (``unsupported_sample_rate`` otherwise, read from the header before any frame is decoded); with
  them the resampling ratio ``up/down`` (after gcd) stays small, so each polyphase filter is a few
  hundred kB at most and the filter cache (:func:`_polyphase`, 16 entries) is bounded too. At most
  ``audio_max_seconds`` is read.

Failures raise :class:`~workers.address_policy.DecodeFailed` with ``unsupported_type`` (not the
asked kind, or not a format we read), ``too_large`` (pixel limit), ``unsupported_sample_rate`` or
``decode_error`` (truncated, corrupt); :class:`DecodePool` raises
:class:`~workers.address_policy.MediaBusy` ``busy`` when it refuses work.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

import numpy as np
from PIL import Image, ImageOps

from workers.address_policy import DecodeFailed, MediaBusy

__all__ = [
    "AUDIO_FORMATS",
    "AUDIO_RATES",
    "IMAGE_FORMATS",
    "DecodeConfig",
    "DecodePool",
    "MediaKind",
    "decode",
    "decode_async",
    "decode_audio",
    "decode_image",
    "pcm_to_float",
    "quantize_pcm16",
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
#: Sample rates we resample from (and to). Any pair has a small up/down ratio after gcd (at
#: most 640/441, 11025 -> 16000), so a resampling filter stays small; an odd rate such as
#: 191,999 Hz would need a filter of ~3 M taps (seconds and hundreds of MB): refused instead.
AUDIO_RATES: Final[frozenset[int]] = frozenset(
    {8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 88_200, 96_000}
)
_MAX_RATIO_TERM: Final = 4_096  # resample() refuses up or down (after gcd) above this

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DecodeConfig:
    """Decoding limits; :meth:`fingerprint` keys cached decoded payloads."""

    image_max_side: int = 448  # longer side after resizing
    image_max_pixels: int = 16_000_000  # source width * height, checked before decoding
    audio_sample_rate: int = 16_000  # output rate; must be one of AUDIO_RATES
    audio_max_seconds: float = 30.0  # longer audio is truncated
    audio_max_channels: int = 32

    def __post_init__(self) -> None:
        if self.audio_sample_rate not in AUDIO_RATES:
            raise ValueError(f"audio_sample_rate {self.audio_sample_rate} not in AUDIO_RATES")

    def fingerprint(self) -> str:
        # v2: cached media are re-encoded (PNG, 16-bit FLAC), no longer raw arrays
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
        raise DecodeFailed("decode_error", f"unexpected decoded shape {arr.shape}")
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
        raise DecodeFailed("unsupported_type", f"not audio ({fmt or 'unknown'})")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            if not 1 <= channels <= config.audio_max_channels:
                raise DecodeFailed("decode_error", f"implausible stream {rate} Hz x {channels}")
            if rate not in AUDIO_RATES:  # before any frame is read: refused in microseconds
                raise DecodeFailed("unsupported_sample_rate", f"{rate} Hz")
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


def quantize_pcm16(x: np.ndarray) -> np.ndarray:
    """``x`` clipped to [-1, 1] on the 16-bit grid (``k / 32767``), as ``float32``.

    :class:`~workers.media.MediaService` hands decoded audio out on this grid (an error under
    1.6e-5, far below what the models hear) so that the cache stores it losslessly as 16-bit
    FLAC: a cache hit is bit-identical to a fresh decode.
    """
    pcm = np.rint(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    return pcm_to_float(pcm)


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """16-bit PCM -> ``float32`` on the grid of :func:`quantize_pcm16` (its exact inverse)."""
    return np.ascontiguousarray(pcm.astype(np.float32) / np.float32(32767.0))


_ZERO_CROSSINGS: Final = 8  # sinc lobes each side, at the lower of the two rates
_CHUNK: Final = 16_384  # outputs computed per vectorised step (bounds the temporary memory)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited polyphase resampling of mono ``x`` ``(T,)`` from ``rate_in`` to ``rate_out``.

    Output sample ``n`` sits at input time ``n * rate_in / rate_out``; a Kaiser-windowed sinc
    low-pass at 0.95 x the lower Nyquist frequency prevents aliasing when downsampling. The
    ratio after gcd is bounded (``up`` and ``down`` <= 4096, the filter <= ~64 k taps, ~1 MB):
    beyond it ``unsupported_sample_rate``.
    """
    x = np.asarray(x, dtype=np.float32)
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    if max(up, down) > _MAX_RATIO_TERM:  # the filter would have ~16 x max(up, down) taps
        raise DecodeFailed("unsupported_sample_rate", f"{rate_in} -> {rate_out} Hz")
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


# -- the decode pool


class DecodePool:
    """Runs blocking decodes off the event loop: ``workers`` at once, overdue ones abandoned.

    Why threads and not processes: Pillow, libsndfile and numpy release the GIL while they
    work, a thread needs no copy of a body of up to 25 MB, and a worker that has torch (maybe
    CUDA) loaded must not fork; spawned processes would each cost a fresh interpreter with numpy
    and Pillow (~100 MB) and a respawn after every kill. What a thread cannot do is be killed, so
    the pool bounds what an overdue decode can cost instead:

    * a decode past its deadline (or whose caller was cancelled) is *abandoned*: its caller gets
      ``timeout`` and its slot is freed at once, so new items never wait behind it; its thread
      runs on until the decode returns (decodes are bounded: pixel limit, audio seconds);
    * the executor has ``workers + max_abandoned`` threads, so abandoned decodes never delay
      admitted ones, and the pool admits a decode only while a thread is free for it: with
      ``max_abandoned`` or more decodes still running abandoned, new ones fail at once as
      ``busy`` (never queued). Memory is therefore bounded by ``workers + max_abandoned``
      decodes, each bounded by the decode limits.

    Waiting for a slot counts against the deadline: an item that gets none in time is ``busy``.
    :meth:`close` does not wait for running decodes. Event-loop use only (one loop).
    """

    def __init__(
        self,
        workers: int,
        max_abandoned: int,
        *,
        thread_name_prefix: str = "media-decode",
    ) -> None:
        if workers < 1 or max_abandoned < 0:
            raise ValueError("workers >= 1 and max_abandoned >= 0")
        self.workers = workers
        self.max_abandoned = max_abandoned
        self._executor = ThreadPoolExecutor(
            workers + max_abandoned, thread_name_prefix=thread_name_prefix
        )
        self._slots = asyncio.Semaphore(workers)
        self._threads_busy = 0  # admitted decodes still running: live + abandoned
        self._abandoned: set[object] = set()
        self._lock = threading.Lock()  # _thread_done runs in the worker threads
        self.refused = 0  # decodes refused as busy (for metrics and tests)

    @property
    def abandoned(self) -> int:
        """Decodes whose caller gave up but whose thread still runs."""
        with self._lock:
            return len(self._abandoned)

    @property
    def executor(self) -> Executor:
        return self._executor

    async def run(
        self, fn: Callable[..., np.ndarray], /, *args: object, deadline: float | None = None
    ) -> np.ndarray:
        """``fn(*args)`` in a pool thread; ``deadline`` is an event-loop time (``None``: none).

        Raises :class:`MediaBusy` ``busy`` (no slot before the deadline, or too many abandoned
        decodes) or :class:`~workers.address_policy.MediaError` ``timeout`` (the decode itself
        passed the deadline); whatever ``fn`` raises otherwise.
        """
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError as exc:
            self.refused += 1
            raise MediaBusy("busy", "no decode slot before the deadline") from exc
        try:
            with self._lock:
                if self._threads_busy >= self.workers + self.max_abandoned:
                    self.refused += 1
                    raise MediaBusy("busy", f"{len(self._abandoned)} abandoned decodes running")
                self._threads_busy += 1
            try:
                future = self._executor.submit(fn, *args)
            except BaseException:  # closed: the thread was never taken
                with self._lock:
                    self._threads_busy -= 1
                raise
            future.add_done_callback(self._thread_done)
            try:
                async with asyncio.timeout_at(deadline):
                    return await asyncio.wrap_future(future)
            except BaseException as exc:  # the deadline, or the caller was cancelled
                if not future.done():
                    with self._lock:
                        if not future.done():
                            self._abandoned.add(future)
                    log.warning("media decode abandoned (%s); its thread runs on",
                                type(exc).__name__)
                if isinstance(exc, TimeoutError):
                    raise DecodeFailed("timeout", "decode passed the deadline") from exc
                raise
        finally:
            self._slots.release()

    def _thread_done(self, future: object) -> None:
        with self._lock:
            self._threads_busy -= 1
            self._abandoned.discard(future)

    def close(self) -> None:
        """Refuse new work; queued work is cancelled, running decodes are not waited for."""
        self._executor.shutdown(wait=False, cancel_futures=True)
