"""Per-user and global aggregates in the state Redis, exact under redelivery, bounded in time.

Each prediction is applied by one Lua script that first claims its ``(user_id, comment_id)`` pair
in the user's dedup set ``dedup:{user_id}`` (a sorted set: comment id -> processing time in ms):
a redelivered or re-sent comment finds its claim and changes nothing, and a comment id that another
user already used claims a different set, so it cannot suppress anyone else's comment. Scripts are
sent with EVALSHA in one pipeline per batch, so a batch costs one round trip. Every key is
documented in the README ("Redis key schema"); all of them start with the configured prefix.

Every script receives all the keys it touches through ``KEYS`` (computed here from the prefix),
``ARGV`` carries only values, as Redis Cluster and proxies require. The scripts start with a
``#!lua`` shebang, so a state Redis that is out of memory (``noeviction``) refuses a script before
it runs (``OutOfMemoryError``): nothing is half applied, and the whole call can be retried.

Bounded in time:

- ``user:{id}`` and ``recent:{id}`` expire ``user_retention_s`` after the user's last comment
  (``EXPIRE`` refreshed by each update); ``dedup:{id}`` expires ``dedup_ttl_s`` after it, and its
  members older than ``dedup_ttl_s`` are dropped on each update.
- The sorted sets naming users (``leaderboard:total``, ``leaderboard:negative``,
  ``users:last_seen``) are pruned of users inactive longer than the retention by
  :meth:`AggregateStore.prune_expired_users` (bounded per call; a worker timer calls it).
- :meth:`AggregateStore.forget_user` erases one user (right to erasure), the user's entity keys
  included.
- ``global``, ``minute:*`` (TTL) and ``dead_letters`` are anonymous counts and stay.

Entities: a prediction that names entities also updates the entity aggregates
(:mod:`workers.entity_aggregates`, its own claim set), queued before its sentiment script in the
same pipeline so that a pipeline cut short never leaves the entities behind a claimed comment.

Retries: every call may be retried whole after any error in :data:`RETRIABLE_REDIS_ERRORS`
(a lost connection, Redis loading, out of memory, a read-only replica after a failover), because
the scripts are idempotent and refused whole. The caller (the batch processor) owns the retry loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from workers.entity_aggregates import EntityAggregates, EntityRecord
from workers.retry import REDIS_RETRIABLE

__all__ = [
    "FORGET_COUNTS",
    "RETRIABLE_REDIS_ERRORS",
    "AggregateStore",
    "DeadLetterRecord",
    "PredictionRecord",
]

#: Redis errors after which a whole store call may be retried (one list for the whole worker).
RETRIABLE_REDIS_ERRORS = REDIS_RETRIABLE

_APPLY_PREDICTION = """#!lua
-- KEYS: dedup:{uid} user:{uid} recent:{uid} global minute:{m} leaderboard:total
--       leaderboard:negative users:last_seen feed (also the pub/sub channel)
-- ARGV: comment_id user_id label now_ms dedup_ttl_s recent_len feed_len minute_ttl_s
--       feed_item modalities(comma-separated) user_retention_s
local cid, uid, label = ARGV[1], ARGV[2], ARGV[3]
local now, dedup_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local recent_len, feed_len = tonumber(ARGV[6]), tonumber(ARGV[7])
local minute_ttl, item, mods = tonumber(ARGV[8]), ARGV[9], ARGV[10]
local retention = tonumber(ARGV[11])
local dedup, ukey, rkey, gkey, mkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('ZSCORE', dedup, cid) then
  return 0
end
redis.call('ZREMRANGEBYSCORE', dedup, '-inf', '(' .. string.format('%d', now - dedup_ttl * 1000))
redis.call('ZADD', dedup, now, cid)
redis.call('EXPIRE', dedup, dedup_ttl)
redis.call('HINCRBY', ukey, 'total', 1)
redis.call('HINCRBY', ukey, label, 1)
redis.call('HSETNX', ukey, 'first_seen_ms', ARGV[4])
redis.call('HSET', ukey, 'last_seen_ms', ARGV[4], 'last_label', label, 'last_comment_id', cid)
redis.call('HINCRBY', gkey, 'total', 1)
redis.call('HINCRBY', gkey, label, 1)
redis.call('HINCRBY', mkey, 'total', 1)
redis.call('HINCRBY', mkey, label, 1)
redis.call('EXPIRE', mkey, minute_ttl)
for m in string.gmatch(mods, '[^,]+') do
  redis.call('HINCRBY', ukey, 'with_' .. m, 1)
  redis.call('HINCRBY', gkey, 'with_' .. m, 1)
end
redis.call('EXPIRE', ukey, retention)
redis.call('ZINCRBY', KEYS[6], 1, uid)
if label == 'negative' then
  redis.call('ZINCRBY', KEYS[7], 1, uid)
