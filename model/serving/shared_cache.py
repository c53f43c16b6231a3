"""A cache of derived media features shared between workers (OCR text, transcripts, embeddings).

The per-process :class:`~model.serving.cache.ContentCache` sits in front; this layer, backed by
Redis, lets a second worker skip the OCR, speech recognition and image encoding the first worker
already did for the same content. It is called from the inference thread (a synchronous Redis
client), never raises: a Redis error or a value it cannot read is a miss, and after an error
Redis is left alone for ``backoff_s``.

Keys: ``{prefix}feature:{namespace}:{content sha256}`` with a TTL. Values are never pickled:
``s`` + UTF-8 text, or ``a`` + an ``.npy`` array written with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["SharedFeatureCache", "decode_value", "encode_value"]

log = logging.getLogger(__name__)


def encode_value(value: Any) -> bytes | None:
    if isinstance(value, str):
        return b"s" + value.encode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype != object:
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return b"a" + buf.getvalue()
    return None  # not shareable: stays in the process cache only


def decode_value(raw: bytes) -> Any:
    if raw[:1] == b"s":
        return raw[1:].decode("utf-8")
    if raw[:1] == b"a":
        return np.load(io.BytesIO(raw[1:]), allow_pickle=False)
    raise ValueError("unknown shared cache value")


class SharedFeatureCache:
    """One namespace (e.g. ``ocr:<model identity>``) of the shared cache."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        namespace: str,
        ttl_s: int = 7 * 24 * 3600,
        backoff_s: float = 10.0,
    ) -> None:
        self._redis = client
        self._prefix = f"{prefix}feature:{namespace}:"
        self._ttl = ttl_s
        self._backoff = backoff_s
        self._down_until = 0.0
        self.hits = 0
        self.errors = 0

    def get_many(self, keys: Sequence[str]) -> list[Any | None]:
        if not keys or time.monotonic() < self._down_until:
            return [None] * len(keys)
        try:
            raws = self._redis.mget([self._prefix + k for k in keys])
        except Exception as exc:  # noqa: BLE001 - a cache never fails inference
            self._failed(exc)
            return [None] * len(keys)
        out: list[Any | None] = []
        for raw in raws:
            try:
                out.append(None if raw is None else decode_value(raw))
            except (ValueError, OSError):
                out.append(None)
        self.hits += sum(v is not None for v in out)
        return out

    def set_many(self, items: dict[str, Any]) -> None:
        if not items or time.monotonic() < self._down_until:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, value in items.items():
                raw = encode_value(value)
                if raw is not None:
                    pipe.set(self._prefix + key, raw, ex=self._ttl)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - a cache never fails inference
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self._down_until = time.monotonic() + self._backoff
        log.warning(
            "shared feature cache unavailable (%s); skipped for %.0fs",
            type(exc).__name__,
            self._backoff,
        )
