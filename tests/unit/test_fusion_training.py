"""``commentflow train-fusion`` end to end on a tiny setup: the real MiniLM text encoder, a text
model with a random 2-member head, fake picture / OCR / speech models, a few dozen items.

What it checks is the recipe's contract, not quality: the written model loads through the serving
path, reads the text model's encoder, carries its languages, and answers a text-only comment with
exactly the text model's probabilities (``text_only_expert``).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import model
from model import CommentInput
from model.data.featurise import extract_dataset
from model.encoders.text import TextEncoder, TextEncoderConfig
from model.format.text import save_model_dir
from model.nn.heads import HeadConfig, MLPHead
from model.serving.features import FeatureExtractor
from model.testing.multimodal import FakeAsr, FakeImageEncoder, FakeOcr
from model.training.fusion import FusionData, FusionTrainConfig, train_fusion

WORDS = {
    "negative": ["awful", "broken", "hate", "terrible", "refund"],
    "neutral": ["table", "monday", "blue", "paper", "train"],
    "positive": ["love", "great", "perfect", "thanks", "wonderful"],
}


def _sentences(n: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    labels = list(WORDS)
    out = []
    for i in range(n):
        lab = labels[i % 3]
        words = rng.choice(WORDS[lab], 3).tolist()
        out.append((f"{' '.join(words)} number {seed}-{i}", lab))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fusion-train")
    # the text data and a text model (random standardised 2-member head on MiniLM)
    data = root / "text.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(_sentences(150, 0))
    enc = TextEncoderConfig()
    torch.manual_seed(0)
    head = MLPHead(HeadConfig(enc.out_dim, 8, standardize=True, members=2)).eval()
    head.set_standardization(torch.zeros(enc.out_dim), torch.full((enc.out_dim,), 0.05))
    text_model = save_model_dir(
        root / "text-model",
        name="tiny-text",
        version="0.0.1",
        encoder=enc,
        heads={"sentiment": head},
        metrics={"train_config": {"data": str(data)}},
        extra_config={"languages": ["en", "xx"]},
    )
    # multimodal items: pictures (OCR reads the fake's phrase), voice notes, text
    items = root / "mm"
    (items / "m").mkdir(parents=True)
    rng = np.random.default_rng(1)
    extractor = FeatureExtractor(
        TextEncoder(enc, device="cpu"), FakeImageEncoder(16), FakeOcr(), FakeAsr()
    )
    for split, seed in (("train", 2), ("val", 3), ("test", 4)):
        lines = []
        for i, (text, lab) in enumerate(_sentences(24, seed)):
            item = {"id": f"{split}-{i}", "label": lab, "text": text}
            if i % 3 == 0:
                name = f"m/{split}-{i}.png"
                pixels = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(items / name)
                item |= {"image": name, "text": "see pic" if i % 2 else text}
                item["kind"] = "image_only" if i % 2 else "text_image"
            elif i % 3 == 1:
                name = f"m/{split}-{i}.wav"
                sf.write(items / name, rng.standard_normal(8000 + 100 * i) * 0.1, 16_000)
                item |= {"audio": name}
            lines.append(json.dumps(item))
        (items / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        extract_dataset(
            items / f"{split}.jsonl",
            root / f"{split}.npz",
            cache_dir=root / "media-cache",
            extractor=extractor,
            progress=False,
        )
    return {"root": root, "text_model": text_model}


@pytest.fixture(scope="module")
def trained(setup: dict[str, Path]) -> Path:
    """``train_fusion`` on the tiny setup: the model directory it writes."""
    root = setup["root"]
    cfg = FusionTrainConfig(
        epochs=2,
        text_per_batch=32,
        mm_per_batch=8,
        d_model=32,
        n_heads=2,
        n_layers=1,
        ff_mult=2,
        text_model=str(setup["text_model"]),
    )
    data = FusionData(
        train=str(root / "train.npz"),
        val=str(root / "val.npz"),
        test=str(root / "test.npz"),
        text_cache_dir=str(root / "text-cache"),
    )
    out = root / "model"
    assert train_fusion(cfg, data, out=out, checkpoint_dir=root / "ckpt", progress=False) == 0
    return out


def _serve_with_fakes(out: Path) -> dict:
    """The recipe names the packaged media models; these features came from the fakes."""
    config = json.loads((out / "config.json").read_text())
    config["encoders"] |= {"image": {"source": "fake", "dim": 16}, "ocr": {"source": "fake"}}
    config["encoders"]["asr"] = {"source": "fake"}
    (out / "config.json").write_text(json.dumps(config))
    return config


def test_train_fusion_writes_a_model_that_is_its_text_model_on_text(
    setup: dict[str, Path], trained: Path
) -> None:
    out = trained
    config = json.loads((out / "config.json").read_text())
    text_config = json.loads((setup["text_model"] / "config.json").read_text())
    assert config["encoders"]["text"] == text_config["text_encoder"]
    assert config["languages"] == ["en", "xx"]
    assert config["fusion"]["text_only_expert"] is True
    assert config["fusion"]["text_expert_members"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["text"]["spec"].endswith("text.csv")  # the text model's data
    assert {"image_only", "text_image", "text_audio"} <= set(metrics["test"]["by_kind"])

    _serve_with_fakes(out)
    mm = model.load_classifier(out, device="cpu")
    txt = model.load_classifier(setup["text_model"], device="cpu")
    texts = ["I love it, perfect", "broken and awful", "a blue table on monday"]
    got = mm.predict_proba([CommentInput(t) for t in texts])
    assert torch.allclose(got, txt.predict_proba(texts), atol=1e-5)
    # a comment with a picture goes through the fusion: not the text model's answer
    pic = np.full((24, 24, 3), 200, np.uint8)
    with_media = mm.predict_proba([CommentInput(t, images=[pic]) for t in texts])
    assert not torch.allclose(with_media, got, atol=1e-4)


def test_features_of_another_text_encoder_are_refused(setup: dict[str, Path]) -> None:
    root = setup["root"]
    other = root / "other-text-model"
    enc = TextEncoderConfig()
    save_model_dir(
        other,
        name="tiny-text-2",
        version="0.0.1",
        encoder=TextEncoderConfig(pooling="mean_max"),  # 768-d features: not the .npz's 384
        heads={"sentiment": MLPHead(HeadConfig(2 * enc.dim, 8, standardize=True))},
        metrics={"train_config": {"data": str(root / "text.csv")}},
    )
    cfg = FusionTrainConfig(epochs=1, text_per_batch=32, mm_per_batch=8, text_model=str(other))
    data = FusionData(
        train=str(root / "train.npz"), val=None, test="", text_cache_dir=str(root / "tc2")
    )
    with pytest.raises(SystemExit, match="features --text-model"):
        train_fusion(cfg, data, out=root / "never", progress=False)


def test_a_temperature_per_route_is_fitted_saved_and_served(
    setup: dict[str, Path], trained: Path, tmp_path: Path
) -> None:
    """``evaluate --temperature-per-route``: the text expert's temperature is fitted on the
    text-only rows (the text split and the .npz's text items), the Transformer's on the rows with
    media; both are saved, and the serving path and ``fusion_scores`` divide each row by its
    route's one."""
    from model.evaluation.by_source import evaluate_sources, predict_texts
    from model.evaluation.calibration import apply_temperature, fit_temperature
    from model.evaluation.multimodal import fusion_scores

    root = setup["root"]
    out = shutil.copytree(trained, tmp_path / "m")
    _serve_with_fakes(out)
    text_spec, val, test = str(root / "text.csv"), str(root / "val.npz"), str(root / "test.npz")
    before = fusion_scores(out, val)  # no calibration yet: T = 1 on both routes
    expert = before.routes == 0  # the text route (the rest: the Transformer's)
    assert expert.any() and (~expert).any() and set(before.routes.tolist()) == {0, 1}
    run = dict(n_resamples=20, progress=False)
    with pytest.raises(ValueError, match="'fused' route"):  # a text split alone: one route
        evaluate_sources(out, [test], calibrate_on=text_spec, per_route=True, **run)

    rc = evaluate_sources(
        out,
        [test],
        calibrate_on=[text_spec, val],
        per_route=True,
        save_temperature=True,
        out=tmp_path / "eval",
        **run,
    )
    assert rc == 0
    cal = json.loads((out / "config.json").read_text())["calibration"]
    t, tf = cal["temperature"], cal["fused_temperature"]
    assert abs(t - tf) > 1e-3 and cal["n_by_route"]["fused"] == int((~expert).sum())
    assert "char_temperature" not in cal  # no character expert: no such route

    # each is its own route's NLL optimum
    clf = model.load_classifier(trained, device="cpu")  # the uncalibrated model, text rows
    with (root / "text.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = [r["text"] for r in rows]
    ty = [list(clf.labels).index(r["label"]) for r in rows]
    expert_logits = np.log(np.concatenate([predict_texts(clf, texts), before.probs[expert]]))
    expert_y = np.concatenate([ty, before.y[expert]])
    assert t == pytest.approx(fit_temperature(expert_logits, expert_y), abs=1e-4)
    fused = np.log(before.probs[~expert])
    assert tf == pytest.approx(fit_temperature(fused, before.y[~expert]), abs=1e-4)

    after = fusion_scores(out, val)
    want = apply_temperature(np.log(before.probs), np.where(expert, t, tf))
    np.testing.assert_allclose(after.probs, want, atol=1e-4)
    assert (after.probs.argmax(1) == before.probs.argmax(1)).all()  # only the scores move
    served = model.load_classifier(out, device="cpu")
    assert served.temperatures == (t, tf, t, t)  # no char expert, no fallback: the text T
    pic = np.full((24, 24, 3), 200, np.uint8)
    batch = [CommentInput("I love it, perfect"), CommentInput("broken", images=[pic])]
    raw = np.log(clf.predict_proba(batch).numpy())
    np.testing.assert_allclose(
        served.predict_proba(batch).numpy(), apply_temperature(raw, np.array([t, tf])), atol=1e-4
    )
    assert served.routes_of_texts(["a comment", "", "  "]).tolist() == [0, 1, 1]


def test_the_char_expert_reaches_text_only_comments_of_the_default_model(
    trained: Path, tmp_path: Path
) -> None:
    """A character expert in a multimodal directory moves the text-only comments in its
    language (the text expert's route), as in the text model, and nothing else."""
    from model.format.char_expert import write_char_expert
    from model.nn.char_ngram import CharNgramConfig, fit_char_ngram

    out = shutil.copytree(trained, tmp_path / "m")
    _serve_with_fakes(out)
    pic = np.full((24, 24, 3), 200, np.uint8)
    batch = [
        CommentInput("这个好棒，很满意"),
        CommentInput("这个好棒，很满意", images=[pic]),
        CommentInput("I love it, perfect"),
    ]
    plain = model.load_classifier(out, device="cpu").predict_proba(batch)
    texts, labels = ["好棒满意", "差劲失望"] * 5, [True, False] * 5
    chars = fit_char_ngram(texts, labels, CharNgramConfig(1, 2, 64))
    write_char_expert(out, chars, language="zh", weight=1.0)
    served = model.load_classifier(out, device="cpu")
    got = served.predict_proba(batch)
    assert not torch.allclose(got[0], plain[0], atol=1e-4)
    torch.testing.assert_close(got[1:], plain[1:])
    labels = list(served.labels)
    pos, neg = labels.index("positive"), labels.index("negative")
    moved = (got[0, pos].log() - got[0, neg].log()) - (plain[0, pos].log() - plain[0, neg].log())
    s = chars([served.extractor.prepare("这个好棒，很满意")])[0]
    assert moved.item() == pytest.approx(s.item() / served.temperature, abs=1e-4)
