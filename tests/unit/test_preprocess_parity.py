"""One preprocessing path: raw media bytes give the model the same inputs whether the worker
fetched them or training-feature extraction read them from a data set.

The model is a tiny random one whose image encoder, OCR and ASR are content-hash fakes
(:mod:`model.testing.multimodal`): one pixel or one sample of difference in the decoded media
changes their output, hence the logits. The decoder is the real one on both paths.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image, ImageDraw

from model import load_classifier
from model.base import CommentInput
from model.data import media as synthesis_media
from model.data.featurise import FeatureError, extract_dataset, load_features
from model.errors import ModelFormatError
from model.format.multimodal import read_preprocess
from model.media.decode import DecodeConfig, decode_input
from model.media.errors import MediaDecodeError
from model.media.resample import resample
from model.serving import decode_config_for, preprocess
from model.serving.features import FeatureExtractor
from model.serving.multimodal import MultimodalClassifier, features_to_tensors
from model.testing.multimodal import FakeAsr, FakeImageEncoder, FakeOcr, make_tiny_multimodal_dir
from workers import media_decode
from workers.address_policy import DecodeFailed
from workers.config import MediaSettings
from workers.media import build_media_service
from workers.media_fetch import FetchResult

TEXTS = ("look at this", "", "and listen")


def png_with_text(width: int = 1000, height: int = 700) -> bytes:
    """A PNG well over 448 px with text on a gradient: resizing changes every pixel."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack(
        [
            np.broadcast_to(x, (height, width)),
            np.broadcast_to(y, (height, width)),
            np.full((height, width), 128, np.float32),
        ],
        axis=-1,
    ).astype(np.uint8)
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    for row in range(5):
        draw.text((40, 60 + 120 * row), "Terrible flight, lost my bags", fill=(0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def wav_44k(seconds: float = 1.3) -> bytes:
    """16-bit PCM at 44.1 kHz: a tone and a chirp (decoding resamples to the model's rate)."""
    rate = 44_100
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * (300 + 2000 * t) * t)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class ZeroText:
    out_dim = 4

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), 4), np.float32)


