"""The whole pipeline on the real broker (tansu) and a real redis-server, with worker processes.

What must hold (issue 2): one prediction per valid comment_id, no gaps; one dead letter with a
reason per bad message; exact Redis totals per user; nothing changes on a replay; and the same
after ``kill -9`` of a worker mid-stream (duplicates on the output topic only for the batch that
was in flight, never in Redis), after Redis connection drops, and across a SIGTERM restart. The
replay and the ``kill -9`` tests run with the entity stage on: the entity counts are exact too.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import orjson
import pytest
from support.stream import pairs_of, read_all, send, wait_predictions

from commentflow.local import read_topic
from commentflow.produce import synthetic_events
from model.testing import make_tiny_model_dir
from schemas.events import DeadLetter, Prediction

BATCH_MAX = 32


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model") / "model")


def bad_inputs() -> list[tuple[bytes | None, str]]:
    """(value, expected dead-letter code) for every way an event can be bad."""
    ok = {"comment_id": "bad-x", "user_id": "u", "text": "t", "created_at": "2026-11-28T10:00:00Z"}
    out: list[tuple[bytes | None, str]] = [
        (b"{this is not json", "invalid_json"),
        (b"", "invalid_json"),
        (None, "invalid_json"),
        (b"\xff\xfe\xfa binary", "invalid_encoding"),
        (b"[1,2,3]", "schema_violation"),
        (orjson.dumps({**ok, "comment_id": 7}), "schema_violation"),
        (orjson.dumps({k: v for k, v in ok.items() if k != "created_at"}), "schema_violation"),
        (orjson.dumps({**ok, "created_at": "not a time"}), "schema_violation"),
        (orjson.dumps({**ok, "text": ""}), "schema_violation"),
        (
            orjson.dumps({**ok, "media": [{"type": "image", "url": "file:///etc/passwd"}]}),
            "schema_violation",
        ),
        (orjson.dumps({**ok, "text": "x" * 20_001}), "too_large"),
        (orjson.dumps({**ok, "text": "y" * 300_000}), "too_large"),
        (orjson.dumps({**ok, "schema": "commentflow.comment/9"}), "unsupported_schema"),
    ]
    return out * 3  # 39 bad messages


async def send_sentinels(bootstrap: str, topic: str, partitions: int, tag: str) -> list[str]:
    """One valid event per partition: once all are predicted, everything before them was."""
    ids = []
    for p in range(partitions):
        cid = f"sentinel-{tag}-{p}"
        ids.append(cid)
        doc = {
            "comment_id": cid,
            "user_id": "sentinel",
            "text": "end",
            "created_at": "2026-11-28T10:00:00Z",
        }
        await send(bootstrap, topic, [(orjson.dumps(doc), b"sentinel")], partition=p)
    return ids


def valid_events(n: int, seed: int, users: int = 150) -> list[dict]:
    return list(synthetic_events(n, users=users, seed=seed, prefix="it"))


async def check_redis(redis_client, prefix: str, events: list[dict], labels: dict[str, str]):
    """Per-user hashes equal what the predictions say, exactly."""
    per_user: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in events:
        per_user[e["user_id"]]["total"] += 1
        per_user[e["user_id"]][labels[e["comment_id"]]] += 1
    pipe = redis_client.pipeline(transaction=False)
    for user in per_user:
        pipe.hgetall(f"{prefix}user:{user}")
    for user, stored in zip(per_user, await pipe.execute(), strict=True):
        got = {
            k.decode(): int(v)
            for k, v in stored.items()
            if k.decode() in ("total", "negative", "neutral", "positive")
        }
        want = {k: v for k, v in per_user[user].items() if v}
        assert {k: v for k, v in got.items() if v} == want, f"user {user}"
    g = {k.decode(): v.decode() for k, v in (await redis_client.hgetall(f"{prefix}global")).items()}
    assert int(g["total"]) == sum(c["total"] for c in per_user.values())
    for label in ("negative", "neutral", "positive"):
        assert int(g.get(label, 0)) == sum(c[label] for c in per_user.values())
    lb = await redis_client.zrange(f"{prefix}leaderboard:total", 0, -1, withscores=True)
    assert {u.decode(): int(s) for u, s in lb} == {u: c["total"] for u, c in per_user.items()}


async def check_entities(redis_client, prefix: str, docs: list[dict]) -> None:
    """Entity counts equal what the predictions name, each comment once (duplicates of a
    prediction, from a crash, name the same entities)."""
    by_comment = {d["comment_id"]: d for d in docs}
    total: collections.Counter[str] = collections.Counter()
    negative: collections.Counter[str] = collections.Counter()
    for d in by_comment.values():
        assert d["entities_status"] == "ok"
        for key in {e["key"] for e in d["entities"]}:
            total[key] += 1
            negative[key] += d["label"] == "negative"
    assert total, "the synthetic comments name brands: the stage found none"
    pipe = redis_client.pipeline(transaction=False)
    for key in total:
        pipe.hmget(f"{prefix}entity:{key}", "total", "negative")
    for key, (t, n) in zip(total, await pipe.execute(), strict=True):
        assert (int(t), int(n or 0)) == (total[key], negative[key]), key


def labels_of(docs: list[dict]) -> dict[str, str]:
    return {d["comment_id"]: d["label"] for d in docs}


async def test_valid_and_bad_events_replay_exactly_once(
    topics, make_settings, tiny_model, redis_client, start_worker
):
    settings = make_settings(tiny_model, batch_max=BATCH_MAX, entities_enabled=True)
    events = valid_events(2000, seed=1)
    bad = bad_inputs()
    messages = pairs_of(events) + [(v, b"bad-producer") for v, _ in bad]
    worker = start_worker(settings)
    try:
        await send(settings.kafka_bootstrap, settings.input_topic, messages)
        docs = await wait_predictions(settings, {e["comment_id"] for e in events}, worker=worker)
        dead = await read_topic(
            settings.kafka_bootstrap,
            settings.dlq_topic,
            until=lambda d: len(d) >= len(bad),
            timeout_s=60,
        )

        # exactly one prediction per comment, each valid against the contract
        assert len(docs) == len(events) == len(labels_of(docs))
        for d in docs:
            Prediction.model_validate(d)
            assert d["modalities"] == ["text"] and abs(sum(d["scores"].values()) - 1) < 1e-5
            assert d["language"]["code"] and d["confidence"] in ("normal", "low")
        # one dead letter per bad message, with the expected code, in the original order
        assert len(dead) == len(bad)
        for doc in dead:
            DeadLetter.model_validate(doc)
        assert sorted(d["error"]["code"] for d in dead) == sorted(code for _, code in bad)
        await check_redis(redis_client, settings.redis_prefix, events, labels_of(docs))

        # replay everything: valid ones change nothing; each re-sent bad message is a new input
        await send(settings.kafka_bootstrap, settings.input_topic, messages)
        sentinels = await send_sentinels(settings.kafka_bootstrap, settings.input_topic, 4, "r")
        after = await wait_predictions(settings, set(sentinels), worker=worker)
        assert len(after) == len(events) + len(sentinels)
        dead = await read_topic(
            settings.kafka_bootstrap,
            settings.dlq_topic,
            until=lambda d: len(d) >= 2 * len(bad),
            timeout_s=60,
        )
        assert len(dead) == 2 * len(bad)
        await check_redis(
            redis_client,
            settings.redis_prefix,
            events + [{"comment_id": s, "user_id": "sentinel"} for s in sentinels],
            labels_of(after),
        )
        dl = await redis_client.hgetall(f"{settings.redis_prefix}dead_letters")
        assert sum(int(v) for v in dl.values()) == 2 * len(bad)
        await check_entities(redis_client, settings.redis_prefix, after)
    finally:
        worker.stop()
    assert worker.alive() is False


async def test_kill_9_mid_stream_then_restart_loses_nothing_counts_once(
    topics, make_settings, tiny_model, redis_client, start_worker
):
    settings = make_settings(tiny_model, batch_max=BATCH_MAX, entities_enabled=True)
    events = valid_events(3000, seed=2)
    ids = {e["comment_id"] for e in events}
    worker = start_worker(settings)
    await send(settings.kafka_bootstrap, settings.input_topic, events)
    # wait until the worker is mid-stream, then kill it without any chance to clean up
    await wait_predictions(settings, 600, worker=worker, timeout_s=120)
    worker.kill()
    partial = await read_all(settings.kafka_bootstrap, settings.predictions_topic, quiet_s=2)
    assert len({d["comment_id"] for d in partial}) < len(ids), "killed too late to test"
    worker = start_worker(settings)  # the same log
    docs = await wait_predictions(settings, ids, worker=worker)
    worker.stop()
    duplicates = len(docs) - len(labels_of(docs))
    # only the batch in flight at the kill can be published twice
    assert duplicates <= BATCH_MAX, duplicates
    # duplicates agree on the label (same model, same input)
    by_id = collections.defaultdict(set)
    for d in docs:
        by_id[d["comment_id"]].add(d["label"])
    assert all(len(v) == 1 for v in by_id.values())
    await check_redis(redis_client, settings.redis_prefix, events, labels_of(docs))
    await check_entities(redis_client, settings.redis_prefix, docs)


async def test_redis_connection_drops_are_retried_without_double_counting(
    topics, make_settings, tiny_model, redis_client, start_worker
):
    settings = make_settings(tiny_model, batch_max=BATCH_MAX, retry_max_s=0.5)
    events = valid_events(2000, seed=3)
    worker = start_worker(settings)
    await send(settings.kafka_bootstrap, settings.input_topic, events)
    await wait_predictions(settings, 100, worker=worker, timeout_s=120)
    kills = 0
    for _ in range(15):  # drop every client connection (the worker's) again and again
        kills += await redis_client.execute_command(
            "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
        )
        await asyncio.sleep(0.15)  # the pace of the fault, not a wait for anything
    docs = await wait_predictions(settings, {e["comment_id"] for e in events}, worker=worker)
    assert worker.alive(), worker.log_tail()
    worker.stop()
    assert kills > 0
    assert len(docs) == len(labels_of(docs)) == len(events)
    await check_redis(redis_client, settings.redis_prefix, events, labels_of(docs))


async def test_sigterm_finishes_in_bounded_time_and_resumes(
    topics, make_settings, tiny_model, redis_client, start_worker
):
    settings = make_settings(tiny_model, batch_max=BATCH_MAX)
    events = valid_events(2500, seed=4)
    worker = start_worker(settings)
    await send(settings.kafka_bootstrap, settings.input_topic, events)
    await wait_predictions(settings, 400, worker=worker, timeout_s=120)
    t0 = time.monotonic()
    code = worker.stop(timeout=60)
    stop_s = time.monotonic() - t0
    assert code == 0, worker.log_tail()
    assert stop_s < settings.shutdown_timeout_s + 15, stop_s
    worker = start_worker(settings)  # the same log
    docs = await wait_predictions(settings, {e["comment_id"] for e in events}, worker=worker)
    worker.stop()
    # a graceful stop acks and commits what it published: no redelivered duplicates
    assert len(docs) - len(labels_of(docs)) == 0
    await check_redis(redis_client, settings.redis_prefix, events, labels_of(docs))


async def test_two_workers_share_the_group_and_survive_losing_one(
    topics, make_settings, tiny_model, redis_client, start_worker
):
    settings = make_settings(tiny_model, batch_max=BATCH_MAX)
    events = valid_events(3000, seed=5, users=300)
    a = start_worker(settings, "a")
    b = start_worker(settings, "b")
    await send(settings.kafka_bootstrap, settings.input_topic, events)
    await wait_predictions(settings, 500, timeout_s=120)
    a.kill()  # b takes over a's partitions after the session timeout
    docs = await wait_predictions(settings, {e["comment_id"] for e in events}, worker=b)
    b.stop()
    assert "Executing _on_partitions_assigned" in b.log_tail(10**6)
    assert len(docs) - len(labels_of(docs)) <= BATCH_MAX
    await check_redis(redis_client, settings.redis_prefix, events, labels_of(docs))
