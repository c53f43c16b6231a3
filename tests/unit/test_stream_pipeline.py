"""The stream pipeline with fakes: crash guard, in-order acks, and a hostile-input property.

The property (hypothesis): arbitrary bytes and arbitrary JSON-ish events (edge dates, unicode,
control characters, huge numbers, deep nesting, any media list, repeated ids, comments the model
fails on, outputs the broker refuses, messages a crashed worker left in flight) go through
plan -> prepare -> finish -> ack; then every message has exactly one outcome (a prediction, a
dead letter, or "already predicted" for a repeat of the same (user, comment)), no exception
escapes, and each message is acknowledged once, in order, only after its outcome was published.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fakes import FakeClassifier, FakePublisher, FakeRedis, FakeStore

from schemas.events import DeadLetter, Prediction
from workers.config import ProcessorConfig
from workers.crash_guard import CrashGuard
from workers.inference import InferenceRunner
from workers.media import ResolvedMedia
from workers.messages import Inbound
from workers.pipeline import LaneConfig, StreamPipeline
from workers.processor import BatchProcessor

TOPIC = "comments"
PREDICTIONS = ProcessorConfig().predictions_topic


def message(offset: int, value: bytes | None, key: bytes | None = b"k") -> Inbound:
    return Inbound(TOPIC, 0, offset, key, value)


def event(cid: str, text: str = "fine", user: str = "u1", **extra: Any) -> bytes:
    doc = {"comment_id": cid, "user_id": user, "text": text, "created_at": "2026-11-28T10:00:00Z"}
    return orjson.dumps({**doc, **extra})


class Harness:
    """A pipeline on fakes; ``acks`` in order; ``published_before_ack`` checked at each ack."""

    def __init__(
        self,
        *,
        poison_after: int = 3,
        refuse_over: int | None = None,
        media=None,
        lane: LaneConfig | None = None,
        at_once: int = 1,
        classifier=None,
    ):
        self.redis = FakeRedis()
        self.guard = CrashGuard(self.redis, prefix="t:", app_id="a", poison_after=poison_after)
        self.publisher = RefusingPublisher(refuse_over)
        self.store = FakeStore()
        model = classifier or FakeClassifier(poison="POISON")
        self.runner = InferenceRunner(lambda: model, lanes=at_once)
        self.at_once = at_once
        s = ProcessorConfig(retry_initial_s=0.001, retry_max_s=0.005, model_failure_exit_s=5)
        self.processor = BatchProcessor(s, self.runner, self.publisher, self.store, media)
        self.acks: list[int] = []
        self.ack_errors: list[str] = []
        self.lane = lane
        self.pipeline = StreamPipeline(
            self.processor, self.ack, guard=self.guard, lane=lane, classify_at_once=at_once
        )

    async def ack(self, m: Inbound) -> None:
        self.acks.append(m.offset)

    async def submit_one_by_one(self, n: int) -> RuntimeError | None:
        """Submit comments c0..c{n-1} one per batch until submit raises; what it raised."""
        await self.runner.start()
        await self.pipeline.start()
        raised = None
        try:
            for i in range(n):
                await self.pipeline.submit([message(i, event(f"c{i}"))])
        except RuntimeError as exc:
            raised = exc
        await self.pipeline.stop(5)
        await self.runner.stop()
        return raised

    async def run(self, batches: list[list[Inbound]]) -> None:
        await self.runner.start()
        await self.pipeline.start()
        try:
            for batch in batches:
                await self.pipeline.submit(batch)
        finally:
            await self.pipeline.stop(30)
            await self.runner.stop()

    def predictions(self) -> list[dict]:
        return [orjson.loads(m.value) for m in self.publisher.sent if m.topic == PREDICTIONS]

    def dead_letters(self) -> list[dict]:
        return [orjson.loads(m.value) for m in self.publisher.sent if m.topic != PREDICTIONS]


class RefusingPublisher(FakePublisher):
    """Refuses for good (too large) any message over ``limit`` bytes."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit = limit

    async def send(self, message):
        if self.limit is not None and len(message.value) > self.limit:
            raise MessageSizeTooLargeError("too large")
        return await super().send(message)


