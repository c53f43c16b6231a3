"""The obfuscation check set: deterministic variants that v2 (v3 for the fancy kinds) undoes."""

from __future__ import annotations

import numpy as np
import pytest

from model.data.text import Example
from model.evaluation.obfuscation import (
    FANCY_KINDS,
    KINDS,
    obfuscate,
    obfuscated_sets,
    obfuscation_report,
)
from model.serving.normalise import normalise_v2, normalise_v3

SENTENCES = [
    "This is the worst airline, never again",
    "I love this product so much, thanks!",
    "@user flight 1687 was delayed 2 hours, terrible service",
    "Great food, friendly staff and a lovely view. 10/10",
    "Broken on arrival. I'm at the desk, a refund please",
    "meh, it's ok I guess... $12.99 for this?",
    "Ordered the blue one, got a red one. Disappointed",
]


@pytest.mark.parametrize("kind", KINDS)
def test_variants_are_deterministic_and_change_the_text(kind: str) -> None:
    variants = [obfuscate(s, kind) for s in SENTENCES]
    assert variants == [obfuscate(s, kind) for s in SENTENCES]
    assert all(v != s for v, s in zip(variants, SENTENCES, strict=True))
    if kind not in ("small_caps", "strikethrough"):  # these two rewrite every word: no choice
        assert variants != [obfuscate(s, kind, seed=2) for s in SENTENCES]


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "emoji" and k not in FANCY_KINDS])
def test_v2_normalisation_undoes_every_variant(kind: str) -> None:
    for s in SENTENCES:
        assert normalise_v2(obfuscate(s, kind)) == normalise_v2(s), obfuscate(s, kind)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "emoji"])
def test_v3_normalisation_undoes_every_variant(kind: str) -> None:
    """v3 undoes v2's kinds exactly and the fancy ones up to case (small capitals and negative
    squared letters have one case each)."""
    for s in SENTENCES:
        got, want = normalise_v3(obfuscate(s, kind)), normalise_v3(s)
        if kind in ("small_caps", "enclosed"):
            got, want = got.lower(), want.lower()
        assert got == want, obfuscate(s, kind)


@pytest.mark.parametrize("kind", FANCY_KINDS)
def test_v2_does_not_undo_the_fancy_kinds(kind: str) -> None:
    """The gap v3 closes is real: v2 leaves these alphabets as they are."""
    s = SENTENCES[0]
    assert normalise_v2(obfuscate(s, kind)).lower() != normalise_v2(s).lower()


def test_examples_of_each_kind() -> None:
    s = "This is the worst airline, never again"
    assert obfuscate(s, "leet") != s and obfuscate(s, "leet").isascii()
    assert not obfuscate(s, "lookalike").isascii()  # Cyrillic twins
    assert len(obfuscate(s, "spaced").split()) > len(s.split())
    assert "\u200b" in obfuscate(s, "zero_width") or not obfuscate(s, "zero_width").isascii()
    assert obfuscate(s, "emoji").startswith(s + " ")
    assert obfuscate(s, "small_caps").startswith("ᴛʜɪꜱ is ᴛʜᴇ")
    assert "\u0336" in obfuscate(s, "strikethrough")
    assert all(ord(c) >= 0x1F150 for c in obfuscate(s, "enclosed").split()[0])
    assert any(sep in obfuscate(s, "symbol_spaced") for sep in "·•|/~")
    with pytest.raises(ValueError, match="unknown obfuscation"):
        obfuscate(s, "rot13")


def test_sets_keep_labels_and_the_report_counts_points() -> None:
    rows = [
        Example(text=s, label="negative" if i % 2 else "positive") for i, s in enumerate(SENTENCES)
    ]
    sets = obfuscated_sets(rows, ("leet",))
    assert [r.label for r in sets["leet"]] == [r.label for r in rows]
    assert [r.raw for r in sets["leet"]] == SENTENCES

    def predict(texts: list[str]) -> np.ndarray:  # right on clean text, wrong on digits
        truth = {s: int(i % 2 == 0) for i, s in enumerate(SENTENCES)}
        return np.array([truth.get(t, 0) for t in texts])

    report = obfuscation_report(predict, rows, ("negative", "positive"), kinds=("leet", "emoji"))
    assert report["clean_accuracy"] == 1.0 and report["n"] == len(rows)
    assert report["leet"]["accuracy"] == pytest.approx(3 / 7, abs=1e-4)
    assert report["leet"]["drop_points"] == pytest.approx(100 * 4 / 7, abs=0.01)
    assert "drop_interval" not in report["leet"]
    paired = obfuscation_report(
        predict, rows, ("negative", "positive"), kinds=("leet", "emoji"), n_resamples=200
    )
    lo, hi = paired["leet"]["drop_interval"]
    assert 0 <= lo <= paired["leet"]["drop_points"] <= hi <= 100
    assert paired["leet"]["accuracy"] == report["leet"]["accuracy"]  # intervals change no value
