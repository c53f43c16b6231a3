"""Media fetching against a REAL local aiohttp server that misbehaves on purpose.

The server listens on 127.0.0.1 only and is reached as ``media.test`` through a static resolver;
``media.test`` is the only host the policy lets resolve to loopback. Every socket connect of the
test loop goes through a guard that refuses (and records) any non-loopback address, so no test
can send traffic off the machine; the refusal tests also assert the guard never saw the address:
the policy refused before connecting.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image

from commentflow.stack import EmbeddedRedis
from workers.address_policy import AddressPolicy, BlockedURL, FetchFailed, MediaError
from workers.media import MediaConfig, MediaService
from workers.media_cache import CacheConfig, CachedMedia, MediaCache, SingleFlight, sha256_hex
from workers.media_decode import DecodeConfig, DecodePool
from workers.media_fetch import (
    FetchConfig,
    MediaFetcher,
    MockResponse,
    MockTransport,
    PolicyResolver,
    redact_url,
)

pytestmark = pytest.mark.integration

# -- content


def _png(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _wav(seconds: float = 0.5, rate: int = 22_050) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


CAT = _png((200, 120, 40))
DOG = _png((10, 90, 200))
WAV = _wav()
HTML = b"<!doctype html><title>login</title>"
BOMB = (lambda b: (Image.new("1", (8000, 8000)).save(b, "PNG"), b.getvalue())[1])(io.BytesIO())

# -- the misbehaving server


class Server:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.port = 0
        self.runner: web.AppRunner | None = None

    def url(self, path: str, host: str = "media.test") -> str:
        return f"http://{host}:{self.port}{path}"


def _app(server: Server) -> web.Application:
    flaky: Counter[str] = Counter()

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        server.hits[request.path] += 1
        return await handler(request)

    def body(data: bytes, ctype: str = "image/png") -> web.Response:
        return web.Response(body=data, content_type=ctype)

    async def image(request: web.Request) -> web.Response:
        return body({"cat.png": CAT, "dog.png": DOG}[request.match_info["name"]])

    async def same(request: web.Request) -> web.Response:  # one content, many URLs
        return body(CAT)

    async def wrong_ctype(request: web.Request) -> web.Response:
        return body(CAT, "text/html")

    async def html_as_png(request: web.Request) -> web.Response:
        return body(HTML, "image/png")

    async def audio(request: web.Request) -> web.Response:
        return body(WAV, "audio/wav")

    async def truncated(request: web.Request) -> web.Response:
        return body(CAT[: len(CAT) // 2])

    async def bomb(request: web.Request) -> web.Response:
        return body(BOMB)

    async def delay(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "0.3")))
        return body(CAT)

    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = len(CAT)
        await resp.prepare(request)
        try:
            for byte in CAT:
                await resp.write(bytes([byte]))
                await asyncio.sleep(0.1)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        chunk = CAT + b"\x00" * 65_536
        try:
            for _ in range(100_000):
                await resp.write(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def liar(request: web.Request) -> web.StreamResponse:  # declares 1 GB
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = 1 << 30
        await resp.prepare(request)
        try:
            await resp.write(CAT)
            await asyncio.sleep(5)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def flaky_500(request: web.Request) -> web.Response:  # fails once, then serves
        key = request.match_info["key"]
        flaky[key] += 1
        return body(CAT) if flaky[key] > 1 else web.Response(status=500)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/hop/{int(request.match_info['n']) + 1}")

    async def alias(request: web.Request) -> web.Response:
        raise web.HTTPFound("/canon.png")

    async def canon(request: web.Request) -> web.Response:
        return body(DOG)

    app = web.Application(middlewares=[count])
    app.router.add_get("/img/{name}", image)
    app.router.add_get("/same/{i}", same)
    app.router.add_get("/wrong-ctype.png", wrong_ctype)
    app.router.add_get("/html.png", html_as_png)
    app.router.add_get("/audio.wav", audio)
    app.router.add_get("/truncated.png", truncated)
    app.router.add_get("/bomb.png", bomb)
    app.router.add_get("/delay/{name}", delay)
    app.router.add_get("/drip.png", drip)
    app.router.add_get("/endless.png", endless)
    app.router.add_get("/liar.png", liar)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/flaky/{key}", flaky_500)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/hop/{n}", hop)
    app.router.add_get("/alias/{i}", alias)
    app.router.add_get("/canon.png", canon)
    return app


@pytest.fixture(scope="session")
async def server() -> AsyncIterator[Server]:
    srv = Server()
    runner = web.AppRunner(_app(srv), shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = runner.addresses[0][1]
    srv.runner = runner
    yield srv
    await runner.cleanup()


class ConnectGuard:
    """Wraps the loop's ``sock_connect``: loopback goes through, anything else is refused."""

    def __init__(self) -> None:
        self.connected: list[str] = []
        self.refused: list[str] = []

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        async def sock_connect(sock: socket.socket, address: Any) -> None:
            host = address[0] if isinstance(address, tuple) else str(address)
            if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
                self.refused.append(host)
                raise ConnectionRefusedError(f"test guard: no traffic to {host}")
            self.connected.append(host)
            return await real(sock, address)

        return sock_connect


