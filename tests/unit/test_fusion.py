"""The fusion model and the multimodal classifier, on tiny random models and fake media models."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from commentflow.errors import ModelFormatError, UnsafeWeightsError
from model import LABELS, Classifier, CommentInput
from model.nn.fusion import SLOTS, FusionModel, modality_dropout
from model.nn.heads import HeadConfig, MLPHead
from model.serving.cache import ContentCache
from model.serving.multimodal import MultimodalClassifier
from model.testing import make_tiny_model_dir
from model.testing.multimodal import make_tiny_multimodal_dir, tiny_fusion_config

torch.set_num_threads(1)
RNG = np.random.default_rng(0)
IMG = RNG.integers(0, 255, (24, 32, 3), dtype=np.uint8)
IMG2 = RNG.integers(0, 255, (20, 20, 3), dtype=np.uint8)
CLIP = (RNG.standard_normal(8000) * 0.1).astype(np.float32)  # 0.5 s
SILENCE = np.zeros(4000, np.float32)


def _batch(b: int = 6, t: int = 50, present: torch.Tensor | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = tiny_fusion_config()
    return {
        "text": torch.randn(b, c.text_dim, generator=g),
        "image": torch.randn(b, c.image_dim, generator=g),
        "ocr": torch.randn(b, c.text_dim, generator=g),
        "speech": torch.randn(b, c.text_dim, generator=g),
        "mel": torch.randn(b, t, 64, generator=g) - 5,
        "mel_lengths": torch.full((b,), t, dtype=torch.int64),
        "present": torch.ones(b, len(SLOTS), dtype=torch.bool) if present is None else present,
    }


@pytest.fixture(scope="module")
def fusion() -> FusionModel:
    torch.manual_seed(0)
    return FusionModel(tiny_fusion_config()).eval()


@pytest.fixture(scope="module")
def mm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_multimodal_dir(tmp_path_factory.mktemp("mm") / "model", seed=0)


@pytest.fixture(scope="module")
def clf(mm_dir: Path) -> MultimodalClassifier:
    return model.load_classifier(mm_dir, device="cpu")


# -- FusionModel ---------------------------------------------------------------------------------


def test_output_shapes_per_head() -> None:
    cfg = tiny_fusion_config()
    cfg2 = type(cfg)(**{**cfg.__dict__, "heads": {"sentiment": LABELS, "toxic": ("no", "yes")}})
    out = FusionModel(cfg2).eval()(_batch(5))
    assert set(out) == {"sentiment", "toxic"}
    assert out["sentiment"].shape == (5, 3) and out["toxic"].shape == (5, 2)


@pytest.mark.parametrize("absent", [*([i] for i in range(5)), [0, 1, 2, 3, 4]])
def test_missing_slots_give_finite_outputs(fusion: FusionModel, absent: list[int]) -> None:
    present = torch.ones(4, 5, dtype=torch.bool)
    present[:, absent] = False
    with torch.no_grad():
        logits = fusion(_batch(4, present=present))["sentiment"]
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("only", range(5))
def test_all_but_one_absent(fusion: FusionModel, only: int) -> None:
    present = torch.zeros(3, 5, dtype=torch.bool)
    present[:, only] = True
    with torch.no_grad():
        probs = fusion(_batch(3, present=present))["sentiment"].softmax(-1)
    assert torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(-1), torch.ones(3))


@pytest.mark.parametrize("slot", range(5))
def test_absent_slot_inputs_do_not_matter(fusion: FusionModel, slot: int) -> None:
    present = torch.ones(4, 5, dtype=torch.bool)
    present[:, slot] = False
    a = _batch(4, present=present, seed=1)
    b = {k: v.clone() for k, v in a.items()}
    name = SLOTS[slot]
    if name == "acoustic":
        b["mel"] = torch.randn_like(b["mel"]) * 10
    else:
        b[name] = torch.randn_like(b[name]) * 100
    with torch.no_grad():
        assert torch.allclose(fusion(a)["sentiment"], fusion(b)["sentiment"], atol=1e-5)
        # ... while a present slot's values do
        c = {k: v.clone() for k, v in a.items()}
        other = SLOTS[(slot + 1) % 5]
        if other == "acoustic":
            c["mel"] = torch.randn_like(c["mel"]) * 10
        else:
            c[other] = torch.randn_like(c[other]) * 100
        assert not torch.allclose(fusion(a)["sentiment"], fusion(c)["sentiment"], atol=1e-5)


def _expert_fusion(
    hidden: int = 8, seed: int = 0, members: int = 1, routed: bool = False
) -> tuple[FusionModel, MLPHead]:
    torch.manual_seed(seed)
    c = tiny_fusion_config(
        text_expert_hidden=hidden, text_expert_members=members, text_only_expert=routed
    )
    head = MLPHead(HeadConfig(c.text_dim, hidden, standardize=True, members=members)).eval()
    head.set_standardization(torch.randn(c.text_dim), torch.rand(c.text_dim) + 0.5)
    fusion = FusionModel(c)
    fusion.load_text_expert({f"heads.sentiment.{k}": v for k, v in head.state_dict().items()})
    return fusion.eval(), head


def test_untrained_text_expert_is_the_text_model() -> None:
    """Gates start at 1 and the residual head at 0: text-only -> exactly the text head."""
    fusion, head = _expert_fusion()
    present = torch.zeros(4, 5, dtype=torch.bool)
    present[:, SLOTS.index("text")] = True
    b = _batch(4, present=present)
    with torch.no_grad():
        assert torch.allclose(fusion(b)["sentiment"], head(b["text"]), atol=1e-5)
        # text + image + OCR: the expert reads the text and the OCR text, each gated at 1
        present[:, [SLOTS.index("image"), SLOTS.index("ocr")]] = True
        want = head(b["text"]) + head(b["ocr"])
        assert torch.allclose(fusion(b)["sentiment"], want, atol=1e-5)


def _train_a_little(fusion: FusionModel, steps: int = 5) -> None:
    """Move the gates and the residual head away from their start (a trained model)."""
    fusion.train()
    opt = torch.optim.SGD([p for p in fusion.parameters() if p.requires_grad], lr=0.5)
    for i in range(steps):
        loss = fusion(_batch(6, seed=i))["sentiment"][:, 0].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    fusion.eval()


def test_text_only_comments_get_the_text_models_logits_exactly() -> None:
    """text_only_expert: after training moved the gates, a text-only comment still gets the
    text model's logits (a 3-member ensemble here), and a comment with media does not."""
    fusion, head = _expert_fusion(members=3, routed=True)
    _train_a_little(fusion)
    present = torch.zeros(6, 5, dtype=torch.bool)
    present[:, SLOTS.index("text")] = True
    present[3:, SLOTS.index("image")] = True  # rows 3-5 also have a picture
    b = _batch(6, present=present, seed=9)
    with torch.no_grad():
        got = fusion(b)["sentiment"]
        assert torch.equal(got[:3], head(b["text"][:3]))
        assert not torch.allclose(got[3:], head(b["text"][3:]), atol=1e-3)
        # the rows with media do not depend on the text-only rows of the batch
        alone = fusion({k: v[3:] for k, v in b.items()})["sentiment"]
        assert torch.allclose(got[3:], alone, atol=1e-5)
    # without routing, the moved gates change the text-only answer
    plain, _ = _expert_fusion(members=3, routed=False)
    _train_a_little(plain)
    with torch.no_grad():
        assert not torch.allclose(plain(b)["sentiment"][:3], head(b["text"][:3]), atol=1e-3)


