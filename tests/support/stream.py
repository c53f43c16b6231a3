"""Helpers for tests that drive a worker through the real broker: send, wait, poll.

The worker itself comes from the ``start_worker`` fixture (``tests/conftest.py``), which always
stops what it started.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from commentflow.local import WorkerProcess, read_topic
from commentflow.settings import Settings
from workers.kafka_security import PLAINTEXT, KafkaSecurity

__all__ = [
    "Record",
    "pairs_of",
    "read_all",
    "read_records",
    "readyz",
    "send",
    "wait_for",
    "wait_predictions",
]

T = TypeVar("T")

Message = tuple[bytes | None, bytes | None]
#: A consumed output: its JSON document and its Kafka headers, as the broker returned them.
Record = tuple[dict[str, Any], list[tuple[str, bytes]]]


def pairs_of(events: Iterable[dict[str, Any]]) -> list[Message]:
    """Events as (value, key) pairs, keyed by ``user_id`` (what a producer sends)."""
    return [(orjson.dumps(e), e["user_id"].encode()) for e in events]


async def send(
    bootstrap: str,
    topic: str,
    messages: Iterable[dict[str, Any] | Message],
    *,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> list[int]:
    """Send events (dicts, keyed by ``user_id``) or raw (value, key) pairs; wait for every ack.

    ``headers``: Kafka headers on every message sent. ``security``: TLS / SASL
    (``Settings.kafka_security``). Returns the offsets, in order.
    """
    pairs = [pairs_of([m])[0] if isinstance(m, dict) else m for m in messages]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        max_request_size=2**21,
        **security.client_kwargs(),
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, partition=partition, headers=headers)
            for value, key in pairs
        ]
        return [meta.offset for meta in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def wait_predictions(
    settings: Settings,
    want: set[str] | int,
    *,
    worker: WorkerProcess | None = None,
    timeout_s: float = 180,
) -> list[dict[str, Any]]:
    """Read the predictions topic until every id in ``want`` (or ``want`` predictions) is there.

    Stops early when ``worker`` dies; fails, with the worker's log tail, if any is missing.
    """
    if isinstance(want, int):
        n = want

        def done(docs: list[dict[str, Any]]) -> bool:
            return len(docs) >= n
    else:
        ids = want

        def done(docs: list[dict[str, Any]]) -> bool:
            return ids <= {d["comment_id"] for d in docs}

    docs = await read_topic(
        settings.kafka_bootstrap,
        settings.predictions_topic,
        until=done,
        timeout_s=timeout_s,
        alive=worker.alive if worker is not None else None,
        security=settings.kafka_security,
    )
    if isinstance(want, int):
        missing = max(0, want - len(docs))
        assert not missing, (f"{missing} predictions missing", _tail(worker))
    else:
        absent = want - {d["comment_id"] for d in docs}
        assert not absent, (f"{len(absent)} missing, e.g. {sorted(absent)[:5]}", _tail(worker))
    return docs


async def read_all(bootstrap: str, topic: str, *, quiet_s: float = 3.0) -> list[dict[str, Any]]:
    """Everything on ``topic`` now: reads from the beginning for ``quiet_s``."""
    return await read_topic(bootstrap, topic, until=lambda _d: False, timeout_s=quiet_s)


async def read_records(
    bootstrap: str, topic: str, *, want: int, timeout_s: float = 120
) -> list[Record]:
    """Read ``topic`` from the beginning (no group) until ``want`` records, with their headers."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[Record] = []
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer.topics()
                await asyncio.sleep(0.1)
        assert partitions is not None, f"topic {topic} not found"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(out) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                out += [(orjson.loads(r.value), list(r.headers)) for r in records]
        assert len(out) >= want, f"{want - len(out)} records missing on {topic}"
        return out
    finally:
        await consumer.stop()


async def wait_for(
    check: Callable[[], Awaitable[T] | T],
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    what: str = "the condition",
) -> T:
    """Poll ``check`` (sync or async) until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        await asyncio.sleep(interval_s)


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    """A worker's ``/readyz`` on ``port``: (status, body)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=5)
        ) as resp,
    ):
        return resp.status, orjson.loads(await resp.text())


def _tail(worker: WorkerProcess | None) -> str:
    return worker.log_tail() if worker is not None else ""