@pytest.fixture(autouse=True)
async def guard(monkeypatch: pytest.MonkeyPatch, server: Server) -> AsyncIterator[ConnectGuard]:
    g = ConnectGuard()
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "sock_connect", g.wrap(loop.sock_connect))
    server.hits.clear()
    yield g
    assert g.refused == [], "a test tried to connect off loopback"


class StaticResolver(AbstractResolver):
    """DNS for tests: a fixed table (a list, or a callable returning one per lookup)."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.calls: Counter[str] = Counter()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls[host] += 1
        answer = self.table.get(host.rstrip("."))
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "unknown host")
        ips = answer() if callable(answer) else answer
        return [
            {
                "hostname": host,
                "host": ip,
                "port": port,
                "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for ip in ips
        ]

    async def close(self) -> None:
        return None


DNS = {
    "media.test": ["127.0.0.1"],
    "rebind.test": ["10.0.0.1"],
    "meta.test": ["169.254.169.254"],
    "mixed.test": ["93.184.215.14", "10.0.0.1"],
    "loop6.test": ["::1"],
}
POLICY = AddressPolicy(allow_hosts_any_address=frozenset({"media.test"}))
FAST = FetchConfig(
    connect_timeout_s=1.0,
    read_timeout_s=0.5,
    attempt_timeout_s=1.0,
    deadline_s=2.0,
    max_image_bytes=256 * 1024,
    max_audio_bytes=512 * 1024,
    retries=2,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
)


@pytest.fixture
def resolver() -> StaticResolver:
    return StaticResolver(DNS)


class CountingPool(DecodePool):
    """A decode pool that counts its decodes (the service's only use of it)."""

    def __init__(self, media: MediaConfig) -> None:
        super().__init__(media.decode_threads, media.max_abandoned_decodes)
        self.decodes = 0

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        self.decodes += 1
        return await super().run(*args, **kwargs)


def decodes(svc: MediaService) -> int:
    pool = svc.decode_pool
    assert isinstance(pool, CountingPool)
    return pool.decodes


def cache_hits(svc: MediaService, by: str) -> int:
    """The ``media_cache_hits`` metric: ``by="url"`` (no request) or ``"content"``."""
    value = svc.metrics.registry.get_sample_value("commentflow_media_cache_hits_total", {"by": by})
    return int(value or 0)


@pytest.fixture
async def make_service(resolver: StaticResolver) -> AsyncIterator[Callable[..., Any]]:
    services: list[MediaService] = []
    pools: list[DecodePool] = []

    async def make(
        config: FetchConfig = FAST,
        cache: MediaCache | None = None,
        media: MediaConfig | None = None,
    ) -> MediaService:
        fetcher = MediaFetcher(POLICY, config, resolver=resolver, rng=random.Random(0))
        media = media or MediaConfig(item_timeout_s=3.0)
        pool = CountingPool(media)
        pools.append(pool)
        svc = MediaService(fetcher, cache, config=media, decode_pool=pool)
        await svc.start()
        services.append(svc)
        return svc

    yield make
    for svc in services:
        await svc.stop()
    for pool in pools:
        pool.close()


async def one(svc: MediaService, url: str, kind: str = "image") -> np.ndarray | str:
    """The decoded array, or the error reason."""
    images, audio, errors = await svc.resolve([{"type": kind, "url": url}])
    if errors:
        assert len(errors) == 1 and errors[0]["type"] == kind
        return errors[0]["reason"]
    return (images or audio)[0]


# -- the happy path and content types


async def test_fetch_and_decode_image_and_audio(make_service: Any, server: Server) -> None:
    svc = await make_service()
    images, audio, errors = await svc.resolve(
        [
            {"type": "image", "url": server.url("/img/cat.png")},
            {"type": "audio", "url": server.url("/audio.wav")},
            {"type": "image", "url": server.url("/wrong-ctype.png")},  # Content-Type is ignored
        ]
    )
    assert errors == []
    assert [a.shape for a in images] == [(48, 64, 3), (48, 64, 3)]
    assert images[0][0, 0].tolist() == [200, 120, 40]
    assert audio[0].dtype == np.float32 and abs(audio[0].size - 8000) <= 1  # 0.5 s at 16 kHz


@pytest.mark.parametrize(
    ("path", "kind", "reason"),
    [
        ("/html.png", "image", "unsupported_type"),  # HTML served as image/png
        ("/audio.wav", "image", "unsupported_type"),  # audio asked as image
        ("/img/cat.png", "audio", "unsupported_type"),
        ("/truncated.png", "image", "decode_error"),
        ("/bomb.png", "image", "too_large"),
        ("/status/404", "image", "http_404"),
        ("/status/403", "image", "http_403"),
        ("/hop/0", "image", "too_many_redirects"),
    ],
)
async def test_bad_content(
    make_service: Any, server: Server, path: str, kind: str, reason: str
) -> None:
    svc = await make_service()
    assert await one(svc, server.url(path), kind) == reason


async def test_404_is_not_retried_500_is(make_service: Any, server: Server) -> None:
    svc = await make_service()
    assert await one(svc, server.url("/status/404")) == "http_404"
    assert server.hits["/status/404"] == 1
    assert await one(svc, server.url("/status/500")) == "http_500"
    assert server.hits["/status/500"] == 1 + FAST.retries
    assert await one(svc, server.url("/status/503")) == "http_503"
    assert server.hits["/status/503"] == 1 + FAST.retries
    # Deterministic failures are remembered for a while: no new request.
    assert await one(svc, server.url("/status/404")) == "http_404"
    assert server.hits["/status/404"] == 1


async def test_500_then_success_after_one_retry(make_service: Any, server: Server) -> None:
    svc = await make_service()
    got = await one(svc, server.url("/flaky/a"))
    assert isinstance(got, np.ndarray)
    assert server.hits["/flaky/a"] == 2


# -- size and time limits


async def test_endless_body_is_cut_while_streaming(make_service: Any, server: Server) -> None:
    svc = await make_service()
    start = time.monotonic()
    assert await one(svc, server.url("/endless.png")) == "too_large"
    assert time.monotonic() - start < 1.0
    assert server.hits["/endless.png"] == 1  # not retried


async def test_declared_content_length_refused_up_front(make_service: Any, server: Server) -> None:
    svc = await make_service()
    start = time.monotonic()
    assert await one(svc, server.url("/liar.png")) == "too_large"
    assert time.monotonic() - start < 0.5  # did not wait for the body


async def test_slow_drip_times_out_at_the_deadline(make_service: Any, server: Server) -> None:
    svc = await make_service()
    loop = asyncio.get_running_loop()
    start = loop.time()
    images, _, errors = await svc.resolve(
        [{"type": "image", "url": server.url("/drip.png")}], deadline=start + 0.6
    )
    assert images == [] and [e["reason"] for e in errors] == ["timeout"]
    assert 0.55 < loop.time() - start < 1.0


async def test_slow_host_never_stalls_the_others(make_service: Any, server: Server) -> None:
    svc = await make_service()
    start = time.monotonic()
    results = await svc.resolve_batch(
        [
            [{"type": "image", "url": server.url("/drip.png")}],
            [{"type": "image", "url": server.url("/img/dog.png")}],
            [
                {"type": "audio", "url": server.url("/audio.wav")},
                {"type": "image", "url": server.url("/delay/x.png?s=5")},
            ],
        ],
        timeout_s=0.7,
    )
    elapsed = time.monotonic() - start
    assert [e["reason"] for e in results[0].media_errors] == ["timeout"]
    assert len(results[1].images) == 1 and results[1].media_errors == []
    assert len(results[2].audio) == 1
    assert [e["reason"] for e in results[2].media_errors] == ["timeout"]
    assert elapsed < 1.2


# -- SSRF: every refusal happens before any connection


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/img/cat.png",  # loopback, but not the allowed host name
        "http://10.0.0.1/img/cat.png",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[::1]:{port}/img/cat.png",
        "http://[::ffff:127.0.0.1]:{port}/img/cat.png",
        "http://2130706433:{port}/img/cat.png",
        "http://rebind.test:{port}/img/cat.png",  # DNS answers 10.0.0.1
        "http://meta.test/latest/meta-data/",  # DNS answers the metadata address
        "http://mixed.test/x.png",  # one public, one private answer
        "http://loop6.test:{port}/img/cat.png",
    ],
)
async def test_redirect_to_internal_address_is_refused_before_connecting(
    make_service: Any, server: Server, guard: ConnectGuard, resolver: StaticResolver, target: str
) -> None:
    svc = await make_service()
    to = target.format(port=server.port)
    url = server.url("/redirect") + "?to=" + to
    assert await one(svc, url) == "blocked_address"
    assert server.hits["/redirect"] == 1  # refused, not retried
    assert server.hits["/img/cat.png"] == 0
    assert guard.refused == []
    assert set(guard.connected) == {"127.0.0.1"}  # only the allowed test server
    host = to.split("/")[2].rsplit(":", 1)[0] if ".test" in to else None
    if host is not None:  # a DNS name: refused at connect time, on what the resolver answered
        assert resolver.calls[host] == 1
    # Direct requests are refused just the same.
    assert await one(svc, to) == "blocked_address"
    assert guard.refused == []


