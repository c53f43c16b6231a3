"""Liveness and readiness of a worker, as plain objects (the Faust web views only serve them).

``/livez`` answers as long as the process and its event loop run: no dependency is checked, so
an orchestrator never restarts a worker because Redis is down (restarting would not help).
``/readyz`` checks what processing needs: the model is loaded, Redis answers ``PING`` and the
broker answers a metadata request, each within ``timeout_s``.

The checks never cancel a Redis or broker call mid-reply (redis-py's CVE-2023-28858): they wait
with :func:`asyncio.wait`, which leaves a late call to finish in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

__all__ = ["BrokerProbe", "Readiness", "ReadinessReport"]

Check = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    ready: bool
    checks: dict[str, str]  # name -> "ok" or the reason it failed

    def to_json(self) -> dict[str, object]:
        return {"status": "ready" if self.ready else "not ready", "checks": self.checks}


class Readiness:
    """Runs the named ``checks`` concurrently; a check fails by raising, returning a falsy
    value or not answering within ``timeout_s``."""

    def __init__(self, checks: Mapping[str, Check], *, timeout_s: float = 2.0) -> None:
        self._checks = dict(checks)
        self._timeout = timeout_s

    async def report(self) -> ReadinessReport:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        return ReadinessReport(all(v == "ok" for v in checks.values()), checks)

    async def _run(self, check: Check) -> str:
        task = asyncio.ensure_future(check())
        done, _ = await asyncio.wait({task}, timeout=self._timeout)
        if not done:
            task.add_done_callback(_consume)
            return "timeout"
        try:
            value = task.result()
        except Exception as exc:  # noqa: BLE001 - a failed check is an answer, not an error
            return type(exc).__name__
        return "ok" if value else "failed"


class BrokerProbe:
    """Asks the broker for its metadata with a small client of its own (no consumer group)."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._client = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> bool:
        from aiokafka import AIOKafkaConsumer

        async with self._lock:
            if self._client is None:
                client = AIOKafkaConsumer(
                    bootstrap_servers=self._bootstrap,
                    enable_auto_commit=False,
                    request_timeout_ms=5000,
                )
                await client.start()
                self._client = client
            await self._client.topics()  # always a remote call
        return True

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.stop()


def _consume(task: asyncio.Future[object]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning
