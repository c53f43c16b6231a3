"""Media never holds text back, on the real broker and Redis with a worker process.

One comment's picture is served by a gate the test opens when it wants: the text comments
behind it on the same partition are predicted first, the consumer group's committed offset
stays at that comment (the lowest unfinished offset), and after ``kill -9`` and a restart the
redelivered text comments are not predicted again (they were aggregated), the held one is
predicted once, and Redis is exact.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from PIL import Image
from support.stream import read_all, send, wait_for, wait_predictions

from model.testing.multimodal import make_tiny_multimodal_dir

pytestmark = pytest.mark.integration

TEXTS = 20


class Gate:
    """``/gate.png`` answers only once :attr:`open` is set (a picture that takes forever)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.asked = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        buf = io.BytesIO()
        Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(buf, format="PNG")
        self._png = buf.getvalue()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gate.png", self._gate)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001

    async def stop(self) -> None:
        self.open.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _gate(self, _request: web.Request) -> web.Response:
        self.asked.set()
        await self.open.wait()
        return web.Response(body=self._png, content_type="image/png")


def comment(cid: str, user: str, media: list[dict] | None = None) -> dict:
    doc = {
        "comment_id": cid,
        "user_id": user,
        "text": "great",
        "created_at": "2026-12-01T10:00:00Z",
    }
    if media:
        doc["media"] = media
    return doc


async def committed(settings, partition: int) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(settings.input_topic, partition))
    finally:
        await consumer.stop()


async def test_text_behind_a_slow_picture_is_predicted_first_and_a_restart_adds_no_duplicate(
    topics, make_settings, redis_client, start_worker, tmp_path: Path
):
    gate = Gate()
    await gate.start()
    try:
        model = make_tiny_multimodal_dir(tmp_path / "model")
        settings = make_settings(
            model, batch_max=8, media_timeout_s=300.0, media_allow_hosts="localhost"
        )
        worker = start_worker(settings)
        # offset 0: a first comment, so that the group has committed something
        await send(
            settings.kafka_bootstrap, settings.input_topic, [comment("c0", "u0")], partition=0
        )
        await wait_predictions(settings, {"c0"}, worker=worker)
        await wait_for(
            lambda: committed(settings, 0), timeout_s=60, what="the first commit (offset 1)"
        )
        picture = [{"type": "image", "url": f"http://localhost:{gate.port}/gate.png"}]
        held = comment("held", "u1", picture)  # offset 1
        texts = [comment(f"t{i}", f"u{i % 3}") for i in range(TEXTS)]  # offsets 2..21
        await send(settings.kafka_bootstrap, settings.input_topic, [held, *texts], partition=0)

        # every text comment behind the held one is predicted while its picture is not served
        ids = {t["comment_id"] for t in texts}
        docs = await wait_predictions(settings, ids | {"c0"}, worker=worker)
        assert gate.asked.is_set() and not gate.open.is_set()
        assert "held" not in {d["comment_id"] for d in docs}
        # ... and aggregated (the Redis write follows the publish)
        await wait_for(
            lambda: redis_client.hget(f"{settings.redis_prefix}global", "total"),
            timeout_s=60,
            what="the Redis write",
        )
        await wait_for(
            _total_is(redis_client, settings.redis_prefix, 1 + TEXTS),
            timeout_s=60,
            what="every text comment aggregated",
        )
        # the committed offset never passes the unfinished comment (offset 1)
        assert await committed(settings, 0) == 1

        worker.kill()  # the held comment is in flight: redelivered, with the texts behind it
        worker = start_worker(settings, "restarted")
        gate.open.set()
        docs = await wait_predictions(settings, ids | {"c0", "held"}, worker=worker)
        await wait_for(
            _total_is(redis_client, settings.redis_prefix, 2 + TEXTS),
            timeout_s=60,
            what="the held comment aggregated",
        )
        docs = await read_all(settings.kafka_bootstrap, settings.predictions_topic, quiet_s=2)
        worker.stop()
        predicted = [d["comment_id"] for d in docs]
        # one prediction per comment: the redelivered texts were skipped as already done
        assert sorted(predicted) == sorted(ids | {"c0", "held"}), predicted
        (doc,) = [d for d in docs if d["comment_id"] == "held"]
        assert "image" in doc["modalities"] and doc["media_errors"] == []
        assert int(await redis_client.hget(f"{settings.redis_prefix}global", "total")) == 22
        assert await committed(settings, 0) == 2 + TEXTS
    finally:
        await gate.stop()


def _total_is(redis_client, prefix: str, n: int):
    async def check() -> bool:
        total = await redis_client.hget(f"{prefix}global", "total")
        return total is not None and int(total) == n

    return check
