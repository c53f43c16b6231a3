"""BatchProcessor with fakes: ordering of effects, dedup, dead letters, retries, poison items."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.exceptions

from commentflow.settings import Settings
from model.base import ClassOutput
from schemas.events import DeadLetter, Prediction
from workers.inference import InferenceRunner
from workers.messages import Inbound
from workers.processor import BatchProcessor


class FakeClassifier:
    name, version, labels, device = "fake", "0", ("negative", "neutral", "positive"), "cpu"

    def __init__(self, poison: str | None = None) -> None:
        self.poison = poison
        self.calls: list[int] = []

    def predict(self, batch):
        self.calls.append(len(batch))
        if self.poison and any(self.poison in c.text for c in batch):
            raise RuntimeError("boom")
        label = lambda t: "negative" if "bad" in t else "positive"  # noqa: E731
        return [
            ClassOutput(
                label(c.text),
                {"negative": 0.1, "neutral": 0.1, "positive": 0.8}
                if label(c.text) == "positive"
                else {"negative": 0.8, "neutral": 0.1, "positive": 0.1},
                ("text",),
            )
            for c in batch
        ]


class FakePublisher:
    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list = []
        self.fail_first = fail_first

    async def send(self, message):
        fut = asyncio.get_running_loop().create_future()
        if self.fail_first > 0:
            self.fail_first -= 1
            fut.set_exception(ConnectionError("broker down"))
        else:
            self.sent.append(message)
            fut.set_result(None)
        return fut


class FakeStore:
    def __init__(self, fail_first: int = 0) -> None:
        self.seen: set[str] = set()
        self.dlq_seen: set[str] = set()
        self.applied: list = []
        self.fail_first = fail_first
        self.events: list[str] = []

    async def already_done(self, comment_ids, source_ids):
        self._maybe_fail()
        return [c in self.seen for c in comment_ids], [s in self.dlq_seen for s in source_ids]

    async def apply(self, predictions, dead_letters, *, now_ms):
        self._maybe_fail()
        self.events.append("apply")
        out = []
        for p in predictions:
            out.append(int(p.comment_id not in self.seen))
            self.seen.add(p.comment_id)
            self.applied.append(p)
        for d in dead_letters:
            out.append(int(d.source_id not in self.dlq_seen))
            self.dlq_seen.add(d.source_id)
        return out

    def _maybe_fail(self):
        if self.fail_first > 0:
            self.fail_first -= 1
            raise redis.exceptions.ConnectionError("redis down")


def settings() -> Settings:
    return Settings(retry_initial_s=0.001, retry_max_s=0.01)


async def make(classifier=None, publisher=None, store=None):
    runner = InferenceRunner(lambda: classifier or FakeClassifier())
    await runner.start()
    publisher = publisher or FakePublisher()
    store = store or FakeStore()
    return BatchProcessor(settings(), runner, publisher, store), runner, publisher, store


def inbound(i: int, value: bytes | None) -> Inbound:
    return Inbound("comments", 0, i, b"u", value)


def ev(cid: str, text: str = "good stuff", user: str = "u1") -> bytes:
    return orjson.dumps(
        {"comment_id": cid, "user_id": user, "text": text, "created_at": "2026-11-28T10:00:00Z"}
    )


async def test_predictions_and_dead_letters_are_published_then_aggregated():
    proc, runner, pub, store = await make()
    batch = [inbound(0, ev("a")), inbound(1, b"{oops"), inbound(2, ev("b", "bad stuff"))]
    result = await proc.process(batch)
    await runner.stop()
    assert result.predicted == 2 and result.dead_lettered == {"invalid_json": 1}
    assert result.labels == {"positive": 1, "negative": 1}
    preds = [orjson.loads(m.value) for m in pub.sent if m.topic == "comments.predictions"]
    dead = [orjson.loads(m.value) for m in pub.sent if m.topic == "comments.dlq"]
    for p in preds:
        Prediction.model_validate(p)
        assert abs(sum(p["scores"].values()) - 1) < 1e-6
    DeadLetter.model_validate(dead[0])
    assert [p["comment_id"] for p in preds] == ["a", "b"]
    assert dead[0]["source"]["offset"] == 1
    assert {p.comment_id for p in store.applied} == {"a", "b"}


async def test_replay_changes_nothing_and_publishes_nothing():
    proc, runner, pub, store = await make()
    batch = [inbound(0, ev("a")), inbound(1, b"nope")]
    await proc.process(batch)
    n = len(pub.sent)
    again = await proc.process(batch)
    await runner.stop()
    assert again.predicted == 0 and again.skipped_duplicates == 1 and again.dead_lettered == {}
    assert len(pub.sent) == n


async def test_duplicate_comment_id_inside_one_batch_is_predicted_once():
    proc, runner, pub, _ = await make()
    result = await proc.process([inbound(0, ev("a")), inbound(1, ev("a"))])
    await runner.stop()
    assert result.predicted == 1 and result.skipped_duplicates == 1
    assert len(pub.sent) == 1


async def test_publish_failures_are_retried_without_duplicates():
    proc, runner, pub, store = await make(publisher=FakePublisher(fail_first=2))
    result = await proc.process([inbound(i, ev(f"c{i}")) for i in range(3)])
    await runner.stop()
    ids = sorted(orjson.loads(m.value)["comment_id"] for m in pub.sent)
    assert ids == ["c0", "c1", "c2"] and result.predicted == 3


async def test_redis_outage_is_retried():
    proc, runner, pub, store = await make(store=FakeStore(fail_first=3))
    result = await proc.process([inbound(0, ev("a"))])
    await runner.stop()
    assert result.predicted == 1 and store.events == ["apply"]


async def test_poison_comment_is_dead_lettered_and_the_rest_predicted():
    clf = FakeClassifier(poison="POISON")
    proc, runner, pub, _ = await make(classifier=clf)
    result = await proc.process(
        [inbound(0, ev("a")), inbound(1, ev("p", "POISON")), inbound(2, ev("b"))]
    )
    await runner.stop()
    assert result.predicted == 2 and result.dead_lettered == {"processing_failed": 1}
    assert clf.calls == [3, 1, 1, 1]


async def test_feed_text_is_redacted_and_truncated():
    proc, runner, _, store = await make()
    await proc.process([inbound(0, ev("a", "good, write me at a.b@example.com " + "x" * 400))])
    await runner.stop()
    item = orjson.loads(store.applied[0].feed_item)
    assert "example.com" not in item["text"] and "[email]" in item["text"]
    assert len(item["text"]) <= 280


async def test_cancel_during_outage_raises_and_aggregates_nothing():
    proc, runner, _, store = await make(store=FakeStore(fail_first=10**9))
    task = asyncio.ensure_future(proc.process([inbound(0, ev("a"))]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await runner.stop()
    assert store.applied == []
