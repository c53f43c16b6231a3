"""Language identification of comments and the unsupported-language flag."""

from __future__ import annotations

import pytest

from model.errors import ModelFormatError
from model.serving.language import (
    UNDETERMINED,
    LanguageDetector,
    LanguageGate,
    languages_from_config,
)

DETECTOR = LanguageDetector()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Broken on arrival, never buying again", "en"),
        ("great product, love it @shop https://x.co/abc", "en"),
        ("me encanta este producto, llegó muy rápido", "es"),
        ("livraison rapide, merci beaucoup", "fr"),
        ("ich bin sehr zufrieden mit dem Produkt", "de"),
        ("спасибо, всё отлично", "ru"),
        ("垃圾", "zh"),
        ("物流很快，满意", "zh"),
        ("すぐに壊れました", "ja"),
        ("배송이 빨라요", "ko"),
    ],
)
def test_detects_short_comments(text: str, code: str) -> None:
    assert DETECTOR.detect(text).code == code


@pytest.mark.parametrize(
    "text", ["", "   ", "😍😍😍", "👎", "!!!", "10/10", "$12.99", "ok", "@user", "yikes", "Gracias"]
)
def test_text_without_enough_letters_is_undetermined(text: str) -> None:
    lang = DETECTOR.detect(text)
    assert lang.code == UNDETERMINED and lang.score == 0.0


def test_gate_flags_only_confident_undeclared_languages() -> None:
    gate = LanguageGate(["en"], DETECTOR)
    en, es, emoji = gate.assess(
        ["terrible service, never again", "el servicio es terrible, nunca más", "😍😍😍"]
    )
    assert (en.code, en.supported) == ("en", True)
    assert (es.code, es.supported) == ("es", False) and es.score >= DETECTOR.min_score
    assert (emoji.code, emoji.supported) == (UNDETERMINED, True)
    assert LanguageGate(["en", "es"], DETECTOR).assess(["el servicio es terrible"])[0].supported


def test_obfuscated_english_is_asked_again_as_the_model_reads_it() -> None:
    """Struck-through or leet English looks Spanish / Turkish to fastText; the gate asks again
    on the normalised text and keeps that answer. Real foreign text stays foreign."""
    from model.serving.normalise import text_normaliser

    struck = "I " + "".join(ch + "\u0336" for ch in "absolutely love this new phone") + ", great"
    leet = "I ab5olut3ly l0ve th1s new ph0ne, gr34t ba7t3ry"
    foreign = [
        "La comida estaba fría y el camarero fue grosero.",
        "Ужасное качество, деньги на ветер",
    ]
    raw = LanguageGate(["en"], DETECTOR).assess([struck, leet, *foreign])
    assert [lang.supported for lang in raw] == [False, False, False, False]  # without it
    gate = LanguageGate(["en"], DETECTOR, normalise=text_normaliser("v3"))
    got = gate.assess([struck, leet, *foreign])
    assert [(lang.code, lang.supported) for lang in got] == [
        ("en", True),
        ("en", True),
        ("es", False),
        ("ru", False),
    ]
    calls: list[str] = []
    spy = LanguageGate(["en"], DETECTOR, normalise=lambda t: calls.append(t) or t)
    spy.assess(["terrible service, never again", "😍😍😍", foreign[0]])
    assert calls == [foreign[0]]  # only what looked foreign is normalised and asked again


def test_languages_from_config() -> None:
    assert languages_from_config({}) == ("en",)
    assert languages_from_config({"languages": ["en", "zh"]}) == ("en", "zh")
    for bad in ("en", [], ["EN"], ["english"], [1]):
        with pytest.raises(ModelFormatError, match="languages"):
            languages_from_config({"languages": bad})
