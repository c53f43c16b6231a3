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

__all__ = ["Backoff", "retry_forever"]

T = TypeVar("T")
log = logging.getLogger("commentflow.retry")


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
) -> T:
    """Await ``op()`` until it succeeds; retry only on ``retriable`` exceptions."""
    attempt = 0
    while True:
        try:
            return await op()
        except retriable as exc:
            attempt += 1
            delay = backoff.delay(attempt)
            if on_retry is not None:
                on_retry(exc)
            log.warning(
                "%s failed (%s), retry %d in %.2fs", what, type(exc).__name__, attempt, delay
            )
            await asyncio.sleep(delay)