def test_expert_rows_are_the_rows_the_expert_answers() -> None:
    """expert_rows names exactly the rows whose logits are the text expert's (the serving path
    gives them their own temperature); without routing, none."""
    fusion, head = _expert_fusion(routed=True)
    _train_a_little(fusion)
    present = torch.zeros(5, 5, dtype=torch.bool)
    present[[0, 1, 2], SLOTS.index("text")] = True  # 0: text only
    present[1, SLOTS.index("image")] = True  # 1: text + picture
    present[2, SLOTS.index("acoustic")] = True  # 2: text + sound; 3: nothing
    present[4, SLOTS.index("ocr")] = True  # 4: text read in a picture only
    b = _batch(5, present=present, seed=3)
    assert fusion.expert_rows(present).tolist() == [True, False, False, False, False]
    with torch.no_grad():
        got, text = fusion(b)["sentiment"], head(b["text"])
    same = [torch.allclose(got[i], text[i], atol=1e-6) for i in range(5)]
    assert same == fusion.expert_rows(present).tolist()
    plain, _ = _expert_fusion(routed=False)
    assert not plain.expert_rows(present).any()


def test_routing_needs_an_expert_and_std_has_a_floor() -> None:
    with pytest.raises(ModelFormatError, match="needs a text expert"):
        tiny_fusion_config(text_only_expert=True)
    fusion = FusionModel(tiny_fusion_config())
    std = torch.ones(16)
    std[0] = 1e-7  # a feature that never varied in training
    fusion.set_standardization("image", torch.zeros(16), std)
    assert float(fusion.image_std[0]) == pytest.approx(0.1)  # 0.1 * median, not 1e-7


