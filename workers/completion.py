"""Out-of-order completion, in-order acknowledgement: per-partition offset tracking.

Comments of one micro-batch no longer finish together: a text comment is published while a
comment of the same batch still waits for its media (:mod:`workers.media_lane`). Kafka commits
one offset per partition, "everything below is done", so the committed offset may only reach
the **lowest unfinished offset** of each partition (the technique of Confluent's Parallel
Consumer). :class:`CompletionTracker` enforces it:

* :meth:`track` registers messages when they are taken from the stream, before any work;
* :meth:`complete` marks messages done (in any order) and acknowledges, through ``ack``, the
  longest run of done messages at the head of each partition, in offset order;
* so ``ack`` (Faust's ``stream.ack``) only ever sees each partition's offsets in order and never
  one past an unfinished message.

Why not hand Faust the out-of-order acks directly: faust-streaming 0.15's
``Consumer._new_offset`` (``faust/transport/consumer.py``) commits the first run of consecutive
acked offsets and checks for a gap before it only ``if committed_offset:`` and only when
``min(acked) - committed_offset > 1``. With no committed offset yet (a new group: ``None``) or
offset 0, or when the one unfinished message is exactly the committed offset (``acked`` starts at
``committed + 1``), it would commit past the unfinished message, and a crash would lose it.
Acknowledging in order here keeps Faust on the path it handles correctly.

Bounded: :meth:`wait_below` lets the caller stop taking messages while too many are tracked (done
ones behind a slow one included), which is the backpressure of out-of-order completion.
Single event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable, Iterable

from workers.messages import Inbound

__all__ = ["CompletionTracker"]

_TP = tuple[str, int]


class _Entry:
    __slots__ = ("done", "message", "offset")

    def __init__(self, message: Inbound) -> None:
        self.message = message
        self.offset = message.offset
        self.done = False


class CompletionTracker:
    """Tracks taken messages per partition; acknowledges each partition's done prefix in order."""

    def __init__(self, ack: Callable[[Inbound], Awaitable[object]]) -> None:
        self._ack = ack
        self._by_tp: dict[_TP, list[_Entry]] = {}
        self._entries: dict[int, _Entry] = {}  # id(message) -> entry
        self._changed = asyncio.Event()
        self._releasing = asyncio.Lock()  # one release at a time: acks stay in offset order

    def __len__(self) -> int:
        """Messages taken and not acknowledged yet (done ones waiting behind others included)."""
        return len(self._entries)

    def track(self, messages: Iterable[Inbound]) -> None:
        """Register messages as taken and unfinished (any order; normally ascending offsets)."""
        for m in messages:
            if id(m) in self._entries:
                continue
            entry = _Entry(m)
            queue = self._by_tp.setdefault((m.topic, m.partition), [])
            if not queue or queue[-1].offset <= m.offset:
                queue.append(entry)
            else:  # a redelivery after a rebalance: an older offset goes before the newer ones
                bisect.insort_right(queue, entry, key=lambda e: e.offset)
            self._entries[id(m)] = entry

    async def complete(self, messages: Iterable[Inbound]) -> int:
        """Mark ``messages`` done; acknowledge what that unblocks. Returns how many were acked.

        An untracked message is tracked first (so a caller that never tracked still acks in
        order within the call)."""
        touched: set[_TP] = set()
        for m in messages:
            entry = self._entries.get(id(m))
            if entry is None:
                self.track([m])
                entry = self._entries[id(m)]
            entry.done = True
            touched.add((m.topic, m.partition))
        acked = 0
        async with self._releasing:
            for tp in sorted(touched):
                acked += await self._release(tp)
        if acked:
            self._changed.set()
        return acked

    def lowest_unfinished(self, topic: str, partition: int) -> int | None:
        """The offset the partition's commit may reach at most (``None``: nothing unfinished)."""
        for entry in self._by_tp.get((topic, partition), ()):
            if not entry.done:
                return entry.offset
        return None

    def pending(self) -> list[Inbound]:
        """Every tracked message not acknowledged yet, per partition in offset order."""
        return [e.message for tp in sorted(self._by_tp) for e in self._by_tp[tp]]

    async def wait_below(self, limit: int) -> None:
        """Return once fewer than ``limit`` messages are tracked."""
        while len(self._entries) >= limit:
            self._changed.clear()
            await self._changed.wait()

    async def _release(self, tp: _TP) -> int:
        queue = self._by_tp.get(tp)
        if queue is None:  # released by an earlier call meanwhile
            return 0
        n = 0
        while n < len(queue) and queue[n].done:
            n += 1
        if not n:
            return 0
        head = queue[:n]
        del queue[:n]
        if not queue:
            del self._by_tp[tp]
        for entry in head:
            del self._entries[id(entry.message)]
        for entry in head:  # in offset order
            await self._ack(entry.message)
        return n