async def test_redirect_to_other_scheme_is_refused(make_service: Any, server: Server) -> None:
    svc = await make_service()
    for to, reason in [
        ("file:///etc/passwd", "blocked_scheme"),
        ("gopher://media.test/", "blocked_scheme"),
        ("http://user:pw@media.test/", "invalid_url"),
    ]:
        assert await one(svc, server.url("/redirect") + "?to=" + to) == reason


async def test_relative_redirect_is_followed(make_service: Any, server: Server) -> None:
    svc = await make_service()
    got = await one(svc, server.url("/redirect") + "?to=/img/dog.png")
    assert isinstance(got, np.ndarray) and got[0, 0].tolist() == [10, 90, 200]


async def test_resolver_checks_every_lookup_dns_rebinding() -> None:
    answers = iter([["93.184.215.14"], ["10.0.0.1"]])
    inner = StaticResolver({"rebind.example": lambda: next(answers)})
    r = PolicyResolver(AddressPolicy(), inner)
    first = await r.resolve("rebind.example", 80)
    assert [i["host"] for i in first] == ["93.184.215.14"]
    with pytest.raises(BlockedURL, match="blocked_address"):
        await r.resolve("rebind.example", 80)  # the second answer is internal
    exempt = PolicyResolver(POLICY, StaticResolver(DNS))
    assert [i["host"] for i in await exempt.resolve("media.test", 80)] == ["127.0.0.1"]


