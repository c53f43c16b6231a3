"""In-process caches of per-item media results (image embeddings, OCR text, transcripts).

:class:`ContentCache` keys results by the sha256 of the item's content;
:class:`CachedComponent` puts one in front of any media component, with a
:class:`~model.serving.shared_cache.SharedFeatureCache` (Redis, across workers) as an optional
second level. A :class:`ContentCache` is not thread-safe; a :class:`CachedComponent` is: one
lock per component serialises its calls (cache and computation), so the worker's media lane can
fill the caches on its own thread while the inference thread reads them
(:meth:`~model.serving.multimodal.MultimodalClassifier.warm_media`).
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from model.lru import LRUCache
from model.serving.shared_cache import SharedFeatureCache

__all__ = ["METHODS", "CachedComponent", "ContentCache"]

#: Each media role's per-batch method: ``image`` encodes, ``ocr`` reads, ``asr`` transcribes.
METHODS = {"image": "encode", "ocr": "read", "asr": "transcribe"}


class ContentCache:
    """A bounded LRU of per-item results keyed by the sha256 of the item's content.

    ``map(items, compute)`` returns one result per item, calling ``compute`` once, batched, on the
    items not cached yet (duplicates inside the batch are computed once too).
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self.maxsize = int(maxsize)
        self._lru = LRUCache(self.maxsize, sys.maxsize)  # bounded by entries only
        self.hits = 0
        self.misses = 0
        self.shared: SharedFeatureCache | None = None  # optional second level, across workers

    def __len__(self) -> int:
        return len(self._lru)

    @staticmethod
    def key(a: np.ndarray) -> str:
        a = np.ascontiguousarray(a)
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
        return h.hexdigest()

    def map(self, items: Sequence[np.ndarray], compute: Callable[[list], Sequence[Any]]) -> list:
        keys = [self.key(x) for x in items]
        found: dict[str, Any] = {}
        todo: dict[str, np.ndarray] = {}
        for k, x in zip(keys, items, strict=True):
            if k in found or k in todo:
                continue
            v = self._lru.get(k)
            if v is not None:
                found[k] = v
            else:
                todo[k] = x
        if todo and self.shared is not None:
            for k, v in zip(list(todo), self.shared.get_many(list(todo)), strict=True):
                if v is not None:
                    found[k] = v
                    self._lru.put(k, v, 0)
                    del todo[k]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            new = compute(list(todo.values()))
            for k, v in zip(todo, new, strict=True):
                found[k] = v
                self._lru.put(k, v, 0)
            if self.shared is not None:
                self.shared.set_many(dict(zip(todo, new, strict=True)))
        return [found[k] for k in keys]


class CachedComponent:
    """A media component (``image``, ``ocr`` or ``asr``) behind a :class:`ContentCache`.

    Has the wrapped component's method (``encode`` / ``read`` / ``transcribe``), ``identity`` and
    ``dim``; ``inner`` is the component itself.
    """

    def __init__(self, role: str, inner: Any, maxsize: int) -> None:
        self.role, self.inner, self.cache = role, inner, ContentCache(maxsize)
        self._lock = threading.Lock()  # the inner component is not thread-safe either
        self.identity = str(inner.identity)
        self.dim = int(inner.dim) if role == "image" else None
        call = getattr(inner, METHODS[role])
        compute: Callable[[list[Any]], list[Any]] = (
            (lambda xs: list(np.asarray(call(xs), np.float32))) if role == "image" else call
        )
        setattr(self, METHODS[role], lambda items: self._map(items, compute))

    def _map(self, items: Sequence[np.ndarray], compute: Callable[[list[Any]], list[Any]]) -> Any:
        with self._lock:
            rows = self.cache.map(items, compute)
        if self.role != "image":
            return rows
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
