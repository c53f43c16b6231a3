"""``commentflow gpu-check`` on the CPU: a tiny random model with fake media models, 12 comments.

On a machine without a GPU the target device is the CPU, so the parity is cpu vs cpu and must be
complete; a classifier that answers differently on the "target" makes the check (and the
command's exit status) fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from model.base import ClassOutput
from model.evaluation import gpu_check as gc
from model.serving import load_classifier
from model.testing.multimodal import make_tiny_multimodal_dir

ENGLISH = [
    "what a wonderful flight, thank you so much",
    "the worst delay I have ever had, never again",
    "the music at the gate was fine I guess",
    "I love this airline and the crew was great",
    "my bag is lost and nobody answers the phone",
]
CHINESE = ["这本书非常好看", "质量太差了"]
SMALL = gc.CheckOptions(
    comments=12,
    batch_size=4,
    text_batch=4,
    text_items=8,
    media_batch=2,
    media_items=2,
    threads=1,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_multimodal_dir(tmp_path_factory.mktemp("gpu-check") / "model", seed=0)


class _Flipped:
    """The classifier with every label moved to the next one: a target that disagrees."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.version, self.device = inner.name, inner.version, inner.device
        self.modalities = inner.modalities

    def predict(self, batch: Any) -> list[ClassOutput]:
        labels = ("negative", "neutral", "positive")
        return [
            dataclasses.replace(o, label=labels[(labels.index(o.label) + 1) % 3])
            for o in self.inner.predict(batch)
        ]


def _flip_second(model_dir: Any, device: str) -> Any:
    """``load``: the first call the real classifier, the second (the target) flipped."""
    clf = load_classifier(model_dir, device=device)
    _flip_second.calls += 1  # type: ignore[attr-defined]
    return clf if _flip_second.calls % 2 else _Flipped(clf)  # type: ignore[attr-defined]


def test_comments_are_a_deterministic_mix_of_kinds() -> None:
    a = gc.build_comments(ENGLISH, CHINESE, 12, seed=3, progress=False)
    b = gc.build_comments(ENGLISH, CHINESE, 12, seed=3, progress=False)
    assert [c.kind for c in a] == ["text"] * 7 + ["picture"] * 2 + ["audio"] + ["text"] * 2
    assert any(c.comment.text in CHINESE for c in a)
    pics = [c.comment for c in a if c.kind == "picture"]
    assert all(p.images[0].ndim == 3 and p.images[0].shape[2] == 3 for p in pics)
    voice = next(c.comment for c in a if c.kind == "audio")
    assert voice.audio[0].dtype.name == "float32" and voice.audio[0].size > 0
    for x, y in zip(a, b, strict=True):
        assert x.comment.text == y.comment.text
        assert all((i == j).all() for i, j in zip(x.comment.images, y.comment.images, strict=True))
        assert all((i == j).all() for i, j in zip(x.comment.audio, y.comment.audio, strict=True))


def test_cpu_vs_cpu_agrees_fully_and_fills_the_table(tiny: Path, tmp_path: Path) -> None:
    r = gc.run_check(tiny, ENGLISH, CHINESE, SMALL, progress=False)
    assert (r["reference_device"], r["target_device"], r["same_device"]) == ("cpu", "cpu", True)
    p = r["parity"]
    assert (p["n"], p["agreement"], p["max_abs_score_diff"], p["disagreements"]) == (12, 1.0, 0, [])
    assert {k: v["n"] for k, v in p["per_kind"].items()} == {"text": 9, "picture": 2, "audio": 1}
    assert set(r["comments_per_s"]) == {"text", "media_new", "media_cached"}
    assert all(v > 0 for v in r["comments_per_s"].values())
    assert r["passed"] is True
    table = gc.save_results(r, tmp_path)
    assert (tmp_path / "results.md").read_text() == table
    assert json.loads((tmp_path / "results.json").read_text())["parity"]["agreement"] == 1.0
    assert "cpu vs cpu (no GPU here" in table and "| result | PASS |" in table
    assert "label agreement, all 12 comments | 100.00% (min 99%)" in table
    assert "not run (--no-stream)" in table
    assert table.startswith("| check | result |\n|---|---|\n")


