"""Build the Faust app from :class:`~streamer.settings.Settings` and run a worker."""

from __future__ import annotations

import sys

import faust

from model.base import Classifier
from model.errors import ModelError
from streamer.logs import logging_config
from streamer.settings import Settings

__all__ = ["create_app", "run_worker"]


def broker_url(bootstrap: str) -> str:
    """``host1:9092,host2:9092`` -> ``kafka://host1:9092;host2:9092`` (Faust's spelling)."""
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()]
    return "kafka://" + ";".join(hosts)


def create_app(settings: Settings, classifier: Classifier | None = None) -> faust.App:
    """A Faust app with the pipeline's agent installed (``classifier``: already loaded, or lazy)."""
    from streamer.agents import install
    from streamer.web import install_web

    session = settings.session_timeout_s
    app = faust.App(
        settings.app_id,
        broker=broker_url(settings.kafka_bootstrap),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.5, min(3.0, session / 3)),
        broker_rebalance_timeout=max(session, 10.0),
        broker_commit_interval=settings.commit_interval_s,
        broker_max_poll_records=settings.max_poll_records,
        consumer_auto_offset_reset="earliest",
        producer_linger=0.005,
        producer_acks=-1,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # topics are created by `commentflow stack` / the deployment
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        stream_wait_empty=True,
    )
    resources = install(app, settings, classifier)
    if settings.web_enabled:
        install_web(app, resources)
    return app


def run_worker(settings: Settings) -> int:
    """Run one worker until SIGINT/SIGTERM; returns the exit code.

    The model is loaded first, before the worker joins the consumer group: a bad model directory
    fails fast with a clear message, and partitions are never held by a worker still loading.
    """
    from workers import memory

    memory.tune()  # before torch and the model's threads allocate: see workers.memory
    from model import load_classifier

    try:
        classifier = load_classifier(settings.model_dir, settings.device)
    except (ModelError, OSError) as exc:
        print(
            f"commentflow worker: cannot load the model in {settings.model_dir}: {exc}",
            file=sys.stderr,
        )
        return 2
    if (
        settings.media_cache_redis
        and settings.redis_cache_url
        and hasattr(classifier, "use_shared_cache")
    ):
        import redis

        # OCR text, transcripts and image embeddings shared with the other workers, in the
        # cache Redis (allkeys-lru, bounded), never in the state Redis
        classifier.use_shared_cache(
            redis.Redis.from_url(
                settings.redis_cache_url, socket_timeout=2, socket_connect_timeout=2
            ),
            settings.redis_prefix,
        )
    app = create_app(settings, classifier)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        logging_config=logging_config(settings.log_level, settings.log_format),
    )
    worker.execute_from_commandline()  # handles signals, stops gracefully, then exits
    return 0
