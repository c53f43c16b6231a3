"""Run the entity stage (:mod:`model.entities`) off the event loop, on its own thread.

The recogniser is loaded and called on one dedicated thread, apart from the inference thread:
spaCy is not re-entrant, and the classifier's thread stays free for the next batch. The
processor calls :meth:`EntityRunner.recognise` once per batch, after the model, with each
comment's text, the OCR text and transcript the model read (:class:`~model.base.ClassOutput`)
and the detected language.

The stage enriches predictions; it never holds them back: if it raises, the batch's predictions
go out without the entity fields (as with the stage off), the error is logged and counted
(``entity_failures``), and the next batch tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from model.entities import EntityRecognizer, EntityResult, EntitySource

__all__ = ["EntityRunner"]

log = logging.getLogger("commentflow.entities")


class EntityRunner:
    """Owns the entity thread and the loaded recogniser; ``start``/``stop`` are idempotent."""

    def __init__(self, load: Callable[[], EntityRecognizer]) -> None:
        self._load = load
        self._executor: ThreadPoolExecutor | None = None
        self._recognizer: EntityRecognizer | None = None
        self.failures = 0

    @property
    def ready(self) -> bool:
        return self._recognizer is not None

    @property
    def recognizer(self) -> EntityRecognizer:
        if self._recognizer is None:
            raise RuntimeError("the entity runner is not started")
        return self._recognizer

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="entities")
        loop = asyncio.get_running_loop()
        try:
            self._recognizer = await loop.run_in_executor(self._executor, self._load)
        except BaseException:
            await self.stop()
            raise
        r = self._recognizer
        log.info("entity model %s %s loaded", r.name, r.version)

    async def recognise(self, batch: Sequence[EntitySource]) -> list[EntityResult] | None:
        """One result per comment, or None when the stage failed (logged, counted)."""
        if self._executor is None or self._recognizer is None:
            raise RuntimeError("the entity runner is not started")
        if not batch:
            return []
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, self._recognizer.recognise, list(batch)
            )
        except Exception:  # noqa: BLE001 - enrichment: the predictions go out without it
            self.failures += 1
            log.exception("the entity stage failed on a batch of %d comments", len(batch))
            return None

    async def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        self._recognizer = None

    async def __aenter__(self) -> EntityRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
