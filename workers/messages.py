"""The plain records that move between the stream and the workers (hot path: slotted, frozen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Inbound", "Outbound"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One consumed message: its coordinates and raw bytes, plus an opaque handle to ack it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    handle: Any = None  # the stream's event, acknowledged by the agent after the batch is done
    headers: tuple[tuple[str, bytes | None], ...] = ()  # as consumed (workers.headers decides)


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to publish, with its Kafka headers (:mod:`workers.headers`)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
