"""The embedded stack works as the rest of the suite assumes: topics, keys, groups, Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from commentflow.stack import EmbeddedStack, StackError, StackState, find_tansu

REPO = Path(__file__).resolve().parents[2]

# Every test here starts real processes (tansu, redis-server), with or without the fixture.
pytestmark = pytest.mark.integration


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key, headers=[("h", b"1")])
        await producer.flush()
    finally:
        await producer.stop()


async def _take(consumer: AIOKafkaConsumer, n: int, timeout_s: float = 15.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=200, max_records=n - len(got))
        for messages in batches.values():
            got.extend(messages)
    return got


def test_find_tansu_is_executable() -> None:
    path = find_tansu()
    assert path.name == "tansu"
    assert os.access(path, os.X_OK)


async def test_topics_created_with_partitions(stack: EmbeddedStack, names) -> None:
    await stack.create_topics(names.topics, 3)
    await stack.create_topics(names.topics, 3)  # existing topics are fine
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        assert set(names.topics) <= set(await admin.list_topics())
        described = await admin.describe_topics(names.topics)
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys(names.topics, 3)


async def test_produce_consume_round_trip_with_keys(stack: EmbeddedStack, names) -> None:
    await stack.create_topics([names.input_topic], 4)
    records = [(f"user-{i % 5}".encode(), f"v{i}".encode()) for i in range(50)]
    await _produce(stack.bootstrap, names.input_topic, records)

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(names.input_topic, p) for p in range(4)])
        got = await _take(consumer, 50)
    finally:
        await consumer.stop()

    assert sorted((m.key, m.value) for m in got) == sorted(records)
    assert all(m.headers == (("h", b"1"),) for m in got)
    partitions_of_key: dict[bytes, set[int]] = {}
    for m in got:
        partitions_of_key.setdefault(m.key, set()).add(m.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())  # a key sticks to a partition
    for key in partitions_of_key:  # and keeps its order
        values = [m.value for m in sorted(got, key=lambda m: m.offset) if m.key == key]
        assert values == [v for k, v in records if k == key]


async def test_consumer_group_commit_and_resume(stack: EmbeddedStack, names) -> None:
    await stack.create_topics([names.input_topic], 2)
    records = [(f"k{i % 4}".encode(), f"v{i}".encode()) for i in range(30)]
    await _produce(stack.bootstrap, names.input_topic, records)

    def group_consumer() -> AIOKafkaConsumer:
        # Short sessions: tansu holds a join for half of it, and a ghost member (one that left
        # in generation 0) for ~1.8x.
        return AIOKafkaConsumer(
            names.input_topic,
            bootstrap_servers=stack.bootstrap,
            group_id=names.app_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=2000,
            heartbeat_interval_ms=500,
        )

    first = group_consumer()
    await first.start()
    try:
        head = await _take(first, 12)
        await first.commit()
        committed = {tp: await first.committed(tp) for tp in first.assignment()}
    finally:
        await first.stop()
    assert len(head) == 12
    assert sum(committed.values()) == 12

    second = group_consumer()
    await second.start()
    try:
        tail = await _take(second, 18)
        extra = await second.getmany(timeout_ms=300)
    finally:
        await second.stop()
    assert not any(extra.values())
    values = [m.value for m in head + tail]
    assert sorted(values) == sorted(v for _, v in records)  # nothing lost, nothing twice


async def test_redis_ping(redis_client: aioredis.Redis) -> None:
    assert await redis_client.ping() is True


async def test_redis_restart_keeps_port(stack: EmbeddedStack, names) -> None:
    port, old_pid = stack.redis_port, stack.redis_process.pid
    # A pooled connection to the old server fails once: only a client with a retry reconnects.
    client = aioredis.Redis.from_url(
        stack.redis_url, retry=Retry(NoBackoff(), 2), retry_on_error=[aioredis.ConnectionError]
    )
    try:
        await client.set(names.redis_prefix + "k", "1")

        await stack.kill_redis()
        assert stack.redis_process.returncode == -signal.SIGKILL
        probe = aioredis.Redis.from_url(stack.redis_url)
        with pytest.raises(aioredis.ConnectionError):
            await probe.ping()
        await probe.aclose()

        await stack.restart_redis(downtime_s=0.1)
        assert stack.redis_port == port
        assert stack.redis_process.pid != old_pid
        assert await client.ping() is True  # the same client reconnects
        assert await client.get(names.redis_prefix + "k") is None  # memory only
    finally:
        await client.aclose()


async def test_stack_lifecycle_is_idempotent_and_final(tmp_path: Path) -> None:
    stack = EmbeddedStack(partitions=1, log_dir=tmp_path)
    assert stack.state is StackState.NEW
    async with stack:
        await stack.start()
        assert stack.state is StackState.RUNNING
        kafka, redis_server = stack.kafka_process, stack.redis_process
    await stack.stop()
    assert stack.state is StackState.STOPPED
    assert kafka.returncode is not None and redis_server.returncode is not None
    assert (tmp_path / "tansu.log").read_text().strip()
    with pytest.raises(StackError):
        await stack.start()
    with pytest.raises(StackError):
        await stack.create_topics(["x"])


async def test_stack_command_runs_until_sigint(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMENTFLOW_")}
    env["COMMENTFLOW_INPUT_TOPIC"] = "cli-comments"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "commentflow", "stack", "--partitions", "2",
        "--log-dir", str(tmp_path),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not lines or not lines[-1].startswith("running"):
                line = await proc.stdout.readline()
                assert line, "".join(lines)
                lines.append(line.decode())
        exports = dict(
            line.removeprefix("export ").strip().split("=", 1)
            for line in lines
            if line.startswith("export ")
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=exports["COMMENTFLOW_KAFKA_BOOTSTRAP"])
        await admin.start()
        try:
            described = await admin.describe_topics(["cli-comments"])
        finally:
            await admin.close()
        assert len(described[0]["partitions"]) == 2
        client = aioredis.Redis.from_url(exports["COMMENTFLOW_REDIS_URL"])
        assert await client.ping()
        await client.aclose()
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            rc = await proc.wait()
    assert rc == 0
    assert "comments.predictions" in "".join(lines)


async def test_taken_port_is_refused(stack: EmbeddedStack, tmp_path: Path) -> None:
    # tansu itself would print "listening on", fail to bind and exit 0.
    with pytest.raises(StackError, match="already in use"):
        await EmbeddedStack(kafka_port=stack.kafka_port, log_dir=tmp_path).start()
    with pytest.raises(StackError, match="already in use"):
        await EmbeddedStack(redis_port=stack.redis_port, log_dir=tmp_path).start()