async def test_unknown_host_is_connection_error(make_service: Any) -> None:
    svc = await make_service()
    assert await one(svc, "http://nowhere.test/a.png") == "connection_error"


# -- cache and coalescing


async def test_same_content_under_many_urls_decoded_once(
    make_service: Any, server: Server
) -> None:
    svc = await make_service()
    urls = [server.url(f"/same/{i}.png") for i in range(10)]
    results = await svc.resolve_batch([[{"type": "image", "url": u}] for u in urls])
    assert all(len(r.images) == 1 for r in results)
    assert sum(n for p, n in server.hits.items() if p.startswith("/same/")) == 10  # once per URL
    assert decodes(svc) == 1  # once per content
    assert cache_hits(svc, "content") == 9  # fetched 10 times (the hits above), decoded once
    # Again: nothing fetched, nothing decoded.
    again = await svc.resolve_batch([[{"type": "image", "url": u}] for u in urls])
    assert all(len(r.images) == 1 for r in again)
    assert sum(n for p, n in server.hits.items() if p.startswith("/same/")) == 10
    assert cache_hits(svc, "url") == 10 and decodes(svc) == 1
    assert again[0].images[0] is results[0].images[0]  # the shared, read-only array
    assert not again[0].images[0].flags.writeable


async def test_alias_urls_fetch_the_content_once(make_service: Any, server: Server) -> None:
    svc = await make_service()
    assert isinstance(await one(svc, server.url("/alias/0")), np.ndarray)
    results = await svc.resolve_batch(
        [[{"type": "image", "url": server.url(f"/alias/{i}")}] for i in range(1, 8)]
    )
    assert all(len(r.images) == 1 for r in results)
    assert server.hits["/canon.png"] == 1  # the body: one fetch per content
    assert sum(n for p, n in server.hits.items() if p.startswith("/alias/")) == 8


