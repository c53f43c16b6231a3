"""A deadline on blocking calls that cannot be interrupted: past it, the worker exits.

A model call, OCR or speech recognition runs in native code on a worker thread: a hung CUDA
kernel or a deadlocked native library cannot be cancelled from Python. So a daemon thread (not
the event loop, which may be the thing that is stuck) checks every ``min(1 s, deadline / 4)``
whether a call in flight is past ``deadline_s``. If one is, it marks the watchdog ``hung``
(``/livez`` fails) and calls ``on_hang(running_s)``, by default: log, wait ``grace_s`` so a probe
can see it, then ``os._exit(EXIT_HUNG)``. Nothing in flight was acknowledged, so the messages are
redelivered to the next worker, and the crash guard (:mod:`workers.crash_guard`) sets a message
aside as ``poison`` if it keeps doing this.

Calls may overlap (the media lane runs several): each :meth:`Watchdog.track` registers its own
start, and the oldest one in flight is the one measured.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["EXIT_HUNG", "Watchdog"]

log = logging.getLogger("commentflow.watchdog")

#: Exit status of a worker whose call passed its deadline (EX_SOFTWARE).
EXIT_HUNG = 70


class Watchdog:
    """``with watchdog.track(): blocking_call()``; ``start()``/``stop()`` own the thread.

    ``deadline_s`` ``None`` or ``<= 0``: disabled (``track`` costs nothing, no thread).
    ``what`` names the guarded call in the log line.
    """

    def __init__(
        self,
        deadline_s: float | None,
        *,
        what: str = "a call",
        on_hang: Callable[[float], None] | None = None,
        grace_s: float = 3.0,
    ) -> None:
        self.deadline_s = deadline_s if deadline_s and deadline_s > 0 else None
        self.what = what
        self._on_hang = on_hang or self._exit_hung
        self._grace = grace_s
        self._busy: dict[int, float] = {}  # token -> monotonic start of a call in flight
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.hung = False

    @property
    def enabled(self) -> bool:
        return self.deadline_s is not None

    def start(self) -> None:
        if self.deadline_s is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, name=f"watchdog-{self.what}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread = None

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Time the enclosed call against the deadline (safe from any thread)."""
        if self.deadline_s is None:
            yield
            return
        token = next(self._tokens)
        with self._lock:
            self._busy[token] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._busy.pop(token, None)

    def running_s(self) -> float | None:
        """How long the oldest call in flight has run (None: none in flight)."""
        with self._lock:
            oldest = min(self._busy.values(), default=None)
        return None if oldest is None else time.monotonic() - oldest

    def _watch(self) -> None:
        assert self.deadline_s is not None
        period = min(1.0, self.deadline_s / 4)
        while not self._stop.wait(period):
            running = self.running_s()
            if running is not None and running > self.deadline_s:
                self.hung = True
                self._on_hang(running)
                return

    def _exit_hung(self, running_s: float) -> None:
        log.critical(
            "%s has run for %.0f s, past its %.0f s deadline: the worker exits with status %d "
            "(nothing in flight was acknowledged; it will be redelivered)",
            self.what,
            running_s,
            self.deadline_s,
            EXIT_HUNG,
        )
        time.sleep(self._grace)  # /livez answers 503 meanwhile
        logging.shutdown()
        os._exit(EXIT_HUNG)
