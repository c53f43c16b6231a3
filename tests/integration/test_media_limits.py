"""The media worker's shared limits against a REAL local aiohttp server: bytes in flight, busy,
per-domain fairness under a wildcard domain, per-batch and per-comment caps, negative cache.

The server listens on 127.0.0.1 only; hosts reach it through the production
:class:`~workers.media_fetch.StaticResolver` (``*.evil.test=127.0.0.1``, like the
``media_resolve`` setting) and are allowed onto loopback by ``*.domain`` patterns. A connect
guard refuses (and records) any non-loopback address.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from PIL import Image
from support.stream import wait_for

from workers.address_policy import AddressPolicy, registrable_domain
from workers.media import MediaConfig, MediaService
from workers.media_cache import CacheConfig, MediaCache
from workers.media_fetch import (
    ByteBudget,
    FetchConfig,
    MediaFetcher,
    StaticResolver,
    parse_resolve,
)

pytestmark = pytest.mark.integration


def _png(size: tuple[int, int], seed: int | None = None) -> bytes:
    if seed is None:
        im = Image.new("RGB", size, (200, 120, 40))
    else:  # noise: a body of about 3 bytes per pixel
        rng = np.random.default_rng(seed)
        im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


CAT = _png((64, 48))
BIG = _png((256, 256), seed=1)  # ~197 kB


class Server:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.active: Counter[str] = Counter()  # requests in flight, by registrable domain
        self.high_water: Counter[str] = Counter()
        self.port = 0

    def url(self, path: str, host: str = "media.test") -> str:
        return f"http://{host}:{self.port}{path}"


def _app(server: Server) -> web.Application:
    @web.middleware
    async def track(request: web.Request, handler: Any) -> web.StreamResponse:
        domain = registrable_domain(request.host.rsplit(":", 1)[0])
        server.hits[request.path] += 1
        server.active[domain] += 1
        server.high_water[domain] = max(server.high_water[domain], server.active[domain])
        try:
            return await handler(request)
        finally:
            server.active[domain] -= 1

    async def big(request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)
        return web.Response(body=BIG, content_type="image/png")

    async def chunked(request: web.Request) -> web.StreamResponse:  # no Content-Length
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(BIG), 65_536):
            await resp.write(BIG[i : i + 65_536])
            await asyncio.sleep(0.005)
        await resp.write_eof()
        return resp

    async def slow_body(request: web.Request) -> web.StreamResponse:  # holds its budget
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = len(BIG)
        await resp.prepare(request)
        try:
            await resp.write(BIG[:1000])
            await asyncio.sleep(float(request.query.get("s", "1.0")))
            await resp.write(BIG[1000:])
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.Response(body=CAT, content_type="image/png")

    async def cat(request: web.Request) -> web.Response:
        return web.Response(body=CAT, content_type="image/png")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/hop/{int(request.match_info['n']) + 1}")

    app = web.Application(middlewares=[track])
    app.router.add_get("/big/{i}", big)
    app.router.add_get("/chunked/{i}", chunked)
    app.router.add_get("/slow-body/{i}", slow_body)
    app.router.add_get("/slow/{i}", slow)
    app.router.add_get("/cat/{i}", cat)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/hop/{n}", hop)
    return app


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[Server]:
    srv = Server()
    runner = web.AppRunner(_app(srv), shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = runner.addresses[0][1]
    yield srv
    await runner.cleanup()


@pytest.fixture(autouse=True)
async def guard(monkeypatch: pytest.MonkeyPatch, server: Server) -> AsyncIterator[list[str]]:
    refused: list[str] = []
    loop = asyncio.get_running_loop()
    real = loop.sock_connect

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            refused.append(host)
            raise ConnectionRefusedError(f"test guard: no traffic to {host}")
        return await real(sock, address)

    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    server.hits.clear()
    server.high_water.clear()
    yield refused
    assert refused == [], "a test tried to connect off loopback"


RESOLVE = "media.test=127.0.0.1,*.evil.test=127.0.0.1,good.test=127.0.0.1"
POLICY = AddressPolicy(allow_hosts_any_address=frozenset({"media.test", "*.evil.test",
                                                          "good.test"}))
FAST = FetchConfig(
    connect_timeout_s=2.0, read_timeout_s=2.0, attempt_timeout_s=5.0, deadline_s=10.0,
    max_image_bytes=256 * 1024, retries=2, backoff_initial_s=0.01, backoff_max_s=0.05,
)


@pytest.fixture
async def make_service() -> AsyncIterator[Callable[..., Any]]:
    services: list[MediaService] = []

    async def make(
        fetch: FetchConfig = FAST,
        media: MediaConfig | None = None,
        cache: MediaCache | None = None,
        budget: ByteBudget | None = None,
    ) -> MediaService:
        fetcher = MediaFetcher(POLICY, fetch, resolver=StaticResolver(parse_resolve(RESOLVE)),
                               rng=random.Random(0), budget=budget)
        svc = MediaService(fetcher, cache, config=media or MediaConfig(item_timeout_s=10.0))
        await svc.start()
        services.append(svc)
        return svc

    yield make
    for svc in services:
        await svc.stop()


def reasons(results: list[Any]) -> list[list[str]]:
    return [[e["reason"] for e in r.media_errors] for r in results]


# -- bytes in flight


@pytest.mark.parametrize("path", ["/big/{}", "/chunked/{}"])
async def test_bodies_in_flight_never_exceed_the_byte_budget(
    make_service: Any, server: Server, path: str
) -> None:
    # 600 kB: three bodies with a Content-Length (197 kB each), two without (256 kB reserved).
    budget = ByteBudget(600 * 1024)
    svc = await make_service(budget=budget)
    urls = [server.url(path.format(i)) for i in range(30)]
    results = await svc.resolve_batch([[{"type": "image", "url": u}] for u in urls])
    assert reasons(results) == [[]] * 30 and all(len(r.images) == 1 for r in results)
    assert sum(server.hits.values()) == 30
    assert 2 * len(BIG) <= budget.high_water <= budget.capacity  # used, never exceeded
    assert budget.used == 0 and budget.waiting == 0  # every reservation came back
    print(f"budget high water {path}: {budget.high_water} of {budget.capacity} bytes")


async def test_no_budget_before_the_deadline_is_busy(make_service: Any, server: Server) -> None:
    budget = ByteBudget(300 * 1024)  # one body at a time
    svc = await make_service(budget=budget)
    loop = asyncio.get_running_loop()
    holder = asyncio.ensure_future(
        svc.resolve([{"type": "image", "url": server.url("/slow-body/0?s=1.0")}])
    )
    # the holder has its headers and its reservation
    await wait_for(lambda: budget.used == len(BIG), timeout_s=5, interval_s=0.01)
    assert budget.used == len(BIG)
    starved = await svc.resolve(
        [{"type": "image", "url": server.url("/big/starved")}], deadline=loop.time() + 0.4
    )
    assert reasons([starved]) == [["busy"]]
    assert reasons([await holder]) == [[]]
    # busy is transient: not remembered, the same URL works once there is budget
    again = await svc.resolve([{"type": "image", "url": server.url("/big/starved")}])
    assert reasons([again]) == [[]] and budget.used == 0


# -- fairness between domains


async def test_a_wildcard_domain_cannot_take_the_connection_pool(
    make_service: Any, server: Server
) -> None:
    fetch = FetchConfig(
        connect_timeout_s=5.0, read_timeout_s=5.0, attempt_timeout_s=10.0, deadline_s=20.0,
        limit=100, limit_per_host=8, limit_per_domain=4,
    )
    svc = await make_service(fetch=fetch, media=MediaConfig(item_timeout_s=20.0,
                                                            max_items_per_batch=500))
    evil = [[{"type": "image", "url": server.url(f"/slow/{i}", f"a{i}.evil.test")}]
            for i in range(200)]
    loop = asyncio.get_running_loop()
    flood = asyncio.ensure_future(svc.resolve_batch(evil))
    await wait_for(lambda: server.high_water["evil.test"] >= 4, timeout_s=5, interval_s=0.01)
    t0 = loop.time()
    good = await svc.resolve([{"type": "image", "url": server.url("/slow/g", "good.test")}])
    good_s = loop.time() - t0
    assert not flood.done()  # the flood is still going on ...
    assert reasons([good]) == [[]]  # ... and the other domain was served meanwhile
    results = await flood
    assert reasons(results) == [[]] * 200
    assert server.high_water["evil.test"] == 4  # 200 hosts, one domain budget
    assert svc.fetcher.domains.high_water["evil.test"] == 4
    assert good_s < 1.0, good_s  # one request of 50 ms, not the flood's 2.5 s


# -- caps per batch and per comment


async def test_batch_limit_in_reference_order(make_service: Any, server: Server) -> None:
    svc = await make_service(media=MediaConfig(item_timeout_s=5.0, max_items_per_batch=3))
    batch = [
        [{"type": "image", "url": server.url(f"/cat/{c}-{i}")} for i in range(2)]
        for c in range(3)
    ]
    results = await svc.resolve_batch(batch)
    assert reasons(results) == [[], ["batch_limit"], ["batch_limit", "batch_limit"]]
    assert [len(r.images) for r in results] == [2, 1, 0]
    assert sum(server.hits.values()) == 3
    # batch_limit is not remembered: the next batch gets those items
    again = await svc.resolve_batch(batch[2:])
    assert reasons(again) == [[]]


async def test_request_limit_counts_attempts_and_redirect_hops(
    make_service: Any, server: Server
) -> None:
    fetch = FetchConfig(max_redirects=10, retries=2, backoff_initial_s=0.01, backoff_max_s=0.02)
    svc = await make_service(fetch=fetch, media=MediaConfig(max_requests_per_comment=4))
    got = await svc.resolve([{"type": "image", "url": server.url("/hop/0")}])
    assert reasons([got]) == [["request_limit"]]
    assert sum(n for p, n in server.hits.items() if p.startswith("/hop/")) == 4
    server.hits.clear()
    # Retries count too: the third attempt of a 500 has no request left.
    svc2 = await make_service(fetch=fetch, media=MediaConfig(max_requests_per_comment=2))
    got = await svc2.resolve([{"type": "image", "url": server.url("/status/500")}])
    assert reasons([got]) == [["request_limit"]]
    assert server.hits["/status/500"] == 2
    # The budget is per comment: the next comment has its own.
    got = await svc2.resolve([{"type": "image", "url": server.url("/cat/next")}])
    assert reasons([got]) == [[]]


# -- negative cache


async def test_a_404_is_fetched_again_once_the_negative_ttl_passed(
    make_service: Any, server: Server
) -> None:
    now = [1000.0]
    cache = MediaCache(CacheConfig(negative_ttl_s=60.0), clock=lambda: now[0])
    svc = await make_service(cache=cache)
    ref = [{"type": "image", "url": server.url("/status/404")}]
    for t in (0, 10, 30, 50, 59.9):  # comments keep asking: answered from the negative cache
        now[0] = 1000.0 + t
        assert reasons([await svc.resolve(ref)]) == [["http_404"]]
    assert server.hits["/status/404"] == 1
    now[0] = 1060.0  # 60 s after the failure, though the last ask was 0.1 s ago
    assert reasons([await svc.resolve(ref)]) == [["http_404"]]
    assert server.hits["/status/404"] == 2


@pytest.mark.parametrize("code", [500, 503, 429, 408])
async def test_transient_failures_are_never_remembered(
    make_service: Any, server: Server, code: int
) -> None:
    fetch = FetchConfig(retries=0)
    svc = await make_service(fetch=fetch)
    ref = [{"type": "image", "url": server.url(f"/status/{code}")}]
    for _ in range(3):
        assert reasons([await svc.resolve(ref)]) == [[f"http_{code}"]]
    assert server.hits[f"/status/{code}"] == 3
