"""The reference consumer of the worker's outputs: read a topic, drop redeliveries, print JSON.

The worker is at-least-once: a crash between publishing a batch and recording it in Redis
publishes that batch's predictions again (:mod:`workers.processor`). A consumer must therefore
de-duplicate, and ``commentflow tail`` shows how: predictions by their idempotency key
``(user_id, comment_id)``, dead letters by their source position ``(topic, partition, offset)``,
each remembered in a bounded set of recent keys (:class:`RecentKeys`; a redelivery comes soon
after the original, so a window of recent keys catches it without unbounded memory).

Without ``group`` it assigns every partition itself (no offsets committed, nothing to clean
up on the broker: a debugging tool); with ``group`` it joins that consumer group and commits,
as a long-running consumer would. Every connection uses the Kafka security settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from workers.kafka_security import PLAINTEXT, KafkaSecurity

__all__ = ["RecentKeys", "dead_letter_key", "key_for_topic", "prediction_key", "tail"]

log = logging.getLogger("commentflow.tail")

KeyFn = Callable[[dict[str, Any]], Hashable | None]


class RecentKeys:
    """The last ``capacity`` keys seen (least recently seen forgotten first)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def seen(self, key: Hashable) -> bool:
        """True if ``key`` is among the recent keys; remembers it either way."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._keys)


def prediction_key(doc: dict[str, Any]) -> Hashable | None:
    """A prediction's idempotency key (None when the document has no ``comment_id``)."""
    if "comment_id" not in doc:
        return None
    return doc.get("user_id"), doc["comment_id"]


def dead_letter_key(doc: dict[str, Any]) -> Hashable | None:
    """A dead letter's source position: one input message, however often it is dead-lettered."""
    src = doc.get("source")
    if not isinstance(src, dict):
        return None
    return src.get("topic"), src.get("partition"), src.get("offset")


def key_for_topic(topic: str, *, dlq_topic: str) -> KeyFn:
    """The de-duplication key of ``topic``: dead letters by source, anything else as predictions."""
    return dead_letter_key if topic == dlq_topic else prediction_key


async def tail(
    bootstrap: str,
    topic: str,
    emit: Callable[[dict[str, Any]], None],
    *,
    key: KeyFn = prediction_key,
    from_beginning: bool = False,
    max_messages: int | None = None,
    group: str | None = None,
    security: KafkaSecurity = PLAINTEXT,
    remember: int = 100_000,
    topic_wait_s: float = 30.0,
) -> int:
    """Call ``emit`` once per distinct document of ``topic``; return how many were emitted.

    Runs until ``max_messages`` were emitted (forever when None; cancel it to stop).
    ``from_beginning``: start at the oldest retained message, else at the end (a group that
    has committed offsets resumes from them either way). A value that is not a JSON object is
    logged (partition and offset only) and skipped. Raises ``LookupError`` when ``topic`` does
    not appear within ``topic_wait_s``.
    """
    recent = RecentKeys(remember)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=group is not None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **security.client_kwargs(),
    )
    await consumer.start()
    emitted = 0
    try:
        if group is not None:
            consumer.subscribe([topic])
        else:
            tps = await _partitions(consumer, topic, topic_wait_s)
            consumer.assign(tps)
            if from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
        while max_messages is None or emitted < max_messages:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    doc = _document(record.value)
                    if doc is None:
                        log.warning(
                            "skipped a value that is not a JSON object at %s:%d:%d",
                            tp.topic,
                            tp.partition,
                            record.offset,
                        )
                        continue
                    k = key(doc)
                    if k is not None and recent.seen(k):
                        continue
                    emit(doc)
                    emitted += 1
                    if max_messages is not None and emitted >= max_messages:
                        return emitted
        return emitted
    finally:
        await consumer.stop()


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, wait_s: float
) -> list[TopicPartition]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        if loop.time() >= deadline:
            raise LookupError(f"topic {topic!r} not found on the broker")
        await consumer.topics()  # refresh metadata
        await asyncio.sleep(0.2)


def _document(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None
