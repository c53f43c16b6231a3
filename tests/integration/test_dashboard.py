"""The dashboard's API on a real Redis: what it shows, the token, and bounded reads.

Aggregates are written by the workers' own Lua scripts (:class:`AggregateStore`), so the
dashboard reads exactly the structures the pipeline maintains. The page itself, fed by the real
pipeline, is driven in a browser by ``test_dashboard_browser.py``.

``COMMENTFLOW_TEST_DASHBOARD_USERS`` (default 20,000) sets how many users are seeded for the
bounded-reads test; with 1000000 it is the measurement quoted in the README.
"""

from __future__ import annotations

import os
import time

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from commentflow.dashboard import COOKIE, build_app
from workers.aggregates import AggregateStore, DeadLetterRecord, PredictionRecord

HOSTILE = '<script>alert(1)</script> <img src=x onerror="window.__xss=1">'


def store_for(client, prefix: str) -> AggregateStore:
    return AggregateStore(
        client,
        prefix=prefix,
        dedup_ttl_s=600,
        recent_per_user=20,
        feed_length=200,
        minute_ttl_s=3600,
    )


def record(i: int, user: str, label: str, text: str = "hello") -> PredictionRecord:
    item = {
        "comment_id": f"c{i}",
        "user_id": user,
        "label": label,
        "scores": {"negative": 0.2, "neutral": 0.3, "positive": 0.5},
        "modalities": ["text"],
        "text": text,
        "created_at": "2026-11-28T10:00:00Z",
        "processed_at": "2026-11-28T10:00:00.100Z",
    }
    return PredictionRecord(f"c{i}", user, label, ("text",), orjson.dumps(item))


@pytest.fixture
async def seeded(stack, redis_client, names):
    store = store_for(redis_client, names.redis_prefix)
    now_ms = int(time.time() * 1000)
    recs = [record(i, f"u{i % 3}", ("negative", "neutral", "positive")[i % 3]) for i in range(30)]
    recs.append(record(99, "u0", "negative", HOSTILE))
    await store.apply(
        recs[:20], [DeadLetterRecord("t:0:1", "invalid_json")], now_ms=now_ms - 120_000
    )
    await store.apply(recs[20:], [], now_ms=now_ms)
    return names.redis_prefix, now_ms