# -- crash guard and ordering


async def test_a_clean_batch_is_one_part_and_leaves_no_counter():
    h = Harness()
    await h.run([[message(i, event(f"c{i}")) for i in range(5)]])
    assert h.acks == [0, 1, 2, 3, 4] and len(h.predictions()) == 5
    assert h.redis.data == {}


class SlowFirst(FakeClassifier):
    """Takes ``delay_s`` over a batch that holds the text ``slow``; records the order in which
    batches finish (by their comments' texts)."""

    def __init__(self, delay_s: float = 0.3) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.finished: list[list[str]] = []

    def predict(self, batch):
        if any(c.text == "slow" for c in batch):
            time.sleep(self.delay_s)
        out = super().predict(batch)
        self.finished.append([c.text for c in batch])
        return out


async def test_text_batches_classified_at_once_are_published_in_submission_order():
    # two inference lanes: batch 2 is classified while batch 1 (slow) still runs, and finishes
    # first; its predictions still go out after batch 1's, so text-only predictions keep the
    # partition's order (README: what a consumer of the predictions topic can rely on)
    model = SlowFirst()
    h = Harness(at_once=2, classifier=model)
    first = [message(i, event(f"c{i}", text="slow" if i == 0 else "fine")) for i in range(3)]
    second = [message(i, event(f"c{i}", text="quick")) for i in range(3, 6)]
    await h.run([first, second])
    assert model.finished == [["quick"] * 3, ["slow", "fine", "fine"]]
    assert [p["comment_id"] for p in h.predictions()] == [f"c{i}" for i in range(6)]
    assert h.acks == list(range(6))


async def test_one_inference_lane_classifies_one_batch_at_a_time():
    model = SlowFirst()
    h = Harness(at_once=1, classifier=model)
    first = [message(i, event(f"c{i}", text="slow" if i == 0 else "fine")) for i in range(3)]
    second = [message(i, event(f"c{i}", text="quick")) for i in range(3, 6)]
    await h.run([first, second])
    assert model.finished == [["slow", "fine", "fine"], ["quick"] * 3]


@pytest.mark.parametrize("at_once", [1, 2])
async def test_a_failing_classification_stops_submit_and_nothing_from_it_on_is_acked(at_once):
    h = Harness(at_once=at_once)
    real = h.processor.classify

    async def classify(prepared):
        if any(m.offset == 2 for m in prepared.messages):
            raise RuntimeError("a bug in the model stage")
        return await real(prepared)

    h.processor.classify = classify  # type: ignore[method-assign]
    # more batches than the pipeline holds (queue, lanes, emitter): a later submit must wait
    # for room and so sees the failure, however fast or slow the lanes start
    raised = await h.submit_one_by_one(20)
    assert raised is not None
    assert h.acks == [0, 1][: len(h.acks)]  # an in-order prefix before the failed batch
    assert {p["comment_id"] for p in h.predictions()} <= {"c0", "c1"}


async def test_messages_left_in_flight_by_a_crash_are_processed_alone_then_poisoned():
    h = Harness(poison_after=3)
    batch = [message(i, event(f"c{i}")) for i in range(4)]
    # an earlier worker died 3 times with offset 2 in flight, once with offsets 0-3
    for m in batch:
        h.redis.data[h.guard.key(m)] = 1
    h.redis.data[h.guard.key(batch[2])] = 3
    await h.run([batch])
    dead = h.dead_letters()
    assert [d["error"]["code"] for d in dead] == ["poison"]
    assert dead[0]["source"]["offset"] == 2 and dead[0]["error"]["details"][0]["crashes"] == 3
    assert sorted(p["comment_id"] for p in h.predictions()) == ["c0", "c1", "c3"]
    assert sorted(h.acks) == [0, 1, 2, 3] and h.redis.data == {}


