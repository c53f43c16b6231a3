"""CPU time by role (commentflow.cpu_usage) and operating-system thread names
(workers.os_thread): what the bench's breakdown of (b) rests on."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from commentflow.cpu_usage import (
    TICKS_PER_S as HZ,
)
from commentflow.cpu_usage import (
    CpuSnapshot,
    cores_by_role,
    snapshot,
    throughput_bound,
)
from workers.os_thread import MAX_NAME_BYTES, os_thread_name, set_os_thread_name

#: /proc and prctl: elsewhere names are not set and there is no snapshot (checked below too)
LINUX = sys.platform.startswith("linux")


def test_the_bound_is_the_model_share_of_each_comment_cpu():
    assert throughput_bound(1.5, 0.0) == 1.0
    assert throughput_bound(1.5, 0.5) == pytest.approx(0.75)
    assert throughput_bound(1.35, 0.15) == pytest.approx(0.90)  # what the 0.90 asks
    with pytest.raises(ValueError):
        throughput_bound(0.0, 0.3)
    with pytest.raises(ValueError):
        throughput_bound(1.0, -0.1)


def snap(wall: float, busy: int, idle: int, threads: dict) -> CpuSnapshot:
    return CpuSnapshot(wall, busy, idle, threads)


def test_cores_by_role_splits_the_worker_into_lanes_and_the_rest():
    # 2 s apart; ticks are per HZ: 1.0 core over 2 s is 2 * HZ ticks
    before = snap(
        10.0,
        0,
        0,
        {
            (1, 1): ("python", 0),
            (1, 2): ("inference-lane0", 0),
            (1, 3): ("inference-lane1", 0),
            (2, 2): ("tansu", 0),
        },
    )
    after = snap(
        12.0,
        int(3.4 * HZ),  # 1.7 cores busy over the 2 s
        int(0.6 * HZ),  # 0.3 idle
        {
            (1, 1): ("python", int(0.4 * HZ)),  # 0.2 core
            (1, 2): ("inference-lane0", int(1.4 * HZ)),  # 0.7
            (1, 3): ("inference-lane1", int(1.2 * HZ)),  # 0.6
            (1, 4): ("python", int(0.2 * HZ)),  # a thread that started meanwhile: 0.1
            (2, 2): ("tansu", int(0.1 * HZ)),  # 0.05
        },
    )
    cores = cores_by_role(before, after, {"worker": 1, "broker": 2, "redis": None}, worker="worker")
    assert cores["lanes"] == pytest.approx(1.3, abs=0.02)
    assert cores["worker_other"] == pytest.approx(0.3, abs=0.02)
    assert cores["broker"] == pytest.approx(0.05, abs=0.02)
    assert cores["redis"] == 0.0
    assert cores["idle"] == pytest.approx(0.3, abs=0.02)
    assert cores["elsewhere"] == pytest.approx(1.7 - 1.3 - 0.3 - 0.05, abs=0.03)
    assert cores["cores"] == pytest.approx(2.0, abs=0.02)


def test_a_thread_takes_its_operating_system_name_cut_to_fifteen_bytes():
    seen: dict[str, tuple[bool, str | None]] = {}

    def run(name: str) -> None:
        seen[name] = (set_os_thread_name(name), os_thread_name())

    for name in ("inference-lane0", "a-rather-long-thread-name"):
        t = threading.Thread(target=run, args=(name,))
        t.start()
        t.join()
    if not LINUX:  # best effort by design: nothing named, nothing read, nothing raised
        assert seen == {n: (False, None) for n in seen}
        return
    assert seen["inference-lane0"] == (True, "inference-lane0")
    assert seen["a-rather-long-thread-name"] == (True, "a-rather-long-thread-name"[:MAX_NAME_BYTES])
    assert os_thread_name(10**9) is None  # no such thread


def test_a_snapshot_sees_a_busy_named_thread_of_this_process():
    if not LINUX:  # no /proc: no snapshot, and the bench leaves the breakdown out
        assert snapshot({"worker": os.getpid()}) is None
        return
    stop = time.monotonic() + 1.5
    ready = threading.Event()

    def spin() -> None:
        set_os_thread_name("inference-lane7")
        ready.set()
        while time.monotonic() < stop:
            pass

    t = threading.Thread(target=spin)
    t.start()
    ready.wait()
    roles = {"worker": os.getpid()}
    before = snapshot(roles)
    time.sleep(0.6)
    after = snapshot(roles)  # while it spins: a thread that ended is gone from /proc
    t.join()
    assert before is not None and after is not None
    names = {name for name, _ in after.threads.values()}
    assert "inference-lane7" in names
    cores = cores_by_role(before, after, roles, worker="worker")
    assert cores["lanes"] > 0.3  # the spinning thread, counted as a lane by its name
    assert cores["cores"] == pytest.approx(os.cpu_count(), rel=0.3)
