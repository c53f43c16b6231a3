"""The media facade: a comment's ``media`` references in, decoded images and audio out.

:class:`MediaService` resolves every item of a comment (or of a whole batch) concurrently, each
under its own deadline, through the cache (URL -> content hash -> decoded payload), a coalesced
fetch (one request per URL however many comments ask) and a decode in a bounded
:class:`~workers.media_decode.DecodePool`. A failed item never fails its comment: it becomes a
``media_errors`` entry ``{url (redacted), type, reason}`` (reasons:
:data:`~workers.address_policy.MEDIA_ERROR_REASONS`); an unexpected exception (a bug) is logged
with its traceback and reported as ``decode_error``.

Limits (hostile media cannot make the worker hold unbounded memory, connections or time):

* per batch: ``max_items_per_batch`` items are resolved, first comments first; the rest are
  ``batch_limit`` (and per comment ``max_items``, the rest ``too_large``);
* per comment: ``max_requests_per_comment`` HTTP requests, every attempt and redirect hop
  (``request_limit``); a coalesced fetch counts for the comment that started it;
* bytes of bodies in flight, fetch through decode: the fetcher's
  :class:`~workers.media_fetch.ByteBudget`, released here once the body is decoded; an item
  still waiting for it at its deadline is ``busy``, not ``timeout``;
* decoding: the pool's slots and its bound on abandoned decodes (``busy``), decode limits.

Only deterministic failures (:func:`~workers.address_policy.is_deterministic`: http 4xx but
408/429, policy refusals, too_large, decode errors ...) enter the per-URL negative cache, for
``negative_ttl_s``; a hit on it neither re-enters nor extends it, so a URL that failed once is
asked again once the TTL has passed, however often comments ask in between. Content that fails
to decode deterministically is remembered by content hash the same way.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from workers.address_policy import (
    BlockedURL,
    DecodeFailed,
    FetchFailed,
    MediaBusy,
    MediaError,
    is_deterministic,
)
from workers.config import MediaSettings
from workers.media_cache import CachedMedia, MediaCache, sha256_hex
from workers.media_decode import (
    DecodeConfig,
    DecodePool,
    decode_config,
    decode_input,
    kind_of,
    sniff,
)
from workers.media_fetch import FetchProgress, MediaFetcher, RequestBudget, redact_url
from workers.metrics import PipelineMetrics

__all__ = ["MediaConfig", "MediaRef", "MediaService", "ResolvedMedia"]

log = logging.getLogger(__name__)

_KINDS = ("image", "audio")
_HASH_INLINE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class MediaRef:
    """One ``media`` item of an event: ``{"type": "image" | "audio", "url": ...}``."""

    type: str
    url: str

    @classmethod
    def of(cls, ref: MediaRef | Mapping[str, Any]) -> MediaRef:
        if isinstance(ref, MediaRef):
            return ref
        kind, url = ref.get("type"), ref.get("url")
        return cls(kind if isinstance(kind, str) else "", url if isinstance(url, str) else "")


class ResolvedMedia(NamedTuple):
    """What one comment's media became; unpacks as ``images, audio, media_errors``."""

    images: list[np.ndarray]  # (H, W, 3) uint8 RGB, read-only, in reference order
    audio: list[np.ndarray]  # (T,) float32 mono at the decode sample rate, read-only
    media_errors: list[dict[str, str]]  # {"url": redacted, "type": ..., "reason": ...}


@dataclass(frozen=True, slots=True)
class MediaConfig:
    item_timeout_s: float = 10.0  # one item: cache, fetch (with retries) and decode
    max_items: int = 8  # per comment; the rest are reported as too_large
    max_items_per_batch: int = 64  # per resolve_batch call; the rest are batch_limit
    max_requests_per_comment: int = 24  # HTTP requests, retries and redirects included
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    decode_threads: int = max(1, min(4, os.cpu_count() or 1))  # decodes at once
    max_abandoned_decodes: int = 4  # overdue decodes still running before new ones are busy


