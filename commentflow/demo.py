"""``commentflow demo``: the embedded stack, worker processes and a synthetic producer in one go.

Prints a live summary (throughput, label counts, dead letters, the latest prediction) read back
from Redis, the same keys any dashboard reads, until Ctrl-C or ``--duration``, and serves the live
dashboard (:mod:`commentflow.dashboard`) on ``dashboard_port`` (any free port when it is taken).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from commentflow import dashboard
from commentflow.local import WorkerProcess
from commentflow.produce import produce, synthetic_events
from commentflow.settings import Settings
from commentflow.stack import EmbeddedStack

__all__ = ["DemoOptions", "run"]

#: Malformed events mixed into the demo stream, to show the dead-letter topic at work.
_MALFORMED: list[bytes] = [
    b"{not json",
    b'{"comment_id": 5, "user_id": "u", "text": "x", "created_at": "2026-01-01T00:00:00Z"}',
    b'{"comment_id": "m", "user_id": "u", "text": "no timestamp"}',
]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """The demo's traffic and processes."""

    rate: float = 40.0  # synthetic comments per second
    users: int = 100  # distinct synthetic users
    workers: int = 1  # worker processes in the group
    malformed_every: int = 50  # every Nth event is malformed (0: none)
    duration: float | None = None  # seconds to run (None: until Ctrl-C)
    kafka_port: int | None = None  # the embedded broker's port (None: a free one)
    redis_port: int | None = None  # the embedded state Redis' port (None: a free one)
    entities: bool = True  # the workers' entity stage (off by default elsewhere: its cost)


def run(options: DemoOptions, settings: Settings) -> int:
    """Run the demo until Ctrl-C or ``options.duration``; the exit status."""
    return asyncio.run(_demo(options, settings))


def _stream(options: DemoOptions) -> Iterator[bytes | dict[str, Any]]:
    bad = itertools.cycle(_MALFORMED)
    for i, event in enumerate(synthetic_events(10**12, users=options.users, seed=int(time.time()))):
        if options.malformed_every and i % options.malformed_every == options.malformed_every - 1:
            yield next(bad)
        yield event


async def _demo(options: DemoOptions, settings: Settings) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="commentflow-demo-"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = EmbeddedStack(
        kafka_port=options.kafka_port,
        redis_port=options.redis_port,
        partitions=settings.topic_partitions,
        log_dir=log_dir,
    )
    async with stack:
        # the embedded broker is plaintext: the user's Kafka security settings do not apply
        settings = settings.without_kafka_security().replace(
            kafka_bootstrap=stack.bootstrap,
            redis_url=stack.redis_url,
            redis_cache_url=stack.redis_cache_url,
            session_timeout_s=6.0,
            commit_interval_s=0.5,
            entities_enabled=options.entities,
        )
        await stack.create_topics(
            [settings.input_topic, settings.predictions_topic, settings.dlq_topic]
        )
        try:
            dash, dash_url = await dashboard.start(settings)
        except OSError:  # dashboard_port is taken: any free port
            dash, dash_url = await dashboard.start(settings, port=0)
        workers = [
            WorkerProcess(
                settings.replace(web_port=settings.web_port + i),
                log_path=log_dir / f"worker-{i}.log",
            ).start()
            for i in range(options.workers)
        ]
        print(
            f"commentflow demo\n"
            f"  kafka bootstrap  {stack.bootstrap}   topics: {settings.input_topic} -> "
            f"{settings.predictions_topic}, {settings.dlq_topic}\n"
            f"  redis            {stack.redis_url}   prefix {settings.redis_prefix!r}\n"
            f"  redis cache      {stack.redis_cache_url}\n"
            f"  model            {settings.model_dir}\n"
            f"  workers          {options.workers} (logs in {log_dir})\n"
            f"  dashboard        {dash_url}"
            f"{'  (token required)' if settings.dashboard_token else ''}\n"
            f"  producing {options.rate:g} comments/s from {options.users} users; Ctrl-C to stop\n",
            flush=True,
        )
        producer = asyncio.create_task(
            produce(
                settings.kafka_bootstrap, settings.input_topic, _stream(options), rate=options.rate
            )
        )
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            await _summaries(client, settings, stop, options.duration, producer)
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer
            await client.aclose()
            print("stopping workers ...", flush=True)
            await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))
            await dash.cleanup()
    return 0


async def _summaries(
    client: aioredis.Redis,
    settings: Settings,
    stop: asyncio.Event,
    duration: float | None,
    producer: asyncio.Task[int],
) -> None:
    p = settings.redis_prefix
    started = time.monotonic()
    last_total, last_t = 0, started
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=2.0)
        if producer.done() and producer.exception() is not None:
            raise producer.exception()  # type: ignore[misc]
        now = time.monotonic()
        g = {k.decode(): int(v) for k, v in (await client.hgetall(f"{p}global")).items()}
        latest = await client.lindex(f"{p}feed", 0)
        total = g.get("total", 0)
        rate = (total - last_total) / max(now - last_t, 1e-9)
        last_total, last_t = total, now
        line = (
            f"[{now - started:6.1f}s] predicted {total:6d} ({rate:5.1f}/s)  "
            f"neg {g.get('negative', 0):5d}  neu {g.get('neutral', 0):5d}  "
            f"pos {g.get('positive', 0):5d}  dead letters {g.get('dead_letters', 0):4d}"
        )
        if latest:
            item = orjson.loads(latest)
            line += f"  | {item['label']:>8}: {item['text'][:48]!r}"
        print(line, flush=True)
        if duration is not None and now - started >= duration:
            break
