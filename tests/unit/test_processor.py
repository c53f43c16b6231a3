"""BatchProcessor with fakes: ordering of effects, dedup, dead letters, retries, poison items."""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import pytest
import redis.exceptions
from support.fakes import FakeClassifier, FakePublisher, FakeStore

from model.serving.language import LanguageGate
from schemas.events import DeadLetter, Prediction
from workers.config import ProcessorConfig
from workers.inference import InferenceRunner
from workers.messages import Inbound
from workers.processor import BatchProcessor


def settings() -> ProcessorConfig:
    return ProcessorConfig(retry_initial_s=0.001, retry_max_s=0.01)


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


class EnglishOnlyClassifier(FakeClassifier):
    """The fake classifier plus the real language gate of a model that declares only English."""

    gate = LanguageGate(["en"])

    def predict(self, batch):
        outs = super().predict(batch)
        return [
            dataclasses.replace(
                o, language=lang.code, language_score=lang.score, language_supported=lang.supported
            )
            for o, lang in zip(outs, self.gate.assess(c.text for c in batch), strict=True)
        ]


async def test_a_comment_in_an_unsupported_language_gets_a_low_confidence_prediction():
    proc, runner, pub, _ = await make(classifier=EnglishOnlyClassifier())
    texts = ["good stuff, thanks for the fast delivery", "me encanta, es muy bueno", "😍😍😍"]
    await proc.process([inbound(i, ev(f"c{i}", t)) for i, t in enumerate(texts)])
    await runner.stop()
    en, es, emoji = (Prediction.model_validate(orjson.loads(m.value)) for m in pub.sent)
    assert en.confidence == "normal" and en.low_confidence_reasons == []
    assert en.language is not None and (en.language.code, en.language.supported) == ("en", True)
    assert es.confidence == "low" and es.low_confidence_reasons == ["unsupported_language"]
    assert es.language is not None and (es.language.code, es.language.supported) == ("es", False)
    assert emoji.confidence == "normal" and emoji.language is not None
    assert emoji.language.code == "und"


async def test_a_model_without_language_detection_omits_the_language():
    proc, runner, pub, _ = await make()
    await proc.process([inbound(0, ev("a", "me encanta, es muy bueno"))])
    await runner.stop()
    doc = orjson.loads(pub.sent[0].value)
    assert "language" not in doc and doc["confidence"] == "normal"


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
    # the batch, the canary, then bisection: [a] | [p, b] -> [p] | [b]
    assert clf.calls == [3, 1, 1, 2, 1, 1]
    (dead,) = [orjson.loads(m.value) for m in pub.sent if m.topic == "comments.dlq"]
    assert dead["source"]["offset"] == 1
    assert dead["error"]["details"] == [{"stage": "model", "exception": "RuntimeError"}]


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


async def test_two_users_with_the_same_comment_id_are_both_predicted():
    proc, runner, pub, store = await make()
    result = await proc.process(
        [inbound(0, ev("same", user="u1")), inbound(1, ev("same", user="u2"))]
    )
    again = await proc.process([inbound(2, ev("same", user="u2"))])
    await runner.stop()
    assert result.predicted == 2 and again.predicted == 0 and again.skipped_duplicates == 1
    assert sorted(p.user_id for p in store.applied) == ["u1", "u2"]


async def test_edge_of_range_dates_are_schema_violations_and_the_batch_goes_on():
    proc, runner, pub, _ = await make()
    doc = orjson.loads(ev("edge"))
    batch = [
        inbound(0, orjson.dumps({**doc, "created_at": "9999-12-31T23:59:59-01:00"})),
        inbound(1, orjson.dumps({**doc, "created_at": "0001-01-01T00:00:00+14:00"})),
        inbound(2, orjson.dumps({**doc, "created_at": "1900-01-01T00:00:00Z"})),
        inbound(3, ev("fine")),
    ]
    result = await proc.process(batch)
    await runner.stop()
    assert result.dead_lettered == {"schema_violation": 3} and result.predicted == 1


