"""The entity aggregates against a real redis-server: the documented keys, exact under replay
(a redelivered batch, a pipeline cut after the entity script), the sliding window, retention and
erasure."""

from __future__ import annotations

import random
from collections import Counter

import orjson

from workers.aggregates import FORGET_COUNTS, AggregateStore, PredictionRecord
from workers.entity_aggregates import EntityRecord

NOW = 1_764_324_000_000
MINUTE = 60_000


def store(client, prefix: str, **over) -> AggregateStore:
    kw = dict(
        dedup_ttl_s=3600,
        recent_per_user=3,
        feed_length=5,
        minute_ttl_s=7200,
        user_retention_s=86_400,
        mentions_per_entity=3,
    )
    kw.update(over)
    return AggregateStore(client, prefix=prefix, **kw)


def ent(key: str, name: str | None = None, labels=("ORG",), mods=("text",)) -> EntityRecord:
    return EntityRecord(key, name or key.title(), tuple(labels), tuple(mods))


def rec(cid: str, user: str, label: str, *entities: EntityRecord) -> PredictionRecord:
    item = {"comment_id": cid, "user_id": user, "label": label, "text": f"text of {cid}"}
    return PredictionRecord(cid, user, label, ("text",), orjson.dumps(item), tuple(entities))


def decode(h: dict) -> dict:
    return {k.decode(): v.decode() for k, v in h.items()}


async def test_key_schema_and_replay_change_nothing(stack, names, redis_client):
    p = names.redis_prefix
    s = store(redis_client, p)
    records = [
        rec("c1", "alice", "negative", ent("iphone", "iPhone", ("PRODUCT",), ("text", "image"))),
        rec("c2", "alice", "negative", ent("iphone", "IPHONE", ("PRODUCT", "ORG")), ent("apple")),
        rec("c3", "bob", "positive", ent("iphone", "iphone's", ("PRODUCT",), ("audio",))),
        rec("c4", "bob", "neutral"),
    ]
    assert await s.apply(records, [], now_ms=NOW) == [1, 1, 1, 1]
    before = {k: await redis_client.dump(k) for k in await redis_client.keys(p + "*")}
    # a redelivery, a minute later: nothing changes (the minute sets of that minute included)
    assert await s.apply(records, [], now_ms=NOW + MINUTE) == [0, 0, 0, 0]
    after = {k: await redis_client.dump(k) for k in await redis_client.keys(p + "*")}
    assert after == before

    iphone = decode(await redis_client.hgetall(f"{p}entity:iphone"))
    assert iphone == {
        "name": "iPhone",
        "total": "3",
        "negative": "2",
        "positive": "1",
        "label:PRODUCT": "3",
        "label:ORG": "1",
        "mod:text": "2",
        "mod:image": "1",
        "mod:audio": "1",
        "first_seen_ms": str(NOW),
        "last_seen_ms": str(NOW),
    }
    m = NOW // MINUTE
    assert await redis_client.zrevrange(f"{p}entities:minute:{m}", 0, -1, withscores=True) == [
        (b"iphone", 3.0),
        (b"apple", 1.0),
    ]
    assert await redis_client.zrevrange(f"{p}entities:negative:{m}", 0, -1, withscores=True) == [
        (b"iphone", 2.0),
        (b"apple", 1.0),
    ]
    assert await redis_client.zrevrange(f"{p}user_entities:alice", 0, -1, withscores=True) == [
        (b"iphone", 2.0),
        (b"apple", 1.0),
    ]
    mentions = [
        orjson.loads(x) for x in await redis_client.lrange(f"{p}entity_mentions:iphone", 0, -1)
    ]
    assert [x["comment_id"] for x in mentions] == ["c3", "c2", "c1"]  # newest first
    assert await redis_client.zcard(f"{p}entity_dedup:bob") == 1  # c4 names nothing: no claim
    # retention: entity and per-user keys like the user keys, minute sets like minute:*
    for key in (f"{p}entity:iphone", f"{p}entity_mentions:iphone", f"{p}user_entities:alice"):
        assert 86_000 < await redis_client.ttl(key) <= 86_400
    assert 7000 < await redis_client.ttl(f"{p}entities:minute:{m}") <= 7200
    assert 3500 < await redis_client.ttl(f"{p}entity_dedup:alice") <= 3600
    # the mention list is capped
    await s.apply(
        [rec(f"x{i}", "carol", "neutral", ent("iphone")) for i in range(5)], [], now_ms=NOW
    )
    assert await redis_client.llen(f"{p}entity_mentions:iphone") == 3


async def test_a_pipeline_cut_after_the_entity_script_is_exact_on_redelivery(
    stack, names, redis_client
):
    """The entity script runs first: if the worker dies after it and before the sentiment
    script, the redelivered comment is processed again and both end up applied once."""
    p = names.redis_prefix
    s = store(redis_client, p)
    r = rec("c1", "alice", "negative", ent("dhl", "DHL"))
    async with redis_client.pipeline(transaction=False) as pipe:
        await s.entities.queue(
            pipe,
            comment_id=r.comment_id,
            user_id=r.user_id,
            label=r.label,
            entities=r.entities,
            feed_item=r.feed_item,
            now_ms=NOW,
        )
        assert await pipe.execute() == [1]
    assert await s.already_done([("alice", "c1")], []) == ([False], [])  # redelivered
    assert await s.apply([r], [], now_ms=NOW + 1000) == [1]
    assert decode(await redis_client.hgetall(f"{p}entity:dhl"))["total"] == "1"
    assert decode(await redis_client.hgetall(f"{p}user:alice"))["total"] == "1"


