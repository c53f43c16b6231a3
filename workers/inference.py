"""Run the classifier off the event loop, on one dedicated inference thread, under a watchdog.

One thread keeps the model's weights and the CUDA context in one place and serialises batches;
torch releases the GIL while it computes, so the event loop keeps fetching, publishing and
writing Redis meanwhile. The classifier is loaded on that thread too (slow: seconds), or
loaded beforehand on an :func:`inference_thread` handed over with it. Loading elsewhere costs
speed: torch's CPU kernels (OpenMP) ran ~12% slower on 2 cores (375 vs 430 comments/s at batch
64) on a thread other than the first one that used them in the process (the model loaded and
warmed on the main thread, then run here), and at full speed when one thread did both.

The watchdog (:class:`~workers.watchdog.Watchdog`): a ``predict()`` call cannot be interrupted
(a hung CUDA kernel, a deadlocked native library), so past ``deadline_s`` the runner is marked
``hung`` (``/livez`` fails) and ``on_hang`` runs, by default: log, wait ``hang_grace_s`` so a
probe can see it, then ``os._exit(EXIT_HUNG)``. Nothing in flight was acknowledged, so the batch
is redelivered to the next worker, and the crash guard (:mod:`workers.crash_guard`) sets the
message aside as ``poison`` if it keeps doing this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from model.base import Classifier, ClassOutput, CommentInput
from workers.watchdog import EXIT_HUNG, Watchdog

__all__ = ["EXIT_HUNG", "InferenceRunner", "inference_thread"]

log = logging.getLogger("commentflow.inference")


def inference_thread() -> ThreadPoolExecutor:
    """The one thread that loads and runs the model (give it to :class:`InferenceRunner`)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")


class InferenceRunner:
    """Owns the inference thread, the loaded classifier and the watchdog.

    ``start``/``stop`` are idempotent. ``deadline_s`` ``None`` or ``<= 0``: no watchdog.
    ``thread``: the :func:`inference_thread` that ``load`` is run on and ``predict`` after it
    (one of its own when ``None``); pass the one the classifier was loaded on, if it was.
    """

    def __init__(
        self,
        load: Callable[[], Classifier],
        *,
        deadline_s: float | None = None,
        on_hang: Callable[[float], None] | None = None,
        hang_grace_s: float = 3.0,
        thread: ThreadPoolExecutor | None = None,
    ) -> None:
        self._load = load
        self._thread = thread
        self._executor: ThreadPoolExecutor | None = None
        self._classifier: Classifier | None = None
        self.watchdog = Watchdog(
            deadline_s, what="predict()", on_hang=on_hang, grace_s=hang_grace_s
        )

    @property
    def hung(self) -> bool:
        return self.watchdog.hung

    @property
    def classifier(self) -> Classifier:
        if self._classifier is None:
            raise RuntimeError("the inference runner is not started")
        return self._classifier

    @property
    def ready(self) -> bool:
        return self._classifier is not None and not self.hung

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor, self._thread = self._thread or inference_thread(), None
        loop = asyncio.get_running_loop()
        self._classifier = await loop.run_in_executor(self._executor, self._load)
        c = self._classifier
        log.info("model %s %s loaded on %s", c.name, c.version, c.device)
        self.watchdog.start()

    async def predict(self, batch: Sequence[CommentInput]) -> list[ClassOutput]:
        if self._executor is None or self._classifier is None:
            raise RuntimeError("the inference runner is not started")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed_predict, list(batch))

    def _timed_predict(self, batch: list[CommentInput]) -> list[ClassOutput]:
        assert self._classifier is not None
        with self.watchdog.track():
            return self._classifier.predict(batch)

    async def stop(self) -> None:
        self.watchdog.stop()
        executor, self._executor = self._executor, None
        if executor is not None:
            # wait for a batch in flight: its thread cannot be interrupted anyway
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        self._classifier = None

    async def __aenter__(self) -> InferenceRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