class BytesFetcher:
    """The media fetcher with the network cut out: every URL answers with its bytes."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def fetch(self, url: str, kind: str, **_: object) -> FetchResult:
        return FetchResult(url, url, kind, self.bodies[url], None, attempts=1, redirects=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_multimodal_dir(tmp_path_factory.mktemp("parity") / "model", seed=3)


def small_side_dir(model_dir: Path, root: Path) -> Path:
    """A copy of ``model_dir`` trained (as it says) on images shrunk to 256 px."""
    out = Path(shutil.copytree(model_dir, root / "small"))
    cfg = json.loads((out / "config.json").read_text())
    cfg["preprocess"]["image_max_side"] = 256
    (out / "config.json").write_text(json.dumps(cfg))
    return out


async def worker_inputs(
    model_dir: Path, image: bytes, audio: bytes
) -> tuple[list[CommentInput], list[list[dict[str, str]]]]:
    """The comments as the worker builds them: its media service (decode config from the
    model directory, as ``streamer.agents`` wires it), fetch, decode in the pool, cache."""
    service = build_media_service(MediaSettings(), preprocess=decode_config_for(model_dir))
    service.fetcher = BytesFetcher(  # type: ignore[assignment]
        {"https://cdn.example/a.png": image, "https://cdn.example/a.wav": audio}
    )
    refs = [
        [{"type": "image", "url": "https://cdn.example/a.png"}],
        [{"type": "audio", "url": "https://cdn.example/a.wav"}],
        [
            {"type": "image", "url": "https://cdn.example/a.png"},
            {"type": "audio", "url": "https://cdn.example/a.wav"},
        ],
    ]
    async with service:
        first = await service.resolve_batch(refs)
        again = await service.resolve_batch(refs)  # cache hits: the same arrays
    for a, b in zip(first, again, strict=True):
        for x, y in zip([*a.images, *a.audio], [*b.images, *b.audio], strict=True):
            np.testing.assert_array_equal(x, y)
    comments = [
        CommentInput(text, tuple(r.images), tuple(r.audio))
        for text, r in zip(TEXTS, first, strict=True)
    ]
    return comments, [r.media_errors for r in first]


def training_features(model_dir: Path, root: Path, image: bytes, audio: bytes) -> dict:
    """The same comments as a data set, through ``extract_dataset`` and ``load_features``."""
    (root / "images").mkdir(parents=True)
    (root / "audio").mkdir()
    (root / "images" / "a.png").write_bytes(image)
    (root / "audio" / "a.wav").write_bytes(audio)
    media = [("images/a.png", None), (None, "audio/a.wav"), ("images/a.png", "audio/a.wav")]
    lines = [
        json.dumps({"id": f"r{i}", "label": "neutral", "text": text, "image": im, "audio": au})
        for i, (text, (im, au)) in enumerate(zip(TEXTS, media, strict=True))
    ]
    (root / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    clf = load_classifier(model_dir, "cpu")
    assert isinstance(clf, MultimodalClassifier)
    extract_dataset(
        root / "data.jsonl",
        root / "data.npz",
        cache_dir=root / "cache",
        extractor=clf.extractor,
        progress=False,
    )
    fs = load_features(root / "data.npz")
    mel, lengths = fs.mel_batch(range(len(fs)))
    return {
        "text": torch.from_numpy(fs.text.astype(np.float32)),
        "image": torch.from_numpy(fs.image.astype(np.float32)),
        "ocr": torch.from_numpy(fs.ocr.astype(np.float32)),
        "speech": torch.from_numpy(fs.speech.astype(np.float32)),
        "mel": torch.from_numpy(mel),
        "mel_lengths": torch.from_numpy(lengths.astype(np.int64)),
        "present": torch.from_numpy(fs.present),
        "ocr_texts": fs.ocr_texts.tolist(),
        "transcripts": fs.transcripts.tolist(),
        "preprocess": fs.meta.get("preprocess"),
    }


@pytest.mark.parametrize("side", [448, 256])
async def test_worker_and_training_features_match_from_raw_bytes(
    model_dir: Path, tmp_path: Path, side: int
) -> None:
    directory = model_dir if side == 448 else small_side_dir(model_dir, tmp_path)
    image, audio = png_with_text(), wav_44k()
    comments, errors = await worker_inputs(directory, image, audio)
    assert errors == [[], [], []]
    assert max(comments[0].images[0].shape[:2]) == side  # 1000 x 700 shrunk
    assert comments[1].audio[0].shape == (int(1.3 * 16_000),)  # resampled to 16 kHz

    clf = load_classifier(directory, "cpu")
    assert isinstance(clf, MultimodalClassifier)
    live = clf.extractor.extract(comments)
    train = training_features(directory, tmp_path / "data", image, audio)

    # Feature files store float16: the live features rounded the same way are equal exactly
    # (same decoded media, same encoders); only that storage rounding separates the paths.
    # The log-mel padding is not stored: FeatureSet.mel_batch pads with log(1e-6) in float32.
    served = features_to_tensors(live)
    stored = {k: v.half().float() if v.is_floating_point() else v for k, v in served.items()}
    for i, n in enumerate(stored["mel_lengths"].tolist()):
        stored["mel"][i, n:] = float(np.log(1e-6))
    for name, value in stored.items():
        assert torch.equal(train[name], value), name

    assert train["ocr_texts"] == list(live.ocr_texts)
    assert train["transcripts"] == list(live.transcripts)
    assert all(train["ocr_texts"][i] for i in (0, 2)) and all(train["transcripts"][1:])
    assert train["preprocess"] == clf.decode_config.preprocess()

    # The fusion model sees the same inputs from both paths: the same scores.
    from_training = clf.predict_tensors({k: train[k] for k in stored})
    from_worker = clf.predict_tensors(stored)
    torch.testing.assert_close(from_training, from_worker, rtol=0, atol=0)
    # ... and the served scores differ from these only by the float16 storage of features.
    torch.testing.assert_close(clf.predict_proba(comments), from_worker, rtol=0, atol=2e-3)


def test_the_model_directory_carries_its_preprocess_section(model_dir: Path) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["preprocess"] == {
        "image_max_side": 448,
        "audio_sample_rate": 16_000,
        "audio_max_seconds": 30.0,
    }
    assert decode_config_for(model_dir) == DecodeConfig()


def test_a_directory_without_the_section_gets_todays_defaults(tmp_path: Path) -> None:
    committed = Path(__file__).parents[2] / "models" / "multimodal"
    cfg = json.loads((committed / "config.json").read_text())
    assert cfg["preprocess"] == DecodeConfig().preprocess()  # the shipped model carries it
    old = {k: v for k, v in cfg.items() if k != "preprocess"}  # a model from before it
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert decode_config_for(tmp_path) == DecodeConfig()
    assert read_preprocess({}) == DecodeConfig()


def test_worker_limits_never_change_what_shapes_features(tmp_path: Path, model_dir: Path) -> None:
    small = small_side_dir(model_dir, tmp_path)
    settings = MediaSettings(media_max_pixels=1_000_000)
    service = build_media_service(settings, preprocess=decode_config_for(small))
    decode = service.config.decode
    assert (decode.image_max_side, decode.image_max_pixels) == (256, 1_000_000)
    assert build_media_service(settings).config.decode.image_max_side == 448
    with pytest.raises(ValueError, match="preprocess section"):
        DecodeConfig.from_preprocess({}, image_max_side=100)


@pytest.mark.parametrize(
    "section", [{"image_max_side": 0}, {"audio_sample_rate": 44_123}, {"resize": "lanczos"}]
)
def test_a_bad_preprocess_section_is_refused_at_load(
    model_dir: Path, tmp_path: Path, section: dict
) -> None:
    bad = small_side_dir(model_dir, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["preprocess"] = section
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="preprocess"):
        load_classifier(bad, "cpu")


def test_one_resampler_everywhere() -> None:
    t = np.arange(22_050) / 22_050
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = resample(x, 22_050, 16_000)  # the espeak rate to the model rate
    assert y.shape == (16_000,)
    np.testing.assert_array_equal(synthesis_media.resample(x, 22_050, 16_000), y)
    np.testing.assert_array_equal(media_decode.resample(x, 22_050, 16_000), y)
    assert not hasattr(preprocess, "resample")


def test_decode_errors_keep_their_reason_on_each_side(tmp_path: Path) -> None:
    cut = png_with_text(600, 500)[:200]
    with pytest.raises(MediaDecodeError) as model_side:
        decode_input(cut, "image")
    with pytest.raises(DecodeFailed) as worker_side:
        media_decode.decode_input(cut, "image")
    assert model_side.value.reason == worker_side.value.reason == "decode_error"

    (tmp_path / "a.png").write_bytes(cut)
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "x", "image": "a.png"}) + "\n")

    x = FeatureExtractor(ZeroText(), FakeImageEncoder(), FakeOcr(), FakeAsr())
    with pytest.raises(FeatureError, match="decode_error"):
        extract_dataset(
            tmp_path / "d.jsonl",
            tmp_path / "d.npz",
            extractor=x,
            progress=False,
            cache_dir=tmp_path / "cache",
        )


def test_featurise_cache_is_keyed_by_the_preprocessing(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_with_text())
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "x", "image": "a.png"}) + "\n")
    seen = []
    for side in (448, 448, 256):
        x = FeatureExtractor(
            ZeroText(),
            FakeImageEncoder(),
            FakeOcr(),
            FakeAsr(),
            decode=DecodeConfig(image_max_side=side),
        )
        extract_dataset(
            tmp_path / "d.jsonl",
            tmp_path / f"{side}.npz",
            extractor=x,
            progress=False,
            cache_dir=tmp_path / "cache",
        )
        seen.append((x.image_encoder.items, x.ocr.items))
    # the second run finds the 448 px results; 256 px images are encoded and read again
    assert seen == [(1, 1), (0, 0), (1, 1)]


def test_training_refuses_val_features_decoded_another_way(tmp_path: Path) -> None:
    from model.training.fusion import _same_preprocess

    (tmp_path / "a.png").write_bytes(png_with_text())
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "x", "image": "a.png"}) + "\n")
    x = FeatureExtractor(ZeroText(), FakeImageEncoder(), FakeOcr(), FakeAsr())
    extract_dataset(
        tmp_path / "d.jsonl",
        tmp_path / "d.npz",
        extractor=x,
        progress=False,
        cache_dir=tmp_path / "cache",
    )
    fs = load_features(tmp_path / "d.npz")
    assert _same_preprocess(fs, DecodeConfig().preprocess()) is fs
    with pytest.raises(ValueError, match="same decoding"):
        _same_preprocess(fs, DecodeConfig(image_max_side=256).preprocess())
    with pytest.raises(ValueError, match="same decoding"):
        _same_preprocess(fs, None)  # training features from before the section was recorded


def test_the_worker_decodes_as_its_model_says(model_dir: Path, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from streamer.agents import Resources
    from streamer.settings import Settings

    small = small_side_dir(model_dir, tmp_path)
    clf = load_classifier(small, "cpu")
    settings = Settings(model_dir=str(small))
    assert Resources._decode_config(settings, None) == decode_config_for(small)
    assert Resources._decode_config(settings, clf) is clf.decode_config
    missing = Settings(model_dir=str(tmp_path / "none"))
    assert Resources._decode_config(missing, None) is None  # the model load reports it

    # After the model has loaded, a media service decoding otherwise stops the worker.
    ok = build_media_service(MediaSettings(), preprocess=clf.decode_config)
    Resources._check_decoding(SimpleNamespace(runner=SimpleNamespace(classifier=clf), media=ok))
    wrong = build_media_service(MediaSettings())
    with pytest.raises(ModelFormatError, match="trained on"):
        Resources._check_decoding(
            SimpleNamespace(runner=SimpleNamespace(classifier=clf), media=wrong)
        )
