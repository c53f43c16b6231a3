"""The one synthetic media server: good and hostile media, for the soak, the bench and tests.

Every route answers for any ``Host`` header, so ``media.soak.test``, ``localhost`` and every
``x{n}.wild.soak.test`` reach it once the worker resolves those names to 127.0.0.1 (a new
wildcard name per request defeats per-host connection limits).

Routes (``{n}`` makes a URL, and for good media the content, unique)::

    /good/image/{n}.png     a small PNG with rendered text (new content for every n)
    /good/audio/{n}.wav     a short speech clip (espeak-ng, or a tone), new content for every n
    /same/{name}            one small PNG for every name (one content under many URLs)
    /meme/{n}.png           a picture of a sentence rendered like ``build-data``'s
                            (model.data.media.render_text_image): what OCR must read (the bench)
    /voice/{n}.wav          a sentence spoken by espeak-ng like ``build-data``'s
                            (model.data.media.synthesize_speech): what ASR must hear (the bench)
    /photo/{n}.jpg          a 640x480 JPEG of noise, new content for every n
    /tone/{n}.wav           a 3 s tone at 22,050 Hz, new content for every n (the bench's audio)
    /wrong-type/{n}         HTML served as ``image/png``
    /truncated/{n}          the first half of a PNG
    /to/{target}            302 to an internal address: ``loopback`` (127.0.0.1, this server),
                            ``v6-loopback`` ([::1]), ``private`` (10.0.0.1), ``metadata``
                            (169.254.169.254); a worker's address policy must refuse each
    /bomb/png/{n}.png       ~120 KB PNG that claims, and decodes to, 6300x6300 RGB (119 MB)
    /bomb/wav-header/{n}    a WAV header claiming 4 GiB of data, then 4 KB of samples
    /bomb/wav-rate/{n}      a valid 5 s WAV at 191,999 Hz
    /huge/declared/{n}      Content-Length 30 MB, zeros streamed
    /huge/chunked/{n}       30 MB of zeros, chunked (no Content-Length)
    /slow/{n}               a PNG signature then one byte a second
    /redirect/{n}           302 to /redirect/{n+1}, forever
    /status/{code}/{n}      an empty response with that status (404, 500, ...)
    /garbage/{n}            random bytes

Bounded by construction: nothing large is held (huge bodies are streamed in 64 KB chunks of one
shared zero buffer), every streamed body has a fixed maximum length, and :meth:`stop` ends every
open response within about a second. The costly bodies (speech clips, the PNG bomb) are built on
first use. :attr:`MediaServer.hits` counts requests by route family, :attr:`MediaServer.paths` by
path.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

import numpy as np
import soundfile as sf
from aiohttp import web

__all__ = ["HOSTILE_PATHS", "MediaServer"]

#: Hostile path templates by kind; ``{n}`` is a counter. (kind of media the URL claims, path)
HOSTILE_PATHS: dict[str, tuple[str, str]] = {
    "bomb_png": ("image", "/bomb/png/{n}.png"),
    "bomb_wav_header": ("audio", "/bomb/wav-header/{n}.wav"),
    "bomb_wav_rate": ("audio", "/bomb/wav-rate/{n}.wav"),
    "huge_declared": ("audio", "/huge/declared/{n}"),
    "huge_chunked": ("audio", "/huge/chunked/{n}"),
    "huge_image": ("image", "/huge/chunked/{n}.png"),
    "slow": ("image", "/slow/{n}.png"),
    "redirect_loop": ("image", "/redirect/{n}"),
    "http_404": ("image", "/status/404/{n}.png"),
    "http_500": ("audio", "/status/500/{n}.wav"),
    "garbage": ("image", "/garbage/{n}.png"),
}

HUGE_BYTES = 30 * 1024 * 1024  # over the 25 MB audio and 10 MB image limits
SLOW_MAX_BYTES = 120  # a trickle lasts at most two minutes
_CHUNK = bytes(64 * 1024)
_PHRASES = (
    "I love this so much",
    "worst day ever",
    "the bus is late again",
    "thank you all",
    "this is broken",
    "see you on Tuesday",
)


def bomb_png(width: int = 6300, height: int = 6300) -> bytes:
    """An all-black RGB PNG of ``width x height``: tiny on the wire, ``3*w*h`` bytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    comp = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte 0 + RGB zeros
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def wav_header_bomb() -> bytes:
    """A 16 kHz mono 16-bit WAV whose RIFF and data sizes claim ~4 GiB; 4 KB of data follow."""
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", 0xFFFFFFF0)
        + bytes(4096)
    )


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _speech_clips() -> list[np.ndarray]:
    """A few short spoken phrases at 22,050 Hz (espeak-ng), or tones where it is missing."""
    espeak = shutil.which("espeak-ng")
    clips: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, phrase in enumerate(_PHRASES[:4]):
            path = Path(tmp) / f"{i}.wav"
            if espeak is not None:
                done = subprocess.run(
                    [espeak, "-w", str(path), phrase], capture_output=True, timeout=30, check=False
                )
                if done.returncode == 0 and path.is_file():
                    data, _ = sf.read(path, dtype="float32")
                    clips.append(data if data.ndim == 1 else data.mean(axis=1))
                    continue
            t = np.arange(2 * 22_050) / 22_050
            clips.append((0.2 * np.sin(2 * np.pi * (220 + 40 * i) * t)).astype(np.float32))
    return clips


