"""The text classifier: a frozen sentence encoder -> the sentiment MLP head -> softmax.

The directory format (v1) is :mod:`model.format.text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model.base import ClassOutput, CommentInput
from model.encoders.experts import SentenceEncoder, build_text_encoder
from model.encoders.text import resolve_device
from model.format.calibration import (
    ROUTE_CHAR,
    ROUTE_FALLBACK,
    ROUTE_TEXT,
    read_route_temperatures,
)
from model.format.char_expert import CharExpert, read_char_expert
from model.format.fallback_head import FallbackHead, read_fallback_head
from model.format.text import read_text_dir
from model.nn.heads import MLPHead
from model.serving.char_expert import char_expert_rows, is_active
from model.serving.fallback import fallback_rows
from model.serving.language import Language, LanguageGate, languages_from_config
from model.serving.normalise import text_normaliser
from model.serving.routes import calibrated_probs, row_routes
from model.serving.routing import minilm_route, route_features

__all__ = ["TextClassifier", "load_text"]


class TextClassifier:
    """The :class:`~model.base.Classifier` for text: encoder -> sentiment head -> softmax.

    Comments without text are classified from the empty string; each output carries the text's
    detected language and whether the model supports it (``languages``, English by default).
    Blocking; holds no per-call state, so several inference threads may call it at once.
    """

    modalities: tuple[str, ...] = ("text",)

    def __init__(
        self,
        encoder: SentenceEncoder,
        head: MLPHead,
        *,
        name: str,
        version: str,
        batch_size: int = 64,
        model_dir: Path | None = None,
        languages: LanguageGate | None = None,
        temperature: float = 1.0,
        minilm_cols: slice | None = None,
        char_expert: CharExpert | None = None,
        char_temperature: float | None = None,
        fallback: FallbackHead | None = None,
    ) -> None:
        self.encoder = encoder
        self.head = head.to(encoder.device).eval()
        self.name = name
        self.version = version
        self.labels: tuple[str, ...] = tuple(head.config.labels)
        self.device = encoder.device
        self.batch_size = batch_size
        self.model_dir = model_dir
        self.languages = languages or LanguageGate()
        self.normalise = text_normaliser(encoder.config.clean)
        self.temperature = temperature  # config.json "calibration" (model.format.calibration)
        self.minilm_cols = minilm_cols  # model.serving.routing: unsupported languages past MiniLM
        self.char_expert = char_expert  # model.serving.char_expert: its language's comments
        self.char_temperature = temperature if char_temperature is None else char_temperature
        self.fallback = fallback  # model.serving.fallback: languages it was not trained on

    @torch.inference_mode()
    def predict_proba(
        self,
        texts: Sequence[str],
        progress: bool = False,
        languages: Sequence[Language] | None = None,
    ) -> torch.Tensor:
        """Class probabilities ``(N, n_classes)`` float32 on CPU, in :attr:`labels` order.

        ``languages`` (the gate's view of each text) saves assessing them again when the model
        routes unsupported languages past MiniLM (:mod:`model.serving.routing`) or to its
        fallback head (:mod:`model.serving.fallback`)."""
        feats, langs = self.head_features(texts, progress, languages)
        logits = self.head(feats).float().cpu()  # (N, C)
        fallback_t = self.fallback.temperature if self.fallback else self.temperature
        temps = (self.temperature, self.temperature, self.char_temperature, fallback_t)
        probs, _ = calibrated_probs(  # (no fused route in a text model)
            logits,
            self.labels,
            temps,
            texts=texts,
            prepare=self.normalise,
            char_expert=self.char_expert,
            fallback=self.fallback,
            languages=langs,
            features=feats,
        )
        return probs  # (N, C)

    @torch.inference_mode()
    def head_features(
        self,
        texts: Sequence[str],
        progress: bool = False,
        languages: Sequence[Language] | None = None,
    ) -> tuple[torch.Tensor, Sequence[Language] | None]:
        """What the head reads, ``(N, F)`` on the model's device: the normalised texts'
        encodings, MiniLM's columns routed for unsupported languages
        (:mod:`model.serving.routing`); and the gate's view of the raw texts when the model
        routes by language (``languages`` when given), else None."""
        unsupported: list[bool] = []
        langs: Sequence[Language] | None = None
        if self.minilm_cols is not None or self.fallback is not None:  # on the raw texts
            langs = languages if languages is not None else self.languages.assess(texts)
            unsupported = [not lang.supported for lang in langs]
        prepared = [self.normalise(t) for t in texts]
        feats = self.encoder.encode_tensor(prepared, self.batch_size, progress)  # (N, F)
        return route_features(feats, unsupported, self.minilm_cols, self.head.feat_mean), langs

    @property
    def served_routes(self) -> tuple[int, ...]:
        """The route ids this model's rows can take (:mod:`model.serving.routes`)."""
        routes = (ROUTE_TEXT, ROUTE_CHAR) if is_active(self.char_expert) else (ROUTE_TEXT,)
        return (*routes, ROUTE_FALLBACK) if self.fallback is not None else routes

    def routes_of_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``(N,)`` the route id of each text (:mod:`model.serving.routes`): ``text``, ``char``
        where the character expert reads it, ``fallback`` where the fallback head answers."""
        chars = char_expert_rows(self.char_expert, texts)
        langs = self.languages.assess(texts) if self.fallback is not None else None
        foreign = fallback_rows(self.fallback, langs, None, chars)
        return row_routes(len(texts), None, chars, foreign).numpy()

    def predict(self, batch: Sequence[CommentInput]) -> list[ClassOutput]:
        """One :class:`ClassOutput` per comment, in order. Blocking."""
        if not batch:
            return []
        texts = [c.text or "" for c in batch]
        langs = self.languages.assess(texts)
        probs = self.predict_proba(texts, languages=langs)
        best = probs.argmax(dim=-1).tolist()
        labels = self.labels
        return [
            ClassOutput(
                label=labels[k],
                scores=dict(zip(labels, row, strict=True)),
                modalities=self.modalities,
                language=lang.code,
                language_score=lang.score,
                language_supported=lang.supported,
            )
            for k, row, lang in zip(best, probs.tolist(), langs, strict=True)
        ]


def load_text(
    model_dir: str | Path, device: str = "auto", batch_size: int = 64, precision: str = "auto"
) -> TextClassifier:
    """Load a format-v1 model directory (the encoder's forward in ``precision``:
    :mod:`model.precision`). Raises ModelFormatError / UnsafeWeightsError."""
    d = read_text_dir(model_dir)
    temperature, _, char_temperature, _ = read_route_temperatures(d.config)
    encoder = build_text_encoder(
        d.encoder, base_dir=d.path, device=resolve_device(device), precision=precision
    )
    return TextClassifier(
        encoder,
        d.head,
        name=str(d.config["name"]),
        version=str(d.config["version"]),
        batch_size=batch_size,
        model_dir=d.path,
        languages=LanguageGate(
            languages_from_config(d.config), normalise=text_normaliser(d.encoder.clean)
        ),
        temperature=temperature,
        minilm_cols=minilm_route(d.config, d.encoder),
        char_expert=read_char_expert(d.path, d.config),
        char_temperature=char_temperature,
        fallback=read_fallback_head(d.path, d.config, d.encoder, d.head.config.labels),
    )