async def test_concurrent_same_url_is_coalesced(make_service: Any, server: Server) -> None:
    svc = await make_service()
    url = server.url("/delay/cat.png?s=0.2")
    batch = await svc.resolve_batch([[{"type": "image", "url": url}]] * 20)
    singles = await asyncio.gather(*(one(svc, server.url("/delay/dog.png")) for _ in range(10)))
    assert all(len(r.images) == 1 for r in batch)
    assert all(isinstance(s, np.ndarray) for s in singles)
    assert server.hits["/delay/cat.png"] == 1
    assert server.hits["/delay/dog.png"] == 1
    assert decodes(svc) == 1  # two fetches (the hits above), both bodies are CAT


async def test_coalesced_waiter_leaving_does_not_cancel_the_others(
    make_service: Any, server: Server
) -> None:
    svc = await make_service()
    loop = asyncio.get_running_loop()
    url = server.url("/delay/cat.png?s=0.3")
    short = svc.resolve([{"type": "image", "url": url}], deadline=loop.time() + 0.1)
    long = svc.resolve([{"type": "image", "url": url}], deadline=loop.time() + 2.0)
    r_short, r_long = await asyncio.gather(short, long)
    assert [e["reason"] for e in r_short.media_errors] == ["timeout"]
    assert len(r_long.images) == 1
    assert server.hits["/delay/cat.png"] == 1


async def test_media_errors_are_redacted_and_extra_items_refused(
    make_service: Any, server: Server
) -> None:
    svc = await make_service(media=MediaConfig(item_timeout_s=3.0, max_items=2))
    secret = server.url("/status/404") + "?token=SECRET#frag"
    _, _, errors = await svc.resolve(
        [
            {"type": "image", "url": secret},
            {"type": "video", "url": server.url("/img/cat.png")},
            {"type": "image", "url": server.url("/img/cat.png")},
        ]
    )
    assert [e["reason"] for e in errors] == ["http_404", "unsupported_type", "too_large"]
    assert "SECRET" not in str(errors) and "/status" not in str(errors)
    assert errors[0]["url"].startswith(f"http://media.test:{server.port}/~")


# -- Redis layer (a real redis-server on a free port)


@pytest.fixture(scope="session")
async def redis_port() -> AsyncIterator[int]:
    async with EmbeddedRedis() as server:
        yield server.port


