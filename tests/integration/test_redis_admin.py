"""``commentflow forget-user`` and ``commentflow redis-memory`` as commands (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from workers.aggregates import FORGET_COUNTS, AggregateStore, PredictionRecord


def rec(cid: str, user: str, label: str) -> PredictionRecord:
    item = orjson.dumps({"comment_id": cid, "user_id": user, "label": label})
    return PredictionRecord(cid, user, label, ("text",), item)


def _cli(env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "commentflow.cli", *argv],
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


async def test_forget_user_command(stack, names, redis_client, env_for_stack):
    p = names.redis_prefix
    s = AggregateStore(
        redis_client, prefix=p, dedup_ttl_s=600, recent_per_user=5, feed_length=20, minute_ttl_s=60
    )
    await s.apply(
        [
            rec("c1", "--gone:*", "negative"),
            rec("c1", "stays", "negative"),
            rec("c2", "--gone:*", "positive"),
        ],
        [],
        now_ms=1_000,
    )
    result = _cli(env_for_stack, "forget-user", "--", "--gone:*")
    assert result.returncode == 0, result.stderr.decode()
    out = orjson.loads(result.stdout)
    assert out["user_id"] == "--gone:*"
    assert set(out["removed"]) == set(FORGET_COUNTS)
    assert out["removed"]["feed_items"] == 2 and out["removed"]["dedup_markers"] == 2
    keys = {k.decode() async for k in redis_client.scan_iter(match=f"{p}*", count=1000)}
    assert not any(k.endswith(":--gone:*") for k in keys), keys
    assert f"{p}user:stays" in keys
    feed = [orjson.loads(x)["user_id"] for x in await redis_client.lrange(f"{p}feed", 0, -1)]
    assert feed == ["stays"]

    bad = _cli(
        {**env_for_stack, "COMMENTFLOW_REDIS_URL": "redis://127.0.0.1:1/0"}, "forget-user", "x"
    )
    assert bad.returncode == 1 and b"forget-user" in bad.stderr


def test_redis_memory_command_at_a_tiny_size(tmp_path):
    result = _cli(
        {k: v for k, v in os.environ.items() if not k.startswith("COMMENTFLOW_")},
        "redis-memory",
        "--users",
        "300",
        "--comments-per-user",
        "2",
        "--extra-comments",
        "200",
        "--dead-letters",
        "100",
        "--json",
    )
    assert result.returncode == 0, result.stderr.decode()
    r = orjson.loads(result.stdout)
    assert (r["users"], r["comments_per_user"], r["extra_comments"]) == (300, 2, 200)
    # loose bounds: a user costs a few hundred bytes to a few KB, a dedup entry tens of bytes
    assert 300 < r["bytes_per_user"] < 20_000
    assert 0 < r["bytes_per_dedup_entry"] < 500
    assert 0 < r["dedup_bytes_per_user"] < r["bytes_per_user"]
    assert 30 < r["bytes_per_dead_letter_marker"] < 1_000
