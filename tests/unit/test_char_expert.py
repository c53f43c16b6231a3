"""The character n-gram expert: the model, its files, serving it, and train-char-expert."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.errors import ModelFormatError
from model.format.char_expert import copy_char_expert, read_char_expert, write_char_expert
from model.nn.char_ngram import CharNgramConfig, CharNgramModel, fit_char_ngram
from model.serving import load_classifier
from model.serving.char_expert import apply_char_expert, char_expert_rows
from model.serving.language import script_language
from model.testing import make_tiny_model_dir

GOOD = "好棒赞喜欢满意推荐"
BAD = "差烂坏失望退货糟糕"
FILL = "的了是这个手机东西我们买"
SMALL = CharNgramConfig(buckets=1 << 12)


def _reviews(n: int, seed: int) -> tuple[list[str], list[bool]]:
    """Chinese-script 'reviews': filler characters plus two of the label's characters."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        pos = bool(i % 2)
        chars = list(rng.choice(list(FILL), 6)) + list(rng.choice(list(GOOD if pos else BAD), 2))
        rng.shuffle(chars)
        texts.append("".join(chars))
        labels.append(pos)
    return texts, labels


@pytest.fixture(scope="module")
def expert() -> CharNgramModel:
    texts, labels = _reviews(200, 0)
    return fit_char_ngram(texts, labels, SMALL, c=4.0)


def test_fit_reads_the_characters_and_is_deterministic(expert: CharNgramModel) -> None:
    texts, labels = _reviews(100, 1)  # held out
    s = expert(texts)
    assert s.shape == (100,)
    assert ((s > 0).numpy() == np.array(labels)).mean() > 0.95
    again = fit_char_ngram(*_reviews(200, 0), SMALL, c=4.0)
    assert torch.equal(again.weight, expert.weight) and torch.equal(again.bias, expert.bias)
    x = expert.features(["好棒", "", "差差差差"]).to_dense()
    norms = x.norm(dim=1)
    assert norms[0].item() == pytest.approx(1.0) and norms[1].item() == 0.0
    assert expert([""]).item() == pytest.approx(expert.bias.item())  # nothing to read
    assert expert([]).shape == (0,)


def test_fit_and_config_refuse_what_they_cannot_use() -> None:
    with pytest.raises(ValueError):
        fit_char_ngram(["好", "差"], [True, True], SMALL)  # one class only
    with pytest.raises(ValueError):
        fit_char_ngram(["好"], [True, False], SMALL)
    for bad in ((0, 3, 16), (3, 2, 16), (1, 3, 0), (1, 9, 16)):
        with pytest.raises(ModelFormatError):
            CharNgramConfig(*bad)


def test_files_round_trip_copy_and_refusals(expert: CharNgramModel, tmp_path: Path) -> None:
    d = make_tiny_model_dir(tmp_path / "m", seed=0)
    assert read_char_expert(d, json.loads((d / "config.json").read_text())) is None
    write_char_expert(d, expert, language="zh", weight=1.5, fitted_on="unit test")
    cfg = json.loads((d / "config.json").read_text())
    block = cfg["char_expert"]
    assert block | {"fitted_on": "unit test"} == block and block["weight"] == 1.5
    loaded = read_char_expert(d, cfg)
    assert loaded is not None and (loaded.language, loaded.weight) == ("zh", 1.5)
    texts = _reviews(10, 2)[0]
    assert torch.allclose(loaded.model(texts), expert(texts))
    other = make_tiny_model_dir(tmp_path / "o", seed=1)
    assert copy_char_expert(d, other) is True
    assert copy_char_expert(make_tiny_model_dir(tmp_path / "x"), d) is False  # has none
    assert json.loads((other / "config.json").read_text())["char_expert"] == block
    for change in (
        {"weight": -1},
        {"weight": float("nan")},
        {"file": "../char_expert.safetensors"},
        {"file": "missing.safetensors"},
        {"buckets": 1 << 13},  # does not match the tensors
        {"language": ""},
    ):
        with pytest.raises(ModelFormatError):
            read_char_expert(d, {"char_expert": block | change})
    with pytest.raises(ModelFormatError):
        read_char_expert(d, {"char_expert": {"file": "char_expert.safetensors"}})


