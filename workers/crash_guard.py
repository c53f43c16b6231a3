"""The crash-loop guard: a message the worker keeps dying on is set aside as ``poison``.

Some inputs do not raise: they kill the process (a native crash in a decoder, the kernel's
OOM killer, a ``predict()`` that hangs until the watchdog exits). Without a guard, such a message
is redelivered to every worker that takes its partition over, forever. So, outside the process
(in the state Redis), the guard counts how often processing of each message *began* without
*ending*::

    {prefix}inflight:{app_id}:{topic}:{partition}:{offset} -> count   (TTL ttl_s)

:meth:`begin` increments the counters of a batch before any work on it (one pipeline) and
:meth:`end` deletes them once the batch is acknowledged. A counter above 1 at :meth:`begin`
therefore means an earlier process died (or was stopped) with that message in flight.

:meth:`plan` turns a fresh batch into the work to do:

* no counter above 1 (the normal case): the batch as one part;
* some message above ``poison_after``: it becomes a ``poison`` dead letter, never processed;
* some message suspect (2..``poison_after``): this attempt is undone and every message of the
  batch is processed **alone**: :meth:`begin_alone` just before it, and only once everything
  before it is finished (the pipeline drains first), so the next crash pins exactly one message
  and its innocent neighbours are not blamed. A poison message thus costs ``poison_after``
  crashes, then one dead letter.

Redis errors are retried by the caller; a lost :meth:`end` only makes a message look suspect
once (it is then processed alone, correctly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.messages import Inbound

__all__ = ["CrashGuard", "Part"]


@dataclass(frozen=True, slots=True)
class Part:
    """Messages to process together, and those to dead-letter as poison instead."""

    messages: list[Inbound]
    poison: list[tuple[Inbound, int]] = field(default_factory=list)  # (message, crash count)
    alone: bool = False  # not begun yet: drain the pipeline, then begin_alone(messages[0])


class CrashGuard:
    """Per-message attempt counters in Redis (``redis.asyncio`` client)."""

    def __init__(
        self, client: Any, *, prefix: str, app_id: str, poison_after: int, ttl_s: int = 86_400
    ) -> None:
        self._redis = client
        self._prefix = f"{prefix}inflight:{app_id}:"
        self.poison_after = poison_after
        self._ttl = ttl_s

    def key(self, m: Inbound) -> str:
        return f"{self._prefix}{m.topic}:{m.partition}:{m.offset}"

    async def begin(self, messages: Sequence[Inbound]) -> list[int]:
        """Count one more start for each message; returns the new counts."""
        if not messages:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for m in messages:
                pipe.incr(self.key(m))
                pipe.expire(self.key(m), self._ttl)
            replies = await pipe.execute()
        return [int(r) for r in replies[0::2]]

    async def undo(self, messages: Sequence[Inbound]) -> None:
        """Take back one start (a batch that is split, or abandoned at shutdown)."""
        if messages:
            async with self._redis.pipeline(transaction=False) as pipe:
                for m in messages:
                    pipe.decr(self.key(m))
                await pipe.execute()

    async def end(self, messages: Sequence[Inbound]) -> None:
        """The messages are done (acknowledged next): forget them."""
        if messages:
            await self._redis.delete(*(self.key(m) for m in messages))

    async def plan(self, batch: Sequence[Inbound]) -> list[Part]:
        """Begin ``batch`` and say how to process it (see the module docstring)."""
        counts = await self.begin(batch)
        poison = {id(m): c - 1 for m, c in zip(batch, counts, strict=True) if c > self.poison_after}
        rest = [m for m in batch if id(m) not in poison]
        if all(c <= 1 for c in counts) or not rest:
            return [Part(rest, [(m, poison[id(m)]) for m in batch if id(m) in poison])]
        # An earlier process died with some of these in flight: one at a time from here, in
        # the batch's order (acknowledgements stay in offset order).
        await self.undo(rest)
        return [
            Part([], [(m, poison[id(m)])]) if id(m) in poison else Part([m], alone=True)
            for m in batch
        ]

    async def begin_alone(self, message: Inbound) -> Part:
        """Begin one message of a split batch: a part to process, or its poison dead letter."""
        (count,) = await self.begin([message])
        if count > self.poison_after:
            return Part([], [(message, count - 1)])
        return Part([message])
