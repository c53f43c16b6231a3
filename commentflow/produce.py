"""Send comment events: JSON lines from a file or stdin, or synthetic comments for demos and load.

Any Kafka client can produce events; this is the reference producer. Keys are the user id, so one
user's comments stay in order on one partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from workers.kafka_security import PLAINTEXT, KafkaSecurity

__all__ = ["produce", "read_lines", "synthetic_events"]

_POSITIVE = [
    "I love this so much, thank you!",
    "Best purchase I've made all year, totally worth it",
    "This made my day, what a great idea",
    "Amazing work, the new update is fantastic",
    "So happy with the service, five stars",
    "Wonderful community here, you all are awesome",
]
_NEGATIVE = [
    "This is terrible, I want my money back",
    "Worst experience ever, never ordering again",
    "I hate how slow and buggy this app has become",
    "Absolutely awful customer support, so disappointed",
    "This update broke everything, really annoying",
    "What a waste of time, completely useless",
]
_NEUTRAL = [
    "The store opens at 9am on weekdays",
    "Posted the new schedule for next week",
    "Does anyone know which version this is?",
    "The package arrived on Tuesday",
    "Meeting moved to room 4 this afternoon",
    "Here is the link to the documentation",
]
# Half the topics name a product, brand, company or person: what the entity stage finds (the
# dashboard's "what people are talking about" panel in `commentflow demo`). Each pool draws from
# its own list, so that brands differ in how angry people are about them: the courier and the
# phone draw complaints, the concert praise.
_GENERIC = ["the app", "my order", "the new phone", "this thread", "the update", "the concert"]
_BRANDS = [
    "my Amazon order",
    "my iPhone from Apple",
    "the Spotify update",
    "the Taylor Swift concert",
    "the Samsung store",
    "the DHL courier",
    "my Nike shoes",
    "the PlayStation 5",
]
_TOPICS = {  # per pool: negative, neutral, positive
    "negative": _GENERIC + _BRANDS + ["the DHL courier"] * 3 + ["my iPhone from Apple"] * 2,
    "neutral": _GENERIC + _BRANDS,
    "positive": _GENERIC + _BRANDS + ["the Taylor Swift concert"] * 3 + ["my Nike shoes"] * 2,
}


def synthetic_events(
    n: int, *, users: int = 200, seed: int = 0, prefix: str = "syn"
) -> Iterator[dict[str, Any]]:
    """``n`` valid, varied comment events from ``users`` users (deterministic for a seed)."""
    rng = random.Random(seed)
    pools = [("negative", _NEGATIVE), ("neutral", _NEUTRAL), ("positive", _POSITIVE)]
    for i in range(n):
        kind, pool = rng.choice(pools)
        text = f"{rng.choice(pool)} ({rng.choice(_TOPICS[kind])})"
        yield {
            "schema": "commentflow.comment/1",
            "comment_id": f"{prefix}-{seed}-{i}",
            "user_id": f"user-{rng.randrange(users)}",
            "text": text,
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "lang": "en",
            "source": "synthetic",
        }


def _key_of(doc: Any) -> bytes | None:
    if isinstance(doc, dict) and isinstance(doc.get("user_id"), str):
        return doc["user_id"].encode()
    return None


async def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | dict[str, Any]],
    *,
    rate: float | None = None,
    progress: bool = False,
    security: KafkaSecurity = PLAINTEXT,
) -> int:
    """Send every value (dicts are JSON-encoded, bytes sent as they are); returns the count.

    ``security``: TLS / SASL of the connection (``Settings.kafka_security``).
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", **security.client_kwargs()
    )
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        pending = []
        for value in values:
            if isinstance(value, dict):
                raw, key = orjson.dumps(value), _key_of(value)
            else:
                raw, key = value, None
                with contextlib.suppress(orjson.JSONDecodeError):
                    key = _key_of(orjson.loads(value))
            pending.append(await producer.send(topic, raw, key=key))
            sent += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            if rate:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if progress and sent % 1000 == 0:
                print(f"sent {sent}", file=sys.stderr)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def read_lines(path: str) -> Iterator[bytes]:
    """The non-empty lines of ``path`` (``-``: stdin), stripped."""
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    try:
        for line in stream:
            line = line.strip()
            if line:
                yield line
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