def test_text_expert_is_frozen_and_never_in_training_mode() -> None:
    fusion, head = _expert_fusion()
    before = {k: v.clone() for k, v in fusion.text_expert.state_dict().items()}
    fusion.train()
    assert not fusion.text_expert.training
    assert not any(p.requires_grad for p in fusion.text_expert.parameters())
    opt = torch.optim.SGD([p for p in fusion.parameters() if p.requires_grad], lr=1.0)
    loss = fusion(_batch(6))["sentiment"].logsumexp(-1).sum()
    loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in fusion.text_expert.state_dict().items())
    assert fusion.expert_gate.weight.abs().sum() > 0  # ... while the gates did learn


def test_text_expert_must_fit() -> None:
    fusion, _ = _expert_fusion(hidden=8)
    other = MLPHead(HeadConfig(fusion.config.text_dim, 4, standardize=True))
    with pytest.raises(ModelFormatError, match="does not fit"):
        fusion.load_text_expert({f"heads.sentiment.{k}": v for k, v in other.state_dict().items()})
    with pytest.raises(ModelFormatError, match="no text expert"):
        FusionModel(tiny_fusion_config()).load_text_expert({})


def test_modality_dropout_never_drops_all() -> None:
    g = torch.Generator().manual_seed(0)
    present = torch.rand(5000, 5, generator=g) < 0.5
    present[:100] = False  # nothing present stays nothing
    present[100:200, 0] = True
    present[100:200, 1:] = False  # a single slot is always kept
    kept = modality_dropout(present, 0.9, generator=g)
    assert not (kept & ~present).any()  # only drops
    assert (kept.any(1) == present.any(1)).all()
    assert kept[100:200, 0].all()
    assert kept.sum() < present.sum()  # it does drop


def test_dropout_only_in_training(fusion: FusionModel) -> None:
    b = _batch(4)
    with torch.no_grad():
        assert torch.equal(fusion(b)["sentiment"], fusion(b)["sentiment"])


def test_cpu_determinism() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        m = FusionModel(tiny_fusion_config()).eval()
        with torch.no_grad():
            outs.append(m(_batch(4))["sentiment"])
    assert torch.equal(outs[0], outs[1])


# -- MultimodalClassifier ------------------------------------------------------------------------

BATCH = [
    CommentInput("what a great day"),  # text only
    CommentInput("", images=(IMG,)),  # image only, empty text
    CommentInput("   ", audio=(CLIP,)),  # audio only, blank text
    CommentInput("look at this", images=(IMG, IMG2), audio=(CLIP, SILENCE)),  # everything
    CommentInput(""),  # nothing at all
]


def test_protocol_scores_and_modalities(clf: MultimodalClassifier) -> None:
    assert isinstance(clf, Classifier)
    assert clf.labels == LABELS and clf.device == "cpu"
    out = clf.predict(BATCH)
    assert len(out) == len(BATCH)
    for o in out:
        assert o.label in LABELS and tuple(o.scores) == LABELS
        assert math.isclose(sum(o.scores.values()), 1.0, abs_tol=1e-5)
        assert o.label == max(o.scores, key=o.scores.__getitem__)
    assert [o.modalities for o in out] == [
        ("text",),
        ("image",),
        ("audio",),
        ("text", "image", "audio"),
        (),
    ]
    assert clf.predict([]) == []