async def test_a_prediction_that_cannot_be_built_dead_letters_only_that_comment(monkeypatch):
    proc, runner, pub, store = await make()
    real = proc._prediction

    def flaky(event, *args):
        if event.comment_id == "b":
            raise OverflowError("cannot build")
        return real(event, *args)

    monkeypatch.setattr(proc, "_prediction", flaky)
    result = await proc.process([inbound(i, ev(c)) for i, c in enumerate("abc")])
    await runner.stop()
    assert result.predicted == 2 and result.dead_lettered == {"processing_failed": 1}
    (dead,) = [orjson.loads(m.value) for m in pub.sent if m.topic == "comments.dlq"]
    assert dead["error"]["details"] == [{"stage": "build", "exception": "OverflowError"}]
    assert {p.comment_id for p in store.applied} == {"a", "c"}


class RefusingPublisher(FakePublisher):
    """The broker refuses for good (MessageSizeTooLarge) the prediction of comment ``c`` and
    any dead letter over ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    async def send(self, message):
        from aiokafka.errors import MessageSizeTooLargeError

        doc = orjson.loads(message.value)
        if doc.get("comment_id") == "c" or len(message.value) > self.limit:
            raise MessageSizeTooLargeError("too large")
        return await super().send(message)


async def test_a_prediction_the_broker_refuses_becomes_a_dead_letter_without_payload():
    proc, runner, pub, store = await make(publisher=RefusingPublisher(limit=1200))
    result = await proc.process(
        [inbound(0, ev("a")), inbound(1, ev("c", "good " + "y" * 2000)), inbound(2, ev("b"))]
    )
    await runner.stop()
    assert result.predicted == 2 and result.dead_lettered == {"processing_failed": 1}
    preds = [orjson.loads(m.value) for m in pub.sent if m.topic == "comments.predictions"]
    (dead,) = [orjson.loads(m.value) for m in pub.sent if m.topic == "comments.dlq"]
    assert [p["comment_id"] for p in preds] == ["a", "b"]
    assert dead["error"]["details"] == [
        {"stage": "publish", "exception": "MessageSizeTooLargeError"}
    ]
    # the full dead letter (2 KB payload) was refused too: it went out without its payload
    assert dead["payload"] == "" and dead["payload_truncated"] is True
    assert dead["source"]["offset"] == 1
    assert {p.comment_id for p in store.applied} == {"a", "b"}
    assert store.dlq_seen == {"comments:0:1"}


async def test_redis_out_of_memory_and_read_only_answers_are_retried():
    class Store(FakeStore):
        def __init__(self):
            super().__init__()
            self.errors = [
                redis.exceptions.OutOfMemoryError("OOM command not allowed"),
                redis.exceptions.ReadOnlyError("READONLY You can't write against a replica"),
                redis.exceptions.BusyLoadingError("LOADING"),
            ]

        async def apply(self, predictions, dead_letters, *, now_ms):
            if self.errors:
                raise self.errors.pop(0)
            return await super().apply(predictions, dead_letters, now_ms=now_ms)

    store = Store()
    proc, runner, pub, _ = await make(store=store)
    result = await proc.process([inbound(0, ev("a"))])
    await runner.stop()
    assert result.predicted == 1 and store.errors == [] and proc.health.ready()


async def test_a_copy_in_the_next_batch_is_skipped_while_the_first_is_in_flight():
    proc, runner, pub, store = await make()
    first = await proc.prepare([inbound(0, ev("a"))])
    second = await proc.prepare([inbound(1, ev("a")), inbound(2, ev("b"))])  # before a finished
    r1 = await proc.finish(first)
    r2 = await proc.finish(second)
    third = await proc.process([inbound(3, ev("a"))])  # after: Redis knows it
    await runner.stop()
    assert (r1.predicted, r2.predicted, r2.skipped_duplicates) == (1, 1, 1)
    assert third.skipped_duplicates == 1
    assert sorted(orjson.loads(m.value)["comment_id"] for m in pub.sent) == ["a", "b"]
