"""The versioned text normalisers: v1 unchanged, v2's obfuscation repairs, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.encoders.text import CLEAN_VERSIONS, TextEncoderConfig
from model.errors import ModelFormatError
from model.serving.normalise import NORMALISERS, normalise_v2, normalise_v3, text_normaliser
from model.serving.preprocess import clean_text

# No one-letter words: three in a row ("I I I") read as spaced letters and are joined, by design.
_PLAIN = (
    "the service was terrible and we want refund but the food is great love it never again "
    "ok fine slow fast shipping product broken arrived late five stars would buy again thanks"
)
WORDS = tuple(_PLAIN.split())


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        # emoji: names as words, runs kept up to three times
        ("love it 😍", "love it smiling face with heart-eyes"),
        ("👎", "thumbs down"),
        ("💩💩💩💩💩", "pile of poo pile of poo pile of poo"),
        ("👍🏽 ok", "thumbs up medium skin tone ok"),
        # zero-width and variation selectors
        ("te\u200brr\u200cib\u2060le", "terrible"),
        ("ba\ufe0fd", "bad"),
        # look-alike letters inside Latin words (Cyrillic е о а, Greek ο), fullwidth, math bold
        ("h\u0435llo w\u043erld", "hello world"),
        ("p\u0430yp\u0430l sc\u03bfm", "paypal scom"),
        ("ｔｅｒｒｉｂｌｅ", "terrible"),
        ("𝐭𝐞𝐫𝐫𝐢𝐛𝐥𝐞", "terrible"),
        # leetspeak inside words
        ("gr8 product", "great product"),
        ("I h4te this t3rr1ble $h1t", "I hate this terrible shit"),
        ("n00b sh!t h@te l8r", "noob shit hate later"),
        ("T3RR1BLE", "TERRIBLE"),
        # spaced letters
        ("t e r r i b l e service", "terrible service"),
        ("so b.a.d.", "so bad."),
        ("w-o-r-s-t", "worst"),
        # mojibake
        ("cafÃ© was great", "café was great"),
        # v1 still applies
        ("@bob see https://x.co/a &amp; more", "@user see http & more"),
    ],
)
def test_v2_undoes_each_obfuscation(raw: str, normal: str) -> None:
    assert normalise_v2(raw) == normal


@pytest.mark.parametrize(
    "text",
    [
        "$12.99 for 2 stars, 10/10",
        "2nd place, mp3, covid19, 10am, 4k, $AAPL, 1v1, R2D2",
        "write to a.b@example.com or me@x.org",
        "I'm fine, ok? Great!!! I LOVE IT",
        "Москва - прекрасный город, спасибо",
        "Το προϊόν είναι εξαιρετικό",
        "质量很好，物流很快，我爱iPhone",
        "とても良い、また買います",
        "منتج رائع",
    ],
)
def test_v2_keeps_numbers_addresses_and_other_languages(text: str) -> None:
    # as v1 leaves them (v1's NFKC turns the Chinese full-width commas into ",")
    assert normalise_v2(text) == clean_text(text)
    assert text.replace("，", ",") == clean_text(text)


def test_true_still_means_v1_byte_for_byte() -> None:
    assert text_normaliser(True) is clean_text is NORMALISERS["v1"]
    assert text_normaliser("v2") is normalise_v2
    assert text_normaliser(False)("  x ") == "x"
    assert set(NORMALISERS) == set(CLEAN_VERSIONS)


@pytest.mark.parametrize("clean", ["v4", "V2", 1, None, "yes"])
def test_unknown_normaliser_is_a_model_format_error(clean: object) -> None:
    with pytest.raises(ModelFormatError, match="clean"):
        TextEncoderConfig.from_json({"clean": clean})


def test_config_round_trips_the_value_it_was_given() -> None:
    for clean in (True, False, "v1", "v2", "v3"):
        cfg = TextEncoderConfig.from_json({"clean": clean})
        assert cfg.to_json()["clean"] == clean


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_v2_properties_on_any_text(text: str) -> None:
    once = normalise_v2(text)
    assert normalise_v2(once) == once
    assert once.isprintable()
    assert once == once.strip()


OBFUSCATED = st.text(
    st.sampled_from("ab t3$@!.-*_ 0184\u200b\ufe0f\u0435\u03bf😍👍🏽Ã©你"), max_size=40
)


@settings(max_examples=400, deadline=None)
@given(OBFUSCATED)
def test_v2_properties_on_obfuscation_alphabets(text: str) -> None:
    once = normalise_v2(text)
    assert normalise_v2(once) == once and once.isprintable()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=20), st.sampled_from(["", ".", "!"]))
def test_v2_leaves_plain_english_alone_except_whitespace(words: list[str], end: str) -> None:
    text = "  ".join(words) + end
    assert normalise_v2(text) == " ".join(words) + end


# ----------------------------------------------------------------------------- version 3


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        # "fancy text" alphabets NFKC leaves alone
        ("ᴛᴇʀʀɪʙʟᴇ ꜱᴇʀᴠɪᴄᴇ", "terrible service"),
        ("ɪ ʜᴀᴛᴇ ɪᴛ", "i hate it"),
        ("🅣🅔🅡🅡🅘🅑🅛🅔 food", "TERRIBLE food"),
        ("🆃🅴🆁🆁🅸🅱🅻🅴", "TERRIBLE"),
        ("🅱️ruh", "Bruh"),
        ("⒯⒠⒭⒭⒤⒝⒧⒠", "terrible"),
        ("🇹🇪🇷🇷🇮🇧🇱🇪", "TERRIBLE"),
        ("t̶e̶r̶r̶i̶b̶l̶e̶ u̲g̲l̲y̲", "terrible ugly"),
        # more look-alikes and separators, symbols as letters
        ("ιηdυsτry", "industry"),
        ("b·a·d and w|o|r|s|t", "bad and worst"),
        ("g()()d h€ll wa+er", "good hell water"),
        # what v2 already did, v3 still does
        ("I h4te this t3rr1ble $h1t 😍", "I hate this terrible shit smiling face with heart-eyes"),
    ],
)
def test_v3_undoes_fancy_text(raw: str, normal: str) -> None:
    assert normalise_v3(raw) == normal


@pytest.mark.parametrize(
    "text",
    [
        "I got an 🅰️ in maths",  # a lone negative squared letter is the emoji
        "🇺🇸🇬🇧 trip",  # flags stay flags
        "C++ and A+B, print() costs €50, a+b",
        "café ≠ bad, 我很喜欢",
    ],
)
def test_v3_keeps_emoji_flags_code_and_other_scripts(text: str) -> None:
    assert normalise_v3(text) == normalise_v2(text)


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_v3_properties_on_any_text(text: str) -> None:
    once = normalise_v3(text)
    assert normalise_v3(once) == once
    assert once.isprintable()
    assert once == once.strip()


FANCY = st.text(st.sampled_from("ab t3€+()·|~.- ᴀʙɪ🅐🅰🅱\ufe0f⒜🇹🇪🇷\u0336\u0332ηι😍你"), max_size=40)


@settings(max_examples=400, deadline=None)
@given(FANCY)
def test_v3_properties_on_fancy_alphabets(text: str) -> None:
    once = normalise_v3(text)
    assert normalise_v3(once) == once and once.isprintable()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=20), st.sampled_from(["", ".", "!"]))
def test_v3_leaves_plain_english_alone_except_whitespace(words: list[str], end: str) -> None:
    text = "  ".join(words) + end
    assert normalise_v3(text) == " ".join(words) + end