def test_batch_vs_single_same_labels(clf: MultimodalClassifier) -> None:
    together = clf.predict(BATCH)
    for c, o in zip(BATCH, together, strict=True):
        single = clf.predict([c])[0]
        assert single.label == o.label
        for lab in LABELS:
            assert single.scores[lab] == pytest.approx(o.scores[lab], abs=1e-4)


def test_media_is_computed_once_per_content(mm_dir: Path) -> None:
    c = model.load_classifier(mm_dir, device="cpu")
    ocr = c.extractor.ocr
    c.predict([CommentInput("a", images=(IMG,)), CommentInput("b", images=(IMG.copy(),))])
    c.predict([CommentInput("c", images=(IMG,))])
    assert ocr.inner.items == 1 and ocr.cache.hits == 2


def test_content_cache_is_bounded() -> None:
    cache = ContentCache(maxsize=2)
    calls: list[int] = []
    f = lambda xs: [calls.append(len(xs)) or int(x.sum()) for x in xs]  # noqa: E731
    arrays = [np.full(3, i) for i in range(4)]
    assert cache.map(arrays, f) == [0, 3, 6, 9]
    assert len(cache) == 2
    assert cache.map(arrays[-1:], f) == [9] and cache.hits == 1


# -- model directory -----------------------------------------------------------------------------


def test_save_load_round_trip(clf: MultimodalClassifier, mm_dir: Path) -> None:
    again = model.load_classifier(mm_dir, device="cpu")
    a, b = clf.predict_proba(BATCH), again.predict_proba(BATCH)
    assert torch.equal(a, b)
    cfg = json.loads((mm_dir / "config.json").read_text())
    assert cfg["format_version"] == 2 and cfg["kind"] == "multimodal"
    assert cfg["modalities"] == ["text", "image", "audio"]
    assert set(cfg["encoders"]) >= {"text", "image", "ocr", "asr", "acoustic"}