def test_a_disagreeing_target_fails_the_check_and_the_command(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from commentflow import gpu_check as command_module
    from commentflow.settings import Settings

    _flip_second.calls = 0  # type: ignore[attr-defined]
    real = gc.run_check

    def run_check(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return real(*args, **kwargs, load=_flip_second, progress=False)

    monkeypatch.setattr(command_module, "load_texts", lambda seed: (ENGLISH, CHINESE))
    monkeypatch.setattr(command_module, "run_check", run_check)
    options = dataclasses.replace(SMALL, media_items=0)
    status = command_module.run(
        options, Settings(model_dir=str(tiny)), stream=False, out=str(tmp_path / "out")
    )
    assert status == 1
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert r["parity"]["agreement"] == 0.0 and r["passed"] is False
    assert len(r["parity"]["disagreements"]) == 12
    assert "FAIL: labels differ" in (tmp_path / "out" / "results.md").read_text()


def test_the_command_parses_its_defaults() -> None:
    from commentflow.cli import build_parser
    from commentflow.commands import gpu_check as verb

    fields = {f.name: f.default for f in dataclasses.fields(gc.CheckOptions)}
    assert {k: v for k, v in fields.items() if k != "device"} == verb.DEFAULTS
    args = build_parser(["gpu-check"]).parse_args(["gpu-check"])
    assert {k: getattr(args, k) for k in verb.DEFAULTS} == verb.DEFAULTS
    assert (args.stream, args.out) == (True, None)
    args = build_parser(["gpu-check"]).parse_args(["gpu-check", "--no-stream", "--comments", "60"])
    assert (args.stream, args.comments) == (False, 60)
    parser = argparse.ArgumentParser()
    verb.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--min-agreement", "1.5"])


def test_auto_is_the_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc.torch.cuda, "is_available", lambda: False)
    assert gc.resolve_device("auto") == "cpu"
    monkeypatch.setattr(gc.torch.cuda, "is_available", lambda: True)
    assert (gc.resolve_device("auto"), gc.resolve_device("cpu")) == ("cuda", "cpu")


def test_the_stream_rows_come_from_the_bench_results(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--stream``: the short bench runs on the target device with batch_max; its end-to-end
    numbers land in the table (the bench itself, broker and all, is stubbed here)."""
    from commentflow import gpu_check as command_module
    from commentflow.settings import Settings

    seen: dict[str, Any] = {}

    def bench(options: Any, settings: Settings) -> int:
        seen.update(options=options, device=settings.device)
        Path(options.out).mkdir(parents=True)
        e2e = {"throughput": 114.3, "latency_rate": 57.0, "p50_ms": 105.0, "p99_ms": 245.0}
        media = {"new_media": {"text_p99_ms": 230.0, "media_p99_ms": 3156.0}}
        (Path(options.out) / "results.json").write_text(
            json.dumps({"end_to_end": e2e, "media": media})
        )
        return 0

    monkeypatch.setattr(command_module, "bench", bench)
    monkeypatch.setattr(command_module, "load_texts", lambda seed: (ENGLISH, CHINESE))
    options = dataclasses.replace(SMALL, media_items=0, device="cpu")
    settings = Settings(model_dir=str(tiny), batch_max=16)
    assert command_module.run(options, settings, stream=True, out=str(tmp_path)) == 0
    assert seen["device"] == "cpu" and seen["options"].batch_sizes == (16,)
    assert seen["options"].out == str(tmp_path / "bench")
    table = (tmp_path / "results.md").read_text()
    assert "| end to end on cpu, flood | 114.3/s |" in table
    assert "| end to end latency at 57/s, p50 / p99 | 105 / 245 ms |" in table
    assert "| end to end, new media phase: text p99 / media p99 | 230 / 3156 ms |" in table
    assert json.loads((tmp_path / "results.json").read_text())["stream"]["status"] == 0


def test_media_engines_say_where_ocr_and_asr_run() -> None:
    from types import SimpleNamespace as NS

    ocr = NS(providers=[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"])
    ocr.rec_batch = 32
    asr = NS(device="cuda", compute_type="float16", window="speech", batch_size=32)
    clf = NS(extractor=NS(ocr=NS(inner=ocr), asr=asr))
    assert gc.media_engines(clf) == {
        "ocr": "onnxruntime CUDAExecutionProvider, rec batch 32",
        "asr": "ctranslate2 cuda float16, window speech, batch 32",
    }
    assert gc.media_engines(NS(extractor=NS(ocr=NS(), asr=NS()))) is None
    assert gc.media_engines(NS()) is None
