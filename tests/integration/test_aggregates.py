"""AggregateStore against a real redis-server: the documented key schema, idempotency by
(user_id, comment_id), retention, erasure, pub/sub, and a full Redis refusing whole scripts."""

from __future__ import annotations

import orjson
import pytest
import redis.exceptions

from workers.aggregates import (
    FORGET_COUNTS,
    RETRIABLE_REDIS_ERRORS,
    AggregateStore,
    DeadLetterRecord,
    PredictionRecord,
)

DAY_MS = 24 * 3600 * 1000


def store(client, prefix: str, **over) -> AggregateStore:
    kw = dict(dedup_ttl_s=3600, recent_per_user=3, feed_length=5, minute_ttl_s=600)
    kw.update(over)
    return AggregateStore(client, prefix=prefix, **kw)


def rec(cid: str, user: str, label: str, mods=("text",)) -> PredictionRecord:
    item = {"comment_id": cid, "user_id": user, "label": label, "text": f"text of {cid}"}
    return PredictionRecord(cid, user, label, mods, orjson.dumps(item))


def decode(h: dict) -> dict:
    return {k.decode(): v.decode() for k, v in h.items()}


async def test_key_schema_and_idempotency(stack, names, redis_client):
    p = names.redis_prefix
    s = store(redis_client, p)
    now = 1_764_324_000_000
    records = [
        rec("c1", "alice", "negative"),
        rec("c2", "alice", "positive", ("text", "image")),
        rec("c3", "bob", "negative", ("text", "audio")),
        rec("c4", "alice", "negative"),
        rec("c5", "alice", "neutral"),
    ]
    assert (
        await s.apply(records, [DeadLetterRecord("t:0:9", "invalid_json")], now_ms=now) == [1] * 6
    )
    # the same records again (a redelivery) change nothing
    assert (
        await s.apply(records, [DeadLetterRecord("t:0:9", "invalid_json")], now_ms=now + 5)
        == [0] * 6
    )

    alice = decode(await redis_client.hgetall(f"{p}user:alice"))
    assert alice["total"] == "4" and alice["negative"] == "2" and alice["positive"] == "1"
    assert alice["neutral"] == "1" and alice["with_image"] == "1" and "with_audio" not in alice
    assert alice["last_label"] == "neutral" and alice["last_comment_id"] == "c5"
    assert alice["first_seen_ms"] == alice["last_seen_ms"] == str(now)

    g = decode(await redis_client.hgetall(f"{p}global"))
    assert g == {
        "total": "5",
        "negative": "3",
        "positive": "1",
        "neutral": "1",
        "with_image": "1",
        "with_audio": "1",
        "dead_letters": "1",
    }
    minute = decode(await redis_client.hgetall(f"{p}minute:{now // 60_000}"))
    assert minute["total"] == "5" and minute["negative"] == "3" and minute["dead_letters"] == "1"
    assert 0 < await redis_client.ttl(f"{p}minute:{now // 60_000}") <= 600
    assert decode(await redis_client.hgetall(f"{p}dead_letters")) == {"invalid_json": "1"}

    neg = await redis_client.zrevrange(f"{p}leaderboard:negative", 0, -1, withscores=True)
    assert neg == [(b"alice", 2.0), (b"bob", 1.0)]
    tot = await redis_client.zrevrange(f"{p}leaderboard:total", 0, -1, withscores=True)
    assert tot == [(b"alice", 4.0), (b"bob", 1.0)]
    assert await redis_client.zscore(f"{p}users:last_seen", "bob") == now

    recent = [
        orjson.loads(x)["comment_id"] for x in await redis_client.lrange(f"{p}recent:alice", 0, -1)
    ]
    assert recent == ["c5", "c4", "c2"]  # newest first, capped at recent_per_user
    feed = [orjson.loads(x)["comment_id"] for x in await redis_client.lrange(f"{p}feed", 0, -1)]
    assert feed == ["c5", "c4", "c3", "c2", "c1"]
    assert await redis_client.zrange(f"{p}dedup:alice", 0, -1) == [b"c1", b"c2", b"c4", b"c5"]
    assert 0 < await redis_client.ttl(f"{p}dedup:alice") <= 3600
    done = await s.already_done(
        [("alice", "c1"), ("bob", "c1"), ("alice", "zzz")], ["t:0:9", "t:0:10"]
    )
    assert done == ([True, False, False], [True, False])


