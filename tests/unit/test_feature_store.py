"""The per-text feature store (model.data.text_features): subsets and additions encode only
texts not seen before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.data import text_features
from model.data.text_features import _cached  # noqa: PLC2701 - the store itself is under test


class _Fake:
    identity = "fake"
    device = "cpu"

    def __init__(self, calls: list[list[str]]) -> None:
        self.calls = calls

    def encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)


def test_store_encodes_each_text_once(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def get(texts: list[str]) -> tuple[np.ndarray, dict]:
        return _cached(
            texts, "x", 2, lambda: _Fake(calls), tmp_path, device="cpu", batch_size=8,
            progress=False,
        )  # fmt: skip

    f, info = get(["ab", "c", "ab"])
    assert calls == [["ab", "c"]] and info["cache"] == "miss" and info["encoded"] == 2
    assert f.tolist() == [[2, 97], [1, 99], [2, 97]]
    f, info = get(["c", "zz"])  # one new text
    assert calls[-1] == ["zz"] and info["encoded"] == 1
    assert f.tolist() == [[1, 99], [2, 122]]
    f, info = get(["zz", "ab"])  # a reordered subset: nothing to encode
    assert len(calls) == 2 and info["cache"] == "hit"
    assert f.tolist() == [[2, 122], [2, 97]]
    assert get([])[0].shape == (0, 2)
    other = _cached(
        ["ab"], "y", 2, lambda: _Fake(calls), tmp_path, device="cpu", batch_size=8, progress=False
    )
    assert other[1]["cache"] == "miss"  # another encoder identity: its own store


def test_bfloat16_features_get_a_store_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def get(precision: str) -> dict:
        monkeypatch.setattr(text_features, "resolve_precision", lambda p, d: precision)
        return _cached(
            ["ab"], "x", 2, lambda: _Fake(calls), tmp_path, device="cpu", batch_size=8,
            progress=False,
        )[1]  # fmt: skip

    assert get("float32")["cache"] == "miss" and get("float32")["precision"] == "float32"
    bf16 = get("bfloat16")  # a machine with AMX: served in bfloat16, so trained on it
    assert bf16["cache"] == "miss" and bf16["precision"] == "bfloat16"
    assert bf16["encoder"] == "x|bf16" and get("float32")["encoder"] == "x"
    assert get("bfloat16")["cache"] == "hit" and len(calls) == 2
