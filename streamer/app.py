"""Build the Faust app from :class:`~streamer.settings.Settings` and run a worker."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faust
from faust.types.auth import CredentialsT

from model.base import Classifier
from model.errors import ModelError
from streamer.logs import logging_config
from streamer.settings import Settings
from workers.kafka_security import KafkaSecurity, KafkaSecurityError, TlsCheckFailed, check_tls

__all__ = ["broker_credentials", "create_app", "faust_datadir", "run_worker"]


def broker_url(bootstrap: str) -> str:
    """``host1:9092,host2:9092`` -> ``kafka://host1:9092;host2:9092`` (Faust's spelling)."""
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()]
    return "kafka://" + ";".join(hosts)


def broker_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for ``security`` (``None``: plaintext).

    Faust hands these to every aiokafka client it makes (consumer, producer, topic admin) through
    ``credentials_to_aiokafka_auth``: ``SSLCredentials`` -> ``security_protocol=SSL`` and our
    context; ``SASLCredentials`` and ``OAuthCredentials`` -> ``SASL_PLAINTEXT``, or ``SASL_SSL``
    when they have a context.
    The SSL context is :meth:`KafkaSecurity.ssl_context`, the one the other clients use.
    """
    context = security.ssl_context()
    if security.uses_oauth:
        return faust.OAuthCredentials(oauth_cb=security.oauth_token_provider(), ssl_context=context)
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.kafka_sasl_username,
            password=security.kafka_sasl_password,
            mechanism=security.kafka_sasl_mechanism,
            ssl_context=context,  # None: SASL_PLAINTEXT
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def faust_datadir(app_id: str) -> Path:
    """Where Faust may make its (unused: tables are in memory) data folder: the temp directory."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in app_id)
    return Path(tempfile.gettempdir()) / f"commentflow-faust-{safe}"


def create_app(
    settings: Settings,
    classifier: Classifier | None = None,
    thread: ThreadPoolExecutor | None = None,
) -> faust.App:
    """A Faust app with the pipeline's agent installed (``classifier``: already loaded, or lazy;
    ``thread``: the :func:`~workers.inference.inference_thread` it was loaded on)."""
    from streamer import consumer as fetch_wait
    from streamer.agents import install
    from streamer.web import install_web

    session = settings.session_timeout_s
    app = faust.App(
        settings.app_id,
        broker=broker_url(settings.kafka_bootstrap),
        store="memory://",
        # Faust makes ``{datadir}/v1/tables`` at start even with memory-only tables, by default
        # under the working directory (one ``<app_id>-data`` folder per app id in the repo or
        # container). Nothing is ever written there: keep it out of the working directory.
        datadir=faust_datadir(settings.app_id),
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.5, min(3.0, session / 3)),
        broker_rebalance_timeout=max(session, 10.0),
        broker_commit_interval=settings.commit_interval_s,
        broker_max_poll_records=settings.max_poll_records,
        # where a group with no committed offset starts (a first deploy): see the setting's help
        consumer_auto_offset_reset=settings.consumer_auto_offset_reset,
        broker_credentials=broker_credentials(settings.kafka_security),
        producer_linger=0.005,
        producer_acks=-1,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # topics are created by `commentflow stack` / the deployment
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        stream_wait_empty=True,
    )
    fetch_wait.install(app, settings.consumer_fetch_max_wait_s)
    resources = install(app, settings, classifier, thread)
    if settings.web_enabled:
        install_web(app, resources)
    return app


def run_worker(settings: Settings) -> int:
    """Run one worker until SIGINT/SIGTERM; returns the exit code.

    The Kafka TLS settings are checked first (files readable, one handshake per bootstrap
    address), then the model is loaded, before the worker joins the consumer group: a bad
    certificate or model directory fails fast with a clear message (exit status 2), and
    partitions are never held by a worker still loading.
    """
    if (code := _check_kafka_security(settings)) is not None:
        return code
    from workers import memory

    memory.tune()  # before torch and the model's threads allocate: see workers.memory
    from streamer.agents import inference_plan, load_worker_classifier
    from workers.inference import inference_thread

    # loaded on its first inference lane: the model is faster there (see workers.inference)
    thread = inference_thread(inference_plan(settings)[1])
    try:
        classifier = thread.submit(load_worker_classifier, settings).result()
    except (ModelError, OSError) as exc:
        thread.shutdown()
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
    app = create_app(settings, classifier, thread)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        logging_config=logging_config(settings.log_level, settings.log_format),
    )
    worker.execute_from_commandline()  # handles signals, stops gracefully, then exits
    return 0


def _check_kafka_security(settings: Settings) -> int | None:
    """Exit status 2 with one line on stderr when the Kafka TLS settings cannot work.

    A certificate that does not verify never heals: without this the Kafka client would
    reconnect forever and the worker would just never become ready. On a loop of its own,
    closed after: Faust's worker sets up its own.
    """
    from workers.kafka_oauth import TokenFileError

    security = settings.kafka_security
    loop = asyncio.new_event_loop()
    try:
        if security.uses_oauth:
            security.oauth_token_provider().read()  # the file is there and holds a token
        loop.run_until_complete(check_tls(settings.kafka_bootstrap, security))
    except (TlsCheckFailed, KafkaSecurityError, TokenFileError) as exc:
        print(f"commentflow worker: Kafka security: {exc}", file=sys.stderr)
        return 2
    finally:
        loop.close()
    # what an operator checks first when a secured cluster refuses us; never a secret
    logging.getLogger(__name__).info("kafka %s: %s", settings.kafka_bootstrap, security.describe())
    return None
