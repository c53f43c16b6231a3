"""Turn a raw message value into a :class:`~schemas.events.CommentEvent`, or say why not.

The order of checks fixes which code a bad input gets: size, encoding, JSON, schema version,
then the contract itself.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import PydanticCustomError, from_json

from schemas.errors import (
    InvalidEncoding,
    InvalidJson,
    SchemaViolation,
    TooLarge,
    UnsupportedSchema,
)
from schemas.events import COMMENT_SCHEMA, CommentEvent, check_metadata

__all__ = ["metadata_of", "parse_event"]

_TOO_LONG = {"string_too_long", "too_long"}


def parse_event(raw: bytes | None, *, max_bytes: int) -> CommentEvent:
    """Validate one message value; raise a :class:`~schemas.errors.DeadLetterError` if bad."""
    if raw is None:
        raise InvalidJson("the message has no value (tombstone)")
    if len(raw) > max_bytes:
        raise TooLarge(f"the message value is {len(raw)} bytes, more than the {max_bytes} allowed")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEncoding(f"the message value is not UTF-8 (byte {exc.start})") from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the message value is not JSON: {exc.msg} at char {exc.pos}") from None
    if not isinstance(doc, dict):
        raise SchemaViolation(f"the event must be a JSON object, not {type(doc).__name__}")
    declared = doc.get("schema")
    if declared is not None and declared != COMMENT_SCHEMA:
        raise UnsupportedSchema(
            f"schema {str(declared)[:64]!r} is not read here ({COMMENT_SCHEMA})"
        )
    try:
        # strict types; created_at may be a string because JSON has no datetime type
        return CommentEvent.model_validate_json(raw)
    except ValidationError as exc:
        details = [_detail(e) for e in exc.errors(include_url=False, include_input=False)]
        message = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        if any(d["type"] in _TOO_LONG for d in details):
            raise TooLarge(message, details=details) from None
        raise SchemaViolation(message, details=details) from None


def _detail(error: Any) -> dict[str, Any]:
    field = ".".join(str(p) for p in error["loc"]) or "(event)"
    return {"field": field, "type": error["type"], "problem": error["msg"]}


def metadata_of(raw: bytes | None, *, max_bytes: int) -> dict[str, Any] | None:
    """The ``metadata`` object of a message value, for its dead letter: present when the value
    is a JSON object (at most ``max_bytes``) whose ``metadata`` is an object within the contract's
    bound, whatever else is wrong with the event; ``None`` otherwise. Never raises."""
    if not raw or len(raw) > max_bytes:
        return None
    try:
        # as the contract reads it: an integer beyond 64 bits stays one (and fails the bound)
        doc = from_json(raw, allow_inf_nan=False)
    except ValueError:
        return None
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(metadata, dict):
        return None
    try:
        return check_metadata(metadata)
    except PydanticCustomError:
        return None