@pytest.mark.parametrize("name", ["model.pt", "fusion.bin", "text_encoder/pytorch_model.bin"])
def test_pickles_are_refused(mm_dir: Path, tmp_path: Path, name: str) -> None:
    d = shutil.copytree(mm_dir, tmp_path / "m")
    (d / name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        model.load_classifier(d)


def test_v1_and_v2_dispatch(mm_dir: Path, tmp_path: Path) -> None:
    from model.serving.text import TextClassifier

    v1 = model.load_classifier(make_tiny_model_dir(tmp_path / "v1"), device="cpu")
    assert isinstance(v1, TextClassifier)
    assert isinstance(model.load_classifier(mm_dir, device="cpu"), MultimodalClassifier)


@pytest.mark.parametrize(
    ("version", "kind"), [(0, None), (3, "multimodal"), (None, None), (2, None), (2, "video")]
)
def test_unknown_format_version_or_kind(mm_dir: Path, tmp_path: Path, version, kind) -> None:
    d = shutil.copytree(mm_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["format_version"] = version
    if version is None:
        del cfg["format_version"]
    cfg["kind"] = kind
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="format_version"):
        model.load_classifier(d)


def test_weights_that_do_not_match_the_config(mm_dir: Path, tmp_path: Path) -> None:
    d = shutil.copytree(mm_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["fusion"]["d_model"] = 64
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="do not match"):
        model.load_classifier(d)


def test_bench_model_measures_every_workload(mm_dir: Path, tmp_path: Path) -> None:
    """``commentflow bench-model`` on the tiny model: every workload and batch size, saved."""
    import shutil as _sh

    from model.evaluation import throughput

    if _sh.which("espeak-ng") is None:
        pytest.fail("espeak-ng is a system dependency (make system-deps)")
    status = throughput.bench_model(
        mm_dir,
        lambda n, seed: [f"comment {seed}-{i}: the flight was great" for i in range(n)],
        batch_sizes=(1, 2),
        items=4,
        media_items=2,
        device="cpu",
        threads=1,
        seed=3,
        out=tmp_path / "bench",
    )
    assert status == 0
    res = json.loads((tmp_path / "bench" / "results.json").read_text())
    # the entity stage (the packaged NER) after the model: its own workload; bfloat16 text
    # encoders (auto on a CPU with AMX: model.precision) are timed beside a float32 copy
    extra = {throughput.FLOAT32_WORKLOAD} if res["text_precision"] == "bfloat16" else set()
    assert set(res["comments_per_s"]) == {
        *throughput.WORKLOADS,
        throughput.ENTITY_WORKLOAD,
        *extra,
    }
    assert ("float32_labels_agree" in res) == bool(extra)
    assert res["entities"]["version"].startswith("3.")
    for per in res["comments_per_s"].values():
        assert set(per) == {"1", "2"} and all(v > 0 for v in per.values())
    assert (tmp_path / "bench" / "throughput.png").stat().st_size > 1000


# -- the encoder registry ------------------------------------------------------------------------


def test_encoder_registry_builds_fakes_and_refuses_unknown_sources(tmp_path: Path) -> None:
    from model.encoders import registry
    from model.testing.multimodal import FakeOcr

    ctx = registry.BuildContext(model_dir=tmp_path, device="cpu", threads=1)
    assert isinstance(registry.build("ocr", {"source": "fake"}, ctx), FakeOcr)
    assert registry.build("image", {"source": "fake", "dim": 8}, ctx).dim == 8
    with pytest.raises(ModelFormatError, match="unknown"):
        registry.build("image", {"source": "video"}, ctx)


def test_production_loading_does_not_import_the_fakes(tmp_path: Path) -> None:
    """Only the plugin variable (set by model.testing for the workers that tests start) brings the
    fakes into a process that loads a fake directory; a real directory never imports them."""
    import os
    import subprocess
    import sys

    from model.encoders.registry import PLUGINS_ENV

    code = (
        "import sys, model\n"
        "model.load_classifier(sys.argv[1], device='cpu')\n"
        "assert 'model.testing' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != PLUGINS_ENV}
    text_dir = make_tiny_model_dir(tmp_path / "text")
    subprocess.run([sys.executable, "-c", code, str(text_dir)], check=True, env=env)
    fake_dir = make_tiny_multimodal_dir(tmp_path / "mm")
    bad = subprocess.run([sys.executable, "-c", code, str(fake_dir)], env=env, capture_output=True)
    assert bad.returncode != 0 and b"'fake' is unknown" in bad.stderr


def test_outputs_carry_the_language_and_the_model_declares_its_own(
    clf: MultimodalClassifier, mm_dir: Path, tmp_path: Path
) -> None:
    spanish = CommentInput("me encanta este producto, llegó muy rápido", images=(IMG,))
    (es, no_text) = clf.predict([spanish, CommentInput("", images=(IMG,))])
    assert (es.language, es.language_supported) == ("es", False)
    assert (no_text.language, no_text.language_supported) == ("und", True)
    d = shutil.copytree(mm_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "languages": ["en", "es"]}))
    assert model.load_classifier(d, device="cpu").predict([spanish])[0].language_supported
    (d / "config.json").write_text(json.dumps({**cfg, "languages": "es"}))
    with pytest.raises(ModelFormatError, match="languages"):
        model.load_classifier(d, device="cpu")


