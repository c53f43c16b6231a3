"""ModelGuard: bisection cost, input faults vs model faults, the breaker's exit; the watchdog."""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time

import numpy as np
import pytest

from model.base import ClassOutput, CommentInput
from workers.health import PipelineHealth
from workers.inference import InferenceRunner
from workers.model_guard import ModelFailed, ModelGuard, ModelUnavailable, validate_outputs
from workers.retry import Backoff

LABELS = ("negative", "neutral", "positive")
OK = {"negative": 0.1, "neutral": 0.2, "positive": 0.7}


class Model:
    """Fails on texts containing ``bad``; ``broken``: fails on everything; ``nan``: NaN scores;
    ``image_fault``: fails on any comment with an image (a GPU fault in one encoder)."""

    name, version, labels, device = "fake", "0", LABELS, "cpu"

    def __init__(self, *, broken=False, nan=False, image_fault=False, heal_after=None):
        self.broken, self.nan, self.image_fault = broken, nan, image_fault
        self.heal_after = heal_after  # broken for this many calls, then fine
        self.calls: list[int] = []

    def predict(self, batch):
        self.calls.append(len(batch))
        if self.heal_after is not None and len(self.calls) <= self.heal_after:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if self.broken:
            raise RuntimeError("CUDA error")
        if any("bad" in c.text for c in batch):
            raise ValueError("this input breaks the tokenizer")
        if self.image_fault and any(c.images for c in batch):
            raise RuntimeError("image encoder fault")
        scores = dict.fromkeys(LABELS, math.nan) if self.nan else OK
        return [ClassOutput("positive", dict(scores), ("text",)) for _ in batch]


async def guard_for(model, **kw):
    runner = InferenceRunner(lambda: model)
    await runner.start()
    health = PipelineHealth()
    kw.setdefault("exit_after_s", 0.3)
    guard = ModelGuard(runner, backoff=Backoff(0.01, 0.02), health=health, **kw)
    return guard, runner, health


def texts(n, bad=()):
    return [CommentInput(f"bad {i}" if i in bad else f"fine {i}") for i in range(n)]


async def test_one_bad_comment_in_64_costs_about_two_log2_calls():
    model = Model()
    guard, runner, health = await guard_for(model)
    outputs, failed = await guard.classify(texts(64, bad={37}))
    await runner.stop()
    assert set(failed) == {37} and isinstance(failed[37], ValueError)
    assert sum(o is not None for o in outputs) == 63 and outputs[37] is None
    # the batch, the canary, then 2 calls per level of a 6-level bisection
    assert len(model.calls) == 2 + 2 * int(math.log2(64))
    assert health.ready()


async def test_a_broken_model_is_retried_never_isolated_then_fails_for_good():
    model = Model(broken=True)
    guard, runner, health = await guard_for(model, exit_after_s=0.3)
    with pytest.raises(ModelFailed):
        await guard.classify(texts(32))
    await runner.stop()
    assert not health.ready() and "model" in health.stalled
    # each attempt costs the batch and the canary: no bisection of a broken model
    assert set(model.calls) == {32, 1} and len(model.calls) % 2 == 0


async def test_nan_scores_are_a_model_failure_not_a_prediction():
    guard, runner, health = await guard_for(Model(nan=True))
    with pytest.raises(ModelFailed):
        await guard.classify(texts(4))
    await runner.stop()


async def test_a_model_that_recovers_resumes_and_reports_ready_again():
    model = Model(heal_after=4)
    guard, runner, health = await guard_for(model, exit_after_s=30)
    outputs, failed = await guard.classify(texts(8))
    await runner.stop()
    assert failed == {} and all(o is not None for o in outputs)
    assert health.ready()