@pytest.fixture
async def media_redis(redis_port: int) -> AsyncIterator[Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis(port=redis_port, socket_timeout=2)
    await client.flushdb()
    yield client
    await client.aclose()


async def test_redis_layer_shares_decoded_media_across_workers(
    make_service: Any, server: Server, media_redis: Any
) -> None:
    # Both are stored re-encoded (WebP, 16-bit FLAC), far under 16 kB: no raw arrays in Redis.
    config = CacheConfig(redis_prefix="cftest:", redis_max_entry_bytes=16 * 1024)
    a = await make_service(cache=MediaCache(config, redis=media_redis))
    url_img, url_wav = server.url("/img/cat.png"), server.url("/audio.wav")
    refs = [{"type": "image", "url": url_img}, {"type": "audio", "url": url_wav}]
    first = await a.resolve(refs)
    assert first.media_errors == []
    h = sha256_hex(CAT)
    assert await media_redis.get(f"cftest:media:url:{sha256_hex(url_img)}") == h.encode()
    assert 0 < await media_redis.ttl(f"cftest:media:blob:{h}") <= config.redis_blob_ttl_s
    blob_wav = await media_redis.get(f"cftest:media:blob:{sha256_hex(WAV)}")
    assert len(blob_wav) < first.audio[0].nbytes / 2  # FLAC, not the 32 kB float32 array
    async for key in media_redis.scan_iter("cftest:*"):
        assert await media_redis.ttl(key) > 0, key  # the cache Redis: every key expires

    b = await make_service(cache=MediaCache(config, redis=media_redis))  # a fresh worker
    second = await b.resolve(refs)
    assert second.media_errors == []
    np.testing.assert_array_equal(second.images[0], first.images[0])
    np.testing.assert_array_equal(second.audio[0], first.audio[0])
    assert not second.audio[0].flags.writeable
    assert server.hits["/img/cat.png"] == 1  # the image came from Redis
    assert server.hits["/audio.wav"] == 1  # so did the audio: bit-identical (16-bit grid)
    assert (cache_hits(b, "url"), decodes(b)) == (2, 0)  # and no fetch: the hits above


async def test_redis_markers(media_redis: Any) -> None:
    cache = MediaCache(CacheConfig(redis_prefix="cftest:", redis_max_entry_bytes=1024),
                       redis=media_redis)
    fresh = MediaCache(cache.config, redis=media_redis)
    # Noise does not compress: 12 kB > 1 kB even as lossless WebP, Redis keeps a marker only.
    big = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    await cache.put_media("cd" * 32, CachedMedia("image", big), "v")
    marker = await fresh.get_media("cd" * 32, "v")
    assert marker == CachedMedia("image", None, None)
    assert await fresh.get_media("cd" * 32, "other-variant") is None
    await cache.put_media("ef" * 32, CachedMedia("image", reason="decode_error"), "v")
    assert (await fresh.get_media("ef" * 32, "v")).reason == "decode_error"


async def test_redis_down_is_a_miss_not_a_failure(make_service: Any, server: Server) -> None:
    import redis.asyncio as aioredis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = aioredis.Redis(port=dead_port, socket_connect_timeout=0.2)  # retries with backoff
    cache = MediaCache(CacheConfig(redis_wait_s=0.1, close_grace_s=0.1), redis=dead)
    svc = await make_service(cache=cache)
    start = time.monotonic()
    assert isinstance(await one(svc, server.url("/img/cat.png")), np.ndarray)
    assert time.monotonic() - start < 0.5
    assert cache.redis_errors == 1  # then skipped for redis_backoff_s
    await svc.stop()
    await dead.aclose()


# -- the fetcher alone: lifecycle, retries, transport injection


async def test_lifecycle_is_idempotent(resolver: StaticResolver, server: Server) -> None:
    fetcher = MediaFetcher(POLICY, FAST, resolver=resolver)
    with pytest.raises(RuntimeError):
        await fetcher.fetch(server.url("/img/cat.png"), "image")
    await fetcher.start()
    await fetcher.start()
    result = await fetcher.fetch(server.url("/img/cat.png"), "image")
    assert result.data == CAT and result.attempts == 1 and result.redirects == 0
    await fetcher.stop()
    await fetcher.stop()
    assert not fetcher.started
    with pytest.raises(RuntimeError):
        await fetcher.start()
    async with MediaFetcher(POLICY, FAST, resolver=resolver) as f2:
        assert (await f2.fetch(server.url("/redirect?to=/img/dog.png"), "image")).redirects == 1
    assert not f2.started


async def test_mock_transport_retries_with_jittered_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    answers = iter([FetchFailed("connection_error"), FetchFailed("timeout"), MockResponse(503),
                    MockResponse(200, [CAT[:10], CAT[10:]])])

    def handler(url: Any) -> MockResponse:
        answer = next(answers)
        if isinstance(answer, MediaError):
            raise answer
        return answer

    config = FetchConfig(retries=3, backoff_initial_s=0.1, backoff_max_s=0.3)
    transport = MockTransport(handler)
    async with MediaFetcher(AddressPolicy(), config, transport=transport,
                            rng=random.Random(1)) as fetcher:
        result = await fetcher.fetch("https://cdn.example.com/a.png", "image")
    assert result.data == CAT and result.attempts == 4
    assert len(transport.requests) == 4
    caps = [0.1, 0.2, 0.3]  # exponential, capped
    assert all(cap / 2 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))