async def client_for(redis_client, prefix: str, token: str = "") -> TestClient:
    app = build_app(redis_client, prefix, token=token, interval_s=0.2)
    app.on_cleanup.clear()  # the fixture closes the Redis client
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_snapshot_and_user_view(seeded, redis_client):
    prefix, _ = seeded
    client = await client_for(redis_client, prefix)
    try:
        resp = await client.get("/api/snapshot")
        assert resp.status == 200
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        s = await resp.json()
        assert s["global"]["total"] == 31 and s["global"]["dead_letters"] == 1
        assert s["global"]["negative"] == 11 and s["global"]["positive"] == 10
        assert s["last_hour"]["total"] == 31 and len(s["minutes"]) == 60
        assert s["minutes"][-1]["total"] == 11 and s["minutes"][-3]["total"] == 20
        assert s["dead_letters"] == {"invalid_json": 1}
        assert s["top_negative"][0] == {"user_id": "u0", "negative": 11, "total": 11}
        assert s["users"] == {"known": 3, "active_last_hour": 3}
        assert s["feed"][0]["text"] == HOSTILE  # raw text: the page escapes it
        assert len(s["feed"]) == 31

        u = await (await client.get("/api/user", params={"id": "u0"})).json()
        assert u["counts"]["total"] == 11 and u["counts"]["negative"] == 11
        assert u["negative_rank"] == 1 and u["recent"][0]["comment_id"] == "c99"
        assert u["trend"]["labels"][-1] == "negative" and u["trend"]["negative_share_overall"] == 1
        assert (await client.get("/api/user", params={"id": "nobody"})).status == 404
        assert (await client.get("/api/user", params={"id": "x" * 129})).status == 400

        page = await client.get("/")
        assert page.status == 200 and "app.js" in await page.text()
        assert (await client.get("/static/app.js")).status == 200
        assert (await client.get("/static/../dashboard.py")).status == 404
        js = await (await client.get("/static/app.js")).text()
        sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(")
        assert [w for w in sinks if w in js] == [] and "textContent" in js
    finally:
        await client.close()


async def test_sse_pushes_snapshots_and_feed_items(seeded, redis_client):
    prefix, now_ms = seeded
    client = await client_for(redis_client, prefix)
    try:
        resp = await client.get("/api/events")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        seen: dict[str, list[dict]] = {"snapshot": [], "feed": []}
        event = None
        published = False
        async for line in resp.content:
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                event = text[7:]
            elif text.startswith("data: ") and event:
                seen.setdefault(event, []).append(orjson.loads(text[6:]))
            if seen["snapshot"] and not published:
                # a worker's write arrives as a feed event
                await store_for(redis_client, prefix).apply(
                    [record(500, "u9", "positive", "fresh")], [], now_ms=now_ms
                )
                published = True
            if seen["feed"] and len(seen["snapshot"]) >= 2:
                break
        assert seen["feed"][0]["comment_id"] == "c500"
        assert seen["snapshot"][-1]["global"]["total"] == 32
        resp.close()
    finally:
        await client.close()


async def test_token_bearer_query_once_then_cookie(seeded, redis_client):
    prefix, _ = seeded
    client = await client_for(redis_client, prefix, token="s3cret-token")
    try:
        assert (await client.get("/api/snapshot")).status == 401
        assert (await client.get("/")).status == 401
        assert (await client.get("/?token=wrong")).status == 401
        assert (await client.get("/healthz")).status == 200
        bad = {"Authorization": "Bearer wrong"}
        assert (await client.get("/api/snapshot", headers=bad)).status == 401
        ok = {"Authorization": "Bearer s3cret-token"}
        assert (await client.get("/api/snapshot", headers=ok)).status == 200
        # ?token= once: a redirect without it, and a cookie that is not the token itself
        resp = await client.get("/?token=s3cret-token", allow_redirects=False)
        assert resp.status == 303 and "token" not in resp.headers["Location"]
        cookie = resp.cookies[COOKIE]
        assert cookie.value != "s3cret-token" and cookie["httponly"]
        assert cookie["samesite"] == "Strict"
        assert (await client.get("/api/snapshot")).status == 200  # the cookie jar has it now
        client.session.cookie_jar.clear()
        assert (await client.get("/api/snapshot")).status == 401
    finally:
        await client.close()


async def test_reads_are_bounded_with_many_users(seeded, redis_client):
    """Seed many users; a snapshot and a user view still issue a fixed, small set of commands
    (no KEYS/SCAN) and answer quickly (printed, not asserted: the CPU is shared)."""
    prefix, now_ms = seeded
    n = int(os.environ.get("COMMENTFLOW_TEST_DASHBOARD_USERS", "20000"))
    chunk = 10_000
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        ids = [f"bulk-{i}" for i in range(start, min(n, start + chunk))]
        pipe = redis_client.pipeline(transaction=False)
        pipe.zadd(f"{prefix}users:last_seen", {u: now_ms - i for i, u in enumerate(ids)})
        pipe.zadd(f"{prefix}leaderboard:total", {u: 1 + i % 7 for i, u in enumerate(ids)})
        pipe.zadd(f"{prefix}leaderboard:negative", {u: i % 5 for i, u in enumerate(ids)})
        await pipe.execute()
    seed_s = time.perf_counter() - t0
    client = await client_for(redis_client, prefix)
    try:
        await redis_client.config_resetstat()
        times = []
        for _ in range(20):
            t = time.perf_counter()
            resp = await client.get("/api/snapshot")
            assert resp.status == 200
            s = await resp.json()
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert (await client.get("/api/user", params={"id": "u0"})).status == 200
        user_s = time.perf_counter() - t
        stats = await redis_client.info("commandstats")
    finally:
        await client.close()
    assert s["users"]["known"] == n + 3
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    assert not {"keys", "scan", "zrange", "smembers", "hkeys"} & calls.keys(), calls
    # 20 snapshots (+ the idle hub's none) and one user view: a fixed number of commands each
    # (the user view: 4 commands; each snapshot: 2 ZUNIONs for the entity window, plus one
    # HGET per top entity name, none here)
    per_snapshot = (sum(calls.values()) - calls.get("config", 0) - 4) / 20
    assert per_snapshot <= 60 + 8 + 10 + 2, calls
    times.sort()
    print(
        f"\n{n:,} users seeded in {seed_s:.1f}s; snapshot p50 {times[10] * 1000:.1f} ms, "
        f"max {times[-1] * 1000:.1f} ms; user view {user_s * 1000:.1f} ms; "
        f"{per_snapshot:.0f} Redis commands per snapshot"
    )


async def test_a_forgotten_user_disappears_from_every_view(seeded, redis_client):
    """After ``forget_user`` (the right to erasure) no view shows the user; the totals stay."""
    prefix, _ = seeded
    removed = await store_for(redis_client, prefix).forget_user("u0")
    assert removed["user"] == 1 and removed["feed_items"] == 11
    client = await client_for(redis_client, prefix)
    try:
        s = await (await client.get("/api/snapshot")).json()
        assert "u0" not in {u["user_id"] for u in s["top_negative"]}
        assert "u0" not in {item["user_id"] for item in s["feed"]} and len(s["feed"]) == 20
        assert s["users"]["known"] == 2
        assert s["global"]["total"] == 31  # anonymous counts are not erased
        assert (await client.get("/api/user", params={"id": "u0"})).status == 404
        u1 = await (await client.get("/api/user", params={"id": "u1"})).json()
        assert u1["counts"]["total"] == 10
    finally:
        await client.close()