class MediaServer:
    """The server on 127.0.0.1 (a free port unless given); ``start()``/``stop()`` idempotent.

    :attr:`hits` counts requests by route family (``good_image``, ``bomb_png``, ...),
    :attr:`paths` by request path (``/same/meme.png``: 1); :attr:`requests` is the total.
    """

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._bodies: dict[str, Any] = {}
        self._building: dict[str, asyncio.Task[Any]] = {}
        self.hits: Counter[str] = Counter()
        self.paths: Counter[str] = Counter()

    @property
    def requests(self) -> int:
        return self.paths.total()

    @property
    def port(self) -> int:
        return self._port

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._stopping.clear()
        app = web.Application(middlewares=[self._count])
        r = app.router
        r.add_get("/good/image/{n}", self._good_image)
        r.add_get("/good/audio/{n}", self._good_audio)
        r.add_get("/same/{name}", self._fixed("same", "image/png", _small_png))
        r.add_get("/photo/{n}", self._photo)
        r.add_get("/meme/{n}", self._meme)
        r.add_get("/voice/{n}", self._voice)
        r.add_get("/tone/{n}", self._tone)
        r.add_get("/wrong-type/{n}", self._fixed("wrong_type", "image/png", lambda: b"<html>hi"))
        r.add_get("/truncated/{n}", self._fixed("truncated", "image/png", _truncated_png))
        r.add_get("/to/{target}", self._to_internal)
        r.add_get("/bomb/png/{n}", self._fixed("bomb_png", "image/png", bomb_png))
        r.add_get(
            "/bomb/wav-header/{n}", self._fixed("bomb_wav_header", "audio/wav", wav_header_bomb)
        )
        r.add_get("/bomb/wav-rate/{n}", self._fixed("bomb_wav_rate", "audio/wav", _wav_rate_bomb))
        r.add_get("/huge/declared/{n}", self._huge_declared)
        r.add_get("/huge/chunked/{n}", self._huge_chunked)
        r.add_get("/slow/{n}", self._slow)
        r.add_get("/redirect/{n}", self._redirect)
        r.add_get("/status/{code}/{n}", self._status)
        r.add_get("/garbage/{n}", self._garbage)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        self._runner = runner

    async def stop(self) -> None:
        """End every open response, then close the listener; safe to call twice."""
        self._stopping.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self._port}{path}"

    # -- handlers ------------------------------------------------------------------------------

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.paths[request.path] += 1
        return await handler(request)

    async def _body(self, name: str, build: Callable[[], Any]) -> Any:
        """``build()`` (in a thread) on first use, then the same value."""
        if name not in self._bodies:
            task = self._building.get(name)
            if task is None:
                task = self._building[name] = asyncio.ensure_future(asyncio.to_thread(build))
            self._bodies[name] = await asyncio.shield(task)
        return self._bodies[name]

    def _fixed(self, name: str, content_type: str, build: Callable[[], bytes]):  # type: ignore[no-untyped-def]
        async def handle(_request: web.Request) -> web.Response:
            self.hits[name] += 1
            return web.Response(body=await self._body(name, build), content_type=content_type)

        return handle

    async def _good_image(self, request: web.Request) -> web.Response:
        self.hits["good_image"] += 1
        n = _number(request)
        body = await asyncio.to_thread(_text_png, f"{_PHRASES[n % len(_PHRASES)]} #{n}", n)
        return web.Response(body=body, content_type="image/png")

    async def prepare_realistic(self, images: int, voices: int) -> None:
        """Render ``/meme/0..images-1`` and speak ``/voice/0..voices-1`` now (seconds each
        for speech), so that serving them later costs no time."""
        for n in range(images):
            await self._body(f"meme/{n}", lambda n=n: _meme_png(n))
        for n in range(voices):
            await self._body(f"voice/{n}", lambda n=n: _voice_wav(n))

    async def _meme(self, request: web.Request) -> web.Response:
        self.hits["meme"] += 1
        n = _number(request)
        body = await self._body(f"meme/{n}", lambda: _meme_png(n))
        return web.Response(body=body, content_type="image/png")

    async def _voice(self, request: web.Request) -> web.Response:
        self.hits["voice"] += 1
        n = _number(request)
        body = await self._body(f"voice/{n}", lambda: _voice_wav(n))
        return web.Response(body=body, content_type="audio/wav")

    async def _photo(self, request: web.Request) -> web.Response:
        self.hits["photo"] += 1
        body = await asyncio.to_thread(_noise_jpeg, _number(request))
        return web.Response(body=body, content_type="image/jpeg")

    async def _tone(self, request: web.Request) -> web.Response:
        self.hits["tone"] += 1
        body = await asyncio.to_thread(_tone_wav, _number(request))
        return web.Response(body=body, content_type="audio/wav")

    async def _to_internal(self, request: web.Request) -> web.Response:
        self.hits["to_internal"] += 1
        targets = {
            "loopback": f"http://127.0.0.1:{self._port}/same/x.png",
            "v6-loopback": f"http://[::1]:{self._port}/same/x.png",
            "private": "http://10.0.0.1/same/x.png",
            "metadata": "http://169.254.169.254/latest/meta-data/",
        }
        target = targets.get(request.match_info["target"])
        if target is None:
            raise web.HTTPNotFound()
        raise web.HTTPFound(target)

    async def _good_audio(self, request: web.Request) -> web.Response:
        self.hits["good_audio"] += 1
        n = _number(request)
        clips = await self._body("speech_clips", _speech_clips)
        clip = clips[n % len(clips)]
        # a little trailing silence makes every n a new content hash (no cache hit by content)
        samples = np.concatenate([clip, np.zeros(1 + n % 997, dtype=np.float32)])
        return web.Response(body=_wav(samples, 22_050), content_type="audio/wav")

    async def _huge_declared(self, request: web.Request) -> web.StreamResponse:
        self.hits["huge_declared"] += 1
        resp = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        resp.content_length = HUGE_BYTES
        return await self._stream(request, resp, HUGE_BYTES, None)

    async def _huge_chunked(self, request: web.Request) -> web.StreamResponse:
        self.hits["huge_chunked"] += 1
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        return await self._stream(request, resp, HUGE_BYTES, None)

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        self.hits["slow"] += 1
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        return await self._stream(request, resp, SLOW_MAX_BYTES, 1.0)

    async def _stream(
        self, request: web.Request, resp: web.StreamResponse, total: int, every_s: float | None
    ) -> web.StreamResponse:
        """Write ``total`` bytes (64 KB chunks, or one byte every ``every_s``) until stopped."""
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await resp.prepare(request)
            sent = 0
            signature = b"\x89PNG\r\n\x1a\n"
            while sent < total and not self._stopping.is_set():
                if every_s is None:
                    piece = _CHUNK[: min(len(_CHUNK), total - sent)]
                else:
                    piece = signature[sent : sent + 1] or b"\x00"
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), every_s)
                await resp.write(piece)
                sent += len(piece)
            await resp.write_eof()
        return resp

    async def _redirect(self, request: web.Request) -> web.Response:
        self.hits["redirect"] += 1
        raise web.HTTPFound(f"/redirect/{_number(request) + 1}")

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        self.hits[f"http_{code}"] += 1
        return web.Response(status=code if 400 <= code <= 599 else 500)

    async def _garbage(self, request: web.Request) -> web.Response:
        self.hits["garbage"] += 1
        return web.Response(body=os.urandom(2048 + _number(request) % 4096))


