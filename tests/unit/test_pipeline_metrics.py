"""Prometheus metrics of the batch processor, the lag tracker and the readiness checks (fakes)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streamer.logs import JsonFormatter, logging_config
from workers.health import Readiness
from workers.messages import Inbound
from workers.metrics import LagTracker, PipelineMetrics
from workers.processor import BatchProcessor

# the fakes of the processor's own tests, loaded by path (tests are not a package)
_spec = importlib.util.spec_from_file_location(
    "processor_fakes", Path(__file__).with_name("test_processor.py")
)
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)


def samples(metrics: PipelineMetrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def make(metrics: PipelineMetrics, store=None, publisher=None):
    runner = fakes.InferenceRunner(lambda: fakes.FakeClassifier())
    await runner.start()
    proc = BatchProcessor(
        fakes.settings(),
        runner,
        publisher or fakes.FakePublisher(),
        store or fakes.FakeStore(),
        metrics=metrics,
    )
    return proc, runner


async def test_outcomes_labels_and_codes_are_counted():
    m = PipelineMetrics()
    m.prime(("negative", "neutral", "positive"), ("invalid_json", "schema_violation"))
    proc, runner = await make(m)
    ev = fakes.ev
    batch = [
        Inbound("comments", 0, 0, b"u", ev("a"), timestamp_ms=1_700_000_000_000),
        Inbound("comments", 0, 1, b"u", b"{oops"),
        Inbound("comments", 0, 2, b"u", ev("b", "bad stuff")),
        Inbound("comments", 0, 3, b"u", ev("a")),  # repeat inside the batch
        Inbound("comments", 0, 4, b"u", b"[1]"),
    ]
    await proc.process(batch)
    await proc.process(batch)  # replay: all duplicates
    await runner.stop()
    s = samples(m)
    assert s[("commentflow_events_total", (("outcome", "predicted"),))] == 2
    assert s[("commentflow_events_total", (("outcome", "dead_lettered"),))] == 2
    assert s[("commentflow_events_total", (("outcome", "duplicate"),))] == 1 + 5
    assert s[("commentflow_dead_letters_total", (("code", "invalid_json"),))] == 1
    assert s[("commentflow_dead_letters_total", (("code", "schema_violation"),))] == 1
    assert s[("commentflow_predictions_total", (("label", "positive"),))] == 1
    assert s[("commentflow_predictions_total", (("label", "negative"),))] == 1
    assert s[("commentflow_predictions_total", (("label", "neutral"),))] == 0
    assert s[("commentflow_prediction_modalities_total", (("modality", "text"),))] == 2
    assert s[("commentflow_batches_total", ())] == 2
    assert s[("commentflow_batch_size_events_count", ())] == 2
    assert s[("commentflow_batch_size_events_sum", ())] == 10
    assert s[("commentflow_inference_seconds_count", ())] == 1  # the replay classifies nothing
    assert s[("commentflow_batch_tokens_sum", ())] > 0
    assert s[("commentflow_end_to_end_latency_seconds_count", (("since", "created_at"),))] == 2
    assert s[("commentflow_end_to_end_latency_seconds_count", (("since", "broker"),))] == 1
    # nothing personal in any label
    text = m.exposition().decode()
    assert "u1" not in text and "comment_id" not in text


async def test_redis_and_producer_errors_are_counted():
    m = PipelineMetrics()
    proc, runner = await make(
        m, store=fakes.FakeStore(fail_first=2), publisher=fakes.FakePublisher(fail_first=3)
    )
    await proc.process([fakes.inbound(i, fakes.ev(f"c{i}")) for i in range(3)])
    await runner.stop()
    s = samples(m)
    assert s[("commentflow_redis_errors_total", (("operation", "lookup"),))] == 2
    assert s[("commentflow_producer_errors_total", ())] == 3
    assert s[("commentflow_events_total", (("outcome", "predicted"),))] == 3


def test_two_processors_in_one_process_count_separately():
    a, b = PipelineMetrics(), PipelineMetrics()  # no "Duplicated timeseries" error
    a.events.labels("predicted").inc(3)
    assert samples(b)[("commentflow_events_total", (("outcome", "predicted"),))] == 0


def test_lag_from_highwater_minus_processed_position():
    m = PipelineMetrics()
    lag = LagTracker(m.consumer_lag)
    t0, t1 = ("comments", 0), ("comments", 1)
    # nothing processed yet: the fetch position stands in; no high-water mark yet: no series
    assert lag.update({t0: 100, t1: None}, {t0: 40, t1: 0}) == {t0: 60}
    for offset in range(40, 90):
        lag.processed("comments", 0, offset)
    lag.processed("comments", 0, 10)  # an older offset never moves it back
    assert lag.update({t0: 100, t1: 7}, {t0: 100, t1: 2}) == {t0: 10, t1: 5}
    p0 = ("commentflow_consumer_lag_messages", (("partition", "0"), ("topic", "comments")))
    assert samples(m)[p0] == 10
    # partition 0 revoked: its series goes away
    assert lag.update({t1: 9}, {t1: 9}) == {t1: 0}
    assert p0 not in samples(m)


async def test_readiness_reports_each_check():
    async def ok():
        return True

    async def boom():
        raise ConnectionError("down")

    async def hangs():
        await asyncio.sleep(60)

    report = await Readiness({"model": ok, "redis": boom, "broker": hangs}, timeout_s=0.05).report()
    assert not report.ready
    assert report.checks == {"model": "ok", "redis": "ConnectionError", "broker": "timeout"}
    assert (await Readiness({"model": ok}).report()).to_json()["status"] == "ready"


def test_json_log_lines_carry_no_extras_but_allowed_ones():
    record = logging.LogRecord("commentflow.x", logging.WARNING, __file__, 1, "n=%d", (3,), None)
    record.text = "secret comment text"  # an extra that is not allowed
    record.partition = 2
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "n=3" and doc["level"] == "warning" and doc["partition"] == 2
    assert "secret" not in json.dumps(doc)
    assert logging_config("info", "text") is None
    assert logging_config("info", "json")["root"]["level"] == "INFO"