async def test_most_of_a_batch_failing_opens_the_breaker_even_when_the_canary_works():
    model = Model(image_fault=True)
    guard, runner, health = await guard_for(model, exit_after_s=0.2)
    img = np.zeros((8, 8, 3), np.uint8)
    batch = [CommentInput(f"t{i}", images=(img,) if i < 6 else ()) for i in range(8)]
    with pytest.raises(ModelFailed, match="failed"):
        await guard.classify(batch)
    await runner.stop()


async def test_a_long_streak_of_single_failures_opens_the_breaker():
    model = Model(image_fault=True)
    guard, runner, _ = await guard_for(model, exit_after_s=0.05)
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ModelFailed):
        for _ in range(40):  # batches of one (as after a crash): the ratio rule cannot apply
            _, failed = await guard.classify([CommentInput("x", images=(img,))])
            assert set(failed) == {0}
    await runner.stop()


def test_validate_outputs_rejects_contract_breaks():
    good = ClassOutput("positive", dict(OK), ("text",))
    assert validate_outputs([good], 1, LABELS) == [good]
    bad = [
        [],
        [good, good],
        [ClassOutput("angry", dict(OK), ("text",))],
        [ClassOutput("positive", {"negative": 0.5, "positive": 0.5}, ("text",))],
        [ClassOutput("positive", {"negative": 0.5, "neutral": 0.5, "positive": 0.5}, ("text",))],
        [ClassOutput("positive", {**OK, "neutral": math.inf}, ("text",))],
        [ClassOutput("positive", dict(OK), ("smell",))],
        "not a list",
    ]
    for outputs in bad:
        with pytest.raises(ValueError):
            validate_outputs(outputs, 1, LABELS)


async def test_guard_raises_model_unavailable_class_is_retriable():
    assert ModelUnavailable("x").retriable is True


# -- the watchdog


class Hanging:
    name, version, labels, device = "hang", "0", LABELS, "cpu"

    def __init__(self) -> None:
        self.release = threading.Event()

    def predict(self, batch):
        self.release.wait(30)
        return [ClassOutput("positive", dict(OK), ("text",)) for _ in batch]


async def test_the_watchdog_marks_a_hung_predict_and_calls_on_hang():
    model = Hanging()
    hangs: list[float] = []
    runner = InferenceRunner(lambda: model, deadline_s=0.3, on_hang=hangs.append)
    await runner.start()
    assert runner.ready and not runner.hung
    task = asyncio.ensure_future(runner.predict([CommentInput("x")]))
    t0 = time.monotonic()
    while not hangs and time.monotonic() - t0 < 5:  # noqa: ASYNC110 - set by a thread
        await asyncio.sleep(0.05)
    assert hangs and hangs[0] >= 0.3
    assert runner.hung and not runner.ready  # /livez and /readyz fail from here
    model.release.set()
    await task
    await runner.stop()


async def test_the_watchdog_leaves_slow_but_finishing_calls_alone():
    model = Hanging()
    hangs: list[float] = []
    runner = InferenceRunner(lambda: model, deadline_s=2.0, on_hang=hangs.append)
    await runner.start()
    task = asyncio.ensure_future(runner.predict([CommentInput("x")]))
    await asyncio.sleep(0.5)
    model.release.set()
    await task
    await asyncio.sleep(0.1)
    await runner.stop()
    assert hangs == [] and not runner.hung


class ThreadRecorder(Model):
    """Records the thread each call ran on."""

    def __init__(self):
        super().__init__()
        self.threads: list[int] = []

    def predict(self, batch):
        self.threads.append(threading.get_ident())
        return super().predict(batch)


