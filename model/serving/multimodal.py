"""The multimodal classifier: frozen encoders -> features -> :class:`~model.nn.fusion.FusionModel`.

The directory format (v2) is :mod:`model.format.multimodal`; the encoders come from
:mod:`model.encoders.registry`. Blocking. :meth:`MultimodalClassifier.predict` may run on several
threads at once (the worker's inference lanes: the encoders and the fusion model keep no per-call
state, the tokenizer and the media caches lock); :meth:`MultimodalClassifier.warm_media` may run
on another thread meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.base import MODALITIES, SENTIMENT_HEAD, ClassOutput, CommentInput
from model.encoders import registry
from model.encoders.text import resolve_device
from model.errors import ModelFormatError
from model.format.calibration import (
    ROUTE_CHAR,
    ROUTE_FALLBACK,
    ROUTE_FUSED,
    ROUTE_TEXT,
    read_route_temperatures,
)
from model.format.char_expert import read_char_expert
from model.format.fallback_head import read_fallback_head
from model.format.multimodal import load_fusion_dir, read_preprocess
from model.media.decode import DecodeConfig
from model.nn.acoustic import MelConfig
from model.nn.fusion import PRESENCE, FusionModel
from model.serving.cache import CachedComponent, ContentCache
from model.serving.char_expert import char_expert_rows, is_active
from model.serving.fallback import fallback_rows
from model.serving.features import FeatureExtractor, Features
from model.serving.language import Language, LanguageGate, languages_from_config
from model.serving.routes import calibrated_probs, row_routes
from model.serving.routing import minilm_route, route_features
from model.serving.shared_cache import SharedFeatureCache

__all__ = [
    "MultimodalClassifier",
    "features_to_tensors",
    "load_multimodal",
    "used_modalities",
]


def features_to_tensors(f: Features, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The fusion model's input dict from extracted :class:`~model.serving.features.Features`."""
    return {
        "text": torch.from_numpy(f.text).to(device),  # (B, Dt)
        "image": torch.from_numpy(f.image).to(device),  # (B, Di)
        "ocr": torch.from_numpy(f.ocr).to(device),  # (B, Dt)
        "speech": torch.from_numpy(f.speech).to(device),  # (B, Dt)
        "mel": torch.from_numpy(f.mel).to(device),  # (B, T, M)
        "mel_lengths": torch.from_numpy(np.asarray(f.mel_lengths, np.int64)).to(device),  # (B,)
        "present": torch.from_numpy(f.present).to(device),  # (B, 5)
    }


def used_modalities(c: CommentInput) -> tuple[str, ...]:
    """``text`` if the stripped text is non-empty, ``image`` / ``audio`` if any was given."""
    has = {"text": bool((c.text or "").strip()), "image": bool(c.images), "audio": bool(c.audio)}
    return tuple(m for m in MODALITIES if has[m])


