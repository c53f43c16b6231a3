"""Give the calling thread an operating-system name, so ``top -H``, ``ps -L`` and ``/proc``
show which thread is which (Python's thread names stay inside Python until 3.14).

Linux only (``prctl(PR_SET_NAME)``, at most 15 bytes, longer names are cut); elsewhere, or when
it fails, nothing happens and the thread keeps its name ("python"). Best effort by design: a
name is for people and profilers, never for correctness.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

__all__ = ["MAX_NAME_BYTES", "os_thread_name", "set_os_thread_name"]

log = logging.getLogger("commentflow.threads")

#: ``PR_SET_NAME`` keeps 16 bytes, the last one the terminating NUL.
MAX_NAME_BYTES = 15
_PR_SET_NAME = 15


def set_os_thread_name(name: str) -> bool:
    """Name the calling thread ``name`` (cut to :data:`MAX_NAME_BYTES` bytes of UTF-8);
    ``True`` when the system took it."""
    if not sys.platform.startswith("linux"):
        return False
    raw = name.encode("utf-8", "replace")[:MAX_NAME_BYTES]
    try:
        ok = _libc().prctl(_PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) == 0
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.debug("could not name the thread %r", name)
    return ok


@functools.cache
def _libc() -> ctypes.CDLL:
    """The process's own symbols, libc's ``prctl`` among them (as
    ``commentflow.processes.die_with_parent`` reaches it), opened once."""
    return ctypes.CDLL(None, use_errno=True)


def os_thread_name(native_id: int | None = None) -> str | None:
    """The operating-system name of a thread of this process (the caller's when ``None``), from
    ``/proc``; ``None`` where there is no ``/proc``."""
    import threading

    tid = threading.get_native_id() if native_id is None else native_id
    try:
        with open(f"/proc/self/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None
