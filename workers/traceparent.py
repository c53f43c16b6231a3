"""W3C Trace Context (``traceparent``, ``tracestate``): parse what came in, write the child.

Why here and not only through OpenTelemetry: the trace must cross the worker whether or not the
optional ``opentelemetry-api`` is installed, so the header format (W3C Trace Context, level 2,
https://www.w3.org/TR/trace-context-2/) is implemented in these few lines and
:mod:`workers.tracing` uses OpenTelemetry only for spans.

Rules (the spec's, for a vendor that does not understand a future version):

- ``traceparent`` is ``version-traceid-parentid-flags`` in lowercase hex (2-32-16-2). Version
  ``ff`` is invalid; version ``00`` is exactly 55 characters; a higher version may be longer only
  after a ``-`` and is read as version ``00``. An all-zero trace id or parent id is invalid.
- What is invalid is dropped (never repaired, never replaced); ``tracestate`` is then ignored too.
- The child keeps the trace id and the flags we understand (sampled, random trace id), gets a new
  parent id, and is always written as version ``00``.
- ``tracestate`` is passed on as it came, bounded to :data:`MAX_TRACESTATE_BYTES` and
  :data:`MAX_TRACESTATE_MEMBERS` by dropping whole list members from the right.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

__all__ = [
    "MAX_TRACESTATE_BYTES",
    "MAX_TRACESTATE_MEMBERS",
    "TraceParent",
    "bound_tracestate",
    "parse_traceparent",
]

#: The spec asks vendors to propagate at least this much; we propagate at most this much.
MAX_TRACESTATE_BYTES = 512
MAX_TRACESTATE_MEMBERS = 32
#: The flags this worker understands and propagates: sampled (01) and random trace id (02).
KNOWN_FLAGS = 0x03

_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_FIELDS = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@dataclass(frozen=True, slots=True)
class TraceParent:
    """One parsed ``traceparent``: the trace, the calling span, and the trace flags."""

    trace_id: str  # 32 lowercase hex, not all zero
    parent_id: str  # 16 lowercase hex, not all zero
    flags: int  # 0..255; only KNOWN_FLAGS are propagated

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    def child(self, span_id: str | None = None) -> TraceParent:
        """The same trace, a new span (``span_id``, or a random one), the known flags kept."""
        return TraceParent(self.trace_id, span_id or new_span_id(), self.flags & KNOWN_FLAGS)

    def header(self) -> bytes:
        """The version-00 header value."""
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags:02x}".encode("ascii")


def new_span_id() -> str:
    """A random, non-zero 8-byte span id (not a secret: ``random`` is enough)."""
    while True:
        value = random.getrandbits(64)
        if value:
            return f"{value:016x}"


def parse_traceparent(value: bytes | str | None) -> TraceParent | None:
    """The ``traceparent`` in ``value``, or ``None`` when it is absent or invalid."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _FIELDS.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff":
        return None
    if version == "00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55] != "-":  # a future version may only append "-..."
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16))


def bound_tracestate(value: bytes | None) -> bytes | None:
    """``value`` with at most the leading members that fit the bounds; ``None`` if none does.

    Members are kept as they came (opaque to us): the list is cut at commas, whole members only.
    """
    if not value or len(value) > 8 * MAX_TRACESTATE_BYTES or not _PRINTABLE.fullmatch(value):
        return None  # absent, absurd, or outside the spec's characters
    members = [m for m in value.split(b",") if m.strip(b" \t")]
    kept: list[bytes] = []
    size = -1  # the first member needs no comma
    for member in members[:MAX_TRACESTATE_MEMBERS]:
        if size + 1 + len(member) > MAX_TRACESTATE_BYTES:
            break
        kept.append(member)
        size += 1 + len(member)
    return b",".join(kept) if kept else None
