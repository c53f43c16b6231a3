"""Per-user and global aggregates in Redis, exact under redelivery.

Each prediction is applied by one Lua script that first claims ``seen:{comment_id}`` with
``SET NX``: a redelivered or re-sent comment finds the claim and changes nothing. Scripts are sent
with EVALSHA in one pipeline per batch, so a batch costs one round trip. Every key is documented in
the README ("Redis key schema"); all of them start with the configured prefix (``commentflow:``).

Retries: every call may be retried whole after a connection error, because the scripts are
idempotent. The caller (the batch processor) owns the retry loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

__all__ = ["AggregateStore", "DeadLetterRecord", "PredictionRecord"]

_APPLY_PREDICTION = """
local p = ARGV[1]
local cid, uid, label = ARGV[2], ARGV[3], ARGV[4]
local minute, now = ARGV[5], ARGV[6]
local dedup_ttl, recent_len = tonumber(ARGV[7]), tonumber(ARGV[8])
local feed_len, minute_ttl = tonumber(ARGV[9]), tonumber(ARGV[10])
local item, mods = ARGV[11], ARGV[12]
if not redis.call('SET', p .. 'seen:' .. cid, now, 'NX', 'EX', dedup_ttl) then
  return 0
end
local ukey = p .. 'user:' .. uid
local gkey = p .. 'global'
local mkey = p .. 'minute:' .. minute
redis.call('HINCRBY', ukey, 'total', 1)
redis.call('HINCRBY', ukey, label, 1)
redis.call('HSETNX', ukey, 'first_seen_ms', now)
redis.call('HSET', ukey, 'last_seen_ms', now, 'last_label', label, 'last_comment_id', cid)
redis.call('HINCRBY', gkey, 'total', 1)
redis.call('HINCRBY', gkey, label, 1)
redis.call('HINCRBY', mkey, 'total', 1)
redis.call('HINCRBY', mkey, label, 1)
redis.call('EXPIRE', mkey, minute_ttl)
for m in string.gmatch(mods, '[^,]+') do
  redis.call('HINCRBY', ukey, 'with_' .. m, 1)
  redis.call('HINCRBY', gkey, 'with_' .. m, 1)
end
redis.call('ZINCRBY', p .. 'leaderboard:total', 1, uid)
if label == 'negative' then
  redis.call('ZINCRBY', p .. 'leaderboard:negative', 1, uid)
end
redis.call('ZADD', p .. 'users:last_seen', now, uid)
redis.call('LPUSH', p .. 'recent:' .. uid, item)
redis.call('LTRIM', p .. 'recent:' .. uid, 0, recent_len - 1)
redis.call('LPUSH', p .. 'feed', item)
redis.call('LTRIM', p .. 'feed', 0, feed_len - 1)
redis.call('PUBLISH', p .. 'feed', item)
return 1
"""

_APPLY_DEAD_LETTER = """
local p = ARGV[1]
local source_id, code, now = ARGV[2], ARGV[3], ARGV[4]
local minute, dedup_ttl, minute_ttl = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
if not redis.call('SET', p .. 'dlq_seen:' .. source_id, now, 'NX', 'EX', dedup_ttl) then
  return 0
end
redis.call('HINCRBY', p .. 'global', 'dead_letters', 1)
redis.call('HINCRBY', p .. 'dead_letters', code, 1)
local mkey = p .. 'minute:' .. minute
redis.call('HINCRBY', mkey, 'dead_letters', 1)
redis.call('EXPIRE', mkey, minute_ttl)
return 1
"""


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    comment_id: str
    user_id: str
    label: str
    modalities: tuple[str, ...]
    feed_item: bytes  # JSON shown in the live feed and the user's recent list (redacted text)


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    source_id: str  # "{topic}:{partition}:{offset}"
    code: str


class AggregateStore:
    """The Redis side of the pipeline: what was already done, and the idempotent updates."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        dedup_ttl_s: int,
        recent_per_user: int,
        feed_length: int,
        minute_ttl_s: int,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._dedup_ttl = dedup_ttl_s
        self._recent = recent_per_user
        self._feed = feed_length
        self._minute_ttl = minute_ttl_s
        self._apply_prediction = client.register_script(_APPLY_PREDICTION)
        self._apply_dead_letter = client.register_script(_APPLY_DEAD_LETTER)

    @property
    def prefix(self) -> str:
        return self._prefix

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def already_done(
        self, comment_ids: Sequence[str], source_ids: Sequence[str]
    ) -> tuple[list[bool], list[bool]]:
        """Which comments were already aggregated, which bad inputs already dead-lettered."""
        if not comment_ids and not source_ids:
            return [], []
        keys = [f"{self._prefix}seen:{c}" for c in comment_ids]
        keys += [f"{self._prefix}dlq_seen:{s}" for s in source_ids]
        values = await self._redis.mget(keys)
        done = [v is not None for v in values]
        return done[: len(comment_ids)], done[len(comment_ids) :]

    async def apply(
        self,
        predictions: Sequence[PredictionRecord],
        dead_letters: Sequence[DeadLetterRecord],
        *,
        now_ms: int,
    ) -> list[int]:
        """Apply every record in one pipeline; 1 per record applied now, 0 if seen."""
        if not predictions and not dead_letters:
            return []
        minute = str(now_ms // 60_000)
        now = str(now_ms)
        async with self._redis.pipeline(transaction=False) as pipe:
            for rec in predictions:
                await self._apply_prediction(
                    args=[
                        self._prefix,
                        rec.comment_id,
                        rec.user_id,
                        rec.label,
                        minute,
                        now,
                        self._dedup_ttl,
                        self._recent,
                        self._feed,
                        self._minute_ttl,
                        rec.feed_item,
                        ",".join(m for m in rec.modalities if m != "text"),
                    ],
                    client=pipe,
                )
            for dl in dead_letters:
                await self._apply_dead_letter(
                    args=[
                        self._prefix,
                        dl.source_id,
                        dl.code,
                        now,
                        minute,
                        self._dedup_ttl,
                        self._minute_ttl,
                    ],
                    client=pipe,
                )
            return [int(r) for r in await pipe.execute()]
