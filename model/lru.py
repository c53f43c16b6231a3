"""A least-recently-used map bounded by entry count and total bytes, with an optional TTL.

One implementation for every in-process cache: the media cache of the workers
(:mod:`workers.media_cache`) and the content caches of the classifier
(:mod:`model.serving.cache`). Not thread-safe: one thread (or the event loop) owns each.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["LRUCache"]


class LRUCache:
    """Least-recently-used map bounded by entry count and total bytes; optional per-entry TTL.

    Not thread-safe: one thread or the event loop owns it.
    """

    def __init__(
        self, max_entries: int, max_bytes: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[Hashable, tuple[Any, int, float | None]] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> Any | None:
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        value, _size, expires = item
        if expires is not None and self._clock() >= expires:
            self._drop(key)
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: Any, size: int, ttl_s: float | None = None) -> bool:
        """Store; ``False`` (and nothing stored) when ``size`` alone exceeds ``max_bytes``."""
        if key in self._data:
            self._drop(key)
        if size > self.max_bytes or self.max_entries <= 0:
            return False
        expires = None if ttl_s is None else self._clock() + ttl_s
        self._data[key] = (value, size, expires)
        self.nbytes += size
        while len(self._data) > self.max_entries or self.nbytes > self.max_bytes:
            oldest = next(iter(self._data))
            self._drop(oldest)
            self.evictions += 1
        return True

    def pop(self, key: Hashable) -> None:
        if key in self._data:
            self._drop(key)

    def _drop(self, key: Hashable) -> None:
        _value, size, _ = self._data.pop(key)
        self.nbytes -= size
