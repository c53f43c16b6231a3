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
