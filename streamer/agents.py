"""The one agent: micro-batches from the comments topic into the stream pipeline.

Acknowledgement: ``noack_take`` hands over events without acknowledging them; the pipeline
(:mod:`workers.pipeline`) acks each event only after its prediction or dead letter was
acknowledged by the broker and Redis was written, and, since comments with media finish in
their own lane (:mod:`workers.media_lane`), only once every older message of its partition is
done too (:mod:`workers.completion`: Faust sees each partition's acks in offset order, the only
order its commit logic handles safely). Faust commits the acked offsets every
``commit_interval_s``. A ``kill -9`` therefore redelivers at most the
uncommitted tail, which the idempotent Redis scripts absorb, and the crash guard
(:mod:`workers.crash_guard`) sets aside a message the workers keep dying on.

Shutdown: batches already prepared get ``shutdown_timeout_s`` to finish and are then acked; one
that cannot finish (Redis down, say) is not acked and will be redelivered.

A pipeline that cannot go on (a model that kept failing: :class:`~workers.model_guard.ModelFailed`,
or a bug) ends the process at once with a non-zero status (:data:`EXIT_MODEL_FAILED`,
:data:`EXIT_CRASHED`) so the orchestrator restarts it. It must not unwind through Faust: when an
agent's ``noack_take`` generator is closed by an exception, Faust turns acknowledgements back on
and its passive reader acknowledges the events still buffered, i.e. commits offsets that were
never processed (seen in a test). So the process exits from inside the loop instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor

import faust
import redis.asyncio as aioredis
from mode import CrashingSupervisor

from model.base import LABELS, Classifier
from model.entities import EntityConfig, EntityRecognizer, load_packaged_recognizer
from model.errors import ModelError, ModelFormatError
from model.media.decode import DecodeConfig
from model.serving import decode_config_for
from schemas.errors import DEAD_LETTER_CODES
from streamer.settings import Settings
from streamer.topics import input_topic
from workers import memory
from workers.aggregates import AggregateStore
from workers.config import MediaSettings, ProcessorConfig
from workers.crash_guard import CrashGuard
from workers.entities import EntityRunner
from workers.headers import normalise_headers
from workers.health import BrokerProbe, PipelineHealth
from workers.inference import InferenceRunner
from workers.media import build_media_service
from workers.messages import Inbound, Outbound
from workers.metrics import LagTracker, PipelineMetrics
from workers.model_guard import ModelFailed
from workers.pipeline import LaneConfig, StreamPipeline
from workers.processor import BatchProcessor, BatchResult
from workers.retry import REDIS_RETRIABLE
from workers.watchdog import Watchdog

__all__ = [
    "EXIT_CRASHED",
    "EXIT_MODEL_FAILED",
    "install",
    "load_entity_recognizer",
    "load_worker_classifier",
]

PRUNE_INTERVAL_S = 60.0
PRUNE_LIMIT = 1000

#: Exit status when the model kept failing for ``model_failure_exit_s`` (EX_UNAVAILABLE).
EXIT_MODEL_FAILED = 69
#: Exit status when the pipeline stopped on an unexpected error (a bug).
EXIT_CRASHED = 1

log = logging.getLogger("commentflow.agent")


def load_worker_classifier(settings: Settings) -> Classifier:
    """The worker's classifier; a multimodal one with ``model_media_threads`` for OCR and ASR
    (which run in the media lane, next to the text model: :mod:`workers.media_lane`)."""
    from model import load_classifier
    from model.format.directory import open_model_dir

    _, _, kind = open_model_dir(settings.model_dir)
    if kind != "multimodal":
        return load_classifier(settings.model_dir, settings.device, precision=settings.precision)
    threads = settings.model_media_threads or max(1, (os.cpu_count() or 2) // 2)
    return load_classifier(
        settings.model_dir, settings.device, threads=threads, precision=settings.precision
    )


def inference_plan(settings: Settings) -> tuple[int, int]:
    """The worker's inference lanes and each lane's torch threads (0: torch's default).

    ``inference_lanes`` 0: one lane on CUDA; on a CPU two lanes (one with 1 core) that share
    the cores, because one lane over every core loses more to the rest of the worker, the broker
    and Redis than two (see :mod:`workers.inference`).
    """
    from model.encoders.text import resolve_device

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    if resolve_device(settings.device).startswith("cuda"):
        return settings.inference_lanes or 1, 0
    lanes = settings.inference_lanes or min(2, cores)
    return lanes, max(1, cores // lanes)


def load_entity_recognizer(settings: Settings) -> EntityRecognizer:
    """The packaged entity recogniser (``en_core_web_sm``) with the settings' bounds and the
    deployment's patterns (``entities_patterns``)."""
    return load_packaged_recognizer(
        EntityConfig(
            max_entities=settings.entities_max_per_comment,
            max_chars=settings.entities_max_chars,
        ),
        patterns=settings.entities_patterns or None,
    )


class FaustPublisher:
    """Publishes through the app's own producer (with the message's Kafka headers, a list of
    ``(str, bytes)``); the returned future is the broker's ack."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(self, message: Outbound) -> Awaitable[object]:
        return await self._app.producer.send(
            message.topic,
            message.key,
            message.value,
            partition=None,
            timestamp=None,
            headers=list(message.headers) or None,
        )


class Resources:
    """The worker's model, Redis client and processor; started lazily by the agent."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        classifier: Classifier | None = None,
        thread: ThreadPoolExecutor | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = PipelineMetrics()
        self.metrics.prime(LABELS, DEAD_LETTER_CODES)
        stalled = self.metrics.stalled
        self.health = PipelineHealth(
            on_change=lambda stage, on: stalled.labels(stage).set(1 if on else 0)
        )
        self.lag = LagTracker(self.metrics.consumer_lag)
        self.broker_probe = BrokerProbe(  # for /readyz
            settings.kafka_bootstrap, settings.kafka_security
        )
        lanes, torch_threads = inference_plan(settings)
        self.runner = InferenceRunner(
            (lambda: classifier)
            if classifier is not None
            else (lambda: load_worker_classifier(settings)),
            deadline_s=settings.predict_deadline_s,
            thread=thread,
            lanes=lanes,
            torch_threads=torch_threads,
        )
        # The media lane's OCR and speech recognition, under the same deadline as predict().
        self.media_watchdog = Watchdog(
            settings.predict_deadline_s, what="media warm-up (OCR, speech recognition)"
        )
        self.redis = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=15,
        )
        self.store = AggregateStore(
            self.redis,
            prefix=settings.redis_prefix,
            dedup_ttl_s=settings.dedup_ttl_s,
            recent_per_user=settings.recent_per_user,
            feed_length=settings.feed_length,
            minute_ttl_s=settings.minute_ttl_s,
            user_retention_s=settings.user_retention_s,
            mentions_per_entity=settings.entity_mentions_kept,
        )
        self.entities = (
            EntityRunner(lambda: load_entity_recognizer(settings))
            if settings.entities_enabled
            else None
        )
        # The cache Redis (allkeys-lru): media shared between workers. Never the state Redis.
        self.cache_redis = (
            aioredis.Redis.from_url(
                settings.redis_cache_url, socket_timeout=5, socket_connect_timeout=2
            )
            if settings.redis_cache_url and settings.media_cache_redis
            else None
        )
        self.media = (
            build_media_service(
                MediaSettings.of(settings),
                self.cache_redis,
                self.metrics,
                preprocess=self._decode_config(settings, classifier),
            )
            if settings.media_enabled
            else None
        )
        self.processor = BatchProcessor(
            ProcessorConfig.of(settings),
            self.runner,
            FaustPublisher(app),
            self.store,
            self.media,
            self.metrics,
            self.health,
            entities=self.entities,
        )
        self.guard = CrashGuard(
            self.redis,
            prefix=settings.redis_prefix,
            app_id=settings.app_id,
            poison_after=settings.poison_after,
        )
        self.totals = BatchResult()
        self._lock = asyncio.Lock()

    @staticmethod
    def _decode_config(settings: Settings, classifier: Classifier | None) -> DecodeConfig | None:
        """The model's decoding (config.json ``preprocess``), read before the model loads: the
        media the worker decodes must be shaped as the model's training features were."""
        if classifier is not None:  # injected (tests, embedded): a text model has none
            return getattr(classifier, "decode_config", None)
        try:
            return decode_config_for(settings.model_dir)
        except ModelError:
            return None  # the model load in start() reports it; start() checks the match

    def _check_decoding(self) -> None:
        want = getattr(self.runner.classifier, "decode_config", None)
        if self.media is None or want is None:
            return
        have = self.media.config.decode.preprocess()
        if have != want.preprocess():
            raise ModelFormatError(
                f"media decoded with {have}, the model was trained on {want.preprocess()}"
            )

    async def start(self) -> None:
        async with self._lock:
            await self.runner.start()
            self.media_watchdog.start()
            if self.entities is not None:
                await self.entities.start()
            self._check_decoding()
            self.metrics.model_loaded.set(1)
            if self.media is not None:
                await self.media.start()

    async def stop(self) -> None:
        async with self._lock:
            if self.media is not None:
                await self.media.stop()
                self.media = None
            await self.runner.stop()
            self.media_watchdog.stop()
            if self.entities is not None:
                await self.entities.stop()
            self.metrics.model_loaded.set(0)
            await self.broker_probe.close()
            await self.redis.aclose()
            if self.cache_redis is not None:
                await self.cache_redis.aclose()

    def record(self, result: BatchResult) -> None:
        t = self.totals
        t.received += result.received
        t.predicted += result.predicted
        t.skipped_duplicates += result.skipped_duplicates
        for code, n in result.dead_lettered.items():
            t.dead_lettered[code] = t.dead_lettered.get(code, 0) + n
        for label, n in result.labels.items():
            t.labels[label] = t.labels.get(label, 0) + n
        t.inference_s += result.inference_s
        t.total_s += result.total_s


