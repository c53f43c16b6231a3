"""Fetch one media body over HTTP(S), safely: SSRF policy, size caps, timeouts, bounded retries.

:class:`MediaFetcher` owns one transport (by default one ``aiohttp.ClientSession`` whose
``TCPConnector`` bounds connections globally and per host, and resolves through
:class:`PolicyResolver`, which refuses the host if ANY address DNS returns is internal). Every hop
is re-checked: redirects are followed by hand, each hop's URL goes through
:meth:`AddressPolicy.check_url` and, at connect time, each resolved address through
:meth:`AddressPolicy.check_ip`, so nothing is sent to a refused address.

Per item: connect/read/attempt timeouts, a deadline over all attempts, the body capped while it
streams (and up front from Content-Length), retries with jittered exponential backoff only for
``timeout``, ``connection_error`` and ``http_5xx``. Failures raise
:class:`~workers.address_policy.MediaError` subclasses. Never log a full URL: :func:`redact_url`.

Shared limits (:mod:`workers.media_limits`: bytes in flight, requests per registrable domain and
per comment) and name resolution (:mod:`workers.media_resolve`) live in their own modules and
are re-exported here.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import inspect
import logging
import random
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict, CIMultiDictProxy

from workers.address_policy import (
    AddressPolicy,
    BlockedURL,
    FetchFailed,
    MediaBusy,
    MediaError,
)
from workers.media_limits import (
    ByteBudget,
    DomainLimiter,
    FetchProgress,
    RequestBudget,
    Reservation,
)
from workers.media_resolve import PolicyResolver, StaticResolver, parse_resolve

__all__ = [
    "AiohttpTransport",
    "ByteBudget",
    "DomainLimiter",
    "FetchConfig",
    "FetchProgress",
    "FetchResult",
    "MediaFetcher",
    "MockResponse",
    "MockTransport",
    "PolicyResolver",
    "RequestBudget",
    "Reservation",
    "StaticResolver",
    "Transport",
    "TransportResponse",
    "parse_resolve",
    "redact_url",
]

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
KnownLookup = Callable[[str], Awaitable[str | None]]


def redact_url(url: str | yarl.URL) -> str:
    """``scheme://host[:port]/~<hash>``: loggable; no userinfo, path, query or fragment in clear.

    The hash (sha256 of path and query, 12 hex digits) still tells two URLs of a host apart.
    """
    try:
        u = url if isinstance(url, yarl.URL) else yarl.URL(str(url))
        host = u.raw_host
        if not u.scheme or not host:
            return "<invalid-url>"
        port = "" if u.explicit_port is None or u.is_default_port() else f":{u.port}"
        if ":" in host:
            host = f"[{host}]"
        tail = hashlib.sha256(u.raw_path_qs.encode()).hexdigest()[:12]
    except (ValueError, TypeError, UnicodeError):
        return "<invalid-url>"
    return f"{u.scheme}://{host}{port}/~{tail}"


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """Limits of one fetch; a fetcher has one, immutable."""

    connect_timeout_s: float = 3.0  # includes waiting for a pool slot
    read_timeout_s: float = 5.0  # longest silence between two reads
    attempt_timeout_s: float = 10.0  # one attempt, redirects included
    deadline_s: float = 15.0  # one item, all attempts and backoff included
    max_image_bytes: int = 10 * 1024 * 1024
    max_audio_bytes: int = 25 * 1024 * 1024
    max_redirects: int = 5
    retries: int = 2  # extra attempts after the first, for retriable failures only
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 2.0
    limit: int = 100  # open connections, all hosts
    limit_per_host: int = 8
    limit_per_domain: int = 16  # requests in flight per registrable domain
    inflight_bytes: int = 96 * 1024 * 1024  # the ByteBudget a fetcher makes when given none
    chunk_bytes: int = 64 * 1024
    dns_cache_s: int = 10
    user_agent: str = "commentflow-media/0.1"

    def max_bytes(self, kind: str) -> int:
        return self.max_audio_bytes if kind == "audio" else self.max_image_bytes


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A fetched body. ``known_hash`` is set (and ``data`` empty) when a redirect hop led to a URL
    the caller already knew (see ``known`` in :meth:`MediaFetcher.fetch`)."""

    url: str
    final_url: str
    kind: str
    data: bytes
    content_type: str | None  # as the server said; advisory only, decoding sniffs the bytes
    attempts: int
    redirects: int
    known_hash: str | None = None
    reservation: Reservation | None = None  # the body's bytes in the ByteBudget

    def release(self) -> None:
        """Give the body's bytes back to the budget (after decoding); idempotent."""
        if self.reservation is not None:
            self.reservation.release()


