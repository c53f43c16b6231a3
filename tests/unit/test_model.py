"""The text classifier and its model directory, on a tiny random model (no real weights)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import model
from commentflow.errors import ModelFormatError, UnsafeWeightsError
from model import LABELS, Classifier, CommentInput, load_classifier
from model.format.text import save_model_dir
from model.nn.heads import HeadConfig, MLPHead
from model.testing import make_tiny_model_dir

TEXTS = [
    "I love this so much!",
    "",
    "the flight was delayed again, terrible service @united http://t.co/x",
    "ok",
    "word " * 300,  # longer than max_length: truncated
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def clf(tiny_dir: Path):
    return load_classifier(tiny_dir, device="cpu")


def test_protocol_and_metadata(clf) -> None:
    assert isinstance(clf, Classifier)
    assert clf.labels == LABELS
    assert clf.device == "cpu"
    assert clf.name == "tiny-test" and clf.version
    assert model.load_classifier is load_classifier


def test_outputs_shape_scores_and_labels(clf) -> None:
    out = clf.predict([CommentInput(t) for t in TEXTS])
    assert len(out) == len(TEXTS)
    for o in out:
        assert o.label in LABELS
        assert tuple(o.scores) == LABELS
        assert math.isclose(sum(o.scores.values()), 1.0, abs_tol=1e-5)
        assert all(0.0 <= v <= 1.0 for v in o.scores.values())
        assert o.label == max(o.scores, key=o.scores.__getitem__)
        assert o.modalities == ("text",)
    probs = clf.predict_proba(TEXTS)
    assert probs.shape == (len(TEXTS), len(LABELS)) and probs.dtype == torch.float32


def test_empty_batch_and_empty_text(clf) -> None:
    assert clf.predict([]) == []
    (o,) = clf.predict([CommentInput("")])
    assert o.label in LABELS and o.modalities == ("text",)


def test_outputs_carry_the_language_and_the_model_declares_its_own(
    clf, tiny_dir: Path, tmp_path: Path
) -> None:
    spanish = CommentInput("me encanta este producto, llegó muy rápido")
    en, es, emoji = clf.predict([CommentInput(TEXTS[2]), spanish, CommentInput("😍😍")])
    assert (en.language, en.language_supported) == ("en", True) and en.language_score >= 0.6
    assert (es.language, es.language_supported) == ("es", False)
    assert (emoji.language, emoji.language_score, emoji.language_supported) == ("und", 0.0, True)
    d = shutil.copytree(tiny_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "languages": ["en", "es"]}))
    assert load_classifier(d, device="cpu").predict([spanish])[0].language_supported
    (d / "config.json").write_text(json.dumps({**cfg, "languages": ["Spanish"]}))
    with pytest.raises(ModelFormatError, match="languages"):
        load_classifier(d, device="cpu")


def test_the_config_names_the_text_normaliser(clf, tiny_dir: Path, tmp_path: Path) -> None:
    from model.serving.normalise import normalise_v2
    from model.serving.preprocess import clean_text

    assert clf.normalise is clean_text  # "clean": true, as the shipped models say
    d = shutil.copytree(tiny_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_encoder"]["clean"] = "v2"
    (d / "config.json").write_text(json.dumps(cfg))
    v2 = load_classifier(d, device="cpu")
    assert v2.normalise is normalise_v2
    assert torch.equal(*v2.predict_proba(["so t e r r i b l e 👎", "so terrible thumbs down"]))
    cfg["text_encoder"]["clean"] = "v9"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="clean"):
        load_classifier(d, device="cpu")


def test_encoder_shapes(clf) -> None:
    feats = clf.encoder.encode(TEXTS, batch_size=2)
    assert feats.shape == (len(TEXTS), 32) and feats.dtype.name == "float32"
    assert clf.encoder.encode([]).shape == (0, 32)


def test_cpu_determinism(clf) -> None:
    a = clf.predict_proba(TEXTS)
    b = clf.predict_proba(TEXTS)
    assert torch.equal(a, b)


def test_batch_matches_one_by_one(clf) -> None:
    batch = clf.predict([CommentInput(t) for t in TEXTS])
    single = [clf.predict([CommentInput(t)])[0] for t in TEXTS]
    assert [o.label for o in batch] == [o.label for o in single]
    for x, y in zip(batch, single, strict=True):
        for lab in LABELS:
            assert math.isclose(x.scores[lab], y.scores[lab], abs_tol=1e-4)


def test_input_order_is_kept(clf) -> None:
    fwd = clf.predict_proba(TEXTS)
    rev = clf.predict_proba(TEXTS[::-1])
    assert torch.allclose(fwd, rev.flip(0), atol=1e-5)


def test_save_load_round_trip(clf, tiny_dir: Path, tmp_path: Path) -> None:
    out = save_model_dir(
        tmp_path / "copy",
        name=clf.name,
        version=clf.version,
        encoder=clf.encoder.config,
        heads={"sentiment": clf.head},
        encoder_src=tiny_dir / "text_encoder",
    )
    again = load_classifier(out, device="cpu")
    assert torch.equal(clf.predict_proba(TEXTS), again.predict_proba(TEXTS))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "commentflow.model" and cfg["format_version"] == 1
    assert cfg["modalities"] == ["text"] and "sentiment" in cfg["heads"]


def test_standardized_head_round_trip(tmp_path: Path) -> None:
    head = MLPHead(HeadConfig(in_dim=4, hidden_dim=3, standardize=True))
    head.set_standardization(torch.arange(4.0), torch.full((4,), 2.0))
    assert "feat_mean" in head.state_dict()
    again = MLPHead(head.config)
    again.load_state_dict(head.state_dict())
    x = torch.randn(5, 4)
    assert torch.equal(head.eval()(x), again.eval()(x))


@pytest.mark.parametrize(
    "name",
    [
        "pytorch_model.bin",
        "model.pt",
        "head.pth",
        "x.pkl",
        "a.ckpt",
        "text_encoder/pytorch_model.bin",
    ],
)
def test_pickled_weights_are_refused(tiny_dir: Path, tmp_path: Path, name: str) -> None:
    d = shutil.copytree(tiny_dir, tmp_path / "m")
    (d / name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        load_classifier(d)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_unknown_format_version(tiny_dir: Path, tmp_path: Path, version) -> None:
    d = shutil.copytree(tiny_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    if version is None:
        del cfg["format_version"]
    else:
        cfg["format_version"] = version
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="format_version 1"):
        load_classifier(d)


def test_missing_or_broken_files(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError):
        load_classifier(tmp_path / "nope")
    d = shutil.copytree(tiny_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelFormatError, match="model.safetensors"):
        load_classifier(d)
    d2 = shutil.copytree(tiny_dir, tmp_path / "m2")
    cfg = json.loads((d2 / "config.json").read_text())
    cfg["heads"]["sentiment"]["hidden_dim"] = 17  # weights no longer match
    (d2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="does not match"):
        load_classifier(d2)
    (d2 / "config.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="JSON"):
        load_classifier(d2)


@pytest.mark.slow
def test_text_model_gets_obvious_sentences_right() -> None:
    root = Path(__file__).resolve().parents[2] / "models" / "text"
    assert (root / "config.json").is_file(), "models/text is missing (commentflow train)"
    clf = load_classifier(root, device="cpu")
    neg = ["This is the worst airline ever, I hate you.", "Terrible service, my bag is lost again!"]
    pos = [
        "I love this, thank you so much! Amazing!",
        "Great flight, wonderful crew, best trip ever",
    ]
    out = clf.predict([CommentInput(t) for t in neg + pos])
    assert [o.label for o in out] == ["negative"] * len(neg) + ["positive"] * len(pos)


def _train_args(tmp_path: Path, encoder: Path, out: str, epochs: int, *extra: str):
    import argparse

    from commentflow.commands import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args([
        "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / out),
        "--encoder", str(encoder), "--epochs", str(epochs), "--patience", "100",
        "--hidden-dim", "8", "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"),
        "--checkpoint-dir", str(tmp_path / "ck" / out), "--no-progress", *extra,
    ])  # fmt: skip


@pytest.mark.slow  # trains three times (~5 s): "slow" covers training
def test_train_resume_evaluate(tiny_dir: Path, tmp_path: Path) -> None:
    import argparse

    from safetensors.torch import load_file

    from commentflow.commands import train
    from model.serving.normalise import normalise_v2

    words = {"negative": "awful bad terrible", "neutral": "the a table", "positive": "great love"}
    (tmp_path / "d.csv").write_text(
        "text,label\n" + "".join(f"{words[lab]} {i},{lab}\n" for i in range(60) for lab in words),
        encoding="utf-8",
    )
    enc = tiny_dir / "text_encoder"
    assert train.run(_train_args(tmp_path, enc, "full", 4), None) == 0
    assert train.run(_train_args(tmp_path, enc, "half", 2), None) == 0
    assert train.run(_train_args(tmp_path, enc, "half", 4, "--resume"), None) == 0
    full, half = (
        load_file(tmp_path / "full/model.safetensors"),
        load_file(tmp_path / "half/model.safetensors"),
    )
    assert full.keys() == half.keys() and all(torch.equal(full[k], half[k]) for k in full)
    for name in (
        "config.json",
        "metrics.json",
        "MODEL_CARD.md",
        "confusion_matrix.png",
        "text_encoder/model.safetensors",
    ):
        assert (tmp_path / "full" / name).is_file(), name
    metrics = json.loads((tmp_path / "full/metrics.json").read_text())
    assert metrics["test"]["n"] == 18 and metrics["data"]["splits"]["train"] == 144
    clf = load_classifier(tmp_path / "full", device="cpu")
    assert len(clf.predict([CommentInput("great love")])) == 1
    assert list((tmp_path / "cache").glob("*.npy")), "features are cached"
    from commentflow.commands import evaluate

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    out = tmp_path / "eval"
    args = parser.parse_args(
        [
            "--model",
            str(tmp_path / "full"),
            "--data",
            f"{tmp_path / 'd.csv'}:test",
            "--out",
            str(out),
            "--no-progress",
            "--obfuscation",
        ]
    )
    assert evaluate.run(args, None) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["n"] == 18 and (out / "confusion_matrix.png").is_file()
    # the serving path scores the test split exactly as training did
    assert result["metrics"]["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    assert result["obfuscation"]["clean_accuracy"] == pytest.approx(
        result["metrics"]["accuracy"], abs=1e-4
    )
    assert set(result["obfuscation"]) >= {"leet", "lookalike", "spaced", "zero_width", "emoji"}
    # a v2 model: trained and served with the v2 normaliser, said so in its config
    assert train.run(_train_args(tmp_path, enc, "v2", 2, "--clean", "v2"), None) == 0
    config = json.loads((tmp_path / "v2/config.json").read_text())
    assert config["text_encoder"]["clean"] == "v2"
    assert load_classifier(tmp_path / "v2", device="cpu").normalise is normalise_v2


@pytest.mark.slow
def test_finetune_the_text_encoder(tiny_dir: Path, tmp_path: Path) -> None:
    """--finetune-epochs: the encoder learns too, is saved in the model dir, and the reloaded
    model scores the test split exactly as training did."""
    from safetensors.torch import load_file

    from commentflow.commands import train

    words = {"negative": "awful bad terrible", "neutral": "the a table", "positive": "great love"}
    (tmp_path / "d.csv").write_text(
        "text,label\n" + "".join(f"{words[lab]} {i},{lab}\n" for i in range(60) for lab in words),
        encoding="utf-8",
    )
    enc = tiny_dir / "text_encoder"
    args = _train_args(tmp_path, enc, "ft", 2, "--finetune-epochs", "2", "--finetune-lr", "1e-3")
    assert train.run(args, None) == 0  # 0 only when the reloaded model agrees with training
    before = load_file(enc / "model.safetensors")
    after = load_file(tmp_path / "ft" / "text_encoder" / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "encoder did not change"
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert [h["finetune_epoch"] for h in m["history"] if "finetune_epoch" in h] == [1, 2]
    assert "fine-tuned" in (tmp_path / "ft" / "MODEL_CARD.md").read_text()
    cfg = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert cfg["text_encoder"]["source"] == "path" and cfg["text_encoder"]["path"] == "text_encoder"


@pytest.mark.slow
def test_default_multimodal_model_reads_text_pictures_and_voice_notes(tmp_path: Path) -> None:
    """The workers' default model, on its real encoders: sentiment only in the picture or only
    in the voice note is found; text alone still works; a failed medium just is not there."""
    import random

    import numpy as np
    import soundfile as sf

    from commentflow.settings import DEFAULT_MODEL_DIR
    from model import load_classifier as load_any
    from model.data import media as bd

    assert (DEFAULT_MODEL_DIR / "config.json").is_file(), f"{DEFAULT_MODEL_DIR} is missing"
    clf = load_any(DEFAULT_MODEL_DIR, device="cpu")
    assert set(clf.modalities) == {"text", "image", "audio"}
    rng = random.Random(5)
    fonts = bd.find_fonts()

    def picture(text: str) -> np.ndarray:
        return np.asarray(bd.render_text_image(text, rng, fonts=fonts))[..., :3]

    def voice(text: str) -> np.ndarray:
        path = tmp_path / f"{abs(hash(text))}.wav"
        bd.synthesize_speech(text, path, rng, voices=("en-us",))
        return sf.read(path, dtype="float32")[0]

    neg = "This is the worst day ever, I hate it so much"
    pos = "I love this so much, thank you, best day ever"
    batch = [
        CommentInput("see pic", images=(picture(neg),)),
        CommentInput("look at this", images=(picture(pos),)),
        CommentInput("listen", audio=(voice(neg),)),
        CommentInput("", audio=(voice(pos),)),
        CommentInput(neg),
        CommentInput(pos),
    ]
    out = clf.predict(batch)
    assert [o.label for o in out] == ["negative", "positive"] * 3, [o.scores for o in out]
    assert [o.modalities for o in out] == [
        ("text", "image"),
        ("text", "image"),
        ("text", "audio"),
        ("audio",),
        ("text",),
        ("text",),
    ]

    # The worker's inference lanes call predict from two threads at once (the tokenizer is not
    # thread-safe by itself): the same outputs as one call at a time.
    from concurrent.futures import ThreadPoolExecutor

    words = ["good", "bad", "awful", "great", "fine", "meh", "terrible", "lovely"]
    calls = [
        [CommentInput(" ".join(rng.choices(words, k=rng.randint(1, 60)))) for _ in range(16)]
        + batch[k : k + 2]
        for k in range(0, 6, 2)
    ] * 2
    alone = [clf.predict(c) for c in calls]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(clf.predict, calls))
    for one, two in zip(alone, together, strict=True):
        assert [o.label for o in one] == [o.label for o in two]
        for a, b in zip(one, two, strict=True):
            assert all(abs(a.scores[k] - b.scores[k]) < 1e-4 for k in a.scores)


def test_public_surface() -> None:
    """``model`` exports a short, fixed list; importing it loads no torch."""
    import subprocess
    import sys

    assert sorted(model.__all__) == sorted(
        ["LABELS", "MODALITIES", "ClassOutput", "Classifier", "CommentInput", "load_classifier"]
    )
    code = "import sys, model; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