async def update_lag(app: faust.App, settings: Settings, lag: LagTracker) -> None:
    """Lag of every assigned input partition, from the fetch high-water mark."""
    consumer = app.consumer
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic == settings.input_topic]
        highwaters = {(tp.topic, tp.partition): consumer.highwater(tp) for tp in assigned}
        positions = {(tp.topic, tp.partition): await consumer.position(tp) for tp in assigned}
    except Exception as exc:  # noqa: BLE001 - not started, or rebalancing: try again later
        log.debug("consumer lag not available yet: %s", type(exc).__name__)
        return
    lag.update(highwaters, positions)


def _inbound(event: faust.EventT) -> Inbound:
    m = event.message
    ts = m.timestamp
    return Inbound(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        key=m.key,
        value=m.value,
        timestamp_ms=int(ts * 1000) if ts else None,
        handle=event,
        headers=normalise_headers(m.headers),
    )


async def _exit_now(pipeline: StreamPipeline, exc: BaseException) -> None:
    """Log why, take back the crash-guard counts when the model (not the input) is at fault,
    and end the process without acknowledging anything more."""
    model_failed = isinstance(exc, ModelFailed)
    code = EXIT_MODEL_FAILED if model_failed else EXIT_CRASHED
    log.critical(
        "the pipeline cannot go on (%s): exiting with status %d; nothing in flight was "
        "acknowledged, it will be redelivered",
        type(exc).__name__,
        code,
        exc_info=exc,
    )
    try:
        await asyncio.wait_for(pipeline.stop(0.0, abandon=model_failed), 5.0)
    finally:
        logging.shutdown()
        os._exit(code)


