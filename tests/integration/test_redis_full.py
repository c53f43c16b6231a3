"""A full state Redis (``noeviction`` answering OOM) stalls the worker; it never crash-loops.

The worker keeps running, reports ``pipeline: redis: ...`` on ``/readyz``, publishes nothing
twice, and once Redis has room again it finishes the stream with exact counts.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from support.stream import readyz

from commentflow.local import WorkerProcess, read_topic
from commentflow.produce import synthetic_events
from commentflow.stack import free_port
from model.testing import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-redis-full") / "model")


async def test_out_of_memory_answers_stall_the_worker_then_it_resumes_exactly(
    topics, make_settings, tiny_model, redis_client, tmp_path
):
    port = free_port()
    settings = make_settings(
        tiny_model, batch_max=16, web_enabled=True, web_port=port, retry_max_s=0.5
    )
    events = list(synthetic_events(800, users=60, seed=21, prefix="oom"))
    ids = {e["comment_id"] for e in events}
    worker = WorkerProcess(settings, log_path=tmp_path / "worker.log").start()
    before = int((await redis_client.config_get("maxmemory"))["maxmemory"])
    stalled = None
    try:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            for e in events:
                await producer.send(
                    settings.input_topic, orjson.dumps(e), key=e["user_id"].encode()
                )
            await producer.flush()
        finally:
            await producer.stop()
        await read_topic(
            settings.kafka_bootstrap,
            settings.predictions_topic,
            until=lambda d: len(d) >= 100,
            timeout_s=120,
        )
        await redis_client.config_set("maxmemory", 1)  # full: every write answers OOM
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert worker.alive(), worker.log_tail()
                status, body = await readyz(port)
                if status == 503 and "redis" in body["checks"].get("pipeline", ""):
                    stalled = body
                    break
                await asyncio.sleep(0.5)
            # while full, the stream waits: nothing more is predicted
            frozen = await read_topic(
                settings.kafka_bootstrap,
                settings.predictions_topic,
                until=lambda d: False,
                timeout_s=2,
            )
            await asyncio.sleep(3)
            later = await read_topic(
                settings.kafka_bootstrap,
                settings.predictions_topic,
                until=lambda d: False,
                timeout_s=2,
            )
            assert len(later) <= len(frozen) + 16  # at most the batch that was being published
            assert worker.alive(), worker.log_tail()
        finally:
            await redis_client.config_set("maxmemory", before)
        docs = await read_topic(
            settings.kafka_bootstrap,
            settings.predictions_topic,
            until=lambda d: ids <= {x["comment_id"] for x in d},
            timeout_s=180,
            alive=worker.alive,
        )
        for _ in range(40):
            status, _ = await readyz(port)
            if status == 200:
                break
            await asyncio.sleep(0.5)
        assert status == 200
    finally:
        await redis_client.config_set("maxmemory", before)
        worker.stop()
    assert stalled is not None, worker.log_tail()
    assert ids <= {d["comment_id"] for d in docs}
    assert len(docs) == len(ids), "a prediction was published twice"
    per_user = collections.Counter(e["user_id"] for e in events)
    for user, n in per_user.items():
        total = await redis_client.hget(f"{settings.redis_prefix}user:{user}", "total")
        assert int(total) == n, user
    log = worker.log_tail(10**6)
    assert "OutOfMemoryError" in log and "Traceback" not in log
