"""The media lane: comments with media finish on their own, never holding text back.

A new picture or voice note costs seconds (download, decode, OCR, speech recognition) where a
text comment costs milliseconds. Finished as one unit, a micro-batch of 64 with one new image
would hold its 63 text comments (and everything behind them) for those seconds. So
:class:`~workers.pipeline.StreamPipeline` splits each batch: its text comments (and dead letters,
duplicates) go straight to the finisher, its comments with media come here::

    submit(held) ─► bounded queue (depth jobs) ─► `concurrency` lane tasks, each:
        prepare_held: fetch + decode (event loop, media pool)
        warm: image embeddings, OCR, transcripts into the model's content caches,
              on the lane's own thread (not the inference thread)
        finish: classify (the inference thread: now only cache reads and the fusion model),
                publish, write Redis ─► on_done(prepared, result)

``on_done`` completes the job's messages in the :class:`~workers.completion.CompletionTracker`,
which acknowledges offsets only up to each partition's lowest unfinished one; a job is one
batch's comments with media (they are classified together: one inference call per batch, not
per comment).

Backpressure: at most ``concurrency`` jobs run and ``depth`` wait; :meth:`submit` waits for room,
so a stream with more new media than the hardware can read slows down instead of holding
unbounded work. A job that raises (:class:`~workers.model_guard.ModelFailed`, a bug) stops the
lane: :attr:`failed` is set and :meth:`submit` / :meth:`join` raise it, for the pipeline to end
the worker (nothing of that job was acknowledged).

The warm thread runs at a lower CPU priority (``nice`` +10): on a small machine the text model
gets the cores first and new media use what is left. The model's
:meth:`~model.serving.features.FeatureExtractor.read_media` runs speech recognition and the
image encoder on a side thread beside OCR; that thread is created by the warm thread, so it
inherits the same niceness.

OCR and speech recognition cannot be interrupted either: with a ``watchdog``
(:class:`~workers.watchdog.Watchdog`, the worker's ``predict_deadline_s``) a warm call past its
deadline makes the worker exit (``/livez`` fails first) instead of holding its lane slot, and
with it the partition's committed offset, for good; the crash guard then sets the message aside
as ``poison`` if it keeps doing this, as for a hung ``predict()``.

The warm step needs a classifier with ``warm_media(batch)`` that is safe to call next to
``predict`` (:meth:`model.serving.multimodal.MultimodalClassifier.warm_media`); without one the
job's media cost is paid inside ``predict``, on the inference thread, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from model.base import CommentInput
from workers.os_thread import set_os_thread_name
from workers.processor import BatchProcessor, BatchResult, Prepared
from workers.watchdog import Watchdog

__all__ = ["MediaLane"]

log = logging.getLogger("commentflow.media_lane")

Warm = Callable[[Sequence[CommentInput]], None]

#: Niceness of the lane's warm thread: it yields the CPU to the text model when both want it.
WARM_NICE = 10


class MediaLane:
    """Bounded, concurrent finishing of held comments (see the module docstring).

    ``start()`` / ``stop()`` are idempotent; ``stop`` cancels jobs in flight (not acknowledged).
    """

    def __init__(
        self,
        processor: BatchProcessor,
        on_done: Callable[[Prepared, BatchResult], Awaitable[None]],
        *,
        warm: Warm | None = None,
        watchdog: Watchdog | None = None,
        concurrency: int = 2,
        depth: int = 8,
    ) -> None:
        self._processor = processor
        self._on_done = on_done
        self._warm = warm
        self._watchdog = watchdog
        self._concurrency = max(1, concurrency)
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(max(1, depth))
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._dead: asyncio.Future[None] | None = None
        self.failed: BaseException | None = None

    async def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._dead = loop.create_future()
        if self._warm is not None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="media-warm", initializer=_lower_priority
            )
        self._tasks = [asyncio.ensure_future(self._work(i)) for i in range(self._concurrency)]

    @property
    def dead(self) -> asyncio.Future[None]:
        """Resolves (with the error) when a job stopped the lane."""
        assert self._dead is not None, "the lane is not started"
        return self._dead

    @property
    def busy(self) -> int:
        """Jobs queued or running."""
        return self._queue._unfinished_tasks  # noqa: SLF001 - asyncio.Queue keeps no public count

    async def submit(self, held: Sequence[Any]) -> None:
        """Queue one batch's held comments (waits while the lane is full)."""
        self._raise_if_failed()
        if held:
            await self._queue.put(tuple(held))

    async def join(self) -> None:
        """Wait until every queued job finished (raises what stopped the lane)."""
        self._raise_if_failed()
        join = asyncio.ensure_future(self._queue.join())
        await asyncio.wait({join, self.dead}, return_when=asyncio.FIRST_COMPLETED)
        if not join.done():
            join.cancel()
        self._raise_if_failed()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)  # a warm call cannot be interrupted

    def _raise_if_failed(self) -> None:
        if self.failed is not None:
            raise self.failed

    async def _work(self, index: int) -> None:
        while True:
            held = await self._queue.get()
            try:
                await self._run(held)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self.failed = exc
                if self._dead is not None and not self._dead.done():
                    self._dead.set_exception(exc)
                    self._dead.exception()  # retrieved: the pipeline re-raises self.failed
                log.error("media lane %d stopped: %s", index, type(exc).__name__)
                return
            finally:
                self._queue.task_done()

    async def _run(self, held: tuple[Any, ...]) -> None:
        processor = self._processor
        prepared = await processor.prepare_held(held)
        if self._warm is not None and any(i.images or i.audio for i in prepared.inputs):
            t0 = time.perf_counter()
            loop = asyncio.get_running_loop()
            assert self._executor is not None
            try:
                await loop.run_in_executor(self._executor, self._warm_tracked, prepared.inputs)
            except Exception:  # noqa: BLE001 - predict() meets the same media and judges it
                log.warning("warming media features failed; predict() will retry", exc_info=True)
            processor.metrics.stage.labels("media_features").observe(time.perf_counter() - t0)
            prepared = dataclasses.replace(prepared, prepared_at=time.perf_counter())  # queue
        result = await processor.finish(prepared)
        await self._on_done(prepared, result)

    def _warm_tracked(self, inputs: Sequence[CommentInput]) -> None:
        """The warm call, timed by the watchdog when there is one (on the lane's thread)."""
        assert self._warm is not None
        if self._watchdog is None:
            self._warm(inputs)
            return
        with self._watchdog.track():
            self._warm(inputs)


def _lower_priority() -> None:
    """Nice the lane's thread (Linux: per thread) so that the CPU goes to text first: OCR and
    speech recognition run on it (onnxruntime with one intra-op thread computes on its caller),
    the text model on the inference thread at the normal priority."""
    set_os_thread_name("media-warm")  # top -H, /proc: the name Python gives it, for the system
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WARM_NICE)
    except (OSError, AttributeError):  # not Linux, or not allowed: same priority, still correct
        log.debug("could not lower the media lane thread's priority")