def install(
    app: faust.App,
    settings: Settings,
    classifier: Classifier | None = None,
    thread: ThreadPoolExecutor | None = None,
) -> Resources:
    """Declare the agent (and a progress timer) on ``app``; returns its resources.

    ``classifier``: already loaded (on ``thread``, an :func:`~workers.inference.inference_thread`,
    when given), or loaded when the agent starts."""
    resources = Resources(app, settings, classifier, thread)
    topic = input_topic(app, settings)

    # A failing agent crashes the worker (non-zero exit) instead of restarting in place: the
    # process manager restarts it and the uncommitted offsets are redelivered.
    @app.agent(
        topic,
        name=f"{settings.app_id}.classify",
        concurrency=1,
        supervisor_strategy=CrashingSupervisor,
    )
    async def classify(stream: faust.StreamT) -> None:
        await resources.start()
        memory.freeze()  # what start-up built stays out of the collections (workers.memory)

        async def ack(message: Inbound) -> None:
            await stream.ack(message.handle)
            resources.lag.processed(message.topic, message.partition, message.offset)

        lane = LaneConfig(
            concurrency=settings.lane_concurrency if resources.media is not None else 0,
            depth=settings.lane_depth,
            max_pending=settings.max_pending_messages,
            warm=getattr(resources.runner.classifier, "warm_media", None),
            watchdog=resources.media_watchdog,
        )
        pipeline = StreamPipeline(
            resources.processor,
            ack,
            guard=resources.guard,
            on_result=resources.record,
            lane=lane,
            classify_at_once=resources.runner.lanes,
        )
        await pipeline.start()
        try:
            async for events in stream.noack_take(settings.batch_max, within=settings.batch_wait_s):
                try:
                    await pipeline.submit([_inbound(e) for e in events])
                except Exception as exc:  # noqa: BLE001 - fatal: see the module docstring
                    await _exit_now(pipeline, exc)
        finally:
            await pipeline.stop(settings.shutdown_timeout_s)
            await resources.stop()

    last = {"t": time.monotonic(), "n": 0}

    @app.timer(interval=memory.COLLECT_INTERVAL_S)
    async def collect_garbage() -> None:
        # cycles kept alive by caught exceptions hold media buffers until a full collection
        # (workers.memory); on the loop: the collector holds the GIL anyway
        freed, seconds = memory.collect(and_trim=False)
        log.debug("gc: %d objects freed in %.1f ms", freed, seconds * 1000)
        # then free heap pages back to the system, off the loop (workers.memory: not more
        # often, the model faults what it gets back in again)
        await asyncio.to_thread(memory.trim)

    @app.timer(interval=10.0)
    async def progress() -> None:
        t = resources.totals
        now = time.monotonic()
        rate = (t.received - last["n"]) / max(now - last["t"], 1e-9)
        last.update(t=now, n=t.received)
        log.info(
            "processed=%d predicted=%d dead_lettered=%d duplicates=%d rate=%.1f/s labels=%s",
            t.received,
            t.predicted,
            sum(t.dead_lettered.values()),
            t.skipped_duplicates,
            rate,
            t.labels,
        )

    @app.timer(interval=settings.lag_interval_s)
    async def consumer_lag() -> None:
        await update_lag(app, settings, resources.lag)

    @app.timer(interval=PRUNE_INTERVAL_S)
    async def prune_inactive_users() -> None:
        # Users inactive past user_retention_s leave the leaderboards (their own keys expire by
        # TTL). Bounded work per call; several workers doing it at once is harmless.
        now_ms = int(time.time() * 1000)
        try:
            for _ in range(100):
                if await resources.store.prune_expired_users(now_ms, PRUNE_LIMIT) < PRUNE_LIMIT:
                    break
        except REDIS_RETRIABLE as exc:
            log.warning("pruning inactive users skipped: %s", type(exc).__name__)

    return resources