# -- transports


class TransportResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # case-insensitive

    def iter_chunks(self, size: int) -> AsyncIterator[bytes]: ...


class Transport(Protocol):
    """One GET without redirects; maps its failures onto :class:`MediaError` reasons."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def request(
        self, url: yarl.URL, config: FetchConfig
    ) -> AbstractAsyncContextManager[TransportResponse]: ...


class _AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        return self._resp.content.iter_chunked(size)


class AiohttpTransport:
    """The production transport: one shared ``ClientSession`` over a policy-filtering connector.

    ``resolver`` is the inner DNS resolver (tests inject a static one); it is always wrapped in
    :class:`PolicyResolver`.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        config: FetchConfig,
        *,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._config = config
        self._resolver = PolicyResolver(policy, resolver)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self._config.limit,
            limit_per_host=self._config.limit_per_host,
            resolver=self._resolver,
            ttl_dns_cache=self._config.dns_cache_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # we ask for identity; a compressed body fails to sniff
            trust_env=False,  # no proxies from the environment
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={
                "User-Agent": self._config.user_agent,
                "Accept": "image/*, audio/*;q=0.9, */*;q=0.1",
                "Accept-Encoding": "identity",
            },
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            await self._resolver.close()  # the connector closes only resolvers it created

    @asynccontextmanager
    async def request(self, url: yarl.URL, config: FetchConfig) -> AsyncIterator[_AiohttpResponse]:
        if self._session is None:
            raise RuntimeError("transport is not started")
        timeout = aiohttp.ClientTimeout(
            total=config.attempt_timeout_s,
            connect=config.connect_timeout_s,
            sock_connect=config.connect_timeout_s,
            sock_read=config.read_timeout_s,
        )
        try:
            async with self._session.get(url, allow_redirects=False, timeout=timeout) as resp:
                yield _AiohttpResponse(resp)
        except MediaError:
            raise
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError and its total timeout
            raise FetchFailed("timeout", type(exc).__name__) from exc
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise BlockedURL("invalid_url", type(exc).__name__) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise FetchFailed("connection_error", type(exc).__name__) from exc


@dataclass(slots=True)
class MockResponse:
    """What :class:`MockTransport` answers: a status, headers and a body (bytes or chunks)."""

    status: int = 200
    body: bytes | Iterable[bytes] | AsyncIterable[bytes] = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class _MockResponse:
    __slots__ = ("_body", "headers", "status")

    def __init__(self, r: MockResponse) -> None:
        self.status = r.status
        self.headers: Mapping[str, str] = CIMultiDictProxy(CIMultiDict(r.headers))
        self._body = r.body

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        body = self._body
        if isinstance(body, bytes):
            for i in range(0, len(body), size):
                yield body[i : i + size]
        elif isinstance(body, AsyncIterable):
            async for chunk in body:
                yield chunk
        else:
            for chunk in body:
                yield chunk


class MockTransport:
    """Test transport (as httpx's ``MockTransport``): ``handler(url)`` returns a
    :class:`MockResponse` (or an awaitable of one) or raises a :class:`MediaError`. Every
    requested URL is appended to :attr:`requests`."""

    def __init__(
        self, handler: Callable[[yarl.URL], MockResponse | Awaitable[MockResponse]]
    ) -> None:
        self._handler = handler
        self.requests: list[yarl.URL] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @asynccontextmanager
    async def request(self, url: yarl.URL, config: FetchConfig) -> AsyncIterator[_MockResponse]:
        self.requests.append(url)
        answer = self._handler(url)
        if inspect.isawaitable(answer):
            answer = await answer
        yield _MockResponse(answer)


