"""Per-entity aggregates in the state Redis: what people talk about, and with what feeling.

Written with the sentiment aggregates (:mod:`workers.aggregates`), exact under redelivery by
the same technique: one Lua script per comment first claims the comment id in the user's
``entity_dedup:{user_id}`` sorted set (comment id -> processing time in ms); a redelivered or
re-sent comment finds its claim and changes nothing. :class:`~workers.aggregates.AggregateStore`
queues this script *before* the sentiment script of the same comment in the same pipeline: a
pipeline cut short after the sentiment script (whose claim makes the worker skip the comment
next time) has therefore always applied the entity script too.

Keys (all after the configured prefix; ``{key}`` is an entity key,
:func:`model.entities.entity_key`; ``{m}`` a minute number, ms // 60000 of processing time)::

    entity:{key}            hash   name (first surface form), total, negative/neutral/positive
                                   (comments by sentiment), label:{NER label}, mod:{modality},
                                   first_seen_ms, last_seen_ms            expires: retention
    entity_mentions:{key}   list   the latest feed items (JSON) mentioning it, newest first,
                                   capped at mentions_per_entity            expires: retention
    entities:minute:{m}     zset   entity key -> comments mentioning it in that minute
    entities:negative:{m}   zset   entity key -> negative comments mentioning it   (both: TTL
                                   minute_ttl_s, like minute:{m})
    user_entities:{uid}     zset   entity key -> the user's comments mentioning it   (retention)
    entity_dedup:{uid}      zset   comment id -> ms, the claims              (dedup_ttl_s)

A comment counts once per entity key, whatever how often and in how many modalities it names it.
"Retention" is ``user_retention_s`` after the last mention, refreshed by each one, as for the
per-user keys. The sliding window (:meth:`EntityAggregates.window`) is a ``ZUNION`` of the last
``minutes`` minute sets: two commands, then one pipeline for the names.

:meth:`EntityAggregates.forget_user` erases one user: the user's two sets, the user's items in
the mention lists of the entities the user named, and every entity that nobody else named (its
name may be personal data: a private person named by this user only). The counts of entities
others named too are anonymous and stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

__all__ = ["EntityAggregates", "EntityCount", "EntityRecord", "group_entities"]

_APPLY_ENTITIES = """#!lua
-- KEYS: entity_dedup:{uid} user_entities:{uid} entities:minute:{m} entities:negative:{m}
--       then per entity: entity:{key} entity_mentions:{key}
-- ARGV: comment_id now_ms dedup_ttl_s retention_s minute_ttl_s label item mentions_len
--       then per entity: key name labels(comma-separated) modalities(comma-separated)
local cid, now = ARGV[1], tonumber(ARGV[2])
local dedup_ttl, retention, minute_ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local label, item, mentions_len = ARGV[6], ARGV[7], tonumber(ARGV[8])
if redis.call('ZSCORE', KEYS[1], cid) then
  return 0
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now - dedup_ttl * 1000))
redis.call('ZADD', KEYS[1], now, cid)
redis.call('EXPIRE', KEYS[1], dedup_ttl)
local n = (#KEYS - 4) / 2
for i = 1, n do
  local ekey, mkey = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local key, name = ARGV[5 + 4 * i], ARGV[6 + 4 * i]
  local labels, mods = ARGV[7 + 4 * i], ARGV[8 + 4 * i]
  redis.call('HSETNX', ekey, 'name', name)
  redis.call('HSETNX', ekey, 'first_seen_ms', ARGV[2])
  redis.call('HSET', ekey, 'last_seen_ms', ARGV[2])
  redis.call('HINCRBY', ekey, 'total', 1)
  redis.call('HINCRBY', ekey, label, 1)
  for l in string.gmatch(labels, '[^,]+') do
    redis.call('HINCRBY', ekey, 'label:' .. l, 1)
  end
  for m in string.gmatch(mods, '[^,]+') do
    redis.call('HINCRBY', ekey, 'mod:' .. m, 1)
  end
  redis.call('EXPIRE', ekey, retention)
  redis.call('LPUSH', mkey, item)
  redis.call('LTRIM', mkey, 0, mentions_len - 1)
  redis.call('EXPIRE', mkey, retention)
  redis.call('ZINCRBY', KEYS[2], 1, key)
  redis.call('ZINCRBY', KEYS[3], 1, key)
  if label == 'negative' then
    redis.call('ZINCRBY', KEYS[4], 1, key)
  end
end
redis.call('EXPIRE', KEYS[2], retention)
redis.call('EXPIRE', KEYS[3], minute_ttl)
if label == 'negative' then
  redis.call('EXPIRE', KEYS[4], minute_ttl)
end
return 1
"""

# KEYS: user_entities:{uid} entity_dedup:{uid}, then per entity the user named: entity:{key}
#       entity_mentions:{key} and the minute sets that may hold it (entities:minute:{m},
#       entities:negative:{m} of the minutes between its first and last mention)
# ARGV: user_id, then per entity: key, the user's comments naming it, the number of minute keys.
# An entity nobody else named (its total is the user's own count) is erased whole: its name may
# be personal data (a PERSON named by this user only). Mention lists are capped: bounded reads.
_FORGET_USER = """#!lua
local uid = ARGV[1]
local removed, erased = 0, 0
local k, a = 3, 2
while k <= #KEYS do
  local ekey, mkey = KEYS[k], KEYS[k + 1]
  local key, own, nmin = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  for _, item in ipairs(redis.call('LRANGE', mkey, 0, -1)) do
    local ok, doc = pcall(cjson.decode, item)
    if ok and type(doc) == 'table' and doc['user_id'] == uid then
      removed = removed + redis.call('LREM', mkey, 0, item)
    end
  end
  local total = tonumber(redis.call('HGET', ekey, 'total') or '0')
  if total <= own then
    erased = erased + redis.call('DEL', ekey)
    redis.call('DEL', mkey)
    for j = k + 2, k + 1 + nmin do
      redis.call('ZREM', KEYS[j], key)
    end
  end
  k, a = k + 2 + nmin, a + 3
end
local entities = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return {entities, removed, erased}
"""


@dataclass(frozen=True, slots=True)
class EntityRecord:
    """One entity of one comment, grouped by key: its labels and modalities in that comment."""

    key: str
    name: str  # the first surface form in the comment, without a leading "the"
    labels: tuple[str, ...]
    modalities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EntityCount:
    """One row of a window ranking."""

    key: str
    name: str
    total: int
    negative: int

    @property
    def negative_share(self) -> float:
        return self.negative / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "total": self.total,
            "negative": self.negative,
            "negative_share": round(self.negative_share, 4),
        }


def group_entities(entities: Sequence[Any]) -> tuple[EntityRecord, ...]:
    """The :class:`EntityRecord` of each key among ``entities`` (anything with ``key``,
    ``text``, ``label`` and ``modality``, e.g. :class:`model.entities.Entity`), in order."""
    order: dict[str, tuple[str, list[str], list[str]]] = {}
    for e in entities:
        name, labels, mods = order.setdefault(e.key, (_display(e.text), [], []))
        if e.label not in labels:
            labels.append(e.label)
        if e.modality not in mods:
            mods.append(e.modality)
    return tuple(EntityRecord(k, n, tuple(ls), tuple(ms)) for k, (n, ls, ms) in order.items())


def _display(surface: str) -> str:
    """The name shown for an entity: its surface form without a leading "the" ("the
    PlayStation 5" -> "PlayStation 5"), whitespace collapsed."""
    name = " ".join(surface.split())
    head, _, rest = name.partition(" ")
    return rest if head.casefold() == "the" and rest else name


class EntityAggregates:
    """The entity side of the state Redis: the idempotent update and the dashboard's reads."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        dedup_ttl_s: int,
        minute_ttl_s: int,
        user_retention_s: int,
        mentions_per_entity: int = 20,
    ) -> None:
        if mentions_per_entity < 1:
            raise ValueError("mentions_per_entity must be at least 1")
        self._redis = client
        self._prefix = prefix
        self._dedup_ttl = dedup_ttl_s
        self._minute_ttl = minute_ttl_s
        self._retention = user_retention_s
        self._mentions = mentions_per_entity
        self._apply = client.register_script(_APPLY_ENTITIES)
        self._forget = client.register_script(_FORGET_USER)

    @classmethod
    def reader(cls, client: aioredis.Redis, prefix: str) -> EntityAggregates:
        """For the reads only (the dashboard): the write settings do not matter there."""
        return cls(client, prefix=prefix, dedup_ttl_s=1, minute_ttl_s=1, user_retention_s=1)

    def entity_key(self, key: str) -> str:
        return f"{self._prefix}entity:{key}"

    def mentions_key(self, key: str) -> str:
        return f"{self._prefix}entity_mentions:{key}"

    def minute_keys(self, minute: int) -> tuple[str, str]:
        """``entities:minute:{m}`` and ``entities:negative:{m}``."""
        p = self._prefix
        return f"{p}entities:minute:{minute}", f"{p}entities:negative:{minute}"

    def user_keys(self, user_id: str) -> tuple[str, str]:
        """``user_entities:{uid}`` and ``entity_dedup:{uid}``."""
        p = self._prefix
        return f"{p}user_entities:{user_id}", f"{p}entity_dedup:{user_id}"

    async def queue(
        self,
        pipe: Any,
        *,
        comment_id: str,
        user_id: str,
        label: str,
        entities: Sequence[EntityRecord],
        feed_item: bytes,
        now_ms: int,
    ) -> None:
        """Queue one comment's update on ``pipe`` (nothing when it names no entity)."""
        if not entities:
            return
        user_set, dedup = self.user_keys(user_id)
        keys = [dedup, user_set, *self.minute_keys(now_ms // 60_000)]
        args: list[Any] = [
            comment_id,
            str(now_ms),
            self._dedup_ttl,
            self._retention,
            self._minute_ttl,
            label,
            feed_item,
            self._mentions,
        ]
        for e in entities:
            keys += [self.entity_key(e.key), self.mentions_key(e.key)]
            args += [e.key, e.name, ",".join(e.labels), ",".join(e.modalities)]
        await self._apply(keys=keys, args=args, client=pipe)

    # -- reads (the dashboard)

    async def window(
        self, now_ms: int, *, minutes: int = 60, top: int = 10, min_mentions: int = 3
    ) -> dict[str, list[dict[str, Any]]]:
        """The last ``minutes`` minutes: ``by_volume`` (most mentioned first) and
        ``by_negative_share`` (entities with at least ``min_mentions`` mentions, highest share
        of negative comments first, ties by count). Three round trips."""
        last = now_ms // 60_000
        totals_keys, negative_keys = zip(
            *(self.minute_keys(m) for m in range(last - minutes + 1, last + 1)), strict=True
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zunion(list(totals_keys), withscores=True)
            pipe.zunion(list(negative_keys), withscores=True)
            totals_raw, negative_raw = await pipe.execute()
        totals = {k.decode(errors="replace"): int(v) for k, v in totals_raw}
        negative = {k.decode(errors="replace"): int(v) for k, v in negative_raw}
        by_volume = sorted(totals, key=lambda k: (-totals[k], k))[:top]
        shares = [k for k in totals if totals[k] >= min_mentions and negative.get(k, 0) > 0]
        by_share = sorted(
            shares, key=lambda k: (-negative.get(k, 0) / totals[k], -negative.get(k, 0), k)
        )[:top]
        names = await self._names(list(dict.fromkeys(by_volume + by_share)))

        def rows(keys: list[str]) -> list[dict[str, Any]]:
            return [
                EntityCount(k, names.get(k) or k, totals[k], negative.get(k, 0)).as_dict()
                for k in keys
            ]

        return {"by_volume": rows(by_volume), "by_negative_share": rows(by_share)}

    async def _names(self, keys: list[str]) -> dict[str, str]:
        if not keys:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hget(self.entity_key(k), "name")
            names = await pipe.execute()
        return {
            k: n.decode(errors="replace") for k, n in zip(keys, names, strict=True) if n is not None
        }

    async def entity(self, key: str, *, mentions: int = 20) -> dict[str, Any]:
        """One entity: its counts (by sentiment, NER label and modality) and latest mentions."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.entity_key(key))
            pipe.lrange(self.mentions_key(key), 0, max(0, mentions - 1))
            counts, items = await pipe.execute()
        fields = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in counts.items()}
        out: dict[str, Any] = {"key": key, "name": fields.pop("name", key), "counts": {}}
        for name, value in fields.items():
            try:
                out["counts"][name] = int(value)
            except ValueError:
                continue
        docs = []
        for raw in items:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                docs.append(doc)
        out["mentions"] = docs
        return out

    async def user_top(self, user_id: str, top: int = 10) -> list[tuple[str, int]]:
        """The entities a user names most: ``(key, comments)``, most first."""
        rows = await self._redis.zrevrange(
            self.user_keys(user_id)[0], 0, max(0, top - 1), withscores=True
        )
        return [(k.decode(errors="replace"), int(v)) for k, v in rows]

    async def forget_user(self, user_id: str) -> dict[str, int]:
        """Erase the user's entity sets, the user's items in the mention lists of the entities
        the user named (each list is capped), and every entity that only this user named (its
        hash, mention list and place in the minute sets: its name may be personal data);
        returns what was removed."""
        user_set, dedup = self.user_keys(user_id)
        named = [
            (k.decode(errors="replace"), int(n))
            for k, n in await self._redis.zrange(user_set, 0, -1, withscores=True)
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, _ in named:
                pipe.hmget(self.entity_key(key), "total", "first_seen_ms", "last_seen_ms")
            spans = await pipe.execute()
        keys: list[str] = [user_set, dedup]
        args: list[Any] = [user_id]
        for (key, own), (total, first, last) in zip(named, spans, strict=True):
            minutes: list[str] = []
            if total is not None and int(total) <= own and first and last:
                # the minute sets live minute_ttl_s: only minutes since then can hold it
                oldest = max(int(first), int(last) - self._minute_ttl * 1000) // 60_000
                for m in range(oldest, int(last) // 60_000 + 1):
                    minutes += self.minute_keys(m)
            keys += [self.entity_key(key), self.mentions_key(key), *minutes]
            args += [key, own, len(minutes)]
        entities, removed, erased = await self._forget(keys=keys, args=args)
        return {
            "user_entities": int(entities),
            "entity_mentions": int(removed),
            "entities_erased": int(erased),
        }