class _State(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class MediaService:
    """Resolves media references; owns ``fetcher``, ``cache`` and, if none is given, a
    :class:`DecodePool`: :meth:`start` / :meth:`stop` (both idempotent) or ``async with``."""

    def __init__(
        self,
        fetcher: MediaFetcher,
        cache: MediaCache | None = None,
        *,
        config: MediaConfig | None = None,
        decode_pool: DecodePool | None = None,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.cache = cache or MediaCache()
        self.config = config or MediaConfig()
        self.metrics = metrics if metrics is not None else PipelineMetrics()
        media_cache_errors = self.metrics.redis_errors.labels("media_cache")
        self.cache.on_redis_error = media_cache_errors.inc
        self._pool = decode_pool
        self._own_pool = decode_pool is None
        self._variant = self.config.decode.fingerprint()
        self._progress: dict[tuple[str, str], FetchProgress] = {}  # loads under way, by item
        self._state = _State.NEW

    @property
    def decode_pool(self) -> DecodePool | None:
        return self._pool

    async def start(self) -> None:
        if self._state is _State.STARTED:
            return
        if self._state is _State.STOPPED:
            raise RuntimeError("a stopped MediaService cannot be restarted")
        if self._own_pool:
            self._pool = DecodePool(self.config.decode_threads, self.config.max_abandoned_decodes)
        await self.fetcher.start()
        self._state = _State.STARTED

    async def stop(self) -> None:
        if self._state is _State.STARTED:
            await self.cache.close()
            await self.fetcher.stop()
            if self._own_pool and self._pool is not None:
                self._pool.close()
        self._state = _State.STOPPED

    async def __aenter__(self) -> MediaService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- public API

    async def resolve(
        self,
        media_refs: Iterable[MediaRef | Mapping[str, Any]],
        deadline: float | None = None,
    ) -> ResolvedMedia:
        """Resolve one comment's media concurrently; never raises for a media failure.

        ``deadline`` is an event-loop time (``loop.time()``); ``None``: ``item_timeout_s`` from
        now. Items still unresolved at the deadline become ``timeout`` errors (``busy`` when
        they were still waiting for the byte budget).
        """
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.config.item_timeout_s
        refs = [MediaRef.of(r) for r in media_refs]
        return await self._resolve_comment(refs, deadline, self.config.max_items_per_batch)

    async def resolve_batch(
        self,
        batch: Sequence[Iterable[MediaRef | Mapping[str, Any]]],
        *,
        timeout_s: float | None = None,
    ) -> list[ResolvedMedia]:
        """Resolve the media of every comment of a batch at once, one result per comment.

        Every item runs concurrently under its own deadline (``timeout_s``, default
        ``item_timeout_s``, from now): a slow host costs only its own items. At most
        ``max_items_per_batch`` items are resolved, in reference order (first comments first);
        the others are ``batch_limit`` errors, without a request.
        """
        if self._state is not _State.STARTED:
            raise RuntimeError("MediaService is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.item_timeout_s if timeout_s is None else timeout_s)
        comments = [[MediaRef.of(r) for r in refs] for refs in batch]
        left = self.config.max_items_per_batch
        quotas = []
        for refs in comments:
            quota = min(left, len(refs), self.config.max_items)
            quotas.append(quota)
            left -= quota
        pairs = zip(comments, quotas, strict=True)
        results = await asyncio.gather(*(self._resolve_comment(r, deadline, q) for r, q in pairs))
        return list(results)

    async def _resolve_comment(
        self, refs: list[MediaRef], deadline: float, quota: int
    ) -> ResolvedMedia:
        if self._state is not _State.STARTED:
            raise RuntimeError("MediaService is not started")
        kept = refs[: min(quota, self.config.max_items)]
        requests = RequestBudget(self.config.max_requests_per_comment)
        outcomes = await asyncio.gather(*(self._outcome(r, deadline, requests) for r in kept))
        images: list[np.ndarray] = []
        audio: list[np.ndarray] = []
        errors: list[dict[str, str]] = []
        for ref, outcome in zip(kept, outcomes, strict=True):
            if isinstance(outcome, MediaError):
                errors.append(self._error_entry(ref, outcome.reason))
            elif ref.type == "image":
                images.append(outcome)
            else:
                audio.append(outcome)
        for i, ref in enumerate(refs[len(kept) :], start=len(kept)):
            reason = "too_large" if i >= self.config.max_items else "batch_limit"
            errors.append(self._error_entry(ref, reason))
        return ResolvedMedia(images, audio, errors)

    # -- one item

    def _error_entry(self, ref: MediaRef, reason: str) -> dict[str, str]:
        self.metrics.media_errors.labels(reason).inc()
        return {"url": redact_url(ref.url), "type": ref.type, "reason": reason}

    async def _outcome(
        self, ref: MediaRef, deadline: float, requests: RequestBudget
    ) -> np.ndarray | MediaError:
        kind = ref.type if ref.type in _KINDS else "other"
        self.metrics.media_items.labels(kind).inc()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            return await self._resolve_item(ref, deadline, requests)
        except _Remembered as exc:
            return MediaError(exc.reason)  # a negative-cache hit: not put again, not extended
        except MediaError as exc:
            if is_deterministic(exc.reason):
                self.cache.put_failure(ref.url, ref.type, exc.reason)
            log.debug("media %s %s: %s", ref.type, redact_url(ref.url), exc.reason)
            return exc
        except Exception as exc:
            # A bug must not drop the comment either: logged loudly, reported as decode_error.
            log.exception("media %s %s: unexpected failure", ref.type, redact_url(ref.url))
            return DecodeFailed("decode_error", f"internal: {type(exc).__name__}")
        finally:
            self.metrics.media_fetch.labels(kind).observe(loop.time() - t0)

    async def _resolve_item(
        self, ref: MediaRef, deadline: float, requests: RequestBudget
    ) -> np.ndarray:
        if ref.type not in _KINDS:
            raise DecodeFailed("unsupported_type", f"media type {ref.type!r}")
        if not ref.url:
            raise BlockedURL("invalid_url", "no url")
        failed = self.cache.get_failure(ref.url, ref.type)
        if failed is not None:
            raise _Remembered(failed, "recent failure")
        key = (ref.type, ref.url)
        try:
            async with asyncio.timeout_at(deadline):
                # Coalesced by URL: concurrent askers share one fetch and decode; the shared work
                # is cancelled only when all of them have given up.
                return await self.cache.coalesce(
                    ("item", *key), lambda: self._load(ref.url, ref.type, requests)
                )
        except TimeoutError as exc:
            progress = self._progress.get(key)
            if progress is not None and progress.phase == "budget":
                raise MediaBusy("busy", "no byte budget before the deadline") from exc
            raise FetchFailed("timeout", "item deadline passed") from exc

    async def _load(self, url: str, kind: str, requests: RequestBudget) -> np.ndarray:
        # No caller's deadline here: coalesced callers each wait under their own; the fetcher's
        # own cap (``deadline_s``) and the decode cap (``item_timeout_s``) bound the shared work.
        content_hash = await self.cache.get_url(url)
        if content_hash is not None:
            media = await self._known_media(content_hash)
            if media is not None:
                self.metrics.media_cache_hits.labels("url").inc()
                return _accept(media, kind)
        progress = self._progress[(kind, url)] = FetchProgress()
        try:
            result = await self.fetcher.fetch(
                url, kind, known=self._known_url, requests=requests, progress=progress
            )
        finally:
            if self._progress.get((kind, url)) is progress:
                del self._progress[(kind, url)]
        try:
            if result.known_hash is not None:  # a redirect led to a URL we already have
                media = await self._known_media(result.known_hash)
                if media is not None:
                    self.metrics.media_cache_hits.labels("url").inc()
                    await self.cache.put_url(url, result.known_hash)
                    return _accept(media, kind)
                result = await self.fetcher.fetch(url, kind, requests=requests)
            return await self._store_and_decode(url, kind, result.data, result.final_url)
        finally:
            result.release()  # the body's bytes go back to the budget once decoded

    async def _store_and_decode(
        self, url: str, kind: str, data: bytes, final_url: str
    ) -> np.ndarray:
        content_hash = await self._hash(data)
        await self.cache.put_url(url, content_hash)
        if final_url != url:
            await self.cache.put_url(final_url, content_hash)
        media = await self._known_media(content_hash)
        if media is None:
            decoded_here = False

            async def decode() -> CachedMedia:
                nonlocal decoded_here
                decoded_here = True
                return await self._decode(data, kind, content_hash)

            # Coalesced by content: other URLs of the same bytes, fetched meanwhile, wait here.
            media = await self.cache.coalesce(("decode", kind, content_hash), decode)
            if not decoded_here:
                self.metrics.media_cache_hits.labels("content").inc()
        else:
            self.metrics.media_cache_hits.labels("content").inc()
        return _accept(media, kind)

    async def _hash(self, data: bytes) -> str:
        if len(data) < _HASH_INLINE_BYTES:
            return sha256_hex(data)
        # hashlib releases the GIL: megabytes are hashed off the event loop.
        return await asyncio.to_thread(sha256_hex, data)

    async def _known_url(self, url: str) -> str | None:
        """For the fetcher's redirect hops: a URL whose decoded content we hold."""
        content_hash = await self.cache.get_url(url)
        if content_hash is None or await self._known_media(content_hash) is None:
            return None
        return content_hash

    async def _known_media(self, content_hash: str) -> CachedMedia | None:
        media = await self.cache.get_media(content_hash, self._variant)
        if media is None or (media.array is None and media.reason is None):
            return None  # unknown, or only a marker: fetch and decode again
        return media

    async def _decode(self, data: bytes, kind: str, content_hash: str) -> CachedMedia:
        actual = kind_of(sniff(data))
        if actual is None:
            media = CachedMedia(kind="unknown", reason="unsupported_type")
        elif actual != kind:
            # The content is fine as the other kind: nothing to remember about it.
            raise DecodeFailed("unsupported_type", f"asked {kind}, got {actual}")
        else:
            assert self._pool is not None  # noqa: S101 - set by start()
            cap = asyncio.get_running_loop().time() + self.config.item_timeout_s
            try:
                array = await self._pool.run(
                    decode_input, data, kind, self.config.decode, deadline=cap
                )
                media = CachedMedia(kind=kind, array=array)
            except DecodeFailed as exc:
                if not is_deterministic(exc.reason):
                    raise  # a timeout says nothing about the content
                media = CachedMedia(kind=kind, reason=exc.reason)
        await self.cache.put_media(content_hash, media, self._variant)
        return media


class _Remembered(MediaError):
    """A negative-cache hit: reported, but never put back (that would extend it)."""


def _accept(media: CachedMedia, kind: str) -> np.ndarray:
    if media.kind != kind:
        raise DecodeFailed("unsupported_type", f"asked {kind}, content is {media.kind}")
    if media.reason is not None or media.array is None:
        raise DecodeFailed(media.reason or "decode_error", "content known to fail")
    return media.array


def build_media_service(
    settings: MediaSettings,
    redis: Any = None,
    metrics: PipelineMetrics | None = None,
    *,
    preprocess: Mapping[str, Any] | DecodeConfig | None = None,
) -> MediaService:
    """The worker's media service from its typed :class:`~workers.config.MediaSettings` (SSRF-safe).

    ``redis`` is the cache Redis client (or ``None``: in-process cache only). ``preprocess`` is
    the model's ``config.json`` section (:func:`~model.format.multimodal.read_preprocess`;
    ``None``: the defaults): image size and audio rate and length shape the features, so they
    come from the model, never from settings. Every ``media_*`` setting lands here: the policy
    (allow/deny hosts, ``*.domain`` patterns, private networks), the resolver
    (``media_resolve``, still under the policy), the fetch limits (bytes per kind, bytes in
    flight, connections per registrable domain, timeout), the decode limits (pixels) and the
    per-batch and per-comment caps.
    """
    from workers.address_policy import AddressPolicy
    from workers.media_cache import CacheConfig
    from workers.media_fetch import FetchConfig, StaticResolver, parse_resolve

    def hosts(value: str) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in value.split(",") if h.strip())

    policy = AddressPolicy(
        allow_private=settings.media_allow_private,
        denied_hosts=hosts(settings.media_deny_hosts),
        allow_hosts_any_address=hosts(settings.media_allow_hosts),
    )
    fetch = FetchConfig(
        max_image_bytes=settings.media_max_image_bytes,
        max_audio_bytes=settings.media_max_audio_bytes,
        deadline_s=settings.media_timeout_s,
        limit_per_domain=settings.media_per_domain_connections,
        inflight_bytes=settings.media_inflight_bytes,
    )
    table = parse_resolve(settings.media_resolve)
    resolver = StaticResolver(table) if table else None
    cache = MediaCache(
        CacheConfig(redis_prefix=settings.redis_prefix),
        redis=redis if settings.media_cache_redis else None,
    )
    config = MediaConfig(
        item_timeout_s=settings.media_timeout_s,
        max_items_per_batch=settings.media_max_items_per_batch,
        max_requests_per_comment=settings.media_max_requests_per_comment,
        decode=decode_config(preprocess, image_max_pixels=settings.media_max_pixels),
    )
    return MediaService(
        MediaFetcher(policy, fetch, resolver=resolver), cache, config=config, metrics=metrics
    )
