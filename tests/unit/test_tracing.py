"""W3C traceparent parsing and propagation, with and without OpenTelemetry (workers.tracing)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.messages import Inbound
from workers.traceparent import (
    MAX_TRACESTATE_BYTES,
    TraceParent,
    bound_tracestate,
    parse_traceparent,
)
from workers.tracing import MessageTracer, otel_available

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"


def msg(*headers: tuple[str, bytes | None]) -> Inbound:
    return Inbound("comments", 2, 17, b"u", b"{}", headers=tuple(headers))


def test_a_valid_traceparent_is_parsed():
    assert parse_traceparent(VALID) == TraceParent(TRACE, PARENT, 1)
    assert parse_traceparent(VALID.encode()) == TraceParent(TRACE, PARENT, 1)
    assert parse_traceparent(VALID.replace("-01", "-00")).sampled is False


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        VALID.upper(),  # the spec's hex is lowercase
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        VALID + "-extra",  # version 00 is exactly 55 characters
        VALID[:-1],
        f"00-{TRACE[:-1]}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-1",
        f"00_{TRACE}_{PARENT}_01",
        f"0g-{TRACE}-{PARENT}-01",
        b"\xff\xfe" + VALID.encode(),
        VALID.encode("utf-16"),
    ],
)
def test_a_malformed_traceparent_is_dropped(value):
    assert parse_traceparent(value) is None


def test_a_future_version_is_read_as_00_only_when_it_appends_after_a_dash():
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-the-future-holds") == TraceParent(
        TRACE, PARENT, 1
    )
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01") == TraceParent(TRACE, PARENT, 1)
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01x") is None


def test_the_child_keeps_the_trace_and_known_flags_with_a_new_span():
    child = TraceParent(TRACE, PARENT, 0xFF).child()
    assert child.trace_id == TRACE and child.parent_id != PARENT
    assert len(child.parent_id) == 16 and int(child.parent_id, 16) != 0
    assert child.flags == 0x03  # sampled and random-trace-id; unknown flags are not passed on
    assert child.header() == f"00-{TRACE}-{child.parent_id}-03".encode()
    assert parse_traceparent(child.header()) == child


@given(st.binary(max_size=80) | st.text(max_size=80))
def test_any_value_parses_or_is_dropped_never_raises(value):
    parsed = parse_traceparent(value)
    if parsed is not None:
        assert parse_traceparent(parsed.child().header()) is not None


def test_tracestate_is_bounded_by_whole_members():
    assert bound_tracestate(b"a=1,b=2") == b"a=1,b=2"
    assert bound_tracestate(None) is None and bound_tracestate(b"") is None
    assert bound_tracestate(b"a=1,\x00bad") is None  # outside the spec's characters
    long = b",".join(b"k%d=%s" % (i, b"v" * 60) for i in range(20))
    kept = bound_tracestate(long)
    assert kept is not None and len(kept) <= MAX_TRACESTATE_BYTES
    assert long.startswith(kept) and long[len(kept) : len(kept) + 1] == b","
    many = b",".join(b"k%d=1" % i for i in range(40))
    assert bound_tracestate(many).count(b",") == 31  # at most 32 members


@pytest.fixture(params=["plain", "otel-api"])
def tracer(request) -> MessageTracer:
    """The two paths the worker can take: no OpenTelemetry, and the API without an SDK."""
    if request.param == "otel-api":
        assert otel_available()  # opentelemetry-api is a dev dependency: its absence is a failure
        return MessageTracer(use_otel=True)
    return MessageTracer(use_otel=False)


def test_the_output_continues_the_input_trace(tracer):
    span = tracer.start(msg(("traceparent", VALID.encode()), ("tracestate", b"v=1,w=2")))
    headers = dict(span.headers)
    out = parse_traceparent(headers["traceparent"])
    assert out is not None and out.trace_id == TRACE and out.parent_id != PARENT
    assert out.flags == 1
    assert headers["tracestate"] == b"v=1,w=2"
    span.end("predicted")
    span.end("predicted")  # twice is harmless


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (("tracestate", b"v=1"),),  # tracestate alone means nothing
        (("traceparent", f"ff-{TRACE}-{PARENT}-01".encode()), ("tracestate", b"v=1")),
        (("traceparent", b"not one"),),
        (("traceparent", None),),
        (("traceparent", VALID.encode()), ("traceparent", VALID.encode())),  # ambiguous
    ],
)
def test_no_trace_is_invented_without_a_valid_input_trace(tracer, headers):
    span = tracer.start(msg(*headers))
    assert span.headers == ()
    span.end("dead_lettered", "schema_violation")


class _FakeSdkTracer:
    """What an installed SDK does: a new span id in the parent's trace (or a new trace)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, object, dict]] = []

    def start_span(self, name, context=None, kind=None, start_time=None, attributes=None):
        from opentelemetry import trace

        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else 0x1234
        self.started.append((name, parent, dict(attributes or {})))
        return trace.NonRecordingSpan(
            trace.SpanContext(trace_id, 0xABC, is_remote=False, trace_flags=trace.TraceFlags(1))
        )


