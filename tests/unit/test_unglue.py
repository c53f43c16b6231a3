"""Glued OCR words split back (model.serving.unglue) and where the feature extractor applies it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.base import CommentInput
from model.serving.features import FeatureExtractor
from model.serving.unglue import unglue
from model.testing.multimodal import FakeAsr, FakeImageEncoder


@pytest.mark.parametrize(
    ("glued", "want"),
    [
        ("USSITTINGONTHEPLANE", "US SITTING ON THE PLANE"),
        ("KNOW,AFTERTWOHOURS OF", "KNOW,AFTER TWO HOURS OF"),
        ("worstserviceever!!", "worst service ever!!"),
        ("SOGOOD", "SO GOOD"),
    ],
)
def test_glued_words_are_split(glued: str, want: str) -> None:
    assert unglue(glued) == want


@pytest.mark.parametrize(
    "kept",
    [
        "terrible",
        "Wonderful day",
        "unbelievable",
        "ORDER #4411 TOTAL $12.99",
        "这个产品太好了",
        "iPhone 15",
        "",
        "a b c",
    ],
)
def test_words_digits_and_other_scripts_are_kept(kept: str) -> None:
    assert unglue(kept) == kept


@given(st.text(max_size=80))
def test_only_spaces_are_added(text: str) -> None:
    out = unglue(text)
    assert out.replace(" ", "") == text.replace(" ", "")


class _Ocr:
    identity = "glued-ocr"

    def __init__(self, unglue: bool) -> None:
        self.unglue = unglue

    def read(self, images: Sequence[np.ndarray]) -> list[str]:
        return ["WORSTSERVICEEVER" for _ in images]


class _Text:
    out_dim = 4

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return np.zeros((len(texts), 4), np.float32)


@pytest.mark.parametrize("on", [True, False])
def test_the_extractor_unglues_ocr_text_only_when_the_model_says_so(on: bool) -> None:
    text = _Text()
    x = FeatureExtractor(text, FakeImageEncoder(8), _Ocr(on), FakeAsr())
    img = np.zeros((8, 8, 3), np.uint8)
    f = x.extract([CommentInput("GREATPRODUCT", images=(img,))])
    want = "WORST SERVICE EVER" if on else "WORSTSERVICEEVER"
    assert f.ocr_texts == (want,)
    assert "GREATPRODUCT" in text.seen  # the comment text itself is never touched
    assert x.identities()["ocr"] == "glued-ocr" + ("|unglue" if on else "")
