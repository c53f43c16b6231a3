"""Hostile streams against the real broker (tansu), a real Redis and real worker processes.

* a generated hostile mix, then valid comments: the worker stays up, every valid comment is
  predicted, every hostile message has exactly one outcome (prediction or dead letter);
* a model that fails on everything (NaN weights): nothing is dead-lettered, nothing acked,
  ``/readyz`` fails, the worker exits non-zero; restarted with a good model, the stream resumes
  with no gap;
* a message that kills the worker process: after ``poison_after`` deaths it is dead-lettered as
  ``poison`` and everything else is predicted;
* the broker frozen (SIGSTOP) for 60 s mid-stream: the worker recovers by itself, nothing lost,
  Redis exact.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from safetensors.torch import load_file, save_file
from support.hostile import hostile_values
from support.stream import pairs_of, read_all, readyz, send, wait_for, wait_predictions

from commentflow.local import read_topic
from commentflow.processes import free_port, stop_process
from commentflow.produce import synthetic_events
from model.testing import make_tiny_model_dir
from schemas.events import DeadLetter, Prediction

BATCH_MAX = 16
TESTS_DIR = str(Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-hostile") / "model")


@pytest.fixture(scope="module")
def nan_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with NaN weights in its head: loads fine, predicts garbage."""
    out = tmp_path_factory.mktemp("nan-model") / "model"
    subprocess.run(["cp", "-r", str(tiny_model), str(out)], check=True)
    weights = load_file(out / "model.safetensors")
    for name in weights:
        weights[name] = weights[name] * float("nan")
    save_file(weights, out / "model.safetensors")
    return out


def valid(n: int, seed: int, prefix: str) -> list[dict]:
    return list(synthetic_events(n, users=40, seed=seed, prefix=prefix))


async def until_predicted(settings, ids: set[str], worker=None, timeout_s=240) -> list[dict]:
    return await wait_predictions(settings, ids, worker=worker, timeout_s=timeout_s)


async def test_hostile_mix_then_valid_comments_every_message_has_one_outcome(
    topics, make_settings, tiny_model, redis_client, start_worker
):
    settings = make_settings(tiny_model, batch_max=BATCH_MAX, media_timeout_s=2.0)
    hostile = hostile_values(400, seed=9)
    events = valid(300, seed=9, prefix="after")
    worker = start_worker(settings)
    offsets = await send(settings.kafka_bootstrap, settings.input_topic, hostile, partition=0)
    await send(settings.kafka_bootstrap, settings.input_topic, pairs_of(events), partition=0)
    await until_predicted(settings, {e["comment_id"] for e in events}, worker)

    async def every_outcome() -> tuple[list[dict], list[dict]] | None:
        """Both topics once every hostile message has its dead letter or prediction."""
        dead = await read_all(settings.kafka_bootstrap, settings.dlq_topic, quiet_s=1)
        preds = await read_all(settings.kafka_bootstrap, settings.predictions_topic, quiet_s=1)
        dead_at = {d["source"]["offset"] for d in dead}
        predicted = {(p["user_id"], p["comment_id"]) for p in preds}
        for (value, _), offset in zip(hostile, offsets, strict=True):
            if offset in dead_at:
                continue
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                return None
            if not isinstance(doc, dict) or (doc.get("user_id"), doc.get("comment_id")) not in (
                predicted
            ):
                return None
        return dead, preds

    dead, preds = await wait_for(every_outcome, timeout_s=60, interval_s=0.5, what="outcomes")
    assert worker.alive(), worker.log_tail()
    worker.stop()
    for d in dead:
        DeadLetter.model_validate(d)
    for p in preds:
        Prediction.model_validate(p)
    dead_at = collections.Counter(d["source"]["offset"] for d in dead)
    assert max(dead_at.values()) == 1, "a message was dead-lettered twice"
    predicted = collections.Counter((p["user_id"], p["comment_id"]) for p in preds)
    assert max(predicted.values()) == 1, "a comment was predicted twice"
    outcomes = 0
    for (value, _), offset in zip(hostile, offsets, strict=True):
        if offset in dead_at:
            outcomes += 1
            continue
        doc = orjson.loads(value)  # not dead-lettered: it was a valid event
        assert (doc["user_id"], doc["comment_id"]) in predicted, doc
        outcomes += 1
    assert outcomes == len(hostile)
    # valid events with hostile media were predicted from their text, the media listed as errors
    with_media = [p for p in preds if p["media_errors"]]
    assert with_media and all(p["modalities"] == ["text"] for p in with_media)
    reasons = {e["reason"] for p in with_media for e in p["media_errors"]}
    assert "blocked_address" in reasons
    codes = collections.Counter(d["error"]["code"] for d in dead)
    assert {"invalid_json", "schema_violation", "invalid_encoding"} <= set(codes), codes
    # the shared comment id of several users: one prediction per user
    shared = {u for (u, c) in predicted if c == "shared-id"}
    assert len(shared) > 1


