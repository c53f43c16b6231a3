"""A real worker's /metrics, /livez and /readyz after a real run (broker, worker process, Redis).

The counters must match what was sent: predicted, dead-lettered by code, predictions by label
(from the predictions read back), no duplicates; lag per partition drains to 0; readiness fails
while Redis is down and liveness does not.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.stream import pairs_of, send, wait_predictions

from commentflow.produce import synthetic_events
from commentflow.stack import free_port
from model.testing import make_tiny_model_dir

BAD = [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe binary", "invalid_encoding"),
    (b"[1, 2]", "schema_violation"),
    (b'{"comment_id": "x", "user_id": "u", "text": "t"}', "schema_violation"),
    (
        orjson.dumps(
            {
                "comment_id": "s",
                "user_id": "u",
                "text": "t",
                "created_at": "2026-11-28T10:00:00Z",
                "schema": "commentflow.comment/9",
            }
        ),
        "unsupported_schema",
    ),
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model-obs") / "model")


def parse(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = collections.defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.text()


async def wait_for(session, url, check, worker, timeout_s=60.0):
    """GET ``url`` until ``check(status, body)`` holds; returns the last answer."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        assert worker.alive(), worker.log_tail()
        try:
            last = await get(session, url)
            if check(*last):
                return last
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)
    return last


async def test_metrics_match_what_was_sent_and_health_endpoints(
    stack, topics, make_settings, tiny_model, redis_client, tmp_path, start_worker
):
    port = free_port()
    settings = make_settings(
        tiny_model, batch_max=16, web_enabled=True, web_port=port, log_format="json"
    )
    events = list(synthetic_events(240, users=30, seed=21, prefix="obs"))
    messages = pairs_of(events) + [(v, b"bad") for v, _ in BAD]
    base = f"http://127.0.0.1:{port}"
    worker = start_worker(settings)
    try:
        async with aiohttp.ClientSession() as session:
            # alive before anything else is
            status, _ = await wait_for(session, f"{base}/livez", lambda s, b: s == 200, worker)
            assert status == 200
            await send(settings.kafka_bootstrap, settings.input_topic, messages)
            docs = await wait_predictions(settings, len(events), worker=worker, timeout_s=120)
            assert len(docs) == len(events), worker.log_tail()
            labels = collections.Counter(d["label"] for d in docs)
            codes = collections.Counter(code for _, code in BAD)

            def complete(status: int, body: str) -> bool:
                m = parse(body)
                done = m["commentflow_events_total"].get((("outcome", "dead_lettered"),), 0)
                lag = m.get("commentflow_consumer_lag_messages", {})
                return done == len(BAD) and len(lag) == 4 and sum(lag.values()) == 0

            status, body = await wait_for(session, f"{base}/metrics", complete, worker)
            assert status == 200, body
            m = parse(body)
            assert m["commentflow_events_total"] == {
                (("outcome", "predicted"),): len(events),
                (("outcome", "dead_lettered"),): len(BAD),
                (("outcome", "duplicate"),): 0,
            }
            dead = {k[0][1]: v for k, v in m["commentflow_dead_letters_total"].items() if v}
            assert dead == dict(codes)
            by_label = {k[0][1]: v for k, v in m["commentflow_predictions_total"].items()}
            assert by_label == {lb: labels.get(lb, 0) for lb in ("negative", "neutral", "positive")}
            assert m["commentflow_batch_size_events_sum"][()] == len(messages)
            assert m["commentflow_inference_seconds_count"][()] >= len(events) / 16
            e2e = m["commentflow_end_to_end_latency_seconds_count"]
            assert e2e[(("since", "broker"),)] == e2e[(("since", "created_at"),)] == len(events)
            assert m["commentflow_model_loaded"][()] == 1
            lag = m["commentflow_consumer_lag_messages"]
            assert {dict(k)["partition"] for k in lag} == {"0", "1", "2", "3"}
            assert all(dict(k)["topic"] == settings.input_topic for k in lag)
            # no user id anywhere in the exposition
            assert not any(e["user_id"] in body for e in events)

            status, body = await get(session, f"{base}/readyz")
            assert status == 200, body
            assert orjson.loads(body)["checks"] == {
                "model": "ok",
                "redis": "ok",
                "broker": "ok",
                "pipeline": "ok",
            }

            await stack.kill_redis()
            try:
                status, body = await wait_for(
                    session, f"{base}/readyz", lambda s, b: s == 503, worker, timeout_s=30
                )
                assert status == 503, body
                checks = orjson.loads(body)["checks"]
                assert checks["redis"] != "ok" and checks["model"] == checks["broker"] == "ok"
                assert (await get(session, f"{base}/livez"))[0] == 200
            finally:
                await stack.start_redis()
            status, _ = await wait_for(session, f"{base}/readyz", lambda s, b: s == 200, worker)
            assert status == 200
    finally:
        worker.stop()
    # structured logs: one JSON object per line, no comment text or user id in any
    log = (tmp_path / "worker.log").read_text()
    lines = [line for line in log.splitlines() if line.strip()]
    docs = [orjson.loads(line) for line in lines if line.startswith("{")]
    assert docs and len(docs) >= 0.9 * len(lines), log[-2000:]
    assert {"ts", "level", "logger", "message"} <= docs[0].keys()
    assert any(d["logger"] == "commentflow.inference" for d in docs)
    assert not any(e["user_id"] in log or e["text"] in log for e in events)
