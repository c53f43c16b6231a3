"""Run the classifier off the event loop, on inference threads ("lanes"), under a watchdog.

A lane is one thread. The classifier is loaded on the first lane (slow: seconds), or loaded
beforehand on an :func:`inference_thread` handed over with it; :meth:`InferenceRunner.predict`
runs each batch on a free lane (and waits for one when all are busy). Torch releases the GIL
while it computes, so the event loop keeps fetching, publishing and writing Redis meanwhile.

**Lanes on a CPU.** One lane whose torch kernels use every core (OpenMP) loses the most when
anything else in the process or on the machine wants a core: each of the model's OpenMP regions
waits for its slowest thread, so one preempted thread stalls them all. Two lanes of one thread
each on 2 cores lose only what the other work takes: ``commentflow bench`` end to end 317 -> 345
comments/s here, the model alone 429 -> 453 (README, Benchmark). On CUDA one lane is the
default. ``torch_threads`` sets each lane thread's own intra-op count.

Where a lane is first used matters: torch's CPU kernels (OpenMP) ran ~12% slower on 2 cores
(375 vs 430 comments/s at batch 64) on a thread other than the first one that used them in the
process (the model loaded and warmed on the main thread, then run on another), and at full speed
when one thread did both. So the worker loads on its first lane. (With one thread per lane the
effect is gone: the loading lane and the other one both ran 231-242 comments/s alone.)

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
from workers.os_thread import set_os_thread_name
from workers.watchdog import EXIT_HUNG, Watchdog

__all__ = ["EXIT_HUNG", "InferenceRunner", "inference_thread"]

log = logging.getLogger("commentflow.inference")


def inference_thread(torch_threads: int = 0, lane: int = 0) -> ThreadPoolExecutor:
    """One lane: a thread that runs the model (the first one also loads it: give it to
    :class:`InferenceRunner`). ``torch_threads`` > 0: that thread's torch intra-op threads.
    The thread is named after its ``lane`` (``inference-lane1_0`` in Python, ``inference-lane1``
    for the operating system), for profilers and dumps."""
    name = f"inference-lane{lane}"
    return ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix=name,
        initializer=_start_lane,
        initargs=(name, torch_threads),
    )


def _start_lane(name: str, torch_threads: int) -> None:
    # the operating system's name too (top -H, /proc: ``commentflow pipeline-ceiling`` tells
    # the lanes' CPU from the rest of the worker's by it); at most 15 bytes: "inference-lane0"
    set_os_thread_name(name)
    if torch_threads <= 0:
        return
    import torch  # only here: the runner itself works with any classifier

    # the calling thread's count (OpenMP keeps one per thread); torch also makes the last count
    # set its default for threads that have not used torch yet (the media lane's, in a worker)
    torch.set_num_threads(torch_threads)


class InferenceRunner:
    """Owns the inference lanes, the loaded classifier and the watchdog.

    ``start``/``stop`` are idempotent. ``deadline_s`` ``None`` or ``<= 0``: no watchdog.
    ``thread``: the :func:`inference_thread` that ``load`` is run on, the first lane (one of its
    own when ``None``); pass the one the classifier was loaded on, if it was. ``lanes``: batches
    classified at once, each on its own thread (the classifier's ``predict`` must then be safe to
    call from several threads); ``torch_threads``: the intra-op threads of the lanes the runner
    creates (0: torch's default).
    """

    def __init__(
        self,
        load: Callable[[], Classifier],
        *,
        deadline_s: float | None = None,
        on_hang: Callable[[float], None] | None = None,
        hang_grace_s: float = 3.0,
        thread: ThreadPoolExecutor | None = None,
        lanes: int = 1,
        torch_threads: int = 0,
    ) -> None:
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self._load = load
        self._thread = thread
        self.lanes = lanes
        self._torch_threads = torch_threads
        self._executors: list[ThreadPoolExecutor] = []
        self._free: asyncio.Queue[ThreadPoolExecutor] | None = None
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
        if self._executors:
            return
        first, self._thread = self._thread or inference_thread(self._torch_threads), None
        self._executors = [first]
        self._executors += [
            inference_thread(self._torch_threads, lane) for lane in range(1, self.lanes)
        ]
        self._free = asyncio.Queue()
        for executor in self._executors:
            self._free.put_nowait(executor)
        loop = asyncio.get_running_loop()
        self._classifier = await loop.run_in_executor(first, self._load)
        c = self._classifier
        log.info(
            "model %s %s loaded on %s; %d inference lane(s)",
            *(c.name, c.version, c.device, self.lanes),
        )
        self.watchdog.start()

    async def predict(self, batch: Sequence[CommentInput]) -> list[ClassOutput]:
        if self._free is None or self._classifier is None:
            raise RuntimeError("the inference runner is not started")
        free = self._free
        lane = await free.get()  # waits while every lane is busy
        try:
            return await asyncio.get_running_loop().run_in_executor(
                lane, self._timed_predict, list(batch)
            )
        finally:
            free.put_nowait(lane)  # cancelled: the lane finishes the call, then runs the next

    def _timed_predict(self, batch: list[CommentInput]) -> list[ClassOutput]:
        assert self._classifier is not None
        with self.watchdog.track():
            return self._classifier.predict(batch)

    async def stop(self) -> None:
        self.watchdog.stop()
        executors, self._executors, self._free = self._executors, [], None
        for executor in executors:
            # wait for a batch in flight: its thread cannot be interrupted anyway
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        self._classifier = None

    async def __aenter__(self) -> InferenceRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
