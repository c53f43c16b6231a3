"""Every kind of bad input gets its documented dead-letter code; valid events pass."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commentflow.errors import DEAD_LETTER_CODES, DeadLetterError
from workers.validation import parse_event

MAX = 256 * 1024


def event(**over):
    doc = {
        "comment_id": "c1",
        "user_id": "u1",
        "text": "hello there",
        "created_at": "2026-11-28T10:00:00Z",
    }
    doc.update(over)
    return doc


def code_of(raw: bytes | None) -> str:
    with pytest.raises(DeadLetterError) as info:
        parse_event(raw, max_bytes=MAX)
    assert info.value.code in DEAD_LETTER_CODES
    return info.value.code


def test_valid_minimal_event():
    e = parse_event(orjson.dumps(event()), max_bytes=MAX)
    assert (e.comment_id, e.user_id, e.text, e.media) == ("c1", "u1", "hello there", [])
    assert e.created_at.utcoffset().total_seconds() == 0


def test_valid_full_event_ignores_unknown_fields():
    raw = orjson.dumps(
        event(
            schema="commentflow.comment/1",
            media=[{"type": "image", "url": "https://cdn.example/x.png"}],
            lang="en",
            source="forum",
            metadata={"thread": 7},
            something_new=True,
            created_at="2026-11-28T10:00:00.123+02:00",
        )
    )
    e = parse_event(raw, max_bytes=MAX)
    assert e.media[0].type == "image" and e.metadata == {"thread": 7}


def test_empty_text_allowed_only_with_media():
    assert code_of(orjson.dumps(event(text=""))) == "schema_violation"
    media = [{"type": "audio", "url": "http://a.example/v.ogg"}]
    assert parse_event(orjson.dumps(event(text="", media=media)), max_bytes=MAX).text == ""


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "invalid_json"),
        (b"", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_encoding"),
        (b"[1, 2]", "schema_violation"),
        (b'"a string"', "schema_violation"),
        (b"x" * (MAX + 1), "too_large"),
    ],
)
def test_raw_level_errors(raw, code):
    assert code_of(raw) == code


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"comment_id": 12}, "schema_violation"),  # wrong type: no silent coercion
        ({"comment_id": ""}, "schema_violation"),
        ({"user_id": None}, "schema_violation"),
        ({"created_at": "yesterday"}, "schema_violation"),
        ({"created_at": "2026-11-28T10:00:00"}, "schema_violation"),  # no offset
        ({"created_at": 1764324000}, "schema_violation"),
        ({"text": 42}, "schema_violation"),
        ({"text": "x" * 20_001}, "too_large"),
        ({"comment_id": "c" * 129}, "too_large"),
        ({"media": [{"type": "video", "url": "https://x/y"}]}, "schema_violation"),
        ({"media": [{"type": "image", "url": "ftp://x/y"}]}, "schema_violation"),
        ({"media": [{"type": "image", "url": "https://x/y"}] * 9}, "too_large"),
        ({"schema": "commentflow.comment/2"}, "unsupported_schema"),
    ],
)
def test_contract_errors(over, code):
    assert code_of(orjson.dumps(event(**over))) == code


def test_missing_required_field_names_it():
    doc = event()
    del doc["created_at"]
    with pytest.raises(DeadLetterError) as info:
        parse_event(orjson.dumps(doc), max_bytes=MAX)
    assert info.value.details[0]["field"] == "created_at"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw):
    try:
        parse_event(raw, max_bytes=MAX)
    except DeadLetterError as exc:
        assert exc.code in DEAD_LETTER_CODES


@given(
    st.text(min_size=1, max_size=128).filter(str.strip),
    st.text(min_size=1, max_size=128),
    st.text(max_size=500).filter(str.strip),
)
def test_round_trip_of_valid_events(cid, uid, text):
    e = parse_event(orjson.dumps(event(comment_id=cid, user_id=uid, text=text)), max_bytes=MAX)
    assert (e.comment_id, e.user_id, e.text) == (cid, uid, text)
