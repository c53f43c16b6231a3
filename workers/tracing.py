"""One trace span per consumed message, and the trace context its output carries.

Whatever is installed, the output of a comment that came with a valid W3C ``traceparent``
carries the same trace id, a new span id and the known flags, and its ``tracestate``
(:mod:`workers.traceparent`). A comment without a valid one gets none: the worker does not start
traces on its own, because a root trace per message that no collector asked for is noise, and an
id nobody records cannot be looked up. With an OpenTelemetry SDK (below) it does, since the
deployer then collects them.

With the optional ``opentelemetry-api`` (``pip install 'commentflow[tracing]'``), each message
gets a ``process <topic>`` span (kind CONSUMER, the messaging attributes of the semantic
conventions, ``commentflow.outcome``), child of the incoming context. This module configures no
SDK and no exporter: the API is a no-op until the deployer installs and configures an SDK
(``opentelemetry-sdk``, ``opentelemetry-instrument`` ...); once one records, the output's
``traceparent`` names the SDK's span, so consumers link to a span that exists. The span runs from
the start of the message's batch until its output was published (or the batch was given up).

Tracing never fails a message: an error inside OpenTelemetry is logged once and the message goes
on with the plain header propagation.
"""

from __future__ import annotations

import logging
from typing import Any

from workers.headers import Header, first_value
from workers.messages import Inbound
from workers.traceparent import KNOWN_FLAGS, TraceParent, bound_tracestate, parse_traceparent

__all__ = ["MessageSpan", "MessageTracer", "otel_available"]

log = logging.getLogger("commentflow.tracing")

try:  # the optional dependency: the [tracing] extra
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - exercised by the tests with use_otel=False
    otel_context = None  # type: ignore[assignment]
    otel_trace = None  # type: ignore[assignment]

TRACER_NAME = "commentflow.worker"


def otel_available() -> bool:
    """Whether ``opentelemetry-api`` is importable."""
    return otel_trace is not None


class MessageSpan:
    """The trace of one message: the headers its output carries, and its span (if any)."""

    __slots__ = ("_span", "headers")

    def __init__(self, headers: tuple[Header, ...], span: Any = None) -> None:
        self.headers = headers  # traceparent (+ tracestate), or nothing
        self._span = span

    def end(self, outcome: str, error_code: str | None = None) -> None:
        """Close the span with what became of the message (``predicted``, ``dead_lettered``,
        ``refused``, ``abandoned``); safe to call twice, a no-op without a span."""
        span, self._span = self._span, None
        if span is None:
            return
        try:
            span.set_attribute("commentflow.outcome", outcome)
            if error_code is not None:
                span.set_attribute("commentflow.dead_letter.code", error_code)
                span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, error_code))
            span.end()
        except Exception:  # noqa: BLE001 - tracing never fails a message
            _warn_once()


NO_SPAN = MessageSpan(())


class MessageTracer:
    """Starts a :class:`MessageSpan` per message.

    ``use_otel``: ``None`` uses OpenTelemetry when it is importable; ``False`` never does (the
    plain propagation only). ``tracer``: an OpenTelemetry tracer to use instead of the global
    one (tests).
    """

    def __init__(self, *, use_otel: bool | None = None, tracer: Any = None) -> None:
        enabled = otel_available() if use_otel is None else use_otel and otel_available()
        self._tracer = tracer
        self._enabled = bool(enabled) or tracer is not None

    @property
    def uses_otel(self) -> bool:
        return self._enabled

    def start(self, message: Inbound, *, start_ns: int | None = None) -> MessageSpan:
        """The span of ``message``, started at ``start_ns`` (epoch ns; now when ``None``)."""
        incoming = parse_traceparent(first_value(message.headers, "traceparent"))
        state = bound_tracestate(first_value(message.headers, "tracestate")) if incoming else None
        outgoing = incoming.child() if incoming is not None else None
        span = None
        if self._enabled:
            try:
                span, outgoing, state = self._otel_span(message, incoming, state, start_ns)
            except Exception:  # noqa: BLE001 - tracing never fails a message
                _warn_once()
        if outgoing is None:
            return MessageSpan((), span) if span is not None else NO_SPAN
        headers: tuple[Header, ...] = (("traceparent", outgoing.header()),)
        if state is not None:
            headers += (("tracestate", state),)
        return MessageSpan(headers, span)

    def _otel_span(
        self,
        message: Inbound,
        incoming: TraceParent | None,
        state: bytes | None,
        start_ns: int | None,
    ) -> tuple[Any, TraceParent | None, bytes | None]:
        trace = otel_trace
        if self._tracer is None:  # a proxy: follows a provider the deployer sets up later
            self._tracer = trace.get_tracer(TRACER_NAME)
        tracer = self._tracer
        if incoming is not None:
            parent = trace.SpanContext(
                int(incoming.trace_id, 16),
                int(incoming.parent_id, 16),
                is_remote=True,
                # no trace_state: OpenTelemetry would log a warning per message for a malformed
                # one; the output's tracestate is the input's anyway
                trace_flags=trace.TraceFlags(incoming.flags & 0x01),
            )
            ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        else:
            ctx = otel_context.Context()  # a root: never an ambient span of the event loop
        span = tracer.start_span(
            f"process {message.topic}",
            context=ctx,
            kind=trace.SpanKind.CONSUMER,
            start_time=start_ns,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": message.topic,
                "messaging.destination.partition.id": str(message.partition),
                "messaging.kafka.offset": message.offset,
            },
        )
        sc = span.get_span_context()
        span_id = f"{sc.span_id:016x}"
        if not sc.is_valid or (incoming is not None and span_id == incoming.parent_id):
            # the API without an SDK hands back the parent's context: keep our own child
            outgoing = incoming.child() if incoming is not None else None
            return span, outgoing, state
        random_flag = incoming.flags & 0x02 if incoming is not None else 0
        outgoing = TraceParent(
            f"{sc.trace_id:032x}", span_id, (int(sc.trace_flags) & 0x01 | random_flag) & KNOWN_FLAGS
        )
        if incoming is None:  # the SDK's own root: its tracestate, if it made one
            header = sc.trace_state.to_header() if sc.trace_state else ""
            state = bound_tracestate(header.encode("ascii")) if header else None
        return span, outgoing, state


_warned = False


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("OpenTelemetry raised; messages go on without spans", exc_info=True)
