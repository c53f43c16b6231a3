"""The reference consumer's de-duplication memory and keys (no broker)."""

from __future__ import annotations

import pytest

from commentflow.tail import RecentKeys, dead_letter_key, key_for_topic, prediction_key


def test_recent_keys_is_bounded_and_forgets_the_least_recently_seen() -> None:
    recent = RecentKeys(2)
    assert not recent.seen("a") and not recent.seen("b")
    assert recent.seen("a")  # "a" is now the most recent
    assert not recent.seen("c")  # forgets "b"
    assert len(recent) == 2
    assert recent.seen("a") and not recent.seen("b")
    with pytest.raises(ValueError):
        RecentKeys(0)


def test_keys_per_topic() -> None:
    assert prediction_key({"comment_id": "c", "user_id": "u"}) == ("u", "c")
    assert prediction_key({"other": 1}) is None  # never de-duplicated
    dl = {"source": {"topic": "comments", "partition": 1, "offset": 7}}
    assert dead_letter_key(dl) == ("comments", 1, 7)
    assert key_for_topic("x.dlq", dlq_topic="x.dlq") is dead_letter_key
    assert key_for_topic("x.predictions", dlq_topic="x.dlq") is prediction_key
