"""Faust's Kafka consumer with a configurable fetch long-poll (``consumer_fetch_max_wait_s``).

faust-streaming 0.15 builds the worker's ``aiokafka.AIOKafkaConsumer`` with a hard-coded
``fetch_max_wait_ms=1500`` (``AIOKafkaConsumerThread._create_worker_consumer`` in
``faust/transport/drivers/aiokafka.py``). Apache Kafka answers a fetch as soon as
``fetch_min_bytes`` (1) are there, so the long-poll costs nothing; the embedded broker (tansu)
does not always answer early, and a comment that arrives during a fetch then waits for the rest of
it (measured on tansu with one consumer: p50 130 ms at 500 ms, 5 ms at 20 ms). A short long-poll
only costs a few more (empty) fetch requests per second per broker.

The value is set on the consumer before it starts (aiokafka passes ``_fetch_max_wait_ms`` to its
``Fetcher`` in ``start()``); :func:`install` swaps the transport's consumer class of one app.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer

__all__ = ["install"]


def install(app: faust.App, fetch_max_wait_s: float) -> None:
    """Make ``app``'s worker consumer long-poll at most ``fetch_max_wait_s`` per fetch."""
    wait_ms = max(1, round(fetch_max_wait_s * 1000))

    class _Thread(AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = wait_ms  # noqa: SLF001 - faust hard-codes 1500
            return consumer

    class _Consumer(Consumer):
        def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
            return _Thread(self, loop=self.loop, beacon=self.beacon)

    app.transport.Consumer = _Consumer  # type: ignore[misc]