async def test_mock_transport_no_retry_for_4xx_and_policy() -> None:
    transport = MockTransport(lambda url: MockResponse(404))
    async with MediaFetcher(AddressPolicy(), FAST, transport=transport) as fetcher:
        with pytest.raises(FetchFailed, match="http_404"):
            await fetcher.fetch("https://cdn.example.com/a.png", "image")
        with pytest.raises(BlockedURL, match="blocked_address"):
            await fetcher.fetch("http://10.0.0.1/a.png", "image")
    assert len(transport.requests) == 1  # the blocked URL never reached the transport


async def test_mock_transport_body_cap_aborts_the_stream() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"\x00" * 65_536

    transport = MockTransport(lambda url: MockResponse(200, endless()))
    config = FetchConfig(max_image_bytes=200_000)
    async with MediaFetcher(AddressPolicy(), config, transport=transport) as fetcher:
        with pytest.raises(FetchFailed, match="too_large") as info:
            await fetcher.fetch("https://cdn.example.com/a.png", "image")
        assert pulled == 4  # stopped at the first chunk over the cap
        # the traceback keeps the reading frame alive; the body it read is already freed
        tb, bodies = info.value.__traceback__, []
        while tb is not None:
            if tb.tb_frame.f_code.co_name == "_read_capped":
                bodies.append(tb.tb_frame.f_locals["body"])
            tb = tb.tb_next
        assert len(bodies) == 1 and len(bodies[0]) == 0
        transport2 = MockTransport(
            lambda url: MockResponse(200, b"x", {"content-length": "999999"})
        )
        async with MediaFetcher(AddressPolicy(), config, transport=transport2) as f2:
            with pytest.raises(FetchFailed, match="too_large"):
                await f2.fetch("https://cdn.example.com/a.png", "image")


async def test_mock_transport_redirects_rechecked_each_hop() -> None:
    def handler(url: Any) -> MockResponse:
        if url.path == "/start":
            return MockResponse(302, headers={"Location": "/next"})
        return MockResponse(301, headers={"Location": "http://[fd00::5]/internal"})

    transport = MockTransport(handler)
    async with MediaFetcher(AddressPolicy(), FAST, transport=transport) as fetcher:
        with pytest.raises(BlockedURL, match="blocked_address"):
            await fetcher.fetch("https://cdn.example.com/start", "image")
    assert [u.path for u in transport.requests] == ["/start", "/next"]


def test_redact_url() -> None:
    r = redact_url("https://user:pw@CDN.example.com:443/a/b.png?sig=secret#x")
    prefix = "https://cdn.example.com/~"  # default port dropped, host lower-cased
    assert r.startswith(prefix) and len(r) == len(prefix) + 12
    assert "secret" not in r and "user" not in r and "b.png" not in r
    assert redact_url("http://[::1]:8080/x").startswith("http://[::1]:8080/~")
    assert redact_url("https://h/a?x=1") != redact_url("https://h/a?x=2")
    assert redact_url("not a url") == "<invalid-url>"


async def test_single_flight_shares_one_call_and_failures() -> None:
    flights: SingleFlight[int] = SingleFlight()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 42

    assert await asyncio.gather(*(flights.do("k", work) for _ in range(5))) == [42] * 5
    assert calls == 1 and len(flights) == 0

    async def boom() -> int:
        await asyncio.sleep(0.01)
        raise FetchFailed("http_500")

    results = await asyncio.gather(*(flights.do("b", boom) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, FetchFailed) for r in results)
    # The last waiter leaving cancels the shared work.
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> int:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    waiter = asyncio.ensure_future(flights.do("s", slow))
    await started.wait()
    waiter.cancel()
    await asyncio.wait_for(cancelled.wait(), 1)
    await flights.close()


def test_decode_config_fingerprint_changes_with_settings() -> None:
    assert DecodeConfig().fingerprint() != DecodeConfig(image_max_side=224).fingerprint()
