from __future__ import annotations

import base64

import orjson

from commentflow.errors import InvalidEncoding, SchemaViolation
from schemas.events import DeadLetter
from workers.dead_letter import build_dead_letter
from workers.messages import Inbound
from workers.redact import redact_text


def msg(value: bytes | None, key: bytes | None = b"u1") -> Inbound:
    return Inbound("comments", 3, 42, key, value, 1_700_000_000_000)


def test_dead_letter_keeps_text_payload_and_source():
    out = build_dead_letter(
        msg(b'{"a": 1}'), SchemaViolation("bad"), dlq_topic="dlq", max_payload_bytes=1000
    )
    doc = orjson.loads(out.value)
    DeadLetter.model_validate(doc)
    assert out.topic == "dlq" and out.key == b"u1"
    assert doc["error"] == {"code": "schema_violation", "message": "bad", "details": []}
    assert doc["source"]["partition"] == 3 and doc["source"]["offset"] == 42
    assert doc["payload"] == '{"a": 1}' and doc["payload_encoding"] == "utf-8"
    assert not doc["payload_truncated"]


def test_dead_letter_base64_for_binary_and_truncation():
    raw = b"\xff" * 100
    doc = orjson.loads(
        build_dead_letter(
            msg(raw, key=b"\xfe"), InvalidEncoding("x"), dlq_topic="d", max_payload_bytes=10
        ).value
    )
    DeadLetter.model_validate(doc)
    assert doc["payload_encoding"] == "base64"
    assert base64.b64decode(doc["payload"]) == raw[:10]
    assert doc["payload_truncated"] and doc["payload_bytes"] == 100
    assert doc["source"]["key_encoding"] == "base64"


def test_truncated_utf8_payload_stays_text():
    raw = ("é" * 50).encode()
    doc = orjson.loads(
        build_dead_letter(msg(raw), SchemaViolation("x"), dlq_topic="d", max_payload_bytes=11).value
    )
    assert doc["payload_encoding"] == "utf-8" and doc["payload"] == "é" * 5


def test_tombstone_dead_letter():
    doc = orjson.loads(
        build_dead_letter(
            msg(None, key=None), SchemaViolation("x"), dlq_topic="d", max_payload_bytes=9
        ).value
    )
    DeadLetter.model_validate(doc)
    assert doc["payload"] == "" and doc["source"]["key"] is None


def test_redact_email_and_phone_but_not_dates_or_numbers():
    text = "mail me at jane.doe+x@example.co.uk or call +1 (555) 123-4567, order 42 on 2024-01-02"
    out = redact_text(text)
    assert "jane" not in out and "555" not in out
    assert "[email]" in out and "[phone]" in out
    assert "order 42" in out and "2024-01-02" in out

