"""Keep a long-running worker's resident memory flat: glibc malloc settings and trimming.

A worker decodes many images and audio clips (arrays of 0.1-30 MB) on several threads. With
glibc's defaults two things make its RSS creep up for hours although nothing leaks:

* the mmap threshold is dynamic: after a large block is freed, blocks up to that size come from
  the heap instead of ``mmap``, and freed heap memory in the middle of an arena is not returned
  to the system. Fixing the threshold (128 KiB) sends every large array to ``mmap``, which
  ``free`` hands back at once;
* every thread that allocates may get an arena of its own (8 x cores): fewer arenas, less
  fragmentation.

Not tuned here: oneDNN's per-shape primitive cache (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, 1024 by
default). Capping it at 64 made the model alone grow less on audio of varying lengths, but the
30-minute soak with the cap grew faster (+79% against +45%, on a busier machine), so the default
stays until a longer soak says otherwise (README, "Soak").

:func:`tune` applies both at start-up (``mallopt``), :func:`trim` returns free heap pages to the
system (``malloc_trim``; the worker calls it every few seconds). Both are no-ops where the C
library is not glibc. The soak (``commentflow soak``) measures the effect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["trim", "tune"]

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024
ARENA_MAX = 4


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def tune() -> bool:
    """Fixed mmap threshold and at most :data:`ARENA_MAX` arenas; ``False`` if not glibc."""
    if _LIBC is None:
        return False
    ok = bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    ok = bool(_LIBC.mallopt(_M_ARENA_MAX, ARENA_MAX)) and ok
    log.debug(
        "malloc tuned (mmap threshold %d, arenas %d): %s", MMAP_THRESHOLD_BYTES, ARENA_MAX, ok
    )
    return ok


def trim() -> bool:
    """Give free heap memory back to the system; ``True`` if some was released."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False
