"""Shared fixtures: one embedded broker + Redis per session, unique names per test.

Fixtures
--------
``stack``          session: a running :class:`~commentflow.stack.EmbeddedStack`: the broker, the
                   state Redis (``stack.redis_url``) and the cache Redis (``stack.redis_cache_url``;
                   logs under pytest's temporary directory, ``.../stack/tansu.log``,
                   ``redis.log``, ``redis-cache.log``).
``names``          function: a :class:`Names` with a unique ``input_topic``, ``predictions_topic``,
                   ``dlq_topic``, ``app_id`` and ``redis_prefix``; call ``names()`` for another set.
``topics``         function (async): creates the three ``names`` topics with
                   :data:`TEST_PARTITIONS` partitions on the stack and returns ``names``.
``make_settings``  function: ``make_settings(model_dir=None, *, names=None, **overrides)`` builds a
                   :class:`~commentflow.settings.Settings` pointing at the stack (broker, state
                   and cache Redis) with ``names``.
``redis_client``   function (async): ``redis.asyncio.Redis`` on the stack; deletes the test's
                   ``names.redis_prefix`` keys afterwards.
``env_for_stack``  function: ``os.environ`` without ``COMMENTFLOW_*``, plus the variables that
                   point a CLI subprocess at the stack with ``names``.
``start_worker``   function: ``start_worker(settings, name="worker")`` starts a
                   :class:`~commentflow.local.WorkerProcess` logging to ``tmp_path/<name>.log``;
                   every worker it started is stopped after the test, whatever happened.

Sending events and waiting for predictions: :mod:`support.stream`.

Every test that uses ``stack`` (directly or through another fixture) is marked ``integration``.
Never share a consumer group between tests: tansu keeps a member that left in its first
generation as a ghost, and the next join waits ~1.8 session timeouts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from commentflow.settings import Settings
from commentflow.stack import EmbeddedStack

if TYPE_CHECKING:
    from commentflow.local import WorkerProcess

#: Partitions of the topics the ``topics`` fixture creates, and ``make_settings``' default.
TEST_PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class Names:
    """Unique topic, group and key names for one test."""

    suffix: str
    input_topic: str
    predictions_topic: str
    dlq_topic: str
    app_id: str
    redis_prefix: str

    @classmethod
    def random(cls) -> Names:
        suffix = uuid.uuid4().hex[:12]
        return cls(
            suffix=suffix,
            input_topic=f"cftest.{suffix}.comments",
            predictions_topic=f"cftest.{suffix}.comments.predictions",
            dlq_topic=f"cftest.{suffix}.comments.dlq",
            app_id=f"cftest-{suffix}",
            redis_prefix=f"cftest:{suffix}:",
        )

    @property
    def topics(self) -> list[str]:
        return [self.input_topic, self.predictions_topic, self.dlq_topic]

    def __call__(self) -> Names:
        """Another, different set of names (for tests that need two apps)."""
        return Names.random()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedStack]:
    # Spawned from the session loop's thread (the main one): children die with this process.
    log_dir = tmp_path_factory.mktemp("stack", numbered=True)
    async with EmbeddedStack(partitions=TEST_PARTITIONS, log_dir=log_dir) as running:
        yield running


@pytest.fixture
def names() -> Names:
    return Names.random()


@pytest.fixture
async def topics(stack: EmbeddedStack, names: Names) -> Names:
    await stack.create_topics(names.topics, TEST_PARTITIONS)
    return names


@pytest.fixture
def make_settings(stack: EmbeddedStack, names: Names) -> Callable[..., Settings]:
    """``make_settings(model_dir=None, *, names=None, **overrides) -> Settings`` on the stack."""

    def make(
        model_dir: str | os.PathLike[str] | None = None,
        *,
        names: Names | None = None,
        **overrides: Any,
    ) -> Settings:
        n = names or default_names
        values: dict[str, Any] = {
            "kafka_bootstrap": stack.bootstrap,
            "redis_url": stack.redis_url,
            "redis_cache_url": stack.redis_cache_url,
            "input_topic": n.input_topic,
            "predictions_topic": n.predictions_topic,
            "dlq_topic": n.dlq_topic,
            "app_id": n.app_id,
            "redis_prefix": n.redis_prefix,
            "topic_partitions": TEST_PARTITIONS,
            "session_timeout_s": 6.0,
            "web_enabled": False,
            "commit_interval_s": 0.5,
        }
        if model_dir is not None:
            values["model_dir"] = str(model_dir)
        values.update(overrides)
        # Settings() directly, not from_env(): a developer's COMMENTFLOW_* must not leak in.
        return Settings(**values)

    default_names = names
    return make


@pytest.fixture
async def redis_client(stack: EmbeddedStack, names: Names) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        yield client
    finally:
        try:
            # Restore Redis if a test left it killed, then drop this test's keys.
            await stack.start_redis()
            keys = [k async for k in client.scan_iter(match=names.redis_prefix + "*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
def env_for_stack(stack: EmbeddedStack, names: Names) -> dict[str, str]:
    """``COMMENTFLOW_*`` variables for a subprocess (a CLI run) pointing at the stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMENTFLOW_")}
    env.update(stack.env())  # broker, state Redis and cache Redis (COMMENTFLOW_REDIS_CACHE_URL)
    env.update(
        {
            "COMMENTFLOW_INPUT_TOPIC": names.input_topic,
            "COMMENTFLOW_PREDICTIONS_TOPIC": names.predictions_topic,
            "COMMENTFLOW_DLQ_TOPIC": names.dlq_topic,
            "COMMENTFLOW_APP_ID": names.app_id,
            "COMMENTFLOW_REDIS_PREFIX": names.redis_prefix,
            "COMMENTFLOW_TOPIC_PARTITIONS": str(TEST_PARTITIONS),
            "COMMENTFLOW_SESSION_TIMEOUT_S": "6",
            "COMMENTFLOW_WEB_ENABLED": "false",
            "COMMENTFLOW_COMMIT_INTERVAL_S": "0.5",
        }
    )
    return env


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``start_worker(settings, name="worker") -> WorkerProcess``, started; stopped at teardown."""
    from commentflow.local import WorkerProcess

    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str = "worker") -> WorkerProcess:
        worker = WorkerProcess(settings, log_path=tmp_path / f"{name}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