class MultimodalClassifier:
    """The :class:`~model.base.Classifier` for text + images + audio.

    ``predict`` extracts every feature of the batch (one text-encoder call for comment texts,
    OCR texts and transcripts; image, OCR and ASR results cached in-process by content hash),
    runs the fusion model once and returns softmax scores, with the comment text's detected
    language and whether the model supports it (``config["languages"]``, English by default).
    Blocking; safe to call from several threads at once.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        fusion: FusionModel,
        *,
        name: str,
        version: str,
        device: str = "cpu",
        model_dir: Path | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.extractor = extractor
        self.device = device
        self.fusion = fusion.to(device).eval()
        self.name, self.version = name, version
        self.labels: tuple[str, ...] = tuple(fusion.config.heads[SENTIMENT_HEAD])
        self.modalities: tuple[str, ...] = MODALITIES
        self.model_dir = model_dir
        self.config = dict(config or {})
        self.languages = LanguageGate(
            languages_from_config(self.config), normalise=extractor.prepare
        )
        # model.format.calibration: (text, fused, char, fallback) temperatures
        self.temperatures = read_route_temperatures(self.config)
        self.temperature = self.temperatures[0]
        # model.serving.routing: the text slot of an unsupported language past MiniLM, as the
        # text model serves it (the text expert's training mean)
        text_cfg = getattr(extractor.text_encoder, "config", None)
        self.minilm_cols = minilm_route(self.config, text_cfg) if text_cfg is not None else None
        self.char_expert = read_char_expert(model_dir, self.config) if model_dir else None
        # model.serving.fallback: text-only comments in languages the model was not trained on
        self.fallback = (
            read_fallback_head(model_dir, self.config, text_cfg, self.labels)
            if model_dir and text_cfg is not None
            else None
        )

    @property
    def decode_config(self) -> DecodeConfig:
        """How media must be decoded for this model (config.json ``preprocess``)."""
        return self.extractor.decode_config

    @torch.inference_mode()
    def predict_tensors(
        self,
        batch: Mapping[str, torch.Tensor],
        texts: Sequence[str] | None = None,
        languages: Sequence[Language] | None = None,
    ) -> torch.Tensor:
        """Sentiment probabilities ``(B, C)`` float32 on CPU from fusion inputs (any device).

        ``texts``: the comments' raw texts, for the character expert
        (:mod:`model.serving.char_expert`) on the rows the text expert answers; ``languages``
        (the gate's view of them) for the fallback head (:mod:`model.serving.fallback`) on
        those rows; None skips either.
        """
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        on_cuda = self.device.startswith("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
            logits = self.fusion(batch)[SENTIMENT_HEAD].float().cpu()  # (B, C)
        probs, _ = calibrated_probs(
            logits,
            self.labels,
            self.temperatures,
            texts=texts,
            prepare=self.extractor.prepare,
            char_expert=self.char_expert,
            expert_rows=self.fusion.expert_rows(batch["present"]).cpu(),
            fallback=self.fallback,
            languages=languages,
            features=batch["text"],
        )
        return probs  # (B, C)

    def predict_proba(self, batch: Sequence[CommentInput]) -> torch.Tensor:
        """Probabilities ``(B, C)`` float32 on CPU, in :attr:`labels` order. Blocking."""
        feats = self.extractor.extract(batch)
        # only then do the languages change the scores
        routed = self.minilm_cols is not None or self.fallback is not None
        langs = self.languages.assess(c.text or "" for c in batch) if routed else []
        texts = [c.text or "" for c in batch]
        return self.predict_tensors(self._inputs(feats, langs), texts, langs or None)

    @property
    def served_routes(self) -> tuple[int, ...]:
        """The route ids this model's rows can take (:mod:`model.serving.routes`)."""
        if not self.fusion.config.text_only_expert:
            return (ROUTE_FUSED,)
        routes = (ROUTE_TEXT, ROUTE_FUSED, ROUTE_CHAR) if is_active(self.char_expert) else None
        routes = routes or (ROUTE_TEXT, ROUTE_FUSED)
        return (*routes, ROUTE_FALLBACK) if self.fallback is not None else routes

    def routes_of_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``(N,)`` the route id of each comment sent as text alone (:mod:`model.serving.routes`):
        ``text`` (its text expert), ``char`` (and the character expert), or ``fused`` (a text
        the normaliser empties has no slot: the Transformer scores it, as "no signal"), or
        ``fallback`` (its fallback head: a language it was not trained on)."""
        present = torch.zeros(len(texts), len(PRESENCE), dtype=torch.bool)  # (N, 5)
        present[:, 0] = torch.tensor([bool(self.extractor.prepare(t or "")) for t in texts])
        expert = self.fusion.expert_rows(present)
        rows = char_expert_rows(self.char_expert, texts, expert.tolist())
        langs = self.languages.assess(texts) if self.fallback is not None else None
        foreign = fallback_rows(self.fallback, langs, expert.tolist(), rows)
        return row_routes(len(texts), expert, rows, foreign).numpy()

    def _inputs(self, feats: Features, langs: Sequence[Language]) -> dict[str, torch.Tensor]:
        """The fusion inputs of ``feats``, the text slot routed (:mod:`model.serving.routing`)."""
        inputs = features_to_tensors(feats)
        if self.minilm_cols is not None and self.fusion.text_expert is not None:
            inputs["text"] = route_features(
                inputs["text"],
                [not lang.supported for lang in langs],
                self.minilm_cols,
                self.fusion.text_expert.feat_mean,
            )
        return inputs

    def use_shared_cache(self, client: Any, prefix: str, ttl_s: int = 7 * 24 * 3600) -> None:
        """Share image embeddings, OCR text and transcripts with other workers through Redis.

        ``client`` is a synchronous ``redis.Redis``: the caches are consulted on the inference
        thread. Keys are namespaced by each encoder's identity, so another model never reads them.
        """
        ex = self.extractor
        for name, part in (("image", ex.image_encoder), ("ocr", ex.ocr), ("asr", ex.asr)):
            cache = getattr(part, "cache", None)
            if isinstance(cache, ContentCache):
                cache.shared = SharedFeatureCache(
                    client, prefix=prefix, namespace=f"{name}:{part.identity}", ttl_s=ttl_s
                )

    def warm_media(self, batch: Sequence[CommentInput]) -> None:
        """Compute and cache what the batch's media cost: image embeddings, OCR text and
        transcripts, so that :meth:`predict` on the same comments only reads the caches.

        Blocking (seconds for new media on a CPU). Safe to call on another thread while one
        thread runs :meth:`predict` (the cached components lock; the text encoder and the
        fusion model are not touched): the worker runs it in its media lane so that new media
        never hold a batch of text comments on the inference thread.
        """
        images = [im for c in batch for im in c.images]
        clips = [a for c in batch for a in c.audio]
        self.extractor.read_media(images, clips)  # OCR and ASR at once (parallel_media)

    def predict(self, batch: Sequence[CommentInput]) -> list[ClassOutput]:
        """One :class:`ClassOutput` per comment, in order, with the OCR text and transcript each
        comment's media gave (for the entity stage). Blocking."""
        if not batch:
            return []
        feats = self.extractor.extract(batch)
        langs = self.languages.assess(c.text or "" for c in batch)
        texts = [c.text or "" for c in batch]
        probs = self.predict_tensors(self._inputs(feats, langs), texts, langs)
        best = probs.argmax(-1).tolist()
        labels = self.labels
        return [
            ClassOutput(
                label=labels[k],
                scores=dict(zip(labels, row, strict=True)),
                modalities=used_modalities(c),
                language=lang.code,
                language_score=lang.score,
                language_supported=lang.supported,
                ocr_text=ocr,
                transcript=heard,
            )
            for c, k, row, lang, ocr, heard in zip(
                batch, best, probs.tolist(), langs, feats.ocr_texts, feats.transcripts, strict=True
            )
        ]


def load_multimodal(
    model_dir: str | Path,
    device: str = "auto",
    *,
    threads: int = 2,
    cache_size: int = 2048,
    components: Mapping[str, Any] | None = None,
    precision: str = "auto",
) -> MultimodalClassifier:
    """Load a format-v2 multimodal model directory.

    ``components`` overrides built encoders by name (``text``, ``image``, ``ocr``, ``asr``);
    ``cache_size`` bounds each in-process content cache (image embeddings, OCR, transcripts);
    ``precision`` is the text encoders' float format (:mod:`model.precision`).
    """
    model_dir = Path(model_dir)
    fusion, cfg = load_fusion_dir(model_dir)
    fcfg = fusion.config
    dev = resolve_device(device)
    enc = dict(cfg["encoders"])
    built = dict(components or {})
    ctx = registry.BuildContext(
        model_dir=model_dir, device=dev, threads=threads, precision=precision
    )
    for role in registry.ROLES:
        if role in built:
            continue
        if role not in enc:
            raise ModelFormatError(f"{model_dir}/config.json: encoders.{role} is missing")
        built[role] = registry.build(role, enc[role], ctx)
    text = built["text"]
    if int(text.out_dim) != fcfg.text_dim:
        raise ModelFormatError(
            f"text encoder width {text.out_dim} != fusion text_dim {fcfg.text_dim}"
        )
    if int(built["image"].dim) != fcfg.image_dim:
        raise ModelFormatError(
            f"image encoder width {built['image'].dim} != fusion image_dim {fcfg.image_dim}"
        )
    mel = MelConfig(**dict(enc.get("acoustic", {})))
    if mel.n_mels != fcfg.acoustic.n_mels:
        raise ModelFormatError(f"mel bands {mel.n_mels} != acoustic n_mels {fcfg.acoustic.n_mels}")
    decode = read_preprocess(cfg, f"{model_dir}/config.json")
    if decode.audio_sample_rate != mel.sr:
        raise ModelFormatError(
            f"preprocess.audio_sample_rate {decode.audio_sample_rate} != acoustic sr {mel.sr}"
        )
    extractor = FeatureExtractor(
        text,
        *(CachedComponent(role, built[role], cache_size) for role in ("image", "ocr", "asr")),
        mel=mel,
        decode=decode,
    )
    return MultimodalClassifier(
        extractor,
        fusion,
        name=str(cfg["name"]),
        version=str(cfg["version"]),
        device=dev,
        model_dir=model_dir,
        config=cfg,
    )
