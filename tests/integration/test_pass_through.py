"""Headers, trace context and metadata through a real worker on the real broker (issue 12).

A comment sent with ``traceparent``, ``correlation-id`` and ``authorization`` headers and a
``metadata`` object comes out with the worker's headers, the same trace (a new span), the
correlation id and the metadata, and without the credential; a malformed one and one that breaks
the contract come out on the dead-letter topic with the same copied headers (the second with its
metadata). A comment with 200 headers, one of them 100 KB, is predicted with 16 of them copied.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.stream import read_records, send

from model.testing import make_tiny_model_dir
from schemas.events import DeadLetter, Prediction
from workers.traceparent import parse_traceparent

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
HEADERS = [
    ("traceparent", f"00-{TRACE}-{PARENT}-01".encode()),
    ("tracestate", b"congo=t61rcWkgMzE"),
    ("correlation-id", b"corr-42"),
    ("authorization", b"Bearer never-copied"),
    ("x-cf-tenant", b"acme"),
]
METADATA = {"tenant": "acme", "request": {"id": "r-1", "tags": ["a", "b"], "n": 3}}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model") / "model")


def check(headers: list[tuple[str, bytes]], schema: str) -> dict[str, bytes]:
    h = dict(headers)
    assert len(h) == len(headers), headers  # no name twice
    assert h["content-type"] == b"application/json"
    assert h["commentflow-schema"] == schema.encode()
    out = parse_traceparent(h["traceparent"])
    assert out is not None and out.trace_id == TRACE and out.parent_id != PARENT
    assert out.flags == 1
    assert h["tracestate"] == b"congo=t61rcWkgMzE"
    assert h["correlation-id"] == b"corr-42" and h["x-cf-tenant"] == b"acme"
    assert "authorization" not in {n.lower() for n in h}
    return h


async def test_headers_and_metadata_reach_the_prediction_and_the_dead_letter(
    topics, make_settings, start_worker, tiny_model
):
    settings = make_settings(tiny_model, media_enabled=False, batch_max=8)
    event = {
        "comment_id": "pt-1",
        "user_id": "u-pt",
        "text": "what a lovely day",
        "created_at": "2026-11-28T10:00:00Z",
        "metadata": METADATA,
    }
    await send(settings.kafka_bootstrap, settings.input_topic, [event], headers=HEADERS)
    await send(
        settings.kafka_bootstrap,
        settings.input_topic,
        [
            (b'{"comment_id": "pt-2", "metadata": {"tenant": "acme"}', b"u-pt"),  # not JSON
            {k: v for k, v in event.items() if k != "created_at"} | {"comment_id": "pt-3"},
        ],
        headers=HEADERS,
    )
    many = [(f"x-cf-h{i}", b"v" * 100) for i in range(200)]
    junk = [("x-cf-big", b"b" * 100_000), ("x-cf-\u00e9", b"e"), ("cookie", b"sid=1")]
    await send(
        settings.kafka_bootstrap,
        settings.input_topic,
        [{**event, "comment_id": "pt-4"}],
        headers=junk + many + [("traceparent", b"00-not-a-trace-01")],
    )
    start_worker(settings)

    preds = await read_records(settings.kafka_bootstrap, settings.predictions_topic, want=2)
    by_id = {doc["comment_id"]: (doc, headers) for doc, headers in preds}
    # 200 headers, one of 100 KB, a malformed traceparent: predicted, 16 copied, no trace
    crowded = dict(by_id["pt-4"][1])
    assert "traceparent" not in crowded and "cookie" not in crowded
    assert [n for n in crowded if n.startswith("x-cf-")] == [f"x-cf-h{i}" for i in range(16)]
    pred, pred_headers = by_id["pt-1"]
    Prediction.model_validate(pred)
    assert pred["comment_id"] == "pt-1" and pred["metadata"] == METADATA
    check(pred_headers, "commentflow.prediction/1")

    dead = await read_records(settings.kafka_bootstrap, settings.dlq_topic, want=2)
    by_code = {doc["error"]["code"]: (doc, headers) for doc, headers in dead}
    assert set(by_code) == {"invalid_json", "schema_violation"}
    for code, (doc, headers) in by_code.items():
        DeadLetter.model_validate(doc)
        h = check(headers, "commentflow.dead_letter/1")
        assert h["commentflow-error"] == code.encode()
        # each output is its own span in the input's trace
        assert h["traceparent"] != dict(pred_headers)["traceparent"]
    assert "metadata" not in by_code["invalid_json"][0]  # the value never parsed
    assert by_code["schema_violation"][0]["metadata"] == METADATA  # parsed far enough
