"""Shared limits of media fetching, so that no input can make a worker hold unbounded memory
or connections (used by :class:`~workers.media_fetch.MediaFetcher`):

* :class:`ByteBudget`: bytes of bodies in flight, all items together. A body's bytes are
  reserved once its headers arrived and before it is read (its Content-Length when declared, and
  the body may not exceed it; otherwise the kind's max bytes, shrunk to the real size once read)
  and released by the owner of the fetch result after decoding. Waiting for budget counts
  against the deadline; who gets none in time fails with ``busy``.
* :class:`DomainLimiter`: requests in flight per registrable domain (``a1.evil.test`` and
  ``a2.evil.test`` share ``evil.test``'s budget), on top of aiohttp's per-host and total limits:
  a wildcard domain cannot take the whole connection pool.
* :class:`RequestBudget`: HTTP requests one comment may send, every attempt and redirect hop
  counted; beyond it ``request_limit``.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from workers.address_policy import MediaBusy, registrable_domain

__all__ = ["ByteBudget", "DomainLimiter", "FetchProgress", "RequestBudget", "Reservation"]

class Reservation:
    """Bytes held in a :class:`ByteBudget`; :meth:`release` is idempotent."""

    __slots__ = ("_budget", "nbytes")

    def __init__(self, budget: ByteBudget, nbytes: int) -> None:
        self._budget = budget
        self.nbytes = nbytes

    def shrink(self, nbytes: int) -> None:
        """Keep only ``nbytes`` (the body turned out smaller than reserved)."""
        if 0 <= nbytes < self.nbytes:
            self._budget._give(self.nbytes - nbytes)  # noqa: SLF001 - the budget's own handle
            self.nbytes = nbytes

    def release(self) -> None:
        self.shrink(0)


class ByteBudget:
    """An async semaphore counted in bytes, first come first served (a large request at the
    head is not starved by small ones behind it). Event-loop use only.

    A request over ``capacity`` is clamped to it (it then waits for the whole budget).
    :attr:`high_water` is the most bytes ever held at once.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.used = 0
        self.high_water = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def reserve(self, nbytes: int, deadline: float | None = None) -> Reservation:
        """Wait for ``nbytes`` until ``deadline`` (loop time; ``TimeoutError`` past it)."""
        n = max(0, min(nbytes, self.capacity))
        if not self._waiters and self.used + n <= self.capacity:
            self._take(n)
            return Reservation(self, n)
        entry = (n, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            async with asyncio.timeout_at(deadline):
                await entry[1]
        except BaseException:
            if entry[1].done() and not entry[1].cancelled():
                self._give(n)  # granted just as we gave up
            else:
                entry[1].cancel()
                self._wake()  # we may have been the head that blocked the others
            raise
        return Reservation(self, n)

    def _take(self, n: int) -> None:
        self.used += n
        self.high_water = max(self.high_water, self.used)

    def _give(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():  # gave up
                self._waiters.popleft()
                continue
            if self.used + n > self.capacity:
                return
            self._waiters.popleft()
            self._take(n)
            fut.set_result(None)


class DomainLimiter:
    """At most ``per_domain`` requests in flight per registrable domain. Semaphores exist only
    while a domain has requests (no growth with the number of domains ever seen).
    :attr:`high_water` maps each domain to its most requests at once."""

    def __init__(self, per_domain: int) -> None:
        self.per_domain = per_domain
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: Counter[str] = Counter()
        self.active: Counter[str] = Counter()
        self.high_water: Counter[str] = Counter()

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        domain = registrable_domain(host)
        sem = self._slots.get(domain)
        if sem is None:
            sem = self._slots[domain] = asyncio.Semaphore(self.per_domain)
        self._users[domain] += 1
        try:
            async with sem:
                self.active[domain] += 1
                self.high_water[domain] = max(self.high_water[domain], self.active[domain])
                try:
                    yield
                finally:
                    self.active[domain] -= 1
        finally:
            self._users[domain] -= 1
            if not self._users[domain]:
                del self._users[domain], self._slots[domain], self.active[domain]


class RequestBudget:
    """HTTP requests one comment may still send; every attempt and redirect hop takes one."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> None:
        if self.used >= self.limit:
            raise MediaBusy("request_limit", f"{self.limit} requests for this comment")
        self.used += 1


@dataclass(slots=True)
class FetchProgress:
    """Where a fetch is (set by the fetcher, read by whoever gives up on it): ``phase`` is
    ``request`` or ``budget`` (waiting for :class:`ByteBudget`)."""

    phase: str = "request"