async def test_user_ids_cannot_collide_with_other_keys(stack, names, redis_client):
    p = names.redis_prefix
    s = store(redis_client, p)
    weird = ["a:recent", "x", "x:y", "global", "🙂 ünïcode", "sp ace"]
    await s.apply([rec(f"w{i}", u, "neutral") for i, u in enumerate(weird)], [], now_ms=1)
    for u in weird:
        assert decode(await redis_client.hgetall(f"{p}user:{u}"))["total"] == "1"
    assert decode(await redis_client.hgetall(f"{p}global"))["total"] == str(len(weird))


async def test_feed_is_published_for_live_dashboards(stack, names, redis_client):
    p = names.redis_prefix
    s = store(redis_client, p)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"{p}feed")
    await pubsub.get_message(timeout=1.0)  # subscribe confirmation
    await s.apply([rec("live1", "carol", "positive")], [], now_ms=1)
    msg = None
    for _ in range(20):  # get_message waits up to its timeout for the next message
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg:
            break
    await pubsub.aclose()
    assert msg is not None and orjson.loads(msg["data"])["comment_id"] == "live1"


async def test_same_comment_id_from_two_users_counts_for_both(stack, names, redis_client):
    """A comment id another user already used suppresses nothing (the dedup key is the pair)."""
    p = names.redis_prefix
    s = store(redis_client, p)
    assert await s.apply([rec("c1", "alice", "negative")], [], now_ms=1_000) == [1]
    assert await s.already_done([("mallory", "c1")], []) == ([False], [])
    assert await s.apply([rec("c1", "mallory", "positive")], [], now_ms=2_000) == [1]
    # replays of either, in any order, change nothing
    for _ in range(2):
        assert await s.apply(
            [rec("c1", "mallory", "positive"), rec("c1", "alice", "negative")], [], now_ms=3_000
        ) == [0, 0]
    assert decode(await redis_client.hgetall(f"{p}global"))["total"] == "2"
    assert decode(await redis_client.hgetall(f"{p}user:alice"))["total"] == "1"
    assert decode(await redis_client.hgetall(f"{p}user:mallory"))["total"] == "1"
    assert await s.already_done([("alice", "c1"), ("mallory", "c1")], []) == ([True, True], [])


async def test_dedup_keys_are_unambiguous_for_any_ids(stack, names, redis_client):
    """Ids with ':' and glob characters: ("a:b", "c") and ("a", "b:c") are different comments."""
    p = names.redis_prefix
    s = store(redis_client, p)
    pairs = [("a:b", "c"), ("a", "b:c"), ("a*", "?"), ("[a]", "c"), ("a", "*"), ("a", "?")]
    assert await s.apply([rec(c, u, "neutral") for u, c in pairs], [], now_ms=5) == [1] * 6
    assert await s.apply([rec(c, u, "neutral") for u, c in pairs], [], now_ms=6) == [0] * 6
    assert await s.already_done(pairs + [("a", "c"), ("a:b", "b:c")], []) == (
        [True] * 6 + [False, False],
        [],
    )


async def test_every_per_user_key_expires_and_is_refreshed(stack, names, redis_client):
    p = names.redis_prefix
    s = store(redis_client, p, dedup_ttl_s=600, user_retention_s=7200)
    now = 1_764_324_000_000
    await s.apply([rec("c1", "dora", "negative")], [], now_ms=now)
    for key, ttl in (("user:dora", 7200), ("recent:dora", 7200), ("dedup:dora", 600)):
        await redis_client.expire(f"{p}{key}", 5)  # as if time had passed
        await s.apply([rec(f"n-{key}", "dora", "neutral")], [], now_ms=now + 1)
        assert ttl - 5 < await redis_client.ttl(f"{p}{key}") <= ttl, key
    # dedup members older than dedup_ttl_s are dropped by the next update of that user
    await s.apply([rec("late", "dora", "neutral")], [], now_ms=now + 601_000)
    assert await redis_client.zrange(f"{p}dedup:dora", 0, -1) == [b"late"]
    # no key of this test is left without a TTL but the anonymous and the user-naming sets
    persistent = set()
    async for key in redis_client.scan_iter(match=f"{p}*", count=1000):
        if await redis_client.ttl(key) == -1:
            persistent.add(key.decode().removeprefix(p))
    assert persistent == {
        "global",
        "leaderboard:total",
        "leaderboard:negative",
        "users:last_seen",
        "feed",
    }