async def test_a_broken_model_dead_letters_nothing_exits_and_the_restart_resumes(
    topics, make_settings, tiny_model, nan_model, start_worker
):
    port = free_port()
    broken = make_settings(
        nan_model,
        batch_max=BATCH_MAX,
        model_failure_exit_s=12.0,
        retry_max_s=1.0,
        web_enabled=True,
        web_port=port,
    )
    events = valid(120, seed=11, prefix="breaker")
    worker = start_worker(broken, "broken")
    seen_not_ready = None
    await send(broken.kafka_bootstrap, broken.input_topic, events)
    deadline = time.monotonic() + 120
    while worker.alive() and time.monotonic() < deadline:  # until it exits: poll /readyz
        try:
            status, body = await readyz(port)
            if status == 503 and body["checks"].get("pipeline", "ok") != "ok":
                seen_not_ready = body
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    code = worker.stop(timeout=30)
    log = worker.log_tail(10**6)
    assert code not in (0, None), log[-3000:]
    assert seen_not_ready is not None, log[-3000:]
    assert "model" in seen_not_ready["checks"]["pipeline"]
    nothing = await read_all(broken.kafka_bootstrap, broken.dlq_topic, quiet_s=2)
    assert nothing == []
    assert await read_all(broken.kafka_bootstrap, broken.predictions_topic, quiet_s=2) == []
    # the same group, a good model: everything is predicted, no gap, still no dead letter
    good = broken.replace(model_dir=str(tiny_model), web_enabled=False)
    worker = start_worker(good, "good")
    preds = await until_predicted(good, {e["comment_id"] for e in events}, worker)
    worker.stop()
    assert len(preds) == len(events)
    assert await read_all(good.kafka_bootstrap, good.dlq_topic, quiet_s=2) == []


CRASHY_WORKER = """
import os, sys
sys.path.insert(0, {tests!r})
from commentflow.settings import Settings
from model import load_classifier
from streamer.app import create_app
import faust

class KillOnWord:
    def __init__(self, inner):
        self.inner = inner
        self.name, self.version, self.labels, self.device = (
            inner.name, inner.version, inner.labels, inner.device)
    def predict(self, batch):
        if any("KILL-THE-WORKER" in c.text for c in batch):
            os._exit(13)  # a native crash, as far as anyone can tell
        return self.inner.predict(batch)

settings = Settings.from_env()
app = create_app(settings, KillOnWord(load_classifier(settings.model_dir, "cpu")))
faust.Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()
"""


async def test_a_message_that_kills_the_worker_is_set_aside_as_poison(
    topics, make_settings, tiny_model, tmp_path
):
    settings = make_settings(tiny_model, batch_max=BATCH_MAX, poison_after=3)
    before = valid(40, seed=12, prefix="pre")
    after = valid(40, seed=13, prefix="post")
    killer = {**valid(1, seed=14, prefix="killer")[0], "text": "KILL-THE-WORKER now"}
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    script = CRASHY_WORKER.format(tests=TESTS_DIR)
    log = open(tmp_path / "crashy.log", "ab")  # noqa: SIM115
    offsets = await send(
        settings.kafka_bootstrap, settings.input_topic, [*before, killer, *after], partition=0
    )
    killer_offset = offsets[len(before)]
    deaths = 0
    proc = None
    ids = {e["comment_id"] for e in before + after}
    try:
        deadline = time.monotonic() + 300
        dead: list[dict] = []
        while time.monotonic() < deadline:
            if proc is None or proc.poll() is not None:
                if proc is not None:
                    assert proc.returncode == 13, proc.returncode
                    deaths += 1
                    assert deaths <= 5, "the poison message was never set aside"
                proc = subprocess.Popen(
                    [sys.executable, "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            dead = await read_topic(
                settings.kafka_bootstrap, settings.dlq_topic, until=lambda d: bool(d), timeout_s=2
            )
            if dead:
                break
        preds = await until_predicted(settings, ids, timeout_s=120)
    finally:
        stop_process(proc, 40)
        log.close()
    assert deaths == 3
    (letter,) = dead
    assert letter["error"]["code"] == "poison"
    assert letter["source"]["offset"] == killer_offset
    assert letter["error"]["details"][0]["crashes"] == 3
    assert {p["comment_id"] for p in preds} == ids
    assert len(preds) - len(ids) <= 2 * BATCH_MAX  # batches in flight at a death, republished


async def test_a_frozen_broker_is_survived_without_loss_or_double_counts(
    stack, topics, make_settings, tiny_model, redis_client, start_worker
):
    port = free_port()
    settings = make_settings(tiny_model, batch_max=BATCH_MAX, web_enabled=True, web_port=port)
    events = valid(1500, seed=15, prefix="freeze")
    worker = start_worker(settings)
    kafka = stack.kafka_process
    assert kafka is not None
    frozen_ready = None
    await send(settings.kafka_bootstrap, settings.input_topic, events)
    await wait_predictions(settings, 200, worker=worker, timeout_s=120)
    kafka.send_signal(signal.SIGSTOP)
    try:
        # The freeze itself lasts 60 s (the scenario, not a wait): /readyz sampled meanwhile.
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            await asyncio.sleep(5)
            assert worker.alive(), worker.log_tail()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                frozen_ready = await readyz(port)
    finally:
        kafka.send_signal(signal.SIGCONT)
    preds = await until_predicted(settings, {e["comment_id"] for e in events}, worker, 300)
    assert worker.alive(), worker.log_tail()

    async def ready() -> tuple[int, dict] | None:
        answer = await readyz(port)
        return answer if answer[0] == 200 else None

    ready_after = await wait_for(ready, timeout_s=60, interval_s=1, what="/readyz 200")
    worker.stop()
    assert frozen_ready is not None and frozen_ready[0] == 503, frozen_ready
    assert frozen_ready[1]["checks"]["broker"] != "ok"
    assert ready_after is not None and ready_after[0] == 200, ready_after
    labels = {p["comment_id"]: p["label"] for p in preds}
    assert len(preds) - len(labels) <= 2 * BATCH_MAX
    per_user = collections.Counter(e["user_id"] for e in events)
    for user, n in per_user.items():
        total = await redis_client.hget(f"{settings.redis_prefix}user:{user}", "total")
        assert int(total) == n, user
