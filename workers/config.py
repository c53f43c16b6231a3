"""The small typed configs of :mod:`workers`, built by the caller (the stream layer) from its
settings: the workers read these, never the application's whole ``Settings``.

Field names are the ``Settings`` field names they come from, so :meth:`ProcessorConfig.of` and
:meth:`MediaSettings.of` take them by name from any object that has them (``streamer`` passes its
``Settings``; a test passes either that or the config itself).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Self

from workers.headers import DEFAULT_ALLOW

__all__ = ["MediaSettings", "ProcessorConfig"]


class _FromSettings:
    __slots__ = ()

    @classmethod
    def of(cls, settings: Any) -> Self:
        """This config's fields, read by name from ``settings`` (any object that has them)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ProcessorConfig(_FromSettings):
    """What :class:`~workers.processor.BatchProcessor` reads."""

    predictions_topic: str = "comments.predictions"
    dlq_topic: str = "comments.dlq"
    max_event_bytes: int = 256 * 1024  # larger message values are dead-lettered as too_large
    max_dead_letter_payload_bytes: int = 64 * 1024  # dead letters keep at most this much payload
    media_timeout_s: float = 8.0  # one batch's media: late items are classified without
    feed_text_chars: int = 280  # characters of a comment's (redacted) text in the feed
    retry_initial_s: float = 0.1  # backoff of retried Redis and broker calls
    retry_max_s: float = 5.0
    model_failure_ratio: float = 0.5  # share of a batch failing in the model that means "model"
    model_failure_exit_s: float = 120.0  # model failing this long: the worker exits
    headers_allow: str = DEFAULT_ALLOW  # input headers copied to the outputs (workers.headers)
    headers_max_count: int = 16  # most input headers copied to an output
    headers_max_bytes: int = 4096  # most bytes (names + values) of the copied headers


@dataclass(frozen=True, slots=True)
class MediaSettings(_FromSettings):
    """What :func:`~workers.media.build_media_service` reads: every ``media_*`` limit."""

    redis_prefix: str = "commentflow:"
    media_timeout_s: float = 8.0
    media_allow_private: bool = False  # never in production
    media_allow_hosts: str = ""  # comma-separated hosts allowed on any address
    media_deny_hosts: str = ""  # comma-separated hosts always refused
    media_max_image_bytes: int = 10 * 1024 * 1024
    media_max_audio_bytes: int = 25 * 1024 * 1024
    media_cache_redis: bool = True  # share media and derived features through the cache Redis
    media_max_pixels: int = 16_000_000
    media_inflight_bytes: int = 96 * 1024 * 1024
    media_max_items_per_batch: int = 64
    media_max_requests_per_comment: int = 24
    media_per_domain_connections: int = 16
    media_resolve: str = ""  # host=ip overrides, like curl --resolve