async def test_random_replays_leave_exact_counts(stack, names, redis_client):
    p = names.redis_prefix
    s = store(redis_client, p, mentions_per_entity=50)
    rng = random.Random(5)
    keys = ["iphone", "apple", "dhl", "taylor swift", "a:b*c ?", "caf\u00e9"]
    records = []
    for i in range(60):
        picked = rng.sample(keys, rng.randint(0, 3))
        label = rng.choice(["negative", "neutral", "positive"])
        records.append(rec(f"c{i}", f"u{i % 7}", label, *(ent(k) for k in picked)))
    # deliver in random batches, with random earlier batches delivered again
    sent: list[list[PredictionRecord]] = []
    i = 0
    while i < len(records):
        n = rng.randint(1, 8)
        sent.append(records[i : i + n])
        i += n
        if rng.random() < 0.5:
            sent.append(rng.choice(sent))
    for batch in sent:
        await s.apply(batch, [], now_ms=NOW)
    want_total, want_negative = Counter(), Counter()
    for r in records:
        for e in r.entities:
            want_total[e.key] += 1
            want_negative[e.key] += r.label == "negative"
    for k in keys:
        got = decode(await redis_client.hgetall(f"{p}entity:{k}"))
        assert int(got.get("total", 0)) == want_total[k], k
        assert int(got.get("negative", 0)) == want_negative[k], k
    window = await s.entities.window(NOW, top=10, min_mentions=1)
    assert {r["key"]: r["total"] for r in window["by_volume"]} == {
        k: v for k, v in want_total.items() if v
    }


async def test_window_ranks_by_volume_and_negative_share_over_the_last_hour(
    stack, names, redis_client
):
    p = names.redis_prefix
    s = store(redis_client, p)
    old = NOW - 61 * MINUTE  # outside the hour
    await s.apply([rec(f"o{i}", "u", "negative", ent("old")) for i in range(9)], [], now_ms=old)
    batch = (
        [rec(f"d{i}", "u1", "negative", ent("dhl", "DHL")) for i in range(4)]
        + [rec("d9", "u2", "positive", ent("dhl", "DHL"))]
        + [rec(f"t{i}", "u3", "positive", ent("taylor swift", "Taylor Swift")) for i in range(6)]
        + [rec("t9", "u3", "negative", ent("taylor swift", "Taylor Swift"))]
        + [rec("a1", "u4", "negative", ent("apple", "<b>Apple</b>"))]  # one mention: no share
    )
    await s.apply(batch[:6], [], now_ms=NOW - 30 * MINUTE)
    await s.apply(batch[6:], [], now_ms=NOW)
    w = await s.entities.window(NOW, top=5, min_mentions=3)
    assert [(r["key"], r["name"], r["total"], r["negative"]) for r in w["by_volume"]] == [
        ("taylor swift", "Taylor Swift", 7, 1),
        ("dhl", "DHL", 5, 4),
        ("apple", "<b>Apple</b>", 1, 1),
    ]
    assert [(r["key"], r["negative_share"]) for r in w["by_negative_share"]] == [
        ("dhl", 0.8),
        ("taylor swift", 0.1429),
    ]
    one = await s.entities.entity("dhl", mentions=2)
    assert one["name"] == "DHL" and one["counts"]["total"] == 5
    assert [m["comment_id"] for m in one["mentions"]] == ["d9", "d3"]
    assert await s.entities.user_top("u3") == [("taylor swift", 7)]


async def test_forget_user_erases_the_users_entity_keys_and_mentions(stack, names, redis_client):
    p = names.redis_prefix
    s = store(redis_client, p)
    await s.apply(
        [
            rec("c1", "victim", "negative", ent("dhl"), ent("apple"), ent("jane doe")),
            rec("c2", "other", "negative", ent("dhl")),
        ],
        [],
        now_ms=NOW - 90 * MINUTE,
    )
    # the victim names jane doe again 90 minutes later: both minutes' sets hold her
    await s.apply([rec("c3", "victim", "positive", ent("jane doe"))], [], now_ms=NOW)
    removed = await s.forget_user("victim")
    assert set(removed) == set(FORGET_COUNTS)
    assert removed["user_entities"] == 3 and removed["entity_mentions"] == 4
    assert removed["entities_erased"] == 2  # apple and jane doe: nobody else named them
    assert not await redis_client.exists(f"{p}user_entities:victim", f"{p}entity_dedup:victim")
    items = await redis_client.lrange(f"{p}entity_mentions:dhl", 0, -1)
    assert [orjson.loads(x)["user_id"] for x in items] == ["other"]
    assert decode(await redis_client.hgetall(f"{p}entity:dhl"))["total"] == "2"  # anonymous
    for key in ("apple", "jane doe"):
        assert not await redis_client.exists(f"{p}entity:{key}", f"{p}entity_mentions:{key}")
    members = set()
    for k in await redis_client.keys(f"{p}entities:*"):
        members |= {m.decode() for m in await redis_client.zrange(k, 0, -1)}
    assert members == {"dhl"}  # the minute sets forget the erased names too
    window = await s.entities.window(NOW, minutes=120, top=10, min_mentions=1)
    assert [r["key"] for r in window["by_volume"]] == ["dhl"]
    assert set((await s.forget_user("victim")).values()) == {0}
