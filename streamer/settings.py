"""One frozen settings object, read once from the environment (``COMMENTFLOW_*``) and CLI flags.

Every field maps to the environment variable ``COMMENTFLOW_<FIELD NAME IN CAPITALS>``; the CLI's
flags override the environment. Nothing else in the code reads the environment.

Secrets (``metadata["secret"]``: the Kafka SASL password and client-key password) come only from
the environment or from a file named by ``COMMENTFLOW_<NAME>_FILE`` (a mounted Kubernetes or
Docker secret): they have no CLI flag (flags show in ``ps``), no ``repr``, and
:meth:`Settings.to_env` leaves them out unless asked for them to start a child process.

It lives in :mod:`streamer`, the lowest layer that needs the whole object; :mod:`workers` takes
the small typed configs built from it (:mod:`workers.config`), and ``commentflow.settings``
re-exports it for the application. Each field's ``metadata["help"]`` is its one-line ``--help``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from workers.kafka_security import KafkaSecurity

__all__ = ["DEFAULT_MODEL_DIR", "ENV_PREFIX", "FILE_SUFFIX", "Settings", "is_secret"]

#: The trained default model shipped in the repository: the multimodal fusion model
#: (``models/multimodal``; the text-only model is ``models/text``).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "multimodal"

ENV_PREFIX = "COMMENTFLOW_"
#: ``COMMENTFLOW_<NAME>_FILE``: read a setting from this file (trailing newline stripped): any
#: setting (a Redis URL with its password, a user name mounted from a Kubernetes Secret); for
#: secrets it is the only way besides the plain environment variable.
FILE_SUFFIX = "_FILE"


def _setting(default: Any, help_: str) -> Any:
    """A field with its one-line explanation (``metadata["help"]``: the flag's ``--help``)."""
    return field(default=default, metadata={"help": help_})


def _secret(help_: str) -> Any:
    """A secret string: environment or ``*_FILE`` only, never a flag, a ``repr`` or a dump."""
    return field(default="", repr=False, metadata={"help": help_, "secret": True})


def is_secret(f: dataclasses.Field[Any]) -> bool:
    """Whether a :class:`Settings` field is a secret (no flag, not in ``repr`` or dumps)."""
    return bool(f.metadata.get("secret"))


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker, the stack and the tools can be configured with."""

    # -- connections
    kafka_bootstrap: str = _setting("localhost:9092", "the broker(s), host:port[,host:port]")
    # -- Kafka security (every client: worker, producer, probes, tools; workers.kafka_security)
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"
    )
    kafka_sasl_mechanism: str = _setting(
        "PLAIN", "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER (with SASL_*)"
    )
    kafka_sasl_username: str = _setting("", "the SASL user (with SASL_*)")
    kafka_sasl_password: str = _secret(
        "the SASL password: environment or COMMENTFLOW_KAFKA_SASL_PASSWORD_FILE only"
    )
    kafka_sasl_oauth_token_file: str = _setting(
        "", "OAUTHBEARER: file with the current token, re-read at each login (kept fresh outside)"
    )
    kafka_ssl_cafile: str = _setting(
        "", "PEM CA bundle that signs the brokers' certificates (empty: the system's)"
    )
    kafka_ssl_certfile: str = _setting("", "PEM client certificate (mTLS)")
    kafka_ssl_keyfile: str = _setting("", "PEM client private key (mTLS)")
    kafka_ssl_key_password: str = _secret(
        "the client key's password: environment or COMMENTFLOW_KAFKA_SSL_KEY_PASSWORD_FILE only"
    )
    kafka_ssl_check_hostname: bool = _setting(
        True, "verify that the broker's certificate names the host connected to"
    )
    redis_url: str = _setting(
        "redis://localhost:6379/0", "the state Redis: aggregates, dedup (noeviction)"
    )
    redis_cache_url: str = _setting(
        "", "the cache Redis: media, derived features (allkeys-lru); empty: in-process"
    )
    # -- topics and names
    input_topic: str = _setting("comments", "the topic the worker reads comment events from")
    predictions_topic: str = _setting(
        "comments.predictions", "the topic predictions are published to"
    )
    dlq_topic: str = _setting(
        "comments.dlq", "the dead-letter topic: refused messages, with the reason"
    )
    topic_partitions: int = _setting(
        8, "partitions of the topics the stack creates (the unit of parallelism)"
    )
    app_id: str = _setting("commentflow", "the consumer group and Faust app id")
    redis_prefix: str = _setting("commentflow:", "prefix of every key the worker writes in Redis")
    # -- model
    model_dir: str = _setting(
        str(DEFAULT_MODEL_DIR),
        "the model directory (text or multimodal; default: the shipped multimodal model)",
    )
    device: str = _setting("auto", "where the model runs: auto | cpu | cuda | cuda:N")
    model_media_threads: int = _setting(
        0,
        "CPU threads of OCR and speech recognition (multimodal model; 0: half the cores, so "
        "that new media leave the text model a core)",
    )
    precision: str = _setting(
        "auto",
        "float format of the text encoders: auto | float32 | bfloat16 (auto: bfloat16 on CUDA "
        "and on CPUs with native bfloat16 (AMX), float32 elsewhere)",
    )
    inference_lanes: int = _setting(
        0,
        "batches the model classifies at once, each on its own thread with an equal share of "
        "the cores (0: 2 on a CPU with 2 or more cores, 1 on CUDA)",
    )
    # -- batching and limits
    batch_max: int = _setting(64, "most events in one micro-batch")
    batch_wait_s: float = _setting(0.05, "longest wait to fill a micro-batch")
    max_event_bytes: int = _setting(
        256 * 1024, "larger message values are dead-lettered as too_large"
    )
    lane_concurrency: int = _setting(
        2, "media lane: batches of comments with media finishing at once (0: no lane)"
    )
    lane_depth: int = _setting(8, "media lane: batches of comments with media waiting")
    max_pending_messages: int = _setting(
        10_000, "messages taken and not acknowledged (done ones behind a slow one included)"
    )
    max_dead_letter_payload_bytes: int = _setting(
        64 * 1024, "dead letters keep at most this much payload"
    )
    # -- Kafka headers copied from a comment to its prediction and dead letter (README "Headers")
    headers_allow: str = _setting(
        "correlation-id,x-correlation-id,x-request-id,x-cf-*",
        "input headers copied to the outputs: names, or prefixes ending in *",
    )
    headers_max_count: int = _setting(16, "most input headers copied to one output")
    headers_max_bytes: int = _setting(4096, "most bytes (names + values) copied to one output")
    # -- media fetching (images and audio referenced by URL)
    media_enabled: bool = _setting(True, "fetch and decode the images and audio comments link to")
    media_timeout_s: float = _setting(
        8.0, "per media item: a comment whose media is late is classified without it"
    )
    media_allow_private: bool = _setting(
        False, "never in production: lets media URLs reach private networks"
    )
    media_allow_hosts: str = _setting(
        "", "comma-separated hosts allowed on any address (local dev, tests)"
    )
    media_deny_hosts: str = _setting("", "comma-separated hosts always refused")
    media_max_image_bytes: int = _setting(10 * 1024 * 1024, "largest image body fetched")
    media_max_audio_bytes: int = _setting(25 * 1024 * 1024, "largest audio body fetched")
    media_cache_redis: bool = _setting(
        True, "share media and derived features through the cache Redis"
    )
    media_max_pixels: int = _setting(
        16_000_000, "most source pixels (width * height), checked before decoding"
    )
    media_inflight_bytes: int = _setting(
        96 * 1024 * 1024, "bytes of all media bodies being fetched or decoded at once"
    )
    media_max_items_per_batch: int = _setting(
        64, "most media items one micro-batch fetches (the rest: errors)"
    )
    media_max_requests_per_comment: int = _setting(
        24, "most HTTP requests for one comment, retries and redirects included"
    )
    media_per_domain_connections: int = _setting(16, "open connections per registrable domain")
    media_resolve: str = _setting(
        "", 'host=ip overrides, "*.example.test=127.0.0.1" (like curl --resolve)'
    )
    # -- entity stage (model/entities.py): named entities in text, OCR text and transcripts
    # Off by default: on a 2-core CPU it costs more than 15% of text-only throughput at batch
    # 128 (README, "Entities"); `commentflow demo` turns it on.
    entities_enabled: bool = _setting(
        False, "recognise named entities (products, brands, people ...) in every comment"
    )
    entities_max_per_comment: int = _setting(8, "most entities kept per comment (up to 32)")
    entities_max_chars: int = _setting(
        1000, "characters of each text (comment, OCR, transcript) the entity stage reads"
    )
    entities_patterns: str = _setting(
        "", "JSON-lines file of entity-ruler patterns: your products, brands, people"
    )
    entity_mentions_kept: int = _setting(
        20, "latest comments kept per entity (the dashboard's entity drill-down)"
    )
    # -- Redis aggregates
    dedup_ttl_s: int = _setting(7 * 24 * 3600, "how long a comment_id is remembered as processed")
    recent_per_user: int = _setting(20, "predictions kept in each user's recent list")
    feed_length: int = _setting(200, "items kept in the live feed")
    minute_ttl_s: int = _setting(48 * 3600, "how long the per-minute counters live")
    feed_text_chars: int = _setting(
        280, "characters of a comment's (redacted) text kept in the feed"
    )
    user_retention_s: int = _setting(
        90 * 24 * 3600, "per-user keys expire after this long without activity"
    )
    # -- reliability
    retry_initial_s: float = _setting(0.1, "first backoff of a retried Redis or broker call")
    retry_max_s: float = _setting(5.0, "longest backoff of a retried call")
    shutdown_timeout_s: float = _setting(30.0, "longest graceful shutdown of a worker")
    poison_after: int = _setting(
        3, "a message in flight when the worker died this often: dead letter"
    )
    predict_deadline_s: float = _setting(
        300.0, "longest predict() or media-lane OCR/ASR call: past it /livez fails, worker exits"
    )
    model_failure_ratio: float = _setting(
        0.5, 'share of a batch failing in the model that means "model"'
    )
    model_failure_exit_s: float = _setting(
        120.0, "model failing this long: exit non-zero (restart)"
    )
    # -- Faust / Kafka consumer
    session_timeout_s: float = _setting(
        60.0, "consumer session timeout (Kafka's default; the embedded stack uses 6 s)"
    )
    commit_interval_s: float = _setting(1.0, "how often consumer offsets are committed")
    consumer_auto_offset_reset: str = _setting(
        "earliest",
        "where a new consumer group starts: earliest (the topic's retention) | latest (new only)",
    )
    max_poll_records: int = _setting(2000, "most records one consumer poll returns")
    consumer_fetch_max_wait_s: float = _setting(
        0.02, "longest fetch long-poll (a broker that does not answer early delays by up to this)"
    )
    web_port: int = _setting(6066, "port of the worker's web server: /metrics, /livez, /readyz")
    lag_interval_s: float = _setting(2.0, "how often the consumer lag gauge is refreshed")
    web_enabled: bool = _setting(True, "serve /metrics, /livez and /readyz")
    log_level: str = _setting("info", "debug | info | warning | error")
    log_format: str = _setting("text", "text | json (one JSON object per line)")
    # -- the live dashboard (commentflow dashboard): reads only Redis
    dashboard_host: str = _setting("127.0.0.1", "the dashboard's listening address")
    dashboard_port: int = _setting(8080, "the dashboard's port (0: any free one)")
    dashboard_token: str = _setting(
        "", "the dashboard's token: when set, required (Bearer, ?token= once, then a cookie)"
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``COMMENTFLOW_*`` variables, then apply ``overrides`` (``None`` ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if env.get(name + FILE_SUFFIX):
                if raw is not None:
                    raise ValueError(f"set {name} or {name}{FILE_SUFFIX}, not both")
                raw = _read_secret_file(name + FILE_SUFFIX, env[name + FILE_SUFFIX])
            if raw is not None:
                values[f.name] = _coerce(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self, *, secrets: bool = False) -> dict[str, str]:
        """The ``COMMENTFLOW_*`` variables that rebuild these settings in another process.

        Secrets are left out (a dump, a report) unless ``secrets``: only for the environment of
        a child process that needs them (``commentflow.local.WorkerProcess``).
        """
        out = {}
        for f in fields(self):
            if is_secret(f) and not secrets:
                continue
            value = getattr(self, f.name)
            out[ENV_PREFIX + f.name.upper()] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        return out

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a child process that rebuilds these settings: ``base`` (default
        ``os.environ``) without its ``*_FILE`` variables (the values, secrets included, replace
        them: both set is an error), plus :meth:`to_env` with the secrets."""
        base = os.environ if base is None else base
        files = {ENV_PREFIX + f.name.upper() + FILE_SUFFIX for f in fields(self)}
        return {
            **{k: v for k, v in base.items() if k not in files},
            **self.to_env(secrets=True),
        }

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def kafka_security(self) -> KafkaSecurity:
        """The ``kafka_*`` security settings, for :mod:`workers.kafka_security`."""
        return KafkaSecurity.of(self)

    def without_kafka_security(self) -> Settings:
        """These settings with every Kafka security field at its default (PLAINTEXT): for the
        tools that run their own embedded, plaintext broker (demo, bench, soak)."""
        defaults = {f.name: f.default for f in fields(KafkaSecurity)}
        return dataclasses.replace(self, **defaults)

    def __post_init__(self) -> None:
        if self.batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        if self.batch_wait_s <= 0:
            raise ValueError("batch_wait_s must be positive")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ValueError("precision must be auto, float32 or bfloat16")
        if self.inference_lanes < 0:
            raise ValueError("inference_lanes must be >= 0 (0: automatic)")
        if self.lane_concurrency < 0 or self.lane_depth < 1:
            raise ValueError("lane_concurrency must be >= 0 and lane_depth >= 1")
        if self.max_pending_messages < self.batch_max:
            raise ValueError("max_pending_messages must be at least batch_max")
        if not self.redis_prefix:
            raise ValueError("redis_prefix must not be empty")
        if self.log_format not in ("text", "json"):
            raise ValueError("log_format must be text or json")
        if self.poison_after < 1:
            raise ValueError("poison_after must be at least 1")
        if not 0 < self.model_failure_ratio <= 1:
            raise ValueError("model_failure_ratio must be in (0, 1]")
        if not 1 <= self.entities_max_per_comment <= 32:
            raise ValueError("entities_max_per_comment must be between 1 and 32")
        if self.entities_max_chars < 1 or self.entity_mentions_kept < 1:
            raise ValueError("entities_max_chars and entity_mentions_kept must be at least 1")
        if self.consumer_auto_offset_reset not in ("earliest", "latest"):
            raise ValueError("consumer_auto_offset_reset must be earliest or latest")
        KafkaSecurity.of(self)  # KafkaSecurityError (a ValueError): one line, no secret


def _read_secret_file(variable: str, path: str) -> str:
    """The secret in ``path`` without its trailing newline; errors name the variable, not the
    content."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path}: {exc.strerror}") from None


def _coerce(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.strip().lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.strip().lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{f.name.upper()}: cannot read {raw!r} as {kind}") from exc
    return raw