async def test_prune_removes_stale_users_from_the_sorted_sets_only(stack, names, redis_client):
    p = names.redis_prefix
    s = store(redis_client, p, user_retention_s=30 * 24 * 3600)
    now = 1_764_324_000_000
    old = [rec(f"o{i}", f"old{i}", "negative") for i in range(5)]
    await s.apply(old, [], now_ms=now - 31 * DAY_MS)
    await s.apply([rec("f1", "fresh", "negative")], [], now_ms=now - 29 * DAY_MS)
    await s.apply([rec("o9", "old0", "negative")], [], now_ms=now - 40 * DAY_MS)  # out of order
    g_before = decode(await redis_client.hgetall(f"{p}global"))
    # bounded: two users per call
    assert await s.prune_expired_users(now, limit=2) == 2
    assert await s.prune_expired_users(now, limit=2) == 2
    assert await s.prune_expired_users(now, limit=2) == 1
    assert await s.prune_expired_users(now, limit=2) == 0
    for key in ("leaderboard:total", "leaderboard:negative", "users:last_seen"):
        assert await redis_client.zrange(f"{p}{key}", 0, -1) == [b"fresh"], key
    # only the sorted sets: the global counts and the feed stay (user keys expire by TTL)
    assert decode(await redis_client.hgetall(f"{p}global")) == g_before
    assert await redis_client.llen(f"{p}feed") == 5  # feed_length
    with pytest.raises(ValueError):
        await s.prune_expired_users(now, limit=0)


async def test_forget_user_leaves_nothing_about_the_user(stack, names, redis_client):
    p = names.redis_prefix
    s = store(redis_client, p, feed_length=50)
    victim = "ev*l:[user]"  # glob characters and ':' must not matter
    others = ["ev", "ev*l:[user]x", "bob"]
    records = []
    for i in range(6):
        records.append(rec(f"v{i}", victim, ("negative", "positive")[i % 2], ("text", "image")))
        records.append(rec(f"v{i}", others[i % 3], "negative"))  # same comment ids, other users
    await s.apply(records, [DeadLetterRecord("t:0:1", "invalid_json")], now_ms=1_000)
    before = {k async for k in redis_client.scan_iter(match=f"{p}*", count=1000)}
    g_before = decode(await redis_client.hgetall(f"{p}global"))

    removed = await s.forget_user(victim)
    assert set(removed) == set(FORGET_COUNTS)
    assert removed == {
        "user": 1,
        "recent": 1,
        "dedup_markers": 6,
        "leaderboard_total": 1,
        "leaderboard_negative": 1,
        "users_last_seen": 1,
        "feed_items": 6,
        "user_entities": 0,  # these records name no entity (test_entity_aggregates.py)
        "entity_mentions": 0,
        "entities_erased": 0,
    }
    after = {k async for k in redis_client.scan_iter(match=f"{p}*", count=1000)}
    assert before - after == {f"{p}{k}:{victim}".encode() for k in ("user", "recent", "dedup")}
    for key in after:  # no key is about the user (other users' ids contain the victim's)
        assert not key.endswith(b":" + victim.encode()), key
    for key in ("leaderboard:total", "leaderboard:negative", "users:last_seen"):
        assert await redis_client.zscore(f"{p}{key}", victim) is None
    feed = [orjson.loads(x) for x in await redis_client.lrange(f"{p}feed", 0, -1)]
    assert [f["user_id"] for f in feed] == [others[i % 3] for i in reversed(range(6))]
    # other users untouched, anonymous counts stay
    for u in others:
        assert decode(await redis_client.hgetall(f"{p}user:{u}"))["total"] == "2"
        assert await redis_client.zcard(f"{p}dedup:{u}") == 2
    assert decode(await redis_client.hgetall(f"{p}global")) == g_before
    # forgetting twice is harmless, and the user can come back as new
    assert set((await s.forget_user(victim)).values()) == {0}
    assert await s.apply([rec("v0", victim, "neutral")], [], now_ms=2_000) == [1]


async def test_full_state_redis_refuses_whole_scripts_and_recovers(stack, names, redis_client):
    """OOM (noeviction) refuses the script before it runs: nothing half applied, retry works."""
    p = names.redis_prefix
    s = store(redis_client, p)
    assert await s.apply([rec("c1", "ann", "neutral")], [], now_ms=1) == [1]
    old = (await redis_client.config_get("maxmemory"))["maxmemory"]
    await redis_client.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError) as err:
            await s.apply(
                [rec("c2", "ann", "negative")], [DeadLetterRecord("t:0:2", "bad")], now_ms=2
            )
        assert isinstance(err.value, RETRIABLE_REDIS_ERRORS)
        assert await s.already_done([("ann", "c2")], ["t:0:2"]) == ([False], [False])  # reads ok
    finally:
        await redis_client.config_set("maxmemory", old)
    assert decode(await redis_client.hgetall(f"{p}global")) == {"total": "1", "neutral": "1"}
    assert await s.apply(
        [rec("c2", "ann", "negative")], [DeadLetterRecord("t:0:2", "bad")], now_ms=3
    ) == [1, 1]