# -- the fetcher


class _State(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


def _retriable(reason: str) -> bool:
    return reason in ("timeout", "connection_error") or (
        reason.startswith("http_5") and len(reason) == 8
    )


class MediaFetcher:
    """Fetches media bodies under an :class:`AddressPolicy`; one per worker, shared by all items.

    ``start()`` and ``stop()`` may be called twice; a stopped fetcher does not restart. Also an
    async context manager. ``transport`` defaults to :class:`AiohttpTransport` (``resolver`` is
    its inner DNS resolver); ``rng`` drives the backoff jitter; ``budget`` is the
    :class:`ByteBudget` of bodies in flight (one of ``config.inflight_bytes`` when ``None``).
    """

    def __init__(
        self,
        policy: AddressPolicy | None = None,
        config: FetchConfig | None = None,
        *,
        transport: Transport | None = None,
        resolver: AbstractResolver | None = None,
        rng: random.Random | None = None,
        budget: ByteBudget | None = None,
    ) -> None:
        self.policy = policy or AddressPolicy()
        self.config = config or FetchConfig()
        self._transport: Transport = transport or AiohttpTransport(
            self.policy, self.config, resolver=resolver
        )
        self.budget = budget or ByteBudget(self.config.inflight_bytes)
        self.domains = DomainLimiter(self.config.limit_per_domain)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._state = _State.NEW

    @property
    def started(self) -> bool:
        return self._state is _State.STARTED

    async def start(self) -> None:
        if self._state is _State.STARTED:
            return
        if self._state is _State.STOPPED:
            raise RuntimeError("a stopped MediaFetcher cannot be restarted")
        await self._transport.start()
        self._state = _State.STARTED

    async def stop(self) -> None:
        if self._state is _State.STARTED:
            await self._transport.close()
        self._state = _State.STOPPED

    async def __aenter__(self) -> MediaFetcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def fetch(
        self,
        url: str,
        kind: str,
        *,
        deadline: float | None = None,
        known: KnownLookup | None = None,
        requests: RequestBudget | None = None,
        progress: FetchProgress | None = None,
    ) -> FetchResult:
        """Fetch ``url`` for a ``kind`` (``image``/``audio``) item; raise :class:`MediaError`.

        ``deadline`` is an event-loop time (``loop.time()``), capped at ``config.deadline_s``
        from now; past it the fetch is cancelled and fails with ``timeout`` (``busy`` while it
        waited for the byte budget). ``known(url)``, when given, is asked before following each
        redirect hop; a content hash it returns ends the fetch there (the caller has that URL's
        content already). Every request takes one from ``requests`` (``request_limit`` when it
        is spent). The result holds a :class:`Reservation`: call :meth:`FetchResult.release`
        once the body is no longer needed.
        """
        if self._state is not _State.STARTED:
            raise RuntimeError("MediaFetcher is not started")
        loop = asyncio.get_running_loop()
        cap = loop.time() + self.config.deadline_s
        deadline = cap if deadline is None else min(deadline, cap)
        progress = progress or FetchProgress()
        try:
            async with asyncio.timeout_at(deadline):
                return await self._fetch_retrying(url, kind, deadline, known, requests, progress)
        except TimeoutError as exc:
            log.debug("media fetch %s: deadline passed (%s)", redact_url(url), progress.phase)
            if progress.phase == "budget":
                raise MediaBusy("busy", "no byte budget before the deadline") from exc
            raise FetchFailed("timeout", "deadline passed") from exc

    async def _fetch_retrying(
        self,
        url: str,
        kind: str,
        deadline: float,
        known: KnownLookup | None,
        requests: RequestBudget | None,
        progress: FetchProgress,
    ) -> FetchResult:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._fetch_once(url, kind, attempt, known, requests, progress)
            except FetchFailed as exc:
                if not _retriable(exc.reason) or attempt > self.config.retries:
                    raise
                delay = self._backoff(attempt)
                if loop.time() + delay >= deadline:
                    raise
                log.debug(
                    "media fetch %s: %s, retry %d in %.2fs",
                    redact_url(url), exc.reason, attempt, delay,
                )
                await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential, with "equal jitter": half fixed, half random, so retries spread out."""
        cap = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (attempt - 1))
        return cap / 2 + self._rng.uniform(0, cap / 2)

    async def _fetch_once(
        self,
        url: str,
        kind: str,
        attempt: int,
        known: KnownLookup | None,
        requests: RequestBudget | None,
        progress: FetchProgress,
    ) -> FetchResult:
        cfg = self.config
        current: str | yarl.URL = url
        for hop in range(cfg.max_redirects + 1):
            checked = self.policy.check_url(current)
            if hop and known is not None:
                content_hash = await known(str(checked.url))
                if content_hash is not None:
                    return FetchResult(
                        url, str(checked.url), kind, b"", None, attempt, hop, content_hash
                    )
            if requests is not None:
                requests.take()
            async with (
                self.domains.slot(checked.host),
                self._transport.request(checked.url, cfg) as resp,
            ):
                status = resp.status
                if status in _REDIRECTS:
                    current = self._next_hop(checked.url, resp.headers.get("Location"), status)
                    continue
                if not 200 <= status < 300:
                    raise FetchFailed(f"http_{status}")
                reservation = await self._reserve(resp, kind, progress)
                try:
                    data = await self._read_capped(resp, reservation.nbytes)
                except BaseException:
                    reservation.release()
                    raise
                reservation.shrink(len(data))
                return FetchResult(
                    url=url,
                    final_url=str(checked.url),
                    kind=kind,
                    data=data,
                    content_type=resp.headers.get("Content-Type"),
                    attempts=attempt,
                    redirects=hop,
                    reservation=reservation,
                )
        raise FetchFailed("too_many_redirects", f"more than {cfg.max_redirects}")

    async def _reserve(
        self, resp: TransportResponse, kind: str, progress: FetchProgress
    ) -> Reservation:
        """The body's bytes from the budget: its Content-Length, else the kind's max bytes."""
        max_bytes = self.config.max_bytes(kind)
        declared = resp.headers.get("Content-Length")
        size = max_bytes
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = max_bytes
            if size > max_bytes:
                raise FetchFailed("too_large", f"Content-Length {size} > {max_bytes}")
            size = max(size, 0)
        progress.phase = "budget"
        try:
            # No deadline of its own: the fetch's deadline cancels the wait (then ``busy``).
            return await self.budget.reserve(size)
        finally:
            progress.phase = "request"

    @staticmethod
    def _next_hop(base: yarl.URL, location: str | None, status: int) -> yarl.URL:
        if not location:
            raise FetchFailed(f"http_{status}", "redirect without Location")
        try:
            return base.join(yarl.URL(location))
        except (ValueError, TypeError, UnicodeError) as exc:
            raise BlockedURL("invalid_url", "unparsable Location") from exc

    async def _read_capped(self, resp: TransportResponse, max_bytes: int) -> bytes:
        """The body, at most ``max_bytes`` (what was reserved: the Content-Length, if any)."""
        body = bytearray()
        try:
            async for chunk in resp.iter_chunks(self.config.chunk_bytes):
                body += chunk
                if len(body) > max_bytes:  # abort now: leaving the response drops the connection
                    raise FetchFailed("too_large", f"body over {max_bytes} bytes")
            return bytes(body)
        finally:
            # An exception's traceback keeps this frame (and ``body``, up to the kind's max bytes)
            # alive in a reference cycle until the cyclic GC runs, which can take minutes: the
            # soak's oversized bodies raised the worker's RSS floor by ~25 MB each. Free it now.
            body.clear()
