"""Run the classifier off the event loop, on one dedicated inference thread.

One thread keeps the model's weights and the CUDA context in one place and serialises batches;
torch releases the GIL while it computes, so the event loop keeps fetching, publishing and
writing Redis meanwhile. The classifier is loaded on that thread too (slow: seconds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from model.base import Classifier, ClassOutput, CommentInput

__all__ = ["InferenceRunner"]

log = logging.getLogger("commentflow.inference")


class InferenceRunner:
    """Owns the inference thread and the loaded classifier. ``start``/``stop`` are idempotent."""

    def __init__(self, load: Callable[[], Classifier]) -> None:
        self._load = load
        self._executor: ThreadPoolExecutor | None = None
        self._classifier: Classifier | None = None

    @property
    def classifier(self) -> Classifier:
        if self._classifier is None:
            raise RuntimeError("the inference runner is not started")
        return self._classifier

    @property
    def ready(self) -> bool:
        return self._classifier is not None

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        loop = asyncio.get_running_loop()
        self._classifier = await loop.run_in_executor(self._executor, self._load)
        c = self._classifier
        log.info("model %s %s loaded on %s", c.name, c.version, c.device)

    async def predict(self, batch: Sequence[CommentInput]) -> list[ClassOutput]:
        if self._executor is None or self._classifier is None:
            raise RuntimeError("the inference runner is not started")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._classifier.predict, list(batch))

    async def stop(self) -> None:
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
