"""The stream's two stages and their acknowledgements, free of Faust (the agent only feeds it).

::

    submit(batch) ─► crash guard: plan ─► prepare (validate, dedup lookup, media)  ─┐ queue of
                                                                                     │ one batch
    finisher task ◄──────────────────────────────────────────────────────────────────┘
      finish (classify, publish + broker acks, Redis) ─► guard.end ─► ack every message, in order

Stage 1 of batch N+1 runs while stage 2 finishes batch N; the queue of one batch between them is
the backpressure, and the single finisher acknowledges batches in the order they were
submitted, so committed offsets only move forward. A message is acknowledged only after its
prediction or dead letter was acknowledged by the broker and Redis was written.

After a crash (the guard finds messages that were in flight), a batch is processed one message
at a time and the pipeline drains before each, so a second crash pins exactly one message.

Lifecycle: :meth:`start`, :meth:`submit` (raises what stopped the finisher: a bug, or
:class:`~workers.model_guard.ModelFailed`, and the caller must crash the worker), :meth:`stop`
(finishes what is prepared within ``timeout_s``; what is not finished is not acknowledged, its
crash-guard count is taken back, and every failure is logged, never swallowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence

from workers.crash_guard import CrashGuard, Part
from workers.messages import Inbound
from workers.processor import BatchProcessor, BatchResult, Prepared

__all__ = ["StreamPipeline"]

log = logging.getLogger("commentflow.pipeline")


class _State(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class StreamPipeline:
    """Prepare ahead, finish in order, acknowledge through ``ack`` (see the module docstring)."""

    def __init__(
        self,
        processor: BatchProcessor,
        ack: Callable[[Inbound], Awaitable[object]],
        *,
        guard: CrashGuard | None = None,
        on_result: Callable[[BatchResult], None] | None = None,
    ) -> None:
        self._processor = processor
        self._ack = ack
        self._guard = guard
        self._on_result = on_result
        self._queue: asyncio.Queue[Prepared | None] = asyncio.Queue(1)
        self._finisher: asyncio.Task[None] | None = None
        self._unfinished: list[Prepared] = []  # prepared, not yet acknowledged (in order)
        self._state = _State.NEW

    async def start(self) -> None:
        if self._state is _State.STARTED:
            return
        if self._state is _State.STOPPED:
            raise RuntimeError("a stopped StreamPipeline cannot be restarted")
        self._finisher = asyncio.ensure_future(self._finish_loop())
        self._state = _State.STARTED

    async def submit(self, batch: Sequence[Inbound]) -> None:
        """Prepare ``batch`` and queue it for the finisher (waits while the queue is full)."""
        self._raise_if_finisher_died()
        for part in await self._plan(batch):
            if part.alone:
                await self._drained()
                part = await self._redis(
                    lambda m=part.messages[0]: self._guard.begin_alone(m),  # type: ignore[union-attr]
                    "redis crash guard",
                )
            prepared = await self._processor.prepare(part.messages, poison=part.poison)
            self._unfinished.append(prepared)
            await self._put(prepared)

    async def stop(self, timeout_s: float, *, abandon: bool = True) -> None:
        """Finish what is prepared (at most ``timeout_s``), then stop the finisher.

        ``abandon``: take back the crash-guard count of what was not finished (a stop that is
        not the input's fault); ``False`` leaves it, so the messages count as in flight at a
        death (a crash that may be theirs).
        """
        if self._state is not _State.STARTED:
            self._state = _State.STOPPED
            return
        self._state = _State.STOPPED
        finisher = self._finisher
        assert finisher is not None
        if not finisher.done() and timeout_s > 0:
            try:
                await asyncio.wait_for(self._drain_and_end(finisher), timeout_s)
            except TimeoutError:
                log.warning(
                    "stopping: %d prepared batch(es) not finished within %.0f s; they are not "
                    "acknowledged and will be redelivered",
                    len(self._unfinished),
                    timeout_s,
                )
            except Exception:  # noqa: BLE001, S110 - the finisher's own error is logged below
                pass
        if not finisher.done():
            finisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({finisher})
        if not finisher.cancelled() and finisher.exception() is not None:
            exc = finisher.exception()
            log.error("the finisher stopped with %s", type(exc).__name__, exc_info=exc)
        if abandon:
            await self._abandon()

    # -- internals

    async def _plan(self, batch: Sequence[Inbound]) -> list[Part]:
        if self._guard is None or not batch:
            return [Part(list(batch))]
        guard = self._guard
        return await self._redis(lambda: guard.plan(batch), "redis crash guard")

    async def _redis(self, op, what: str):  # type: ignore[no-untyped-def]
        return await self._processor.redis_call(op, what)

    def _raise_if_finisher_died(self) -> None:
        if self._state is not _State.STARTED:
            raise RuntimeError("the pipeline is not started")
        assert self._finisher is not None
        if self._finisher.done():
            self._finisher.result()  # re-raise what stopped it
            raise RuntimeError("the finisher stopped")

    async def _wait_or_die(self, aw: Awaitable[object]) -> None:
        """Await ``aw``, but never for a finisher that died (a bug, a failed model): raise."""
        assert self._finisher is not None
        task = asyncio.ensure_future(aw)
        await asyncio.wait({task, self._finisher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            self._raise_if_finisher_died()
        task.result()

    async def _put(self, prepared: Prepared) -> None:
        await self._wait_or_die(self._queue.put(prepared))

    async def _drained(self) -> None:
        await self._wait_or_die(self._queue.join())

    async def _finish_loop(self) -> None:
        while (prepared := await self._queue.get()) is not None:
            try:
                result = await self._processor.finish(prepared)
                await self._end(prepared)
                for message in prepared.messages:
                    await self._ack(message)
                self._unfinished.remove(prepared)
                if self._on_result is not None:
                    self._on_result(result)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    async def _end(self, prepared: Prepared) -> None:
        guard = self._guard
        if guard is not None:
            await self._redis(lambda: guard.end(prepared.messages), "redis crash guard")

    async def _drain_and_end(self, finisher: asyncio.Task[None]) -> None:
        await self._queue.put(None)
        await finisher

    async def _abandon(self) -> None:
        """Take back the crash-guard count of batches that were not finished (best effort: a
        count left behind only makes those messages be processed alone once)."""
        unfinished, self._unfinished = self._unfinished, []
        if self._guard is None or not unfinished:
            return
        messages = [m for p in unfinished for m in p.messages]
        try:
            await asyncio.wait_for(self._guard.undo(messages), 2.0)
        except Exception as exc:  # noqa: BLE001 - best effort at shutdown
            log.warning("could not take back %d in-flight counts: %s", len(messages), exc)
