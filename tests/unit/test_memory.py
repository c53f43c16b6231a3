"""workers.memory: glibc malloc tuning and trimming work here (Debian, glibc) and never raise."""

from __future__ import annotations

import numpy as np

from workers import memory


def test_tune_and_trim_on_glibc():
    assert memory.tune() is True
    blocks = [np.ones(3_000_000, np.uint8) for _ in range(20)]  # 60 MB in 3 MB arrays
    del blocks
    assert memory.trim() in (True, False)  # released or nothing to release; never raises


def test_collect_frees_a_buffer_held_by_an_exception_cycle() -> None:
    import gc
    import weakref

    class Buffer(bytearray):
        pass

    def read() -> None:
        body = Buffer(1 << 20)  # noqa: F841 - kept alive by the traceback's frame
        raise ValueError("too large")

    try:
        read()
    except ValueError as exc:
        held = exc
    cycle = {"error": held}
    cycle["self"] = cycle  # an exception kept in a reference cycle, as futures and tasks do
    frame_locals = held.__traceback__.tb_next.tb_frame.f_locals
    ref = weakref.ref(frame_locals["body"])
    del held, cycle, frame_locals
    gc.disable()
    try:
        assert ref() is not None  # reference counting alone never frees it
        freed, seconds = memory.collect()
    finally:
        gc.enable()
    assert ref() is None
    assert freed > 0 and seconds >= 0


_CHILD = r"""
import ctypes, json, sys
import numpy as np
from workers import memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
assert memory.tune()
out = {}
for mb in (4, 16, 64):
    before = libc.mallinfo2().hblks
    block = np.empty(mb * 1024 * 1024, np.uint8)  # what a model layer or a media array asks for
    out[mb] = libc.mallinfo2().hblks - before  # mmap-ed chunks in use: 1 if it went to mmap
    del block
print(json.dumps(out))
"""


def test_model_sized_blocks_come_from_the_heap_and_only_huge_ones_from_mmap() -> None:
    # A 128 KiB threshold (the first setting) sent every activation of the text model to a
    # fresh mmap, faulted in page by page: the model ran 25-30% slower in the worker.
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"4": 0, "16": 0, "64": 1}
