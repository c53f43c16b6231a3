"""Fakes for the Faust-free pipeline: a classifier, a publisher, the aggregate store, and just
enough of ``redis.asyncio`` for the crash guard."""

from __future__ import annotations

import asyncio

import redis.exceptions

from model.base import ClassOutput

LABELS = ("negative", "neutral", "positive")


class FakeClassifier:
    """Negative when the text says ``bad``; raises for texts containing ``poison``."""

    name, version, labels, device = "fake", "0", LABELS, "cpu"

    def __init__(self, poison: str | None = None) -> None:
        self.poison = poison
        self.calls: list[int] = []

    def predict(self, batch):
        self.calls.append(len(batch))
        if self.poison and any(self.poison in c.text for c in batch):
            raise RuntimeError("boom")
        out = []
        for c in batch:
            negative = "bad" in c.text
            scores = (
                {"negative": 0.8, "neutral": 0.1, "positive": 0.1}
                if negative
                else {"negative": 0.1, "neutral": 0.1, "positive": 0.8}
            )
            out.append(ClassOutput("negative" if negative else "positive", scores, ("text",)))
        return out


class FakePublisher:
    """Records what the broker acknowledged; the first ``fail_first`` sends fail (transient)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list = []
        self.fail_first = fail_first

    async def send(self, message):
        fut = asyncio.get_running_loop().create_future()
        if self.fail_first > 0:
            self.fail_first -= 1
            fut.set_exception(ConnectionError("broker down"))
        else:
            self.sent.append(message)
            fut.set_result(None)
        return fut


class FakeStore:
    """The aggregate store's contract, in memory: idempotent by (user, comment) and source."""

    def __init__(self, fail_first: int = 0) -> None:
        self.seen: set = set()
        self.dlq_seen: set[str] = set()
        self.applied: list = []
        self.fail_first = fail_first
        self.events: list[str] = []

    async def already_done(self, comments, source_ids):
        self._maybe_fail()
        return [c in self.seen for c in comments], [s in self.dlq_seen for s in source_ids]

    async def apply(self, predictions, dead_letters, *, now_ms):
        self._maybe_fail()
        self.events.append("apply")
        out = []
        for p in predictions:
            key = (p.user_id, p.comment_id)
            out.append(int(key not in self.seen))
            self.seen.add(key)
            self.applied.append(p)
        for d in dead_letters:
            out.append(int(d.source_id not in self.dlq_seen))
            self.dlq_seen.add(d.source_id)
        return out

    def _maybe_fail(self):
        if self.fail_first > 0:
            self.fail_first -= 1
            raise redis.exceptions.ConnectionError("redis down")


class FakeRedis:
    """INCR / DECR / EXPIRE / DELETE, plain and pipelined: what the crash guard uses."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    def pipeline(self, transaction: bool = False) -> _Pipe:
        return _Pipe(self)

    async def delete(self, *keys: str) -> int:
        return sum(self.data.pop(k, None) is not None for k in keys)


class _Pipe:
    def __init__(self, redis: FakeRedis) -> None:
        self._redis = redis
        self._ops: list = []

    async def __aenter__(self) -> _Pipe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._ops.clear()

    def incr(self, key: str) -> None:
        self._ops.append(("incr", key))

    def decr(self, key: str) -> None:
        self._ops.append(("decr", key))

    def expire(self, key: str, ttl: int) -> None:
        self._ops.append(("expire", key))

    async def execute(self) -> list:
        out = []
        for op, key in self._ops:
            if op == "expire":
                out.append(True)
                continue
            value = self._redis.data.get(key, 0) + (1 if op == "incr" else -1)
            self._redis.data[key] = value
            out.append(value)
        self._ops.clear()
        return out
