"""Headers, trace context and metadata through the BatchProcessor, with fakes."""

from __future__ import annotations

import orjson
from support.fakes import FakeClassifier, FakePublisher, FakeStore

from schemas.events import MAX_METADATA_BYTES, DeadLetter, Prediction
from workers.config import ProcessorConfig
from workers.inference import InferenceRunner
from workers.messages import Inbound
from workers.processor import BatchProcessor
from workers.traceparent import parse_traceparent
from workers.tracing import MessageTracer
from workers.validation import metadata_of

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01".encode()
HEADERS = (
    ("traceparent", TRACEPARENT),
    ("correlation-id", b"corr-7"),
    ("authorization", b"Bearer secret"),
    ("content-type", b"text/plain"),
)
METADATA = {
    "tenant": "acme",
    "nested": {"ids": [1, 2.5, None, True]},
    "unicode": "\u00e9\U0001f600",
}


def event(cid: str, **extra) -> bytes:
    return orjson.dumps(
        {
            "comment_id": cid,
            "user_id": "u1",
            "text": "good stuff",
            "created_at": "2026-11-28T10:00:00Z",
            **extra,
        }
    )


async def run(batch, *, config=None, publisher=None, tracer=None):
    runner = InferenceRunner(FakeClassifier)
    await runner.start()
    publisher = publisher or FakePublisher()
    proc = BatchProcessor(
        config or ProcessorConfig(retry_initial_s=0.001, retry_max_s=0.01),
        runner,
        publisher,
        FakeStore(),
        tracer=tracer or MessageTracer(use_otel=False),
    )
    try:
        await proc.process(batch)
    finally:
        await runner.stop()
    preds = [m for m in publisher.sent if m.topic == "comments.predictions"]
    dead = [m for m in publisher.sent if m.topic == "comments.dlq"]
    return preds, dead


def check_headers(headers, schema: str) -> None:
    names = [n for n, _ in headers]
    h = dict(headers)
    assert names[:2] == ["content-type", "commentflow-schema"]
    assert h["content-type"] == b"application/json"  # the input's is never copied
    assert h["commentflow-schema"] == schema.encode()
    out = parse_traceparent(h["traceparent"])
    assert out is not None and out.trace_id == TRACE and out.parent_id != "00f067aa0ba902b7"
    assert h["correlation-id"] == b"corr-7"
    assert "authorization" not in h
    assert len(names) == len(set(names))


async def test_a_prediction_carries_the_headers_and_the_metadata():
    (pred,), dead = await run(
        [Inbound("comments", 0, 0, b"u1", event("a", metadata=METADATA), headers=HEADERS)]
    )
    assert dead == []
    check_headers(pred.headers, "commentflow.prediction/1")
    doc = orjson.loads(pred.value)
    assert doc["metadata"] == METADATA
    Prediction.model_validate(doc)


async def test_without_metadata_the_field_is_absent_and_without_headers_only_ours_are_set():
    (pred,), _ = await run([Inbound("comments", 0, 0, b"u1", event("a"))])
    assert "metadata" not in orjson.loads(pred.value)
    assert pred.headers == (
        ("content-type", b"application/json"),
        ("commentflow-schema", b"commentflow.prediction/1"),
    )


async def test_a_dead_letter_carries_the_headers_and_the_metadata_it_could_read():
    bad = [
        Inbound(
            "comments",
            0,
            1,
            b"u1",
            event("b", created_at="nope", metadata=METADATA),
            headers=HEADERS,
        ),
        Inbound("comments", 0, 2, b"u1", b"{not json", headers=HEADERS),
    ]
    _, dead = await run(bad)
    by_offset = {orjson.loads(d.value)["source"]["offset"]: d for d in dead}
    for letter in dead:
        check_headers(letter.headers, "commentflow.dead_letter/1")
        DeadLetter.model_validate(orjson.loads(letter.value))
    violation = orjson.loads(by_offset[1].value)
    assert violation["error"]["code"] == "schema_violation"
    assert violation["metadata"] == METADATA
    assert dict(by_offset[1].headers)["commentflow-error"] == b"schema_violation"
    assert "metadata" not in orjson.loads(by_offset[2].value)
    assert dict(by_offset[2].headers)["commentflow-error"] == b"invalid_json"