def test_with_an_sdk_the_output_names_the_sdk_span_and_its_parent_is_the_input():
    fake = _FakeSdkTracer()
    tracer = MessageTracer(tracer=fake)
    span = tracer.start(msg(("traceparent", VALID.encode()), ("tracestate", b"v=1")))
    assert dict(span.headers)["traceparent"] == f"00-{TRACE}-0000000000000abc-01".encode()
    assert dict(span.headers)["tracestate"] == b"v=1"
    ((name, parent, attributes),) = fake.started
    assert name == "process comments"
    assert f"{parent.trace_id:032x}" == TRACE and f"{parent.span_id:016x}" == PARENT
    assert parent.is_remote
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.destination.partition.id"] == "2"
    assert attributes["messaging.kafka.offset"] == 17
    span.end("predicted")
    # an SDK that records starts the trace when the input has none: consumers can look it up
    root = tracer.start(msg())
    assert dict(root.headers)["traceparent"] == b"00-" + b"%032x" % 0x1234 + b"-0000000000000abc-01"


def test_an_opentelemetry_failure_never_fails_the_message():

    class Broken:
        def start_span(self, *args, **kwargs):
            raise RuntimeError("sdk bug")

    span = MessageTracer(tracer=Broken()).start(msg(("traceparent", VALID.encode())))
    assert parse_traceparent(dict(span.headers)["traceparent"]).trace_id == TRACE


def test_with_the_real_sdk_spans_are_recorded_with_the_input_as_parent():
    """``opentelemetry-sdk`` (the deployer's setup) is a dev dependency, so this always runs."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = MessageTracer(tracer=provider.get_tracer("test"))
    span = tracer.start(msg(("traceparent", VALID.encode())))
    span.end("dead_lettered", "invalid_json")
    (recorded,) = exporter.get_finished_spans()
    assert f"{recorded.parent.span_id:016x}" == PARENT
    assert f"{recorded.context.trace_id:032x}" == TRACE
    out = parse_traceparent(dict(span.headers)["traceparent"])
    assert out.parent_id == f"{recorded.context.span_id:016x}"
    assert recorded.attributes["commentflow.dead_letter.code"] == "invalid_json"
    assert recorded.status.status_code.name == "ERROR"


def test_without_opentelemetry_installed_the_trace_still_propagates():
    """A fresh interpreter where ``import opentelemetry`` fails, as without the extra."""
    import subprocess
    import sys
    from pathlib import Path

    headers = (("traceparent", VALID.encode()),)
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from workers.messages import Inbound\n"
        "from workers.tracing import MessageTracer, otel_available\n"
        "assert not otel_available()\n"
        "t = MessageTracer()\n"
        f"s = t.start(Inbound('c', 0, 0, None, b'', headers={headers!r}))\n"
        "s.end('predicted')\n"
        "print(dict(s.headers)['traceparent'].decode())\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    out = parse_traceparent(result.stdout.strip())
    assert out is not None and out.trace_id == TRACE and out.parent_id != PARENT
