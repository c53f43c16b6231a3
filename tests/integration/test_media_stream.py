"""Comments with media through the real broker and a worker process, against a hostile server.

The media server runs on 127.0.0.1 and is reached as ``localhost``, the one host the worker is
configured to allow on a loopback address (``COMMENTFLOW_MEDIA_ALLOW_HOSTS``). Redirects to
127.0.0.1, [::1], 10.0.0.1 and 169.254.169.254 must be refused by the worker's address policy
(no test traffic leaves the machine: those addresses are refused before any connect).
"""

from __future__ import annotations

import asyncio
import collections
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest
import soundfile as sf
from aiohttp import web
from PIL import Image

from commentflow.local import WorkerProcess, read_topic
from model.testing.multimodal import make_tiny_multimodal_dir
from schemas.events import Prediction

pytestmark = pytest.mark.integration


def png(color=(200, 30, 30), size=(96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def wav(seconds=1.0, rate=22_050) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def bomb_png(side=30_000) -> bytes:
    """A tiny file that declares a 900-megapixel image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


class MediaServer:
    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.port = 0
        self.runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://localhost:{self.port}{path}"

    async def start(self) -> None:
        image, audio = png(), wav()

        async def handle(request: web.Request) -> web.StreamResponse:
            path = request.path
            self.hits[path] += 1
            if path.startswith("/img/") or path.startswith("/same/"):
                return web.Response(body=image, content_type="image/png")
            if path == "/audio.wav":
                return web.Response(body=audio, content_type="application/octet-stream")
            if path == "/wrong-type":  # says image/png, is HTML
                return web.Response(body=b"<html>hi</html>", content_type="image/png")
            if path == "/truncated":
                return web.Response(body=image[: len(image) // 2], content_type="image/png")
            if path == "/bomb":
                return web.Response(body=bomb_png(), content_type="image/png")
            if path == "/404":
                return web.Response(status=404)
            if path == "/500":
                return web.Response(status=500)
            if path == "/slow":
                resp = web.StreamResponse()
                await resp.prepare(request)
                for _ in range(100):
                    await resp.write(b"\x89")
                    await asyncio.sleep(0.5)
                return resp
            if path == "/endless":
                resp = web.StreamResponse()
                await resp.prepare(request)
                chunk = b"\0" * 65536
                for _ in range(100_000):
                    await resp.write(chunk)
                return resp
            targets = {
                "/to-loopback": f"http://127.0.0.1:{self.port}/img/x.png",
                "/to-v6-loopback": f"http://[::1]:{self.port}/img/x.png",
                "/to-private": "http://10.0.0.1/img/x.png",
                "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            }
            if path in targets:
                raise web.HTTPFound(targets[path])
            return web.Response(status=404)

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


# (path, media type, expected reason or None when it must work)
CASES = [
    ("/img/cat.png", "image", None),
    ("/audio.wav", "audio", None),
    ("/wrong-type", "image", "unsupported_type"),
    ("/audio.wav", "image", "unsupported_type"),
    ("/truncated", "image", "decode_error"),
    ("/bomb", "image", "too_large"),
    ("/404", "image", "http_404"),
    ("/500", "audio", "http_500"),
    ("/slow", "image", "timeout"),
    ("/endless", "audio", "too_large"),
    ("/to-loopback", "image", "blocked_address"),
    ("/to-v6-loopback", "image", "blocked_address"),
    ("/to-private", "image", "blocked_address"),
    ("/to-metadata", "image", "blocked_address"),
]


@pytest.fixture
async def media_server():
    server = MediaServer()
    await server.start()
    yield server
    await server.stop()


async def test_media_comments_degrade_never_drop(
    topics, make_settings, media_server, tmp_path: Path
):
    # a multimodal model (tiny, fake media encoders): it reports image/audio when it used them
    model = make_tiny_multimodal_dir(tmp_path / "model")
    settings = make_settings(
        model,
        batch_max=16,
        media_timeout_s=3.0,
        media_allow_hosts="localhost",
        media_max_audio_bytes=2 * 1024 * 1024,
    )
    events, expected = [], {}
    used: dict[str, list[str]] = {}
    for i, (path, kind, reason) in enumerate(CASES):
        cid = f"m-{i}"
        text = "" if i % 2 else "look"
        used[cid] = (["text"] if text else []) + ([] if reason else [kind])
        events.append(
            {
                "comment_id": cid,
                "user_id": f"u{i % 3}",
                "text": "" if i % 2 else "look",
                "media": [{"type": kind, "url": media_server.url(path) + "?token=SECRET"}],
                "created_at": "2026-11-28T10:00:00Z",
            }
        )
        expected[cid] = reason
    # the same image referenced by 30 comments, and one image under 10 different URLs
    for i in range(30):
        events.append(
            {
                "comment_id": f"same-url-{i}",
                "user_id": "meme-fan",
                "text": "lol",
                "media": [{"type": "image", "url": media_server.url("/img/meme.png")}],
                "created_at": "2026-11-28T10:00:00Z",
            }
        )
        expected[f"same-url-{i}"] = None
        used[f"same-url-{i}"] = ["text", "image"]
    for i in range(10):
        events.append(
            {
                "comment_id": f"alias-{i}",
                "user_id": "meme-fan",
                "text": "lol",
                "media": [{"type": "image", "url": media_server.url(f"/same/{i}.png")}],
                "created_at": "2026-11-28T10:00:00Z",
            }
        )
        expected[f"alias-{i}"] = None
        used[f"alias-{i}"] = ["text", "image"]

    from aiokafka import AIOKafkaProducer

    worker = WorkerProcess(settings, log_path=tmp_path / "worker.log").start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(
                settings.input_topic, orjson.dumps(e), key=e["user_id"].encode()
            )
        docs = await read_topic(
            settings.kafka_bootstrap,
            settings.predictions_topic,
            until=lambda d: len(d) >= len(events),
            timeout_s=180,
            alive=worker.alive,
        )
    finally:
        await producer.stop()
        worker.stop()
    log = (tmp_path / "worker.log").read_text()
    by_id = {d["comment_id"]: d for d in docs}
    assert len(docs) == len(by_id) == len(events), log[-3000:]
    for cid, reason in expected.items():
        doc = by_id[cid]
        Prediction.model_validate(doc)
        assert doc["modalities"] == used[cid], (cid, doc["modalities"])
        reasons = [e["reason"] for e in doc["media_errors"]]
        assert reasons == ([] if reason is None else [reason]), (cid, doc["media_errors"])
        for err in doc["media_errors"]:
            assert "SECRET" not in err["url"] and "?" not in err["url"]
    # one fetch for 30 comments sharing a URL (single flight + cache)
    assert media_server.hits["/img/meme.png"] == 1
    # the internal targets were never reached through the server either
    assert media_server.hits["/img/x.png"] == 0
    # privacy: no comment text, user ids or secret tokens in the worker's log
    assert "SECRET" not in log and "meme-fan" not in log
