"""Run the classifier off the event loop, on one dedicated inference thread, under a watchdog.

One thread keeps the model's weights and the CUDA context in one place and serialises batches;
torch releases the GIL while it computes, so the event loop keeps fetching, publishing and
writing Redis meanwhile. The classifier is loaded on that thread too (slow: seconds).

The watchdog: a ``predict()`` call cannot be interrupted (a hung CUDA kernel, a deadlocked
native library), so a daemon thread (not the event loop, which may be the thing that is stuck)
checks every second whether the call in flight is past ``deadline_s``. If it is, it marks the
runner ``hung`` (``/livez`` fails) and calls ``on_hang``, by default: log, wait
``hang_grace_s`` so a probe can see it, then ``os._exit(EXIT_HUNG)``. Nothing in flight was
acknowledged, so the batch is redelivered to the next worker, and the crash guard
(:mod:`workers.crash_guard`) sets the message aside as ``poison`` if it keeps doing this.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from model.base import Classifier, ClassOutput, CommentInput

__all__ = ["EXIT_HUNG", "InferenceRunner"]

log = logging.getLogger("commentflow.inference")

#: Exit status of a worker whose ``predict()`` call passed its deadline (EX_SOFTWARE).
EXIT_HUNG = 70


class InferenceRunner:
    """Owns the inference thread, the loaded classifier and the watchdog.

    ``start``/``stop`` are idempotent. ``deadline_s`` ``None`` or ``<= 0``: no watchdog.
    """

    def __init__(
        self,
        load: Callable[[], Classifier],
        *,
        deadline_s: float | None = None,
        on_hang: Callable[[float], None] | None = None,
        hang_grace_s: float = 3.0,
    ) -> None:
        self._load = load
        self._executor: ThreadPoolExecutor | None = None
        self._classifier: Classifier | None = None
        self._deadline = deadline_s if deadline_s and deadline_s > 0 else None
        self._on_hang = on_hang or self._exit_hung
        self._hang_grace = hang_grace_s
        self._busy_since: float | None = None  # monotonic start of the call in flight
        self._stop_watch = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.hung = False

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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        loop = asyncio.get_running_loop()
        self._classifier = await loop.run_in_executor(self._executor, self._load)
        c = self._classifier
        log.info("model %s %s loaded on %s", c.name, c.version, c.device)
        if self._deadline is not None:
            self._stop_watch.clear()
            self._watchdog = threading.Thread(
                target=self._watch, name="inference-watchdog", daemon=True
            )
            self._watchdog.start()

    async def predict(self, batch: Sequence[CommentInput]) -> list[ClassOutput]:
        if self._executor is None or self._classifier is None:
            raise RuntimeError("the inference runner is not started")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed_predict, list(batch))

    def _timed_predict(self, batch: list[CommentInput]) -> list[ClassOutput]:
        assert self._classifier is not None
        self._busy_since = time.monotonic()
        try:
            return self._classifier.predict(batch)
        finally:
            self._busy_since = None

    def _watch(self) -> None:
        assert self._deadline is not None
        period = min(1.0, self._deadline / 4)
        while not self._stop_watch.wait(period):
            since = self._busy_since
            if since is not None and time.monotonic() - since > self._deadline:
                self.hung = True
                self._on_hang(time.monotonic() - since)
                return

    def _exit_hung(self, running_s: float) -> None:
        log.critical(
            "predict() has run for %.0f s, past its %.0f s deadline: the worker exits with "
            "status %d (nothing in flight was acknowledged; it will be redelivered)",
            running_s,
            self._deadline,
            EXIT_HUNG,
        )
        time.sleep(self._hang_grace)  # /livez answers 503 meanwhile
        logging.shutdown()
        os._exit(EXIT_HUNG)

    async def stop(self) -> None:
        self._stop_watch.set()
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