def test_augment_text_rows_makes_media_comments_and_keeps_labels() -> None:
    from model.training.fusion import augment_text_rows

    n, c = 4000, tiny_fusion_config()
    present = torch.zeros(n, 5, dtype=torch.bool)
    present[:, 0] = True
    b = _batch(n, t=4, present=present, seed=3)
    b["y"] = torch.arange(n) % 3
    text, y = b["text"].clone(), b["y"].clone()
    images, photos = torch.randn(5, c.image_dim), torch.randn(5, c.image_dim) + 100
    carriers = torch.randn(3, c.text_dim) + 50
    augment_text_rows(
        b,
        torch.Generator().manual_seed(0),
        move=0.3,
        copy=0.1,
        mismatch=0.25,
        photo=0.15,
        carriers=carriers,
        images=images,
        photos=photos,
    )
    p = b["present"]
    assert torch.equal(b["y"], y)  # labels never change
    media_text = torch.where(p[:, 2:3], b["ocr"], b["speech"])  # (N, Dt) the media's text
    read = p[:, 2] | p[:, 3]
    assert not (p[:, 2] & p[:, 3]).any()  # one medium each
    own = read & torch.isclose(media_text, text).all(1)
    other = read & ~own
    kept = p[:, 0] & torch.isclose(b["text"], text).all(1)  # the comment's own text stayed
    moved = own & ~kept
    assert 0.25 < moved.float().mean() < 0.35  # move
    assert 0.05 < (own & kept).float().mean() < 0.15  # copy: the text stays
    assert 0.12 < other.float().mean() < 0.22 and kept[other].all()  # mismatch: the comment stays
    # a mismatched row reads a text of ANOTHER label
    for i in other.nonzero().flatten()[:50].tolist():
        j = int(torch.isclose(text, media_text[i]).all(1).nonzero()[0])
        assert y[j] != y[i]
    # pictures: every row read from the OCR slot has one, photo rows get a photo, no OCR
    assert p[p[:, 2], 1].all()
    photo_rows = p[:, 1] & ~read
    assert 0.1 < photo_rows.float().mean() < 0.2 and (b["image"][photo_rows] > 50).all()
    # half of the moved rows got a carrier text
    carried = moved & p[:, 0]
    assert carried.any() and (b["text"][carried] > 20).all()
    assert torch.equal(b["text"][moved & ~p[:, 0]], torch.zeros_like(b["text"][moved & ~p[:, 0]]))


def test_measure_pair_takes_turns_and_word_errors_count_words() -> None:
    from model.evaluation.throughput import measure_pair, word_errors

    calls: list[tuple[str, int]] = []

    class Clf:
        def __init__(self, name: str) -> None:
            self.name = name

        def predict(self, batch: list[CommentInput]) -> list[object]:
            calls.append((self.name, len(batch)))
            return []

    rates = measure_pair(Clf("old"), Clf("new"), [CommentInput("x")] * 5, 2)
    assert calls == [("old", 2), ("new", 2), ("old", 2), ("new", 2), ("old", 1), ("new", 1)]
    assert all(r > 0 for r in rates)
    assert word_errors("hello big world", "Hello, world!") == 1
    assert word_errors("", "a b") == 2 and word_errors("it's", "It's.") == 0


def test_unsupported_languages_reach_the_text_slot_past_minilm(mm_dir: Path) -> None:
    """model.serving.routing in the default model: an unsupported language's text slot reads
    the routed columns at the text expert's training mean, English ones are untouched (the
    tiny text encoder stands in for MiniLM: columns 0-7 routed)."""
    from model.serving.multimodal import features_to_tensors

    routed = model.load_classifier(mm_dir, device="cpu")
    assert routed.minilm_cols is None  # the tiny directory says nothing: nothing routed
    routed.minilm_cols = slice(0, 8)
    batch = [
        CommentInput("I love this product, it works perfectly well"),
        CommentInput("La comida estaba fría y el camarero fue muy grosero."),
    ]
    assert [lang.supported for lang in routed.languages.assess(c.text for c in batch)] == [
        True,
        False,
    ]
    inputs = features_to_tensors(routed.extractor.extract(batch))
    expert_mean = routed.fusion.text_expert.feat_mean
    inputs["text"][1, :8] = expert_mean[:8]
    want = routed.predict_tensors(inputs)
    torch.testing.assert_close(routed.predict_proba(batch), want, atol=1e-5, rtol=0)
    served = routed.predict(batch)
    torch.testing.assert_close(
        torch.tensor([list(o.scores.values()) for o in served]), want, atol=1e-5, rtol=0
    )
    plain = model.load_classifier(mm_dir, device="cpu").predict_proba(batch)
    torch.testing.assert_close(plain[0], want[0], atol=1e-5, rtol=0)
    assert not torch.allclose(plain[1], want[1], atol=1e-5)