end
redis.call('ZADD', KEYS[8], now, uid)
redis.call('LPUSH', rkey, item)
redis.call('LTRIM', rkey, 0, recent_len - 1)
redis.call('EXPIRE', rkey, retention)
redis.call('LPUSH', KEYS[9], item)
redis.call('LTRIM', KEYS[9], 0, feed_len - 1)
redis.call('PUBLISH', KEYS[9], item)
return 1
"""

_APPLY_DEAD_LETTER = """#!lua
-- KEYS: dlq_seen:{source_id} global dead_letters minute:{m}
-- ARGV: code now_ms dedup_ttl_s minute_ttl_s
local code, dedup_ttl, minute_ttl = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', dedup_ttl) then
  return 0
end
redis.call('HINCRBY', KEYS[2], 'dead_letters', 1)
redis.call('HINCRBY', KEYS[3], code, 1)
redis.call('HINCRBY', KEYS[4], 'dead_letters', 1)
redis.call('EXPIRE', KEYS[4], minute_ttl)
return 1
"""

# ZREM takes many members; Lua's unpack has a stack limit, so members go in chunks.
_PRUNE_EXPIRED_USERS = """#!lua
-- KEYS: users:last_seen leaderboard:total leaderboard:negative
-- ARGV: cutoff_ms (users last seen strictly before it are removed) limit
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1],
                         'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #users, 200 do
  local chunk = {unpack(users, i, math.min(i + 199, #users))}
  for _, key in ipairs(KEYS) do
    redis.call('ZREM', key, unpack(chunk))
  end
end
return #users
"""

_FORGET_USER = """#!lua
-- KEYS: user:{uid} recent:{uid} dedup:{uid} leaderboard:total leaderboard:negative
--       users:last_seen feed
-- ARGV: user_id
local uid = ARGV[1]
local out = {}
out[1] = redis.call('DEL', KEYS[1])
out[2] = redis.call('DEL', KEYS[2])
out[3] = redis.call('ZCARD', KEYS[3])
redis.call('DEL', KEYS[3])
out[4] = redis.call('ZREM', KEYS[4], uid)
out[5] = redis.call('ZREM', KEYS[5], uid)
out[6] = redis.call('ZREM', KEYS[6], uid)
-- The feed is capped (feed_length items): reading it whole is bounded.
local removed = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[7], 0, -1)) do
  local ok, doc = pcall(cjson.decode, item)
  if ok and type(doc) == 'table' and doc['user_id'] == uid then
    removed = removed + redis.call('LREM', KEYS[7], 0, item)
  end
end
out[7] = removed
return out
"""

#: The counts of the forget script above, in its order.
_FORGET_SCRIPT_COUNTS = (
    "user",
    "recent",
    "dedup_markers",
    "leaderboard_total",
    "leaderboard_negative",
    "users_last_seen",
    "feed_items",
)
#: The names of :meth:`AggregateStore.forget_user`'s counts: the script's, then the entities'
#: (:meth:`~workers.entity_aggregates.EntityAggregates.forget_user`).
FORGET_COUNTS = (*_FORGET_SCRIPT_COUNTS, "user_entities", "entity_mentions", "entities_erased")


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    comment_id: str
    user_id: str
    label: str
    modalities: tuple[str, ...]
    feed_item: bytes  # JSON shown in the live feed and the user's recent list (redacted text)
    entities: tuple[EntityRecord, ...] = ()  # grouped by key (workers.entity_aggregates)


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    source_id: str  # "{topic}:{partition}:{offset}"
    code: str


class AggregateStore:
    """The state Redis side of the pipeline: what was already done, and the idempotent updates.

    ``user_retention_s``: per-user keys expire this long after the user's last comment, and
    :meth:`prune_expired_users` drops users inactive this long from the sorted sets.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        dedup_ttl_s: int,
        recent_per_user: int,
        feed_length: int,
        minute_ttl_s: int,
        user_retention_s: int = 90 * 24 * 3600,
        mentions_per_entity: int = 20,
    ) -> None:
        if user_retention_s < 1 or dedup_ttl_s < 1:
            raise ValueError("user_retention_s and dedup_ttl_s must be at least 1 second")
        self._redis = client
        self._prefix = prefix
        self._dedup_ttl = dedup_ttl_s
        self._recent = recent_per_user
        self._feed = feed_length
        self._minute_ttl = minute_ttl_s
        self._retention = user_retention_s
        self._apply_prediction = client.register_script(_APPLY_PREDICTION)
        self._apply_dead_letter = client.register_script(_APPLY_DEAD_LETTER)
        self._prune = client.register_script(_PRUNE_EXPIRED_USERS)
        self._forget = client.register_script(_FORGET_USER)
        self._global = prefix + "global"
        self._dead_letters = prefix + "dead_letters"
        self._feed_key = prefix + "feed"
        self._lb_total = prefix + "leaderboard:total"
        self._lb_negative = prefix + "leaderboard:negative"
        self._last_seen = prefix + "users:last_seen"
        self.entities = EntityAggregates(
            client,
            prefix=prefix,
            dedup_ttl_s=dedup_ttl_s,
            minute_ttl_s=minute_ttl_s,
            user_retention_s=user_retention_s,
            mentions_per_entity=mentions_per_entity,
        )

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def user_retention_s(self) -> int:
        return self._retention

    def user_keys(self, user_id: str) -> tuple[str, str, str]:
        """The keys holding one user's data: ``user:{id}``, ``recent:{id}``, ``dedup:{id}``.

        The user id is the whole rest of each key after a fixed name, so any id (with ``:``,
        glob characters, spaces) names exactly one key of each kind.
        """
        p = self._prefix
        return f"{p}user:{user_id}", f"{p}recent:{user_id}", f"{p}dedup:{user_id}"

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def already_done(
        self, comments: Sequence[tuple[str, str]], source_ids: Sequence[str]
    ) -> tuple[list[bool], list[bool]]:
        """Which ``(user_id, comment_id)`` pairs were aggregated, which bad inputs dead-lettered.

        One round trip. A pair counts as done for at least ``dedup_ttl_s`` after it was applied.
        """
        if not comments and not source_ids:
            return [], []
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, comment_id in comments:
                pipe.zscore(f"{self._prefix}dedup:{user_id}", comment_id)
            for s in source_ids:
                pipe.exists(f"{self._prefix}dlq_seen:{s}")
            values = await pipe.execute()
        n = len(comments)
        return [v is not None for v in values[:n]], [bool(v) for v in values[n:]]

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
        p = self._prefix
        minute_key = f"{p}minute:{now_ms // 60_000}"
        now = str(now_ms)
        async with self._redis.pipeline(transaction=False) as pipe:
            for rec in predictions:
                # first: see the module docstring (a cut pipeline never skips the entities)
                await self.entities.queue(
                    pipe,
                    comment_id=rec.comment_id,
                    user_id=rec.user_id,
                    label=rec.label,
                    entities=rec.entities,
                    feed_item=rec.feed_item,
                    now_ms=now_ms,
                )
                user_key, recent_key, dedup_key = self.user_keys(rec.user_id)
                await self._apply_prediction(
                    keys=[
                        dedup_key,
                        user_key,
                        recent_key,
                        self._global,
                        minute_key,
                        self._lb_total,
                        self._lb_negative,
                        self._last_seen,
                        self._feed_key,
                    ],
                    args=[
                        rec.comment_id,
                        rec.user_id,
                        rec.label,
                        now,
                        self._dedup_ttl,
                        self._recent,
                        self._feed,
                        self._minute_ttl,
                        rec.feed_item,
                        ",".join(m for m in rec.modalities if m != "text"),
                        self._retention,
                    ],
                    client=pipe,
                )
            for dl in dead_letters:
                await self._apply_dead_letter(
                    keys=[
                        f"{p}dlq_seen:{dl.source_id}",
                        self._global,
                        self._dead_letters,
                        minute_key,
                    ],
                    args=[dl.code, now, self._dedup_ttl, self._minute_ttl],
                    client=pipe,
                )
            replies = await pipe.execute()
        # one reply per entity script queued, then the prediction's: report the prediction's
        out, i = [], 0
        for rec in predictions:
            i += 1 if rec.entities else 0
            out.append(int(replies[i]))
            i += 1
        return out + [int(r) for r in replies[i:]]

    async def prune_expired_users(self, now_ms: int, limit: int = 1000) -> int:
        """Drop up to ``limit`` users inactive longer than the retention from the sorted sets.

        ``leaderboard:total``, ``leaderboard:negative`` and ``users:last_seen``; their
        ``user:``/``recent:`` keys have expired by then. Returns how many users were dropped:
        call again while it returns ``limit`` (each call is one short atomic script).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        cutoff = now_ms - self._retention * 1000
        return int(
            await self._prune(
                keys=[self._last_seen, self._lb_total, self._lb_negative],
                args=[str(cutoff), limit],
            )
        )

    async def forget_user(self, user_id: str) -> dict[str, int]:
        """Erase everything the state Redis holds about ``user_id`` (right to erasure).

        Deletes ``user:``, ``recent:`` and ``dedup:`` of the user, removes the user from the
        three sorted sets and the user's items from ``feed``, in one atomic script. Returns what
        was removed (:data:`FORGET_COUNTS`), the user's entity sets and mentions included
        (:meth:`~workers.entity_aggregates.EntityAggregates.forget_user`). Not removed: the
        anonymous counts (``global``, ``minute:*``, ``dead_letters``, the entity counts) and,
        outside Redis, predictions already on the Kafka topic (its retention governs them).
        """
        counts = await self._forget(
            keys=[
                *self.user_keys(user_id),
                self._lb_total,
                self._lb_negative,
                self._last_seen,
                self._feed_key,
            ],
            args=[user_id],
        )
        removed = dict(zip(_FORGET_SCRIPT_COUNTS, (int(c) for c in counts), strict=True))
        return removed | await self.entities.forget_user(user_id)
