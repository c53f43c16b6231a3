"""Liveness and readiness of a worker, as plain objects (the Faust web views only serve them).

``/livez`` answers as long as the process and its event loop run and no ``predict()`` call is
past its deadline (:attr:`PipelineHealth.hung`): no dependency is checked, so an orchestrator
never restarts a worker because Redis is down (restarting would not help).
``/readyz`` checks what processing needs: the model is loaded, Redis answers ``PING``, the
broker answers a metadata request (each within ``timeout_s``), and no stage of the pipeline is
stalled in a retry loop (:class:`PipelineHealth`: the model breaker is open, Redis or the broker
refuses writes).

The checks never cancel a Redis or broker call mid-reply (redis-py's CVE-2023-28858): they wait
with :func:`asyncio.wait`, which leaves a late call to finish in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from workers.kafka_security import PLAINTEXT, KafkaSecurity

__all__ = ["BrokerProbe", "CheckFailed", "PipelineHealth", "Readiness", "ReadinessReport"]

Check = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    ready: bool
    checks: dict[str, str]  # name -> "ok" or the reason it failed

    def to_json(self) -> dict[str, object]:
        return {"status": "ready" if self.ready else "not ready", "checks": self.checks}


class CheckFailed(Exception):
    """A readiness check's own answer; its message is shown in ``/readyz``."""


@dataclass(slots=True)
class PipelineHealth:
    """What the pipeline itself knows about its health, shared by its stages and the probes.

    A stage that enters a retry loop calls :meth:`stall` (``stage`` -> the reason) and
    :meth:`recover` once it succeeds; :meth:`ready` is false while any stage is stalled. ``hung``
    is set by the inference watchdog when a ``predict()`` call is past its deadline (``/livez``
    then fails, and the worker exits).
    """

    stalled: dict[str, tuple[str, float]] = field(default_factory=dict)  # stage -> (why, since)
    hung: bool = False
    on_change: Callable[[str, bool], None] | None = None  # (stage, stalled): metrics

    def stall(self, stage: str, reason: str) -> None:
        if stage not in self.stalled:
            self.stalled[stage] = (reason, time.monotonic())
            if self.on_change is not None:
                self.on_change(stage, True)

    def recover(self, stage: str) -> None:
        if self.stalled.pop(stage, None) is not None and self.on_change is not None:
            self.on_change(stage, False)

    def stalled_for(self, stage: str) -> float:
        """Seconds ``stage`` has been stalled (0 when it is not)."""
        entry = self.stalled.get(stage)
        return 0.0 if entry is None else time.monotonic() - entry[1]

    def ready(self) -> bool:
        return not self.stalled and not self.hung

    def describe(self) -> str:
        if self.hung:
            return "inference hung"
        return ", ".join(f"{stage}: {why}" for stage, (why, _) in sorted(self.stalled.items()))


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
            # only our own CheckFailed says why; other errors may quote hosts or credentials
            return f"failed: {exc}" if isinstance(exc, CheckFailed) else type(exc).__name__
        return "ok" if value else "failed"


class BrokerProbe:
    """Asks the broker for its metadata with a small client of its own (no consumer group),
    connected with the worker's TLS / SASL settings."""

    def __init__(self, bootstrap: str, security: KafkaSecurity = PLAINTEXT) -> None:
        self._bootstrap = bootstrap
        self._security = security
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
                    **self._security.client_kwargs(),
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