@pytest.mark.parametrize("given", [False, True])
async def test_the_model_is_loaded_and_run_on_one_thread(given) -> None:
    # torch's OpenMP kernels ran ~12% slower on a thread other than the first one that used
    # them (the model loaded and warmed on the main thread, run on the inference thread).
    from workers.inference import inference_thread

    model, loaded_on = ThreadRecorder(), []

    def load():
        loaded_on.append(threading.get_ident())
        return model

    if given:  # as run_worker does: loaded first, on the thread handed over
        thread = inference_thread()
        model = thread.submit(load).result()
        runner = InferenceRunner(lambda: model, thread=thread)
    else:
        runner = InferenceRunner(load)
    await runner.start()
    try:
        await runner.predict(texts(2))
        await runner.predict(texts(3))
    finally:
        await runner.stop()
    assert model.threads == [loaded_on[0]] * 2
    assert loaded_on[0] != threading.get_ident()


# -- inference lanes


class Barrier(Model):
    """Each call waits until ``n`` calls are inside predict at once (a deadlock, hence a timeout,
    if the runner ran them one at a time); records each call's thread and torch thread count."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(n, timeout=5)
        self.threads: list[tuple[int, int]] = []
        self.names: set[str] = set()
        self.os_names: set[str | None] = set()

    def predict(self, batch):
        import torch

        from workers.os_thread import os_thread_name

        self.barrier.wait()
        self.threads.append((threading.get_ident(), torch.get_num_threads()))
        self.names.add(threading.current_thread().name)
        self.os_names.add(os_thread_name())
        return super().predict(batch)


async def test_lanes_run_batches_at_once_on_threads_of_their_own() -> None:
    import torch

    model, loaded_on = Barrier(2), []

    def load():
        loaded_on.append(threading.get_ident())
        return model

    main_threads = torch.get_num_threads()
    runner = InferenceRunner(load, lanes=2, torch_threads=1)
    await runner.start()
    try:
        await asyncio.gather(runner.predict(texts(2)), runner.predict(texts(3)))
    finally:
        await runner.stop()
    threads = {t for t, _ in model.threads}
    assert len(threads) == 2 and loaded_on[0] in threads
    assert threading.get_ident() not in threads
    assert [n for _, n in model.threads] == [1, 1]  # each lane's own torch thread count
    assert {n.rsplit("_", 1)[0] for n in model.names} == {"inference-lane0", "inference-lane1"}
    if sys.platform.startswith("linux"):  # what top -H and the bench's CPU breakdown see
        assert model.os_names == {"inference-lane0", "inference-lane1"}
    assert torch.get_num_threads() == main_threads  # the caller's is untouched


async def test_more_batches_than_lanes_wait_for_a_free_lane() -> None:
    model = Barrier(1)  # never blocks
    running, most = 0, 0
    real = model.predict

    def predict(batch):
        nonlocal running, most
        running += 1
        most = max(most, running)
        time.sleep(0.05)
        running -= 1
        return real(batch)

    model.predict = predict  # type: ignore[method-assign]
    runner = InferenceRunner(lambda: model, lanes=2)
    await runner.start()
    try:
        outs = await asyncio.gather(*(runner.predict(texts(1)) for _ in range(6)))
    finally:
        await runner.stop()
    assert len(outs) == 6 and most == 2 and len({t for t, _ in model.threads}) == 2


def test_a_runner_needs_a_lane() -> None:
    with pytest.raises(ValueError, match="lanes"):
        InferenceRunner(Model, lanes=0)


@pytest.mark.parametrize(
    ("cores", "device", "lanes", "expected"),
    [
        (2, "cpu", 0, (2, 1)),  # this machine: two lanes of one thread
        (16, "cpu", 0, (2, 8)),
        (1, "cpu", 0, (1, 1)),
        (16, "cpu", 4, (4, 4)),
        (2, "cpu", 3, (3, 1)),
        (16, "cuda", 0, (1, 0)),  # one lane on the GPU, torch's own CPU thread count
        (16, "cuda:1", 2, (2, 0)),
    ],
)
def test_the_inference_plan(monkeypatch, cores, device, lanes, expected) -> None:
    import os

    from streamer.agents import inference_plan
    from streamer.settings import Settings

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    settings = Settings(device=device, inference_lanes=lanes)
    assert inference_plan(settings) == expected

