"""The worker's side of decoding: :class:`DecodePool` runs the model's decoder off the event loop.

The decoding itself (sniffing, limits, resizing, resampling, the 16-bit grid) is
:mod:`model.media.decode`, shared with training-feature extraction so that the worker feeds the
model what it was trained on; its :class:`~model.media.decode.DecodeConfig` comes from the
model's ``config.json`` (``preprocess``) plus the worker's limits (:func:`decode_config`).
This module re-exports it with the worker's errors: a
:class:`~model.media.errors.MediaDecodeError` becomes
:class:`~workers.address_policy.DecodeFailed` with the same reason (``unsupported_type``,
``too_large``, ``unsupported_sample_rate``, ``decode_error``); :class:`DecodePool` raises
:class:`~workers.address_policy.MediaBusy` ``busy`` when it refuses work and
:class:`~workers.address_policy.DecodeFailed` ``timeout`` for a decode past its deadline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import numpy as np

import model.media.decode as _decode
import model.media.resample as _resample
from model.media.decode import (
    AUDIO_FORMATS,
    IMAGE_FORMATS,
    DecodeConfig,
    MediaKind,
    kind_of,
    pcm_to_float,
    quantize_pcm16,
    sniff,
)
from model.media.errors import MediaDecodeError
from model.media.resample import AUDIO_RATES
from workers.address_policy import DecodeFailed, MediaBusy

__all__ = [
    "AUDIO_FORMATS",
    "AUDIO_RATES",
    "IMAGE_FORMATS",
    "DecodeConfig",
    "DecodePool",
    "MediaKind",
    "decode",
    "decode_async",
    "decode_audio",
    "decode_config",
    "decode_image",
    "decode_input",
    "kind_of",
    "pcm_to_float",
    "quantize_pcm16",
    "resample",
    "sniff",
]

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _as_decode_failed(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` raising the worker's :class:`DecodeFailed` instead of the model's error."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except MediaDecodeError as exc:
            raise DecodeFailed(exc.reason, exc.detail) from exc

    return wrapper


decode = _as_decode_failed(_decode.decode)
decode_input = _as_decode_failed(_decode.decode_input)
decode_image = _as_decode_failed(_decode.decode_image)
decode_audio = _as_decode_failed(_decode.decode_audio)
resample = _as_decode_failed(_resample.resample)


def decode_config(preprocess: Any = None, **limits: Any) -> DecodeConfig:
    """The worker's :class:`DecodeConfig`: the model's ``preprocess`` section (a mapping, or a
    :class:`DecodeConfig` whose feature-shaping fields are taken) and the worker's ``limits``
    (``image_max_pixels``, ``audio_max_channels``); the limits never change a feature's shape."""
    if isinstance(preprocess, DecodeConfig):
        preprocess = preprocess.preprocess()
    return DecodeConfig.from_preprocess(preprocess, **limits)


async def decode_async(
    data: bytes, kind: str, config: DecodeConfig, executor: Executor | None
) -> np.ndarray:
    """:func:`decode` in ``executor`` (``None``: the loop's default thread pool)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, decode, data, kind, config)


# -- the decode pool


class DecodePool:
    """Runs blocking decodes off the event loop: ``workers`` at once, overdue ones abandoned.

    Why threads and not processes: Pillow, libsndfile and numpy release the GIL while they
    work, a thread needs no copy of a body of up to 25 MB, and a worker that has torch (maybe
    CUDA) loaded must not fork; spawned processes would each cost a fresh interpreter with numpy
    and Pillow (~100 MB) and a respawn after every kill. What a thread cannot do is be killed, so
    the pool bounds what an overdue decode can cost instead:

    * a decode past its deadline (or whose caller was cancelled) is *abandoned*: its caller gets
      ``timeout`` and its slot is freed at once, so new items never wait behind it; its thread
      runs on until the decode returns (decodes are bounded: pixel limit, audio seconds);
    * the executor has ``workers + max_abandoned`` threads, so abandoned decodes never delay
      admitted ones, and the pool admits a decode only while a thread is free for it: with
      ``max_abandoned`` or more decodes still running abandoned, new ones fail at once as
      ``busy`` (never queued). Memory is therefore bounded by ``workers + max_abandoned``
      decodes, each bounded by the decode limits.

    Waiting for a slot counts against the deadline: an item that gets none in time is ``busy``.
    :meth:`close` does not wait for running decodes. Event-loop use only (one loop).
    """

    def __init__(
        self,
        workers: int,
        max_abandoned: int,
        *,
        thread_name_prefix: str = "media-decode",
    ) -> None:
        if workers < 1 or max_abandoned < 0:
            raise ValueError("workers >= 1 and max_abandoned >= 0")
        self.workers = workers
        self.max_abandoned = max_abandoned
        self._executor = ThreadPoolExecutor(
            workers + max_abandoned, thread_name_prefix=thread_name_prefix
        )
        self._slots = asyncio.Semaphore(workers)
        self._threads_busy = 0  # admitted decodes still running: live + abandoned
        self._abandoned: set[object] = set()
        self._lock = threading.Lock()  # _thread_done runs in the worker threads
        self.refused = 0  # decodes refused as busy (for metrics and tests)

    @property
    def abandoned(self) -> int:
        """Decodes whose caller gave up but whose thread still runs."""
        with self._lock:
            return len(self._abandoned)

    @property
    def executor(self) -> Executor:
        return self._executor

    async def run(
        self, fn: Callable[..., np.ndarray], /, *args: object, deadline: float | None = None
    ) -> np.ndarray:
        """``fn(*args)`` in a pool thread; ``deadline`` is an event-loop time (``None``: none).

        Raises :class:`MediaBusy` ``busy`` (no slot before the deadline, or too many abandoned
        decodes) or :class:`~workers.address_policy.MediaError` ``timeout`` (the decode itself
        passed the deadline); whatever ``fn`` raises otherwise.
        """
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError as exc:
            self.refused += 1
            raise MediaBusy("busy", "no decode slot before the deadline") from exc
        try:
            with self._lock:
                if self._threads_busy >= self.workers + self.max_abandoned:
                    self.refused += 1
                    raise MediaBusy("busy", f"{len(self._abandoned)} abandoned decodes running")
                self._threads_busy += 1
            try:
                future = self._executor.submit(fn, *args)
            except BaseException:  # closed: the thread was never taken
                with self._lock:
                    self._threads_busy -= 1
                raise
            future.add_done_callback(self._thread_done)
            try:
                async with asyncio.timeout_at(deadline):
                    return await asyncio.wrap_future(future)
            except BaseException as exc:  # the deadline, or the caller was cancelled
                if not future.done():
                    with self._lock:
                        if not future.done():
                            self._abandoned.add(future)
                    log.warning(
                        "media decode abandoned (%s); its thread runs on", type(exc).__name__
                    )
                if isinstance(exc, TimeoutError):
                    raise DecodeFailed("timeout", "decode passed the deadline") from exc
                raise
        finally:
            self._slots.release()

    def _thread_done(self, future: object) -> None:
        with self._lock:
            self._threads_busy -= 1
            self._abandoned.discard(future)

    def close(self) -> None:
        """Refuse new work; queued work is cancelled, running decodes are not waited for."""
        self._executor.shutdown(wait=False, cancel_futures=True)