def _number(request: web.Request) -> int:
    digits = request.match_info.get("n", "").split(".", 1)[0]
    return int(digits) if digits.isdigit() else 0


def _text_png(text: str, seed: int) -> bytes:
    from PIL import Image, ImageDraw

    colors = ((250, 240, 200), (200, 230, 250), (230, 250, 210), (250, 215, 215))
    img = Image.new("RGB", (320, 120), colors[seed % len(colors)])
    ImageDraw.Draw(img).text((12, 45), text, fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _sentence(n: int) -> str:
    return f"{_PHRASES[n % len(_PHRASES)]}, number {n}"


def _meme_png(n: int) -> bytes:
    import random

    from model.data.media import render_text_image

    buf = io.BytesIO()
    render_text_image(_sentence(n), random.Random(n)).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def _voice_wav(n: int) -> bytes:
    import random

    from model.data.media import synthesize_speech

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "voice.wav"
        synthesize_speech(_sentence(n), path, random.Random(n))
        return path.read_bytes()


def _small_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def _truncated_png() -> bytes:
    whole = _small_png()
    return whole[: len(whole) // 2]


def _wav_rate_bomb() -> bytes:
    rate = 191_999
    t = np.arange(5 * rate) / rate
    return _wav((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


@lru_cache(maxsize=256)
def _noise_jpeg(n: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(n).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


@lru_cache(maxsize=256)
def _tone_wav(n: int) -> bytes:
    t = np.arange(3 * 22_050) / 22_050
    buf = io.BytesIO()
    sf.write(
        buf, (0.2 * np.sin(2 * np.pi * (200 + n) * t)).astype(np.float32), 22_050, format="WAV"
    )
    return buf.getvalue()
