"""``commentflow forget-user USER_ID``: erase one user from the state Redis (right to erasure).

Removes ``user:{id}``, ``recent:{id}``, ``dedup:{id}``, the user's entries in
``leaderboard:total``, ``leaderboard:negative`` and ``users:last_seen`` and the user's items in
``feed`` (:meth:`workers.aggregates.AggregateStore.forget_user`), and prints what was removed as
JSON. Not removed: the anonymous counts (``global``, ``minute:*``, ``dead_letters``), and
predictions already on the predictions topic, which the topic's retention governs. A comment of
the user still in flight is aggregated again after this: run it after the user's comments stop.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from commentflow.settings import Settings
from workers.aggregates import AggregateStore

__all__ = ["forget_user"]


async def forget_user(settings: Settings, user_id: str) -> dict[str, int]:
    """Erase ``user_id`` from the state Redis ``settings`` names; the counts removed."""
    client = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=30, socket_connect_timeout=5
    )
    try:
        store = AggregateStore(
            client,
            prefix=settings.redis_prefix,
            dedup_ttl_s=settings.dedup_ttl_s,
            recent_per_user=settings.recent_per_user,
            feed_length=settings.feed_length,
            minute_ttl_s=settings.minute_ttl_s,
            user_retention_s=settings.user_retention_s,
        )
        return await store.forget_user(user_id)
    finally:
        await client.aclose()
