"""Which Kafka headers of a comment reach its prediction and its dead letter, and which not.

The rules (documented in the README, "Headers"):

1. The worker's own headers come first and cannot be overridden or spoofed by the input:
   ``content-type``, ``commentflow-schema`` and, on dead letters, ``commentflow-error``; any
   input header named ``content-type`` or ``commentflow-*`` is dropped.
2. Trace context: ``traceparent`` and ``tracestate`` are not copied but continued
   (:mod:`workers.traceparent`, :mod:`workers.tracing`): same trace, new span.
3. Copied: the headers whose name is on the allow-list (``headers_allow``: comma-separated
   names, matched case-insensitively; an entry ending in ``*`` is a prefix), in input order,
   the first of repeated names only, names kept as they came.
4. Never copied, even when allow-listed: names that may carry secrets (:data:`DENIED_NAMES`
   and any name containing one of :data:`DENIED_PARTS`: ``authorization``, ``cookie``,
   ``x-api-key``, ``*token*``, ``*secret*`` ...), names that are not plain tokens (1-128 of
   ``A-Z a-z 0-9 . _ -``), and null values.
5. Bounded: at most ``headers_max_count`` copied headers and ``headers_max_bytes`` of names
   plus values; a header that does not fit is dropped (never truncated: a cut id is a wrong id)
   and the next ones are still considered.

Nothing here raises for any input: a header that breaks a rule is dropped and the message goes
on. The cost is a few dictionary lookups per header, on the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_ALLOW",
    "DENIED_NAMES",
    "DENIED_PARTS",
    "Header",
    "HeaderPolicy",
    "first_value",
    "normalise_headers",
]

Header = tuple[str, bytes]

#: The default allow-list: correlation ids, and every ``x-cf-*`` header (ours to define).
DEFAULT_ALLOW = "correlation-id,x-correlation-id,x-request-id,x-cf-*"

#: Never copied, whatever the allow-list says (lowercase).
DENIED_NAMES = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key"}
)
#: A name containing any of these is never copied either: they name credentials.
DENIED_PARTS = (
    "auth",
    "cookie",
    "token",
    "secret",
    "passw",
    "credential",
    "session",
    "apikey",
    "api-key",
    "api_key",
    "signature",
    "private",
)
#: Names the worker writes itself (exact, lowercase, or by prefix).
_OWN_NAMES = frozenset({"content-type", "traceparent", "tracestate"})
_OWN_PREFIX = "commentflow-"

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """The allow-list and the bounds; :meth:`copy` applies them to one message's headers."""

    names: frozenset[str]  # exact names, lowercase
    prefixes: tuple[str, ...]  # lowercase
    max_count: int = 16
    max_bytes: int = 4096

    @classmethod
    def parse(cls, allow: str, *, max_count: int = 16, max_bytes: int = 4096) -> HeaderPolicy:
        """The policy for ``allow`` (``"correlation-id,x-cf-*"``): names and ``prefix*``es."""
        entries = [e.strip().lower() for e in allow.split(",") if e.strip()]
        return cls(
            names=frozenset(e for e in entries if not e.endswith("*")),
            prefixes=tuple(e[:-1] for e in entries if e.endswith("*") and len(e) > 1),
            max_count=max(0, max_count),
            max_bytes=max(0, max_bytes),
        )

    def allows(self, name: str) -> bool:
        """Whether a header called ``name`` may be copied (rules 1, 3 and 4; not the bounds)."""
        if not _TOKEN.fullmatch(name):
            return False
        low = name.lower()
        if low in _OWN_NAMES or low.startswith(_OWN_PREFIX) or low in DENIED_NAMES:
            return False
        if any(part in low for part in DENIED_PARTS):
            return False
        return low in self.names or any(low.startswith(p) for p in self.prefixes)

    def copy(self, headers: Sequence[tuple[Any, Any]]) -> tuple[Header, ...]:
        """The headers of ``headers`` that are copied to the outputs (rules 3 to 5)."""
        out: list[Header] = []
        seen: set[str] = set()
        budget = self.max_bytes
        for item in headers:
            if len(out) >= self.max_count:
                break
            name, value = item
            if not isinstance(name, str) or not isinstance(value, bytes):
                continue  # a null value, or something that is not a Kafka header
            if not self.allows(name) or name.lower() in seen:
                continue
            seen.add(name.lower())  # the first of repeated names, even if it does not fit
            size = len(name) + len(value)
            if size > budget:
                continue
            budget -= size
            out.append((name, value))
        return tuple(out)


def first_value(headers: Sequence[tuple[Any, Any]], name: str) -> bytes | None:
    """The value of the one header called ``name`` (case-insensitive); ``None`` when it is
    absent, null, or repeated (repeated trace headers are ambiguous: none is trusted)."""
    found: bytes | None = None
    count = 0
    for item in headers:
        key = item[0]
        if isinstance(key, str) and key.lower() == name:
            count += 1
            found = item[1] if isinstance(item[1], bytes) else None
    return found if count == 1 else None


def normalise_headers(raw: Any) -> tuple[tuple[Any, Any], ...]:
    """A consumed record's headers as a tuple of pairs (aiokafka gives a sequence, Faust may
    give a mapping, a tombstone gives ``None``); anything else is no headers."""
    if not raw:
        return ()
    if isinstance(raw, Mapping):
        return tuple(raw.items())
    if isinstance(raw, Iterable) and not isinstance(raw, str | bytes):
        return tuple(h for h in raw if isinstance(h, tuple) and len(h) == 2)
    return ()
