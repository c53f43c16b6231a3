"""Run workers as child processes and read topics back: shared by the demo, the bench and tests.

A worker in its own process is what production runs (one consumer per process, several in a
group), and it can be killed with SIGKILL or stopped with SIGTERM like the real thing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from commentflow.processes import stop_process
from commentflow.settings import Settings
from workers.kafka_security import PLAINTEXT, KafkaSecurity

__all__ = ["WorkerProcess", "read_topic"]


class WorkerProcess:
    """``commentflow worker`` as a child process with the given settings."""

    def __init__(self, settings: Settings, *, log_path: Path | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> WorkerProcess:
        if self._proc is not None and self._proc.poll() is None:
            return self
        # secrets too: the child rebuilds its settings from this environment (never printed)
        env = {**self.settings.child_env(), "PYTHONUNBUFFERED": "1"}
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "commentflow.cli", "worker"],
            env=env,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (the crash the pipeline must survive)."""
        stop_process(self._proc, 10.0, kill=True)

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` for a graceful exit, then SIGKILL."""
        code = stop_process(self._proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[dict]], bool],
    timeout_s: float,
    on_message: Callable[[dict, float], None] | None = None,
    alive: Callable[[], bool] | None = None,
    security: KafkaSecurity = PLAINTEXT,
    fetch_max_wait_ms: int = 500,
) -> list[dict]:
    """Read ``topic`` from the beginning (no group) until ``until(docs)`` or ``timeout_s``.

    ``alive``: stop early once it returns False (the worker that should write died).
    ``security``: TLS / SASL of the connection (``Settings.kafka_security``).
    ``fetch_max_wait_ms``: the fetch long-poll; a latency measurement keeps it short (the
    embedded broker does not always answer a fetch early: :mod:`streamer.consumer`).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        **security.client_kwargs(),
    )
    await consumer.start()
    docs: list[dict] = []
    try:
        partitions = None
        deadline = time.monotonic() + timeout_s
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer.topics()  # refresh metadata
                await asyncio.sleep(0.1)
        if partitions is None:
            return docs
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not until(docs) and time.monotonic() < deadline:
            if alive is not None and not alive():
                break
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    doc = orjson.loads(record.value)
                    docs.append(doc)
                    if on_message is not None:
                        on_message(doc, now)
        return docs
    finally:
        await consumer.stop()
