"""Keep a long-running worker's resident memory flat: glibc malloc settings and trimming.

A worker decodes many images and audio clips (arrays of 0.1-30 MB) on several threads. With
glibc's defaults two things make its RSS creep up for hours although nothing leaks:

* the mmap threshold is dynamic: after a large block is freed, blocks up to that size come from
  the heap instead of ``mmap``, and the threshold only ever rises. Fixing it (at
  :data:`MMAP_THRESHOLD_BYTES`, 32 MiB, the largest glibc accepts) makes the split
  predictable: media arrays past it go to ``mmap``, which ``free`` hands back at once;
  everything smaller comes from the heap, whose free pages :func:`trim` returns every
  :data:`COLLECT_INTERVAL_S`. It must not be small: the text model allocates and frees a few
  MB per layer and batch, and with a 128 KiB threshold (the first setting here) each of those
  was a fresh ``mmap``, zero-filled page by page and unmapped again: the model ran 25-30%
  slower in the worker than alone (``tools/malloc_threshold.py``: 295 vs 404 comments/s at
  batch 64 on 2 cores, 917 vs 10 page faults per comment). The heap top is trimmed past
  :data:`TRIM_THRESHOLD_BYTES` (twice the mmap threshold, as glibc's own dynamic rule), so a
  batch's freed buffers are reused rather than returned and faulted in again. The price: the
  worker's RSS is ~100 MB higher (the soak: 1,082 vs 988 MB after its warm-up);
* every thread that allocates may get an arena of its own (8 x cores): fewer arenas, less
  fragmentation.

Not tuned here: oneDNN's per-shape primitive cache (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, 1024 by
default): new input shapes add 50-150 KB each, decreasingly, which the soak does not see once
the cycles below are collected (README, "Soak").

:func:`tune` applies them at start-up (``mallopt``), :func:`trim` returns free heap pages to the
system (``malloc_trim``; the worker calls it after each :func:`collect`, every
:data:`COLLECT_INTERVAL_S`. It used to run every 5 s, but each trim hands back what the model's
next batches fault in again and holds the arenas' locks while it walks them; the end-to-end p99
at 143/s was 567-601 ms with it, 461-498 ms every 30 s, a weak signal: the bench still paused
itself then). Both are no-ops where the C library is not
glibc.

Cyclic garbage is the third cause, and the largest one the soak found. An exception caught far
from where it was raised keeps, through its traceback, every frame it passed and their locals
(a media body being read, a decoded array) in a reference cycle. Python frees such cycles only
when its cyclic GC reaches the oldest generation, which in a busy worker can take many minutes:
meanwhile each cycle holds its arrays, and the RSS floor rises step by step (+25% in 14 minutes
of the soak's hostile media, flat with the huge bodies left out or with a collection every
minute). :func:`freeze` moves what start-up built (modules, the model) out of the collector's
way once the worker is ready, so that :func:`collect`, a full collection the worker runs every
:data:`COLLECT_INTERVAL_S`, only walks what was allocated since: a few milliseconds. The soak
(``commentflow soak``) measures the effect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time

__all__ = ["COLLECT_INTERVAL_S", "collect", "freeze", "set_thresholds", "trim", "tune"]

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_M_TRIM_THRESHOLD = -1
#: Blocks from this size up are ``mmap``-ed (glibc's maximum on 64-bit: 4 MiB x sizeof(long)).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Free memory at the heap's top past this is returned at once (the rest by :func:`trim`).
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
ARENA_MAX = 4
#: Seconds between two full collections of cyclic garbage in a worker.
COLLECT_INTERVAL_S = 30.0


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def tune() -> bool:
    """Fixed mmap and trim thresholds and at most :data:`ARENA_MAX` arenas; ``False`` if not
    glibc."""
    if _LIBC is None:
        return False
    ok = set_thresholds(MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES)
    ok = bool(_LIBC.mallopt(_M_ARENA_MAX, ARENA_MAX)) and ok
    log.debug(
        "malloc tuned (mmap threshold %d, arenas %d): %s", MMAP_THRESHOLD_BYTES, ARENA_MAX, ok
    )
    return ok


def set_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    """Fix glibc's mmap and trim thresholds (any time; :func:`tune` sets the worker's, the
    benchmark in ``tools/malloc_threshold.py`` others); ``False`` if not glibc."""
    if _LIBC is None:
        return False
    ok = bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_bytes))
    return bool(_LIBC.mallopt(_M_TRIM_THRESHOLD, trim_bytes)) and ok


def trim() -> bool:
    """Give free heap memory back to the system; ``True`` if some was released."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False


def freeze() -> None:
    """Collect once, then move every object alive now to the permanent generation.

    Call it when start-up is over (model loaded): later collections skip those objects.
    """
    gc.collect()
    gc.freeze()


def collect(and_trim: bool = True) -> tuple[int, float]:
    """A full collection of cyclic garbage, then (``and_trim``) :func:`trim`: (objects freed,
    seconds)."""
    start = time.perf_counter()
    freed = gc.collect()
    if and_trim:
        trim()
    return freed, time.perf_counter() - start
