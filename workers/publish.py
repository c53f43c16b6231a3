"""Publishing that waits for the broker: resend what failed for a transient reason, report what
was refused for good.

Sends are made one after the other (which keeps the order of a partition), then every delivery
is awaited; the ones that failed for a transient reason (timeouts, a broker away) are sent again
with backoff until they go through (the ``publish`` stage shows as stalled meanwhile), and the
ones the broker refuses for good (:data:`PERMANENT_PUBLISH`: too large, unserialisable) are
returned, for the caller to dead-letter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

from workers.health import PipelineHealth
from workers.messages import Outbound
from workers.metrics import PipelineMetrics
from workers.retry import Backoff

__all__ = ["PERMANENT_PUBLISH", "Publisher", "publish_all"]

log = logging.getLogger("commentflow.processor")

#: Publish errors that no retry can fix: this one message is refused by the broker for good.
PERMANENT_PUBLISH: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TypeError,
    ValueError,
)


class Publisher(Protocol):
    """Where predictions and dead letters go (the Faust producer in production)."""

    async def send(self, message: Outbound) -> Awaitable[object]:
        """Queue ``message``; the returned awaitable resolves once the broker acknowledged it."""
        ...


async def publish_all(
    publisher: Publisher,
    messages: list[Outbound],
    *,
    backoff: Backoff,
    metrics: PipelineMetrics,
    health: PipelineHealth,
) -> dict[int, BaseException]:
    """Publish ``messages`` and wait for the broker; resend only the ones that failed.

    Transient failures (timeouts, a broker away) are retried with backoff until they go
    through; returns the messages refused for good (index -> error: too large, ...).
    """
    pending = list(range(len(messages)))
    refused: dict[int, BaseException] = {}
    attempt = 0
    while pending:
        futures: list[Awaitable[object]] = []
        for i in pending:  # sequential sends keep the per-partition order
            try:
                futures.append(await publisher.send(messages[i]))
            except Exception as exc:  # noqa: BLE001 - judged below
                futures.append(_failed(exc))
        results = await asyncio.gather(*futures, return_exceptions=True)
        retry: list[int] = []
        first: BaseException | None = None
        for i, r in zip(pending, results, strict=True):
            # a cancelled delivery (BaseException) is a failure too, never a success
            if not isinstance(r, BaseException):
                continue
            if isinstance(r, PERMANENT_PUBLISH):
                refused[i] = r
            else:
                retry.append(i)
                first = first or r
        if not retry:
            health.recover("publish")
            return refused
        attempt += 1
        metrics.producer_errors.inc(len(retry))
        health.stall("publish", type(first).__name__)
        delay = backoff.delay(attempt)
        log.warning(
            "publish failed for %d of %d messages (%s), retry %d in %.2fs",
            len(retry),
            len(pending),
            type(first).__name__,
            attempt,
            delay,
        )
        pending = retry
        await asyncio.sleep(delay)
    return refused


def _failed(exc: Exception) -> asyncio.Future[object]:
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future
