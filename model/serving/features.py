"""Per-comment multimodal features for the fusion model, live or cached over a data set.

For a batch of :class:`~model.base.CommentInput`, :class:`FeatureExtractor` produces
:class:`Features` (numpy, one row per comment)::

    text    (B, Dt)  text encoder on the comment text
    image   (B, Di)  image encoder, mean over the comment's images
    ocr     (B, Dt)  text encoder on the text read from the images (joined by spaces)
    speech  (B, Dt)  text encoder on the transcripts of the audio clips (joined by spaces)
    mel     (B, T, n_mels) + mel_lengths (B,)   log-mel of the audio (clips concatenated,
                     cropped to max_seconds, padded to the batch's longest)
    present (B, 5)   bool, in PRESENCE order: text, image, ocr, speech, acoustic

A modality that is absent is a zero row (and ``False`` in ``present``): text iff the (cleaned)
comment text is non-empty, image iff >= 1 image, ocr iff the OCR text is non-empty, speech iff
the transcript is non-empty, acoustic iff >= 1 audio clip. All texts of a batch (comment texts,
OCR texts, transcripts) go through the text encoder in one call, sorted and padded per chunk by
the encoder itself. Texts go through the normaliser the text encoder's config names first
(``clean``: :func:`model.serving.normalise.text_normaliser`), as the classifier does.

"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from model.base import CommentInput
from model.media.decode import DecodeConfig
from model.nn.acoustic import MelConfig, log_mel_batch
from model.nn.fusion import PRESENCE
from model.serving.normalise import text_normaliser
from model.serving.unglue import unglue

__all__ = [
    "PRESENCE",
    "FeatureExtractor",
    "Features",
]


class TextEncoderLike(Protocol):
    out_dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class ImageEncoderLike(Protocol):
    dim: int
    identity: str

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


class OcrLike(Protocol):
    identity: str

    def read(self, images: Sequence[np.ndarray]) -> list[str]: ...


class AsrLike(Protocol):
    identity: str

    def transcribe(self, audio: Sequence[np.ndarray]) -> list[str]: ...


# --------------------------------------------------------------------------- features


@dataclass(frozen=True, slots=True)
class Features:
    """Features of a batch of comments; see the module docstring for every field."""

    text: np.ndarray  # (B, Dt) float32
    image: np.ndarray  # (B, Di) float32
    ocr: np.ndarray  # (B, Dt) float32
    speech: np.ndarray  # (B, Dt) float32
    mel: np.ndarray  # (B, T, n_mels) float32
    mel_lengths: np.ndarray  # (B,) int64
    present: np.ndarray  # (B, 5) bool, PRESENCE order
    ocr_texts: tuple[str, ...]
    transcripts: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.present.shape[0])


def _join(parts: Sequence[str]) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


class FeatureExtractor:
    """Text, image, OCR, speech and log-mel features of comments (blocking; thread-safe).

    Any objects with the encoders' methods work (see the ``*Like`` protocols): tests pass fakes.
    It takes decoded media; :attr:`decode_config` says how they must have been decoded
    (:func:`model.media.decode.decode_input`). With ``parallel_media`` (default) OCR runs on
    the caller's thread while speech recognition and the image encoder run on a second one
    (:meth:`read_media`); the registry gives OCR and ASR half of the threads each.
    """

    def __init__(
        self,
        text_encoder: TextEncoderLike,
        image_encoder: ImageEncoderLike,
        ocr: OcrLike,
        asr: AsrLike,
        *,
        mel: MelConfig | None = None,
        decode: DecodeConfig | None = None,
        parallel_media: bool = True,
    ) -> None:
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.ocr = ocr
        self.asr = asr
        self.mel_config = mel or MelConfig()
        #: How media bytes become this extractor's inputs (config.json ``preprocess``): whoever
        #: decodes for it (the worker, featurisation of a data set) decodes with this.
        self.decode_config = decode or DecodeConfig()
        if self.decode_config.audio_sample_rate != self.mel_config.sr:
            raise ValueError(
                f"audio decoded at {self.decode_config.audio_sample_rate} Hz, log-mel expects "
                f"{self.mel_config.sr} Hz"
            )
        config = getattr(text_encoder, "config", None)
        self._normalise = text_normaliser(getattr(config, "clean", False))
        self._unglue_ocr = bool(getattr(ocr, "unglue", False))  # encoders.ocr.unglue
        self.parallel_media = bool(parallel_media)
        self._side_pools: dict[int, ThreadPoolExecutor] = {}  # by calling thread (read_media)
        self._pools_lock = threading.Lock()

    @classmethod
    def default(
        cls,
        device: str = "auto",
        threads: int = 2,
        *,
        decode: DecodeConfig | None = None,
        text: Mapping[str, Any] | None = None,
    ) -> FeatureExtractor:
        """MiniLM, EfficientNet-Lite0, RapidOCR and Whisper tiny.en, all from their packages
        (the encoders of :func:`~model.format.multimodal.default_encoders_config`), for media
        decoded with ``decode`` (default: :class:`~model.media.decode.DecodeConfig`); ``text``
        replaces the text section (a text model's ``text_encoder``, e.g. MiniLM + USE-m3)."""
        from model.encoders import registry
        from model.format.multimodal import default_encoders_config

        sections = default_encoders_config()
        if text is not None:
            sections["text"] = dict(text)
        ctx = registry.BuildContext(model_dir=Path("."), device=device, threads=threads)
        built = (registry.build(role, sections[role], ctx) for role in registry.ROLES)
        return cls(*built, decode=decode)

    @property
    def text_dim(self) -> int:
        return int(self.text_encoder.out_dim)

    @property
    def image_dim(self) -> int:
        return int(self.image_encoder.dim)

    def identities(self) -> dict[str, str]:
        """What made each feature (stored with extracted data sets)."""
        return {
            "text_encoder": str(getattr(self.text_encoder, "identity", type(self.text_encoder))),
            "image_encoder": self.image_encoder.identity,
            "ocr": self.ocr.identity + ("|unglue" if self._unglue_ocr else ""),
            "asr": self.asr.identity,
        }

    def _unglue(self, text: str) -> str:
        return unglue(text) if self._unglue_ocr else text

    def prepare(self, text: str) -> str:
        """A text as the text encoder reads it (the model's normaliser); "" means no text slot."""
        return self._normalise(text)

    def read_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[str]]:
        """Embeddings ``(N, Di)`` float32 and OCR texts of a flat list of images."""
        if not images:
            return np.zeros((0, self.image_dim), np.float32), []
        return np.asarray(self.image_encoder.encode(images), np.float32), self.ocr.read(images)

    def read_media(
        self, images: Sequence[np.ndarray], clips: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, list[str], list[str]]:
        """Image embeddings ``(N, Di)``, OCR texts and transcripts of flat lists of media.

        Blocking. With ``parallel_media`` and both kinds present, OCR runs on the calling
        thread while speech recognition and then the image encoder run on a side thread (OCR
        alone is about as long as the two others together). One side thread per calling thread,
        created by it on first use, so that it inherits the caller's CPU priority (the media
        lane's warm thread runs niced; the inference thread does not).
        """
        if clips and images and self.parallel_media:
            side = self._side_pool().submit(self._transcribe_and_embed, images, clips)
            texts = self.ocr.read(images)
            transcripts, vecs = side.result()
            return vecs, texts, transcripts
        vecs, texts = self.read_images(images)
        return vecs, texts, (self.asr.transcribe(clips) if clips else [])

    def _transcribe_and_embed(
        self, images: Sequence[np.ndarray], clips: Sequence[np.ndarray]
    ) -> tuple[list[str], np.ndarray]:
        transcripts = self.asr.transcribe(clips)
        return transcripts, np.asarray(self.image_encoder.encode(images), np.float32)

    def _side_pool(self) -> ThreadPoolExecutor:
        caller = threading.get_ident()
        with self._pools_lock:
            pool = self._side_pools.get(caller)
            if pool is None:
                pool = ThreadPoolExecutor(1, thread_name_prefix="commentflow-media")
                self._side_pools[caller] = pool
        return pool

    def extract(self, batch: Sequence[CommentInput]) -> Features:
        """Features of ``batch``, one row per comment, in order. Blocking."""
        images = [im for c in batch for im in c.images]
        clips = [a for c in batch for a in c.audio]
        vecs, texts, transcripts = self.read_media(images, clips)
        image_vecs, ocr_texts, speech_texts = [], [], []
        i = j = 0
        for c in batch:
            k, m = len(c.images), len(c.audio)
            image_vecs.append(vecs[i : i + k])
            ocr_texts.append(texts[i : i + k])
            speech_texts.append(transcripts[j : j + m])
            i, j = i + k, j + m
        return self.assemble(
            [c.text for c in batch], image_vecs, ocr_texts, speech_texts, [c.audio for c in batch]
        )

    __call__ = extract

    def assemble(
        self,
        texts: Sequence[str],
        image_vecs: Sequence[np.ndarray],
        ocr_texts: Sequence[Sequence[str]],
        transcripts: Sequence[Sequence[str]],
        audio: Sequence[Sequence[np.ndarray]],
    ) -> Features:
        """Features from per-comment media results (what :meth:`extract` and the cache share).

        ``image_vecs[b]`` is ``(k_b, Di)`` for comment ``b``'s ``k_b`` images, ``ocr_texts[b]`` and
        ``transcripts[b]`` its per-image / per-clip strings, ``audio[b]`` its clips.
        """
        b = len(texts)
        comment = [self.prepare(t or "") for t in texts]
        ocr_joined = [self.prepare(self._unglue(_join(t))) for t in ocr_texts]
        speech_joined = [self.prepare(_join(t)) for t in transcripts]

        present = np.zeros((b, len(PRESENCE)), dtype=bool)  # (B, 5)
        present[:, 0] = [bool(t) for t in comment]
        present[:, 1] = [len(v) > 0 for v in image_vecs]
        present[:, 2] = [bool(t) for t in ocr_joined]
        present[:, 3] = [bool(t) for t in speech_joined]
        present[:, 4] = [len(a) > 0 for a in audio]

        # One text-encoder call for every text of the batch (the encoder pads per sorted chunk).
        columns = (comment, ocr_joined, speech_joined)
        flat = [t for col in columns for t in col if t]
        enc = (
            np.asarray(self.text_encoder.encode(flat), np.float32)
            if flat
            else np.zeros((0, self.text_dim), np.float32)
        )
        outs = []
        start = 0
        for col in (0, 2, 3):  # text, ocr, speech presence columns, in `columns` order
            out = np.zeros((b, self.text_dim), np.float32)  # (B, Dt)
            rows = np.flatnonzero(present[:, col])
            out[rows] = enc[start : start + len(rows)]
            start += len(rows)
            outs.append(out)

        image = np.zeros((b, self.image_dim), np.float32)  # (B, Di)
        for i, v in enumerate(image_vecs):
            if len(v):
                image[i] = np.asarray(v, np.float32).mean(axis=0)

        cfg = self.mel_config
        waves = [
            np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in clips])
            if clips
            else np.zeros(0, np.float32)
            for clips in audio
        ]
        with torch.inference_mode():
            mel, lengths = log_mel_batch(
                waves, cfg.sr, cfg.n_mels, cfg.n_fft, cfg.hop, cfg.max_seconds
            )  # (B, T, M), (B,)
        return Features(
            text=outs[0],
            image=image,
            ocr=outs[1],
            speech=outs[2],
            mel=mel.numpy(),
            mel_lengths=lengths.numpy(),
            present=present,
            ocr_texts=tuple(ocr_joined),
            transcripts=tuple(speech_joined),
        )