async def test_split_batches_begin_each_message_only_once_the_previous_one_is_done():
    h = Harness(poison_after=5)
    batch = [message(i, event(f"c{i}")) for i in range(6)]
    h.redis.data[h.guard.key(batch[0])] = 1  # one suspect: the whole batch goes one by one
    in_flight: list[int] = []

    async def begin_alone(m, real=h.guard.begin_alone):
        others = {k: v for k, v in h.redis.data.items() if k != h.guard.key(m)}
        in_flight.append(sum(v > 0 for v in others.values()))
        return await real(m)

    h.guard.begin_alone = begin_alone  # type: ignore[method-assign]
    await h.run([batch])
    assert in_flight == [0] * 6  # nothing else was in flight when each one began
    assert h.acks == list(range(6))


async def test_a_failing_finisher_stops_submit_and_nothing_is_acked():
    h = Harness()

    async def broken_apply(*a, **k):
        raise RuntimeError("a bug in the store")

    h.store.apply = broken_apply  # type: ignore[method-assign]
    raised = await h.submit_one_by_one(5)
    assert raised is not None and h.acks == []
    # what was begun and not finished is taken back: counts stay at most 1 (one begin each)
    assert all(v <= 1 for v in h.redis.data.values())


async def test_one_comment_whose_media_handling_raises_is_dead_lettered_alone():
    class Media:
        async def resolve_batch(self, refs, *, timeout_s=None):
            return [await self.resolve(r) for r in refs]

        async def resolve(self, refs, deadline=None):
            if any("explode" in r["url"] for r in refs):
                raise KeyError("a bug")
            return ResolvedMedia([], [], [])

    h = Harness(media=Media())
    img = [{"type": "image", "url": "https://x.test/explode.png"}]
    ok = [{"type": "image", "url": "https://x.test/fine.png"}]
    await h.run([[message(0, event("a", media=img)), message(1, event("b", media=ok))]])
    (dead,) = h.dead_letters()
    assert dead["error"]["details"] == [{"stage": "media", "exception": "KeyError"}]
    assert [p["comment_id"] for p in h.predictions()] == ["b"] and h.acks == [0, 1]


# -- the property

_DATES = st.sampled_from(
    [
        "2026-11-28T10:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+14:00",
        "1969-12-31T23:59:59Z",
        "2100-12-31T23:59:59+00:00",
        "2026-02-30T10:00:00Z",
        "2026-11-28T10:00:00",
        "not a date",
        "",
    ]
)
_TEXTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["POISON in here", "bad", "   ", "\x00\u202e\ufeff", "😍" * 30]),
    st.just("x" * 20_001),
)
_IDS = st.one_of(st.sampled_from(["a", "b", "a:b", "*", ""]), st.text(max_size=130))
_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_MEDIA = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["image", "audio", "video"]),
                "url": st.sampled_from(["https://m.test/a.png", "file:///etc/passwd", "", "x"]),
            }
        ),
        _JSONISH,
    ),
    max_size=10,
)


@st.composite
def _event(draw: st.DrawFn) -> bytes | None:
    doc: dict[str, Any] = {
        "comment_id": draw(_IDS),
        "user_id": draw(st.sampled_from(["u1", "u2", "ü", ""]) | st.text(max_size=3)),
        "text": draw(_TEXTS),
        "created_at": draw(_DATES),
    }
    if draw(st.booleans()):
        doc["media"] = draw(_MEDIA)
    if draw(st.booleans()):
        doc["metadata"] = draw(_JSONISH)
    for name in draw(st.sets(st.sampled_from(list(doc)), max_size=2)):
        doc[name] = draw(_JSONISH)  # wrong types, missing values
    if draw(st.booleans()):
        doc["schema"] = draw(st.sampled_from(["commentflow.comment/1", "commentflow.comment/2"]))
    return json.dumps(doc).encode()  # json: integers beyond 64 bits too


