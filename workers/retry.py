"""Retry transient failures with jittered exponential backoff, forever or until cancelled.

Used for Redis and broker writes whose retry is safe (idempotent scripts, resends of failed
messages only). Cancelling the caller (shutdown) cancels the wait, so a shutdown stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import redis.exceptions

__all__ = ["REDIS_RETRIABLE", "Backoff", "retry_forever"]

T = TypeVar("T")
log = logging.getLogger("commentflow.retry")

#: Redis answers that say "not now" rather than "never": a broken connection, a timeout, a
#: server still loading its data set, a replica that became read-only in a failover, a full
#: state Redis (``noeviction`` answers OOM to writes). All are retried with backoff, never a
#: crash loop; the scripts are idempotent, so a retried call changes nothing twice.
REDIS_RETRIABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ClusterDownError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Full-jitter delay before retry number ``attempt`` (1-based)."""
        cap = min(self.max_s, self.initial_s * self.factor ** (attempt - 1))
        return random.uniform(cap / 2, cap)


async def retry_forever(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    retriable: tuple[type[BaseException], ...],
    backoff: Backoff,
    on_retry: Callable[[BaseException], None] | None = None,
    on_success: Callable[[], None] | None = None,
) -> T:
    """Await ``op()`` until it succeeds; retry only on ``retriable`` exceptions.

    ``on_retry`` is called with each retried exception, ``on_success`` once after a success that
    followed retries (health reporting: a stage is stalled from the first until then).
    """
    attempt = 0
    while True:
        try:
            value = await op()
            if attempt and on_success is not None:
                on_success()
            return value
        except retriable as exc:
            attempt += 1
            delay = backoff.delay(attempt)
            if on_retry is not None:
                on_retry(exc)
            log.warning(
                "%s failed (%s), retry %d in %.2fs", what, type(exc).__name__, attempt, delay
            )
            await asyncio.sleep(delay)
