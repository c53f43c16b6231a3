"""``commentflow redis-memory``: the state Redis' memory per user and per dedup entry, measured.

Starts its own memory-only redis-server (:class:`~commentflow.stack.EmbeddedRedis`, the state
role: ``noeviction``), then writes through the workers' real Lua scripts
(:class:`~workers.aggregates.AggregateStore`, pipelines of ``--pipeline`` records) and reads
``used_memory`` (``INFO memory``) between phases:

A. ``--users`` users with ``--comments-per-user`` comments each: bytes per user, everything a
   user costs (``user:``, ``recent:``, ``dedup:`` keys, the three sorted sets naming users);
B. ``--extra-comments`` more comments, one each for as many existing users, with the recent list
   capped at its current length (the new item replaces the oldest): what one more comment in
   the dedup window costs (lumpy: the allocator grows small sets in size classes, so compare
   phase C of two runs with different ``--comments-per-user`` for the per-comment slope);
C. every ``dedup:`` key deleted: what the dedup sets cost in all;
D. ``--dead-letters`` dead letters: bytes per ``dlq_seen:`` marker.

Feed items are shaped like the worker's, with ``--text-chars`` characters of text (the recent
lists hold them, so the text length weighs on the per-user figure). Prints a table, or one JSON
object with ``--json``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from tqdm import tqdm

from commentflow.settings import Settings
from commentflow.stack import STATE_REDIS_ARGS, EmbeddedRedis
from workers.aggregates import AggregateStore, DeadLetterRecord, PredictionRecord

__all__ = ["measure", "print_report"]

LABELS = ("negative", "neutral", "positive")
_NOW_MS = 1_764_324_000_000
_PREFIX = "commentflow:"


async def measure(
    *,
    users: int,
    comments_per_user: int,
    extra_comments: int,
    dead_letters: int,
    text_chars: int,
    pipeline: int,
    settings: Settings,
    progress: bool = True,
) -> dict[str, Any]:
    """Run phases A-D on a fresh redis-server; the figures as a dict (bytes, seconds)."""
    async with EmbeddedRedis(extra_args=STATE_REDIS_ARGS) as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            return await _measure(
                client,
                users=users,
                k=comments_per_user,
                extra=extra_comments,
                dead_letters=dead_letters,
                text_chars=text_chars,
                pipeline=pipeline,
                settings=settings,
                progress=progress,
            )
        finally:
            await client.aclose()


async def _measure(
    client: aioredis.Redis,
    *,
    users: int,
    k: int,
    extra: int,
    dead_letters: int,
    text_chars: int,
    pipeline: int,
    settings: Settings,
    progress: bool,
) -> dict[str, Any]:
    def store(recent: int) -> AggregateStore:
        return AggregateStore(
            client,
            prefix=_PREFIX,
            dedup_ttl_s=settings.dedup_ttl_s,
            recent_per_user=recent,
            feed_length=settings.feed_length,
            minute_ttl_s=settings.minute_ttl_s,
            user_retention_s=settings.user_retention_s,
        )

    text = ("the quick brown fox jumps over the lazy dog " * (text_chars // 44 + 1))[:text_chars]
    started = time.perf_counter()
    m0 = await _used_memory(client)

    # A: users x k comments, the recent list keeps them all (k <= recent_per_user normally)
    a = store(max(k, settings.recent_per_user))
    records = (_record(u, j, LABELS[(u + j) % 3], text) for u in range(users) for j in range(k))
    await _load(a, records, users * k, pipeline, "A: users", progress)
    m1 = await _used_memory(client)

    # B: one more comment for `extra` users; recent capped at k, so only dedup grows
    b = store(k)
    records = (_record(u, k, LABELS[u % 3], text) for u in range(extra))
    await _load(b, records, extra, pipeline, "B: one more comment", progress)
    m2 = await _used_memory(client)

    # C: the dedup sets alone
    dedup_keys = (f"{_PREFIX}dedup:{_user_id(u)}" for u in range(users))
    await _chunked(client, dedup_keys, pipeline)
    m3 = await _used_memory(client)

    # D: dead-letter markers
    dl = (
        DeadLetterRecord(f"comments:{i % 12}:{1_000_000 + i}", "invalid_json")
        for i in range(dead_letters)
    )
    await _load_dead_letters(a, dl, dead_letters, pipeline, progress)
    m4 = await _used_memory(client)
    info = await client.info("server")

    entries = users * k + extra
    return {
        "users": users,
        "comments_per_user": k,
        "extra_comments": extra,
        "dead_letters": dead_letters,
        "feed_item_bytes": len(_record(0, 0, "neutral", text).feed_item),
        "recent_per_user": settings.recent_per_user,
        "bytes_per_user": round((m1 - m0) / users, 1),
        "bytes_per_dedup_entry": round((m2 - m1) / extra, 1) if extra else None,
        "dedup_bytes_per_user": round((m2 - m3) / users, 1),
        "dedup_bytes_per_entry_average": round((m2 - m3) / entries, 1),
        "bytes_per_dead_letter_marker": (
            round((m4 - m3) / dead_letters, 1) if dead_letters else None
        ),
        "used_memory_after_a": m1,
        "used_memory_baseline": m0,
        "redis_version": info.get("redis_version"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _user_id(u: int) -> str:
    return f"user-{u:08d}"  # 13 characters


def _record(u: int, j: int, label: str, text: str) -> PredictionRecord:
    uid, cid = _user_id(u), f"cm-{u:08d}-{j:04d}"  # 16 characters
    item = {
        "comment_id": cid,
        "user_id": uid,
        "label": label,
        "scores": {"negative": 0.1234, "neutral": 0.2345, "positive": 0.6421},
        "modalities": ["text"],
        "text": text,
        "created_at": "2026-11-28T10:00:00.000Z",
        "processed_at": "2026-11-28T10:00:00.100Z",
    }
    return PredictionRecord(cid, uid, label, ("text",), orjson.dumps(item))


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _load(
    store: AggregateStore,
    records: Iterator[PredictionRecord],
    total: int,
    size: int,
    desc: str,
    progress: bool,
) -> None:
    async def one(batch: list[PredictionRecord]) -> None:
        applied = await store.apply(batch, [], now_ms=_NOW_MS)
        if sum(applied) != len(batch):
            raise RuntimeError(f"{desc}: {len(batch) - sum(applied)} records not applied")
        bar.update(len(batch))

    with tqdm(total=total, desc=desc, unit="comment", disable=not progress) as bar:
        # two pipelines in flight: Python encodes one while Redis runs the other
        batches = _batches(records, size)
        for pair in _batches(batches, 2):
            await asyncio.gather(*(one(b) for b in pair))


async def _load_dead_letters(
    store: AggregateStore,
    records: Iterator[DeadLetterRecord],
    total: int,
    size: int,
    progress: bool,
) -> None:
    with tqdm(total=total, desc="D: dead letters", unit="record", disable=not progress) as bar:
        for batch in _batches(records, size):
            await store.apply([], batch, now_ms=_NOW_MS)
            bar.update(len(batch))


async def _chunked(client: aioredis.Redis, keys: Iterator[str], size: int) -> None:
    for batch in _batches(keys, size):
        await client.delete(*batch)


async def _used_memory(client: aioredis.Redis, settle_s: float = 5.0) -> int:
    """``used_memory`` with the writers' connections closed first: a pipelined connection's
    query buffer (tens of KB) counts in ``used_memory`` until Redis shrinks it, idle, at a time
    of its choosing, which swung a small phase's difference below zero. One fresh connection,
    alone (waited for, up to ``settle_s``), leaves the stored state the only thing that
    differs between two readings."""
    await client.connection_pool.disconnect()
    for _ in range(int(settle_s / 0.01)):  # the server closes them on its next turns
        if len(await client.client_list()) == 1:
            break
        await asyncio.sleep(0.01)
    return int((await client.info("memory"))["used_memory"])


def print_report(r: dict[str, Any]) -> None:
    print(
        f"\nstate Redis {r['redis_version']}, {r['users']:,} users x {r['comments_per_user']} "
        f"comments (feed items {r['feed_item_bytes']} bytes), {r['seconds']} s\n"
        f"  per user, everything (A):                  {r['bytes_per_user']:>8} bytes\n"
        f"  per further comment in the dedup window (B): {r['bytes_per_dedup_entry']} bytes\n"
        f"  the dedup set of a user, all entries (C):  {r['dedup_bytes_per_user']:>8} bytes\n"
        f"  per dead-letter marker (D):                {r['bytes_per_dead_letter_marker']} bytes"
    )