_VALUES = st.one_of(
    _event(),
    _event(),
    st.binary(max_size=200),
    st.none(),
    _JSONISH.map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 5000),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    values=st.lists(_VALUES, min_size=1, max_size=24),
    sizes=st.lists(st.integers(1, 8), min_size=1, max_size=8),
    crashed=st.dictionaries(st.integers(0, 23), st.integers(1, 5), max_size=4),
    refuse_over=st.sampled_from([None, 6_000]),
    lane=st.sampled_from([0, 1, 3]),
    at_once=st.sampled_from([1, 2]),
)
def test_every_hostile_message_has_exactly_one_outcome(
    values, sizes, crashed, refuse_over, lane, at_once
):
    asyncio.run(_check_property(values, sizes, crashed, refuse_over, lane, at_once))


async def _check_property(values, sizes, crashed, refuse_over, lane, at_once) -> None:
    # lane > 0: comments with media finish in the media lane, out of order; acks stay in order;
    # at_once 2: two text batches are classified at once, on two inference lanes
    lanes = LaneConfig(concurrency=lane, depth=2, max_pending=16)
    h = Harness(poison_after=3, refuse_over=refuse_over, lane=lanes, at_once=at_once)
    msgs = [message(i, v) for i, v in enumerate(values)]
    for offset, count in crashed.items():
        if offset < len(msgs):
            h.redis.data[h.guard.key(msgs[offset])] = count
    published_at_ack: dict[int, tuple[set[int], set[tuple[Any, Any]]]] = {}

    async def ack(m: Inbound) -> None:
        h.acks.append(m.offset)
        published_at_ack[m.offset] = (
            {d["source"]["offset"] for d in h.dead_letters()},
            {(p["user_id"], p["comment_id"]) for p in h.predictions()},
        )

    h.pipeline = StreamPipeline(
        h.processor, ack, guard=h.guard, lane=lanes, classify_at_once=at_once
    )
    batches, i = [], 0
    while i < len(msgs):
        n = sizes[len(batches) % len(sizes)]
        batches.append(msgs[i : i + n])
        i += n
    await h.run(batches)  # no exception may escape

    # acknowledged once each, in order
    assert h.acks == list(range(len(msgs)))
    dead = h.dead_letters()
    preds = h.predictions()
    for d in dead:
        DeadLetter.model_validate(d)
    for p in preds:
        Prediction.model_validate(p)
    dead_offsets = [d["source"]["offset"] for d in dead]
    assert len(dead_offsets) == len(set(dead_offsets)), "two dead letters for one message"
    pred_keys = [(p["user_id"], p["comment_id"]) for p in preds]
    assert len(pred_keys) == len(set(pred_keys)), "two predictions for one comment"
    # every message not dead-lettered was predicted (itself, or an earlier copy of it) ...
    expected_keys = set()
    for m in msgs:
        if m.offset in dead_offsets:
            continue
        doc = json.loads(m.value)
        expected_keys.add((doc["user_id"], doc["comment_id"]))
    # ... except a copy skipped because its original was still in flight, when the original then
    # failed in the model or could not be built or published (a known gap, on main too: README
    # "How the worker processes a batch", step 4); the property draws it often ("POISON" texts)
    failed_alone = {
        _key_of(msgs[d["source"]["offset"]])
        for d in dead
        if any(x.get("stage") in ("model", "build", "publish") for x in d["error"]["details"])
    }
    assert expected_keys - failed_alone <= set(pred_keys) <= expected_keys
    # a message that an earlier worker died on poison_after times is poison, nothing else
    for offset, count in crashed.items():
        if offset < len(msgs) and count >= 3:
            (d,) = [d for d in dead if d["source"]["offset"] == offset]
            assert d["error"]["code"] == "poison"
    # an ack never comes before its message's outcome was published
    for m in msgs:
        dead_then, predicted_then = published_at_ack[m.offset]
        if m.offset in dead_offsets:
            assert m.offset in dead_then
        elif _key_of(m) not in failed_alone:
            assert _key_of(m) in predicted_then
    # the crash guard forgets everything that finished
    assert h.redis.data == {}
    # and Redis saw each outcome once
    assert len(h.store.applied) == len(preds) and len(h.store.dlq_seen) == len(dead)


def _key_of(m: Inbound) -> tuple[Any, Any]:
    doc = json.loads(m.value)
    return doc["user_id"], doc["comment_id"]