async def test_metadata_over_the_bound_is_too_large_and_the_dead_letter_leaves_it_out():
    big = {"blob": "x" * MAX_METADATA_BYTES}
    preds, (letter,) = await run([Inbound("comments", 0, 0, b"u1", event("a", metadata=big))])
    assert preds == []
    doc = orjson.loads(letter.value)
    assert doc["error"]["code"] == "too_large"
    assert doc["error"]["details"][0]["field"] == "metadata"
    assert "metadata" not in doc


async def test_metadata_that_is_not_an_object_is_a_schema_violation():
    _, (letter,) = await run([Inbound("comments", 0, 0, b"u1", event("a", metadata=[1, 2]))])
    assert orjson.loads(letter.value)["error"]["code"] == "schema_violation"


def test_metadata_of_never_raises():
    assert metadata_of(None, max_bytes=100) is None
    assert metadata_of(b"\xff", max_bytes=100) is None
    assert metadata_of(b"[]", max_bytes=100) is None
    assert metadata_of(b'{"metadata": 3}', max_bytes=100) is None
    assert metadata_of(b'{"metadata": {"a": 1}}', max_bytes=10) is None  # over max_bytes
    assert metadata_of(b'{"metadata": {"a": 1}}', max_bytes=100) == {"a": 1}
    # an integer beyond 64 bits cannot be passed through untouched: left out, never rounded
    assert (
        metadata_of(b'{"metadata": {"a": 123456789012345678901234567890}}', max_bytes=100) is None
    )
    assert metadata_of(b'{"metadata": {"a": 1}, "x": NaN}', max_bytes=100) is None


async def test_copied_headers_follow_the_configured_allow_list_and_bounds():
    config = ProcessorConfig(
        retry_initial_s=0.001, retry_max_s=0.01, headers_allow="x-tenant", headers_max_count=1
    )
    headers = (("x-tenant", b"t"), ("x-tenant-2", b"no"), ("correlation-id", b"c"))
    (pred,), _ = await run(
        [Inbound("comments", 0, 0, b"u1", event("a"), headers=headers)], config=config
    )
    assert [n for n, _ in pred.headers] == ["content-type", "commentflow-schema", "x-tenant"]


class _Refusing(FakePublisher):
    """Refuses every dead letter that still carries a payload (too large)."""

    async def send(self, message):
        from aiokafka.errors import MessageSizeTooLargeError

        if message.topic == "comments.dlq" and orjson.loads(message.value)["payload"]:
            raise MessageSizeTooLargeError("too large")
        return await super().send(message)


async def test_the_bare_resend_of_a_refused_dead_letter_keeps_its_headers():
    _, (letter,) = await run(
        [Inbound("comments", 0, 0, b"u1", b"{bad", headers=HEADERS)], publisher=_Refusing()
    )
    assert orjson.loads(letter.value)["payload"] == ""
    check_headers(letter.headers, "commentflow.dead_letter/1")


async def test_a_poison_dead_letter_keeps_the_headers_and_never_reads_the_metadata():
    runner = InferenceRunner(FakeClassifier)
    await runner.start()
    publisher = FakePublisher()
    proc = BatchProcessor(
        ProcessorConfig(retry_initial_s=0.001, retry_max_s=0.01),
        runner,
        publisher,
        FakeStore(),
        tracer=MessageTracer(use_otel=False),
    )
    poison = Inbound("comments", 0, 5, b"u1", event("p", metadata=METADATA), headers=HEADERS)
    try:
        await proc.finish(await proc.prepare([], poison=[(poison, 3)]))
    finally:
        await runner.stop()
    (letter,) = publisher.sent
    doc = orjson.loads(letter.value)
    assert doc["error"]["code"] == "poison" and "metadata" not in doc
    check_headers(letter.headers, "commentflow.dead_letter/1")
