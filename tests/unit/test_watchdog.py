"""The watchdog measures the oldest call in flight, from any thread, and fires once."""

from __future__ import annotations

import threading
import time

from workers.watchdog import Watchdog


def _wait_for(cond, timeout: float = 5.0) -> bool:
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    return cond()


def test_disabled_watchdog_tracks_nothing_and_starts_no_thread() -> None:
    for deadline in (None, 0, -1):
        dog = Watchdog(deadline)
        dog.start()
        with dog.track():
            assert dog.running_s() is None
        assert not dog.enabled and dog._thread is None  # noqa: SLF001


def test_overlapping_calls_the_oldest_one_counts() -> None:
    hangs: list[float] = []
    dog = Watchdog(0.4, what="warm", on_hang=hangs.append)
    dog.start()
    release_old, release_new = threading.Event(), threading.Event()

    def call(release: threading.Event) -> None:
        with dog.track():
            release.wait(10)

    old = threading.Thread(target=call, args=(release_old,))
    old.start()
    time.sleep(0.25)
    new = threading.Thread(target=call, args=(release_new,))
    new.start()
    time.sleep(0.05)
    release_old.set()  # the old call ends before its deadline; the new one is younger
    old.join()
    running = dog.running_s()
    assert running is not None and running < 0.3
    assert _wait_for(lambda: bool(hangs)), "the new call hangs past 0.4 s: the watchdog fires"
    assert dog.hung and hangs[0] >= 0.4
    release_new.set()
    new.join()
    dog.stop()
    assert dog.running_s() is None and len(hangs) == 1


def test_calls_that_finish_in_time_never_fire() -> None:
    hangs: list[float] = []
    dog = Watchdog(0.3, on_hang=hangs.append)
    dog.start()
    for _ in range(10):
        with dog.track():
            time.sleep(0.05)
    time.sleep(0.4)
    dog.stop()
    assert hangs == [] and not dog.hung


def test_a_call_that_raises_is_no_longer_in_flight() -> None:
    dog = Watchdog(10.0)
    try:
        with dog.track():
            raise ValueError("boom")
    except ValueError:
        pass
    assert dog.running_s() is None
