"""model.data.noise: noisy copies of training rows, label kept."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.data.noise import NOISE_KINDS, add_noise, noisy_rows
from model.data.text import Example

TEXT = "The service was terrible and the food was cold, never again"


@pytest.mark.parametrize("kind", sorted(NOISE_KINDS))
def test_each_kind_makes_one_small_edit(kind: str) -> None:
    for seed in range(20):
        out = add_noise(TEXT, kind, random.Random(seed))
        assert out != TEXT
        if kind == "punctuation":  # only marks (and perhaps a space) added
            assert re.sub(r"[!?.\s]", "", out) == re.sub(r"[!?.\s]", "", TEXT)
        elif kind == "case":
            assert out.lower() == TEXT.lower()
        else:  # one word edited, the others as they were
            changed = [(a, b) for a, b in zip(TEXT.split(), out.split(), strict=True) if a != b]
            assert len(changed) == 1, changed
            word, noisy = changed[0]
            if kind == "censor":
                assert "*" in noisy and len(noisy) == len(word)
            if kind == "elongate":
                assert len(word) + 2 <= len(noisy) <= len(word) + 5
            if kind == "typo":
                assert abs(len(noisy) - len(word)) <= 1


def test_texts_without_long_words_are_left_alone_by_word_edits() -> None:
    for kind in ("typo", "censor", "elongate"):
        assert add_noise("ok so bad", kind, random.Random(1)) == "ok so bad"
    with pytest.raises(ValueError, match="unknown noise"):
        add_noise(TEXT, "rot13", random.Random(0))


def test_rows_keep_labels_are_deterministic_and_cover_every_kind() -> None:
    train = [Example(f"{TEXT} {i}", lab, raw=f"{TEXT} {i}", source=f"{i}:{lab}")
             for i in range(200) for lab in ("negative", "neutral", "positive")]  # fmt: skip
    rows, counts = noisy_rows(train, 300, seed=13)
    assert rows == noisy_rows(train, 300, seed=13)[0]
    assert rows != noisy_rows(train, 300, seed=14)[0]
    assert len(rows) == 300 and set(counts) == set(NOISE_KINDS) and sum(counts.values()) == 300
    edited = 0
    for r in rows:  # the source says which row it was made from: same label, its text edited
        i, label = r.source.split(":")
        assert r.label == label and r.text == r.raw
        edited += r.raw != f"{TEXT} {i}"
    assert edited >= 0.95 * len(rows)  # a swap of two equal letters ("rr") changes nothing
    assert len({r.label for r in rows}) == 3
    assert len(noisy_rows(train[:7], 300)[0]) == 7  # never more rows than there are


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.sampled_from(sorted(NOISE_KINDS)), st.integers(0, 10**6))
def test_any_text_any_kind_never_raises(text: str, kind: str, seed: int) -> None:
    out = add_noise(text, kind, random.Random(seed))
    assert isinstance(out, str)
