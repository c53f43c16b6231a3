"""The stream's stages and their acknowledgements, free of Faust (the agent only feeds it).

::

    submit(batch) ─► track offsets ─► crash guard: plan ─► prepare (validate, dedup, split) ─┐
                                                                                             │
      text part: queue of one batch ─► finisher task: classify (up to ``classify_at_once``  ◄┤
                 batches, one per inference lane) ─► emitter task, in submission order:      │
                 publish + broker acks, Redis ─► guard.end ─► complete                       │
      held part (comments with media) ─► media lane (workers.media_lane): fetch, decode,    ◄┘
                                        warm features, finish ─► guard.end ─► complete(messages)

    complete ─► CompletionTracker: acknowledge each partition's done prefix, in offset order

Stage 1 of batch N+1 runs while the model classifies batch N and batch N-1's outputs are
published and aggregated (the model does not wait for the broker's acks and Redis). With
``classify_at_once`` > 1 (one per inference lane, :mod:`workers.inference`) several text batches
are classified at once, and the emitter still publishes them in the order they were submitted,
so text-only predictions keep their partition's order. The queue of one prepared batch, the
classifications in flight and the emitter are the backpressure of the text lane, the lane's
bounded queue that of media, and ``max_pending`` (messages taken and not yet acknowledged) that
of both. Comments complete out of order (a text comment is published while an older comment
waits for its media), but the tracker (:mod:`workers.completion`) acknowledges only up to each
partition's lowest unfinished offset, so committed offsets only move forward and never pass an
unfinished message. A message is acknowledged only after its prediction or dead letter was
acknowledged by the broker and Redis was written.

After a crash (the guard finds messages that were in flight), a batch is processed one message
at a time, media inline (no lane), and the pipeline (the lane included) drains before each, so a
second crash pins exactly one message.

Lifecycle: :meth:`start`, :meth:`submit` (raises what stopped the finisher or the lane: a bug,
or :class:`~workers.model_guard.ModelFailed`, and the caller must crash the worker), :meth:`stop`
(finishes what is prepared and in the lane within ``timeout_s``; what is not finished is not
acknowledged, its crash-guard count is taken back, and every failure is logged, never
swallowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from workers.completion import CompletionTracker
from workers.crash_guard import CrashGuard, Part
from workers.media_lane import MediaLane, Warm
from workers.messages import Inbound
from workers.processor import BatchProcessor, BatchResult, Classified, Prepared
from workers.watchdog import Watchdog

__all__ = ["LaneConfig", "StreamPipeline"]

log = logging.getLogger("commentflow.pipeline")


class _State(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class LaneConfig:
    """The media lane's bounds (``concurrency`` 0: no lane, media finish with their batch)."""

    concurrency: int = 2  # batches' media finishing at once
    depth: int = 8  # batches' media waiting
    max_pending: int = 10_000  # messages taken and not yet acknowledged
    warm: Warm | None = None  # the classifier's warm_media, run on the lane's thread
    watchdog: Watchdog | None = None  # a deadline on each warm call (the worker exits past it)


