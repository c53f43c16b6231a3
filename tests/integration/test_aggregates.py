"""AggregateStore against a real redis-server: the documented key schema, idempotency, pub/sub."""

from __future__ import annotations

import asyncio

import orjson

from workers.aggregates import AggregateStore, DeadLetterRecord, PredictionRecord


def store(client, prefix: str, **over) -> AggregateStore:
    kw = dict(dedup_ttl_s=3600, recent_per_user=3, feed_length=5, minute_ttl_s=600)
    kw.update(over)
    return AggregateStore(client, prefix=prefix, **kw)


def rec(cid: str, user: str, label: str, mods=("text",)) -> PredictionRecord:
    return PredictionRecord(cid, user, label, mods, orjson.dumps({"comment_id": cid}))


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
    assert 0 < await redis_client.ttl(f"{p}seen:c1") <= 3600
    assert await s.already_done(["c1", "zzz"], ["t:0:9", "t:0:10"]) == (
        [True, False],
        [True, False],
    )


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
    for _ in range(20):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg:
            break
        await asyncio.sleep(0.05)
    await pubsub.aclose()
    assert msg is not None and orjson.loads(msg["data"])["comment_id"] == "live1"