def test_served_only_on_its_language_and_only_the_polar_margin(
    expert: CharNgramModel, tmp_path: Path
) -> None:
    d = make_tiny_model_dir(tmp_path / "m", seed=0)
    texts = ["这个手机好棒，很满意", "what a great phone", "これは良い", "质量差，失望", ""]
    plain = load_classifier(d, device="cpu").predict_proba(texts)
    write_char_expert(d, expert, language="zh", weight=2.0)
    clf = load_classifier(d, device="cpu")
    assert clf.char_expert is not None
    got = clf.predict_proba(texts)
    labels = list(clf.labels)
    neg, neu, pos = (labels.index(k) for k in ("negative", "neutral", "positive"))

    def margin(p: torch.Tensor) -> torch.Tensor:
        return torch.log(p[:, pos]) - torch.log(p[:, neg])

    assert char_expert_rows(clf.char_expert, texts) == [0, 3]  # Japanese (kana) and "" not
    s = expert([clf.normalise(texts[i]) for i in (0, 3)])
    assert s[0] > 0 > s[1]
    moved = margin(got) - margin(plain)
    torch.testing.assert_close(moved[[0, 3]], 2.0 * s, atol=1e-4, rtol=0)
    torch.testing.assert_close(got[[1, 2, 4]], plain[[1, 2, 4]])
    # neutral's logit is left alone: neutral against the mean of the polar logits moves by 0
    half = torch.log(got[:, neu]) - (torch.log(got[:, pos]) + torch.log(got[:, neg])) / 2
    half0 = torch.log(plain[:, neu]) - (torch.log(plain[:, pos]) + torch.log(plain[:, neg])) / 2
    torch.testing.assert_close(half, half0, atol=1e-4, rtol=0)
    # eligible rows only (the multimodal model: the rows its text expert answers)
    assert char_expert_rows(clf.char_expert, texts, [False, True, True, True, True]) == [3]
    logits = torch.zeros(2, 3)
    assert torch.equal(apply_char_expert(logits, clf.char_expert, labels, texts, str, []), logits)
    with pytest.raises(ModelFormatError):
        apply_char_expert(logits, clf.char_expert, ["a", "b", "c"], texts, str, [0])
    assert clf.routes_of_texts(texts).tolist() == [2, 0, 0, 2, 0]  # char, text, text, char, text


def test_train_char_expert_fits_on_train_and_chooses_the_weight_on_val(tmp_path: Path) -> None:
    from model.training.char_expert import WEIGHTS, train_char_expert

    d = make_tiny_model_dir(tmp_path / "m", seed=0)
    data = tmp_path / "mixed.csv"
    zh, zl = _reviews(240, 3)
    with data.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows((t, "positive" if p else "negative") for t, p in zip(zh, zl, strict=True))
        w.writerows((f"an english comment number {i}", "neutral") for i in range(60))
        w.writerows((f"一般般 {i}", "neutral") for i in range(30))  # Chinese, not polar
    report = train_char_expert(d, str(data), language="zh", config=SMALL)
    block = json.loads((d / "config.json").read_text())["char_expert"]
    assert block["weight"] == report["weight"] and report["weight"] in WEIGHTS
    acc = report["val_polarity_accuracy"]
    assert set(acc["by_weight"]) == {f"{w:g}" for w in WEIGHTS}
    assert acc["by_weight"][f"{report['weight']:g}"] == max(acc["by_weight"].values())
    assert acc["expert_alone"] > 0.9 and report["weight"] > 0  # the tiny head is at chance
    assert block["chosen_on"] == f"{data}:val" and block["fitted_on"] == f"{data}:train"
    from model.data.specs import load_spec

    train, _ = load_spec(f"{data}:train")
    polar = [r for r in train if r.label != "neutral"]  # the Chinese neutral rows are left out
    assert block["n_train"] == len(polar)
    before = load_classifier(d, device="cpu")
    assert before.char_expert is not None and before.served_routes == (0, 2)

    # its rows get a temperature of their own: fitted on the Chinese validation rows only
    from model.evaluation.by_source import evaluate_sources
    from model.evaluation.calibration import fit_temperature

    val, _ = load_spec(f"{data}:val")
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
    cal = json.loads((d / "config.json").read_text())["calibration"]
    t, tc = cal["temperature"], cal["char_temperature"]
    assert "fused_temperature" not in cal and abs(t - tc) > 1e-3
    routes = before.routes_of_texts([r.text for r in val])
    probs = before.predict_proba([r.text for r in val]).numpy()
    y = np.array([list(before.labels).index(r.label) for r in val])
    for route, want in ((0, t), (2, tc)):
        keep = routes == route
        assert keep.any()
        assert want == pytest.approx(fit_temperature(np.log(probs[keep]), y[keep]), abs=1e-4)
    after = load_classifier(d, device="cpu")
    zh_en = ["这个好棒，很满意", "an english comment"]
    raw = torch.log(before.predict_proba(zh_en))
    want_probs = torch.softmax(raw / torch.tensor([[tc], [t]]), dim=-1)
    torch.testing.assert_close(after.predict_proba(zh_en), want_probs, atol=1e-4, rtol=0)
    shutil.rmtree(d)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=60),
            st.text(alphabet=GOOD + BAD + FILL + "ab 1!！。😀\u200b\ud800かな한", max_size=30),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_text_is_served_and_only_chinese_rows_move(texts: list[str]) -> None:
    """Property: whatever the texts (any script, control characters, lone surrogates, emoji),
    the rows are the Chinese-script ones, the margin stays finite and the others stay put."""
    from model.format.char_expert import CharExpert

    expert = CharExpert(_FUZZ_MODEL, "zh", 1.5)
    rows = char_expert_rows(expert, texts)
    assert rows == [i for i, t in enumerate(texts) if script_language(t) == "zh"]
    logits = torch.zeros(len(texts), 3)
    out = apply_char_expert(logits, expert, ["negative", "neutral", "positive"], texts, str, rows)
    assert torch.isfinite(out).all()
    still = [i for i in range(len(texts)) if i not in rows]
    assert torch.equal(out[still], logits[still]) and torch.equal(out[:, 1], logits[:, 1])
    torch.testing.assert_close(out[rows, 0], -out[rows, 2])  # the margin moves symmetrically
    assert _FUZZ_MODEL(texts).shape == (len(texts),)  # raw text too (surrogates included)


_FUZZ_MODEL = fit_char_ngram(*_reviews(60, 7), CharNgramConfig(buckets=1 << 10))