class StreamPipeline:
    """Prepare ahead, finish text and media apart, acknowledge in offset order through ``ack``
    (see the module docstring)."""

    def __init__(
        self,
        processor: BatchProcessor,
        ack: Callable[[Inbound], Awaitable[object]],
        *,
        guard: CrashGuard | None = None,
        on_result: Callable[[BatchResult], None] | None = None,
        lane: LaneConfig | None = None,
        classify_at_once: int = 1,
    ) -> None:
        if classify_at_once < 1:
            raise ValueError("classify_at_once must be at least 1")
        self._processor = processor
        self._guard = guard
        self._on_result = on_result
        self._queue: asyncio.Queue[Prepared | None] = asyncio.Queue(1)
        # classifications in flight, in submission order (the emitter awaits them in turn)
        self._emits: asyncio.Queue[asyncio.Future[Classified] | None] = asyncio.Queue(
            classify_at_once
        )
        self._slots = asyncio.Semaphore(classify_at_once)
        self._classifying: set[asyncio.Future[Classified]] = set()
        self._finisher: asyncio.Task[None] | None = None
        self._emitter: asyncio.Task[None] | None = None
        self._ack = ack
        self.tracker = CompletionTracker(self._acknowledge)
        lane = lane if lane is not None else LaneConfig(concurrency=0)
        self._max_pending = max(1, lane.max_pending)
        self._lane = (
            MediaLane(
                processor,
                self._done,
                warm=lane.warm,
                watchdog=lane.watchdog,
                concurrency=lane.concurrency,
                depth=lane.depth,
            )
            if lane.concurrency > 0
            else None
        )
        self._unfinished: dict[int, Inbound] = {}  # begun, not finished: guard.undo at stop
        self._done_at: dict[int, float] = {}  # id(message) -> when it was done (ack_wait)
        self._state = _State.NEW

    async def start(self) -> None:
        if self._state is _State.STARTED:
            return
        if self._state is _State.STOPPED:
            raise RuntimeError("a stopped StreamPipeline cannot be restarted")
        self._finisher = asyncio.ensure_future(self._finish_loop())
        self._emitter = asyncio.ensure_future(self._emit_loop())
        if self._lane is not None:
            await self._lane.start()
        self._state = _State.STARTED

    async def submit(self, batch: Sequence[Inbound]) -> None:
        """Prepare ``batch``, queue its text part for the finisher and its comments with media
        for the lane (waits while they, or the messages not yet acknowledged, are full)."""
        self._raise_if_died()
        await self._wait_or_die(self.tracker.wait_below(self._max_pending))
        self._observe_fetch(batch)
        self.tracker.track(sorted(batch, key=_position))
        for part in await self._plan(batch):
            alone = part.alone  # one message at a time after a crash: its media inline
            if alone:
                await self._drained()
                part = await self._redis(
                    lambda m=part.messages[0]: self._guard.begin_alone(m),  # type: ignore[union-attr]
                    "redis crash guard",
                )
            self._unfinished.update((id(m), m) for m in part.messages)
            self._unfinished.update((id(m), m) for m, _ in part.poison)
            prepared = await self._processor.prepare(
                part.messages, poison=part.poison, hold_media=self._lane is not None and not alone
            )
            await self._put(prepared)
            if prepared.held:
                assert self._lane is not None
                await self._wait_or_die(self._lane.submit(prepared.held))

    async def stop(self, timeout_s: float, *, abandon: bool = True) -> None:
        """Finish what is prepared (at most ``timeout_s``), then stop the finisher and the lane.

        ``abandon``: take back the crash-guard count of what was not finished (a stop that is
        not the input's fault); ``False`` leaves it, so the messages count as in flight at a
        death (a crash that may be theirs).
        """
        if self._state is not _State.STARTED:
            self._state = _State.STOPPED
            return
        self._state = _State.STOPPED
        finisher, emitter = self._finisher, self._emitter
        assert finisher is not None and emitter is not None
        if not emitter.done() and timeout_s > 0:
            try:
                await asyncio.wait_for(self._drain_and_end(finisher, emitter), timeout_s)
            except TimeoutError:
                log.warning(
                    "stopping: %d message(s) not finished within %.0f s; they (and the ones "
                    "behind them) are not acknowledged and will be redelivered",
                    len(self._unfinished),
                    timeout_s,
                )
            except Exception:  # noqa: BLE001, S110 - the finisher's own error is logged below
                pass
        classifying = list(self._classifying)
        for task in (finisher, emitter, *classifying):
            if not task.done():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({finisher, emitter, *classifying})
        for task in classifying:  # retrieved: what failed is the emitter's to report
            if not task.cancelled():
                task.exception()
        if self._lane is not None:
            await self._lane.stop()
            if self._lane.failed is not None:
                exc = self._lane.failed
                log.error("the media lane stopped with %s", type(exc).__name__, exc_info=exc)
        for name, task in (("finisher", finisher), ("emitter", emitter)):
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                log.error("the %s stopped with %s", name, type(exc).__name__, exc_info=exc)
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

    def _raise_if_died(self) -> None:
        if self._state is not _State.STARTED:
            raise RuntimeError("the pipeline is not started")
        for task in (self._finisher, self._emitter):
            assert task is not None
            if task.done():
                task.result()  # re-raise what stopped it
                raise RuntimeError("the finisher stopped")
        if self._lane is not None and self._lane.failed is not None:
            raise self._lane.failed

    async def _wait_or_die(self, aw: Awaitable[object]) -> None:
        """Await ``aw``, but never for a finisher or lane that died (a bug, a failed model)."""
        assert self._finisher is not None and self._emitter is not None
        task = asyncio.ensure_future(aw)
        watch: set[asyncio.Future[object]] = {task, self._finisher, self._emitter}  # type: ignore[arg-type]
        if self._lane is not None:
            watch.add(self._lane.dead)  # type: ignore[arg-type]
        await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            self._raise_if_died()
        task.result()

    async def _put(self, prepared: Prepared) -> None:
        await self._wait_or_die(self._queue.put(prepared))

    async def _drained(self) -> None:
        await self._wait_or_die(self._queue.join())
        await self._wait_or_die(self._emits.join())
        if self._lane is not None:
            await self._wait_or_die(self._lane.join())

    async def _finish_loop(self) -> None:
        while (prepared := await self._queue.get()) is not None:
            try:
                await self._slots.acquire()  # a free inference lane
                task = asyncio.ensure_future(self._classify(prepared))
                self._classifying.add(task)
                task.add_done_callback(self._classifying.discard)
                await self._emits.put(task)
            finally:
                self._queue.task_done()
        self._queue.task_done()
        await self._emits.put(None)

    async def _classify(self, prepared: Prepared) -> Classified:
        try:
            return await self._processor.classify(prepared)
        finally:
            self._slots.release()

    async def _emit_loop(self) -> None:
        while (classifying := await self._emits.get()) is not None:
            try:
                classified = await classifying  # in submission order
                result = await self._processor.emit(classified)
                await self._done(classified.prepared, result)
            finally:
                self._emits.task_done()
        self._emits.task_done()

    async def _done(self, prepared: Prepared, result: BatchResult) -> None:
        """``prepared`` is published and aggregated: forget it in the guard, then complete it."""
        guard = self._guard
        if guard is not None:
            await self._redis(lambda: guard.end(prepared.messages), "redis crash guard")
        now = time.perf_counter()
        for m in prepared.messages:
            self._unfinished.pop(id(m), None)
            self._done_at[id(m)] = now
        await self.tracker.complete(prepared.messages)
        if self._on_result is not None:
            self._on_result(result)

    async def _acknowledge(self, message: Inbound) -> None:
        done = self._done_at.pop(id(message), None)
        if done is not None:
            stage = self._processor.metrics.stage.labels("ack_wait")
            stage.observe(time.perf_counter() - done)
        await self._ack(message)

    def _observe_fetch(self, batch: Sequence[Inbound]) -> None:
        now_ms = time.time() * 1000
        stage = self._processor.metrics.stage.labels("fetch")
        for m in batch:
            if m.timestamp_ms:
                stage.observe(max(0.0, (now_ms - m.timestamp_ms) / 1000))

    async def _drain_and_end(
        self, finisher: asyncio.Task[None], emitter: asyncio.Task[None]
    ) -> None:
        await self._queue.put(None)
        await finisher
        await emitter
        if self._lane is not None:
            await self._lane.join()

    async def _abandon(self) -> None:
        """Take back the crash-guard count of messages that were not finished (best effort: a
        count left behind only makes those messages be processed alone once)."""
        messages, self._unfinished = list(self._unfinished.values()), {}
        if self._guard is None or not messages:
            return
        try:
            await asyncio.wait_for(self._guard.undo(messages), 2.0)
        except Exception as exc:  # noqa: BLE001 - best effort at shutdown
            log.warning("could not take back %d in-flight counts: %s", len(messages), exc)


def _position(message: Inbound) -> tuple[str, int, int]:
    return message.topic, message.partition, message.offset
