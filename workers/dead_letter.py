"""Build the dead letter for an input that cannot be processed (``commentflow.dead_letter/1``)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.errors import DeadLetterError
from schemas.events import DEAD_LETTER_SCHEMA
from workers.messages import Inbound, Outbound

__all__ = ["build_dead_letter", "utc_now_iso"]

# A dead letter stays small whatever the input: bounded error details and key.
_MAX_DETAILS = 10
_MAX_DETAIL_CHARS = 200
_MAX_MESSAGE_CHARS = 1_000
_MAX_KEY_BYTES = 1_024


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text_or_base64(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def build_dead_letter(
    message: Inbound,
    error: DeadLetterError,
    *,
    dlq_topic: str,
    max_payload_bytes: int,
    headers: tuple[tuple[str, bytes], ...] = (),
    metadata: dict[str, Any] | None = None,
) -> Outbound:
    """The dead letter for ``message``: why it failed, where it came from, what it held.

    ``headers``: the output headers (:mod:`workers.headers`); ``metadata``: the event's
    ``metadata`` when it could be read (:func:`workers.validation.metadata_of`), else ``None``.
    """
    raw = message.value or b""
    kept = raw[:max_payload_bytes]
    if len(kept) < len(raw):
        # do not cut a UTF-8 sequence in half: a truncated text payload stays text
        kept = kept.decode("utf-8", "ignore").encode("utf-8") if _is_utf8(raw) else kept
    payload, payload_encoding = _text_or_base64(kept)
    raw_key = message.key[:_MAX_KEY_BYTES] if message.key is not None else None
    key, key_encoding = _text_or_base64(raw_key) if raw_key is not None else (None, None)
    details = [
        {k: v[:_MAX_DETAIL_CHARS] if isinstance(v, str) else v for k, v in d.items()}
        for d in error.details[:_MAX_DETAILS]
    ]
    doc = {
        "schema": DEAD_LETTER_SCHEMA,
        "error": {
            "code": error.code,
            "message": error.message[:_MAX_MESSAGE_CHARS],
            "details": details,
        },
        "source": {
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "timestamp_ms": message.timestamp_ms,
            "key": key,
            "key_encoding": key_encoding,
        },
        "payload": payload,
        "payload_encoding": payload_encoding,
        "payload_bytes": len(raw),
        "payload_truncated": len(kept) < len(raw),
        "failed_at": utc_now_iso(),
    }
    if metadata is not None:
        doc["metadata"] = metadata
    return Outbound(topic=dlq_topic, key=message.key, value=orjson.dumps(doc), headers=headers)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
