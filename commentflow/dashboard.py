"""``commentflow dashboard``: a live web page that reads only Redis.

It reads the structures the workers maintain (README, "Redis key schema"), never ``KEYS`` or
``SCAN``, so it costs the same with a thousand users or a million, and it keeps working while
workers come and go. Endpoints::

    GET /                  the page (static HTML + vanilla JS; text is inserted with textContent)
    GET /api/snapshot      one JSON snapshot: totals, last hour by minute, top negative users,
                           user counts, the latest feed items, the entities of the last hour
                           by volume and by negative share           (4 Redis round trips)
    GET /api/user?id=...   one user: counts, trend, recent comments, top entities (1 round trip)
    GET /api/entity?key=.. one entity: counts by sentiment, NER label and modality, and the
                           latest comments that mention it           (1 round trip)
    GET /api/events        server-sent events: ``snapshot`` every ``interval_s``, and ``feed``
                           for every prediction the workers publish on ``{prefix}feed``
    GET /healthz           200 (no Redis call), for a load balancer

One background task per server computes the snapshot once per interval and reads the pub/sub
channel once, whatever the number of open pages (each page gets a bounded queue; a page too slow
to keep up loses feed items, never the snapshots that carry the truth).

Token (``dashboard_token``): when set, every endpoint but ``/healthz`` needs it, as
``Authorization: Bearer <token>``, or ``?token=<token>`` once (the answer sets an HttpOnly,
SameSite=Strict cookie derived from the token and redirects to the same URL without it).
Comparisons use :func:`hmac.compare_digest`. Put TLS in front of it when it leaves the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from commentflow.settings import Settings
from workers.entity_aggregates import EntityAggregates

__all__ = ["DashboardData", "build_app", "serve", "start"]

log = logging.getLogger("commentflow.dashboard")

LABELS = ("negative", "neutral", "positive")
COUNT_FIELDS = (*LABELS, "total", "with_image", "with_audio", "dead_letters")
COOKIE = "commentflow_dashboard"
MAX_USER_ID = 128  # the event contract's limit
MAX_ENTITY_KEY = 1000  # an entity key is at most entities_max_chars long
_STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _ints(raw: dict[bytes, bytes]) -> dict[str, int]:
    out = {}
    for k, v in raw.items():
        with contextlib.suppress(ValueError):
            out[k.decode()] = int(v)
    return out


def _item(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


class DashboardData:
    """The dashboard's reads, each a bounded number of Redis commands in one pipeline."""

    def __init__(
        self, client: aioredis.Redis, prefix: str, *, feed_items: int = 50, top: int = 10
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.feed_items = feed_items
        self.top = top
        self.entities = EntityAggregates.reader(client, prefix)

    async def snapshot(self, now_ms: int | None = None) -> dict[str, Any]:
        """Totals, the last 60 minutes, top negative users, user counts and the latest feed."""
        p = self.prefix
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        minute = now_ms // 60_000
        minutes = list(range(minute - 59, minute + 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{p}global")
            pipe.hgetall(f"{p}dead_letters")
            for m in minutes:
                pipe.hgetall(f"{p}minute:{m}")
            pipe.zrevrange(f"{p}leaderboard:negative", 0, self.top - 1, withscores=True)
            pipe.zcard(f"{p}users:last_seen")
            pipe.zcount(f"{p}users:last_seen", now_ms - 3_600_000, "+inf")
            pipe.lrange(f"{p}feed", 0, self.feed_items - 1)
            replies = await pipe.execute()
        glob, dead, *rest = replies
        per_minute, rest = rest[:60], rest[60:]
        top, known, active, feed = rest
        top_ids = [uid.decode(errors="replace") for uid, _ in top]
        totals: list[Any] = []
        if top_ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for uid in top_ids:
                    pipe.hget(f"{p}user:{uid}", "total")
                totals = await pipe.execute()
        series = []
        last_hour = dict.fromkeys((*LABELS, "total", "dead_letters"), 0)
        for m, raw in zip(minutes, per_minute, strict=True):
            counts = _ints(raw)
            row = {"minute": m, **{k: counts.get(k, 0) for k in last_hour}}
            series.append(row)
            for k in last_hour:
                last_hour[k] += row[k]
        g = _ints(glob)
        entities = await self.entities.window(now_ms, minutes=60, top=self.top, min_mentions=3)
        return {
            "now_ms": now_ms,
            "global": {k: g.get(k, 0) for k in COUNT_FIELDS},
            "dead_letters": _ints(dead),
            "minutes": series,
            "last_hour": last_hour,
            "top_negative": [
                {"user_id": uid, "negative": int(score), "total": int(t or 0)}
                for uid, (_, score), t in zip(top_ids, top, totals or [0] * len(top), strict=True)
            ],
            "users": {"known": int(known), "active_last_hour": int(active)},
            "feed": [doc for raw in feed if (doc := _item(raw)) is not None],
            "entities": entities,
        }

    async def entity(self, key: str, *, mentions: int = 20) -> dict[str, Any] | None:
        """One entity's counts and latest mentions; ``None``: unknown (or expired)."""
        found = await self.entities.entity(key, mentions=mentions)
        return found if found["counts"] else None

    async def user(self, user_id: str, *, recent: int = 50) -> dict[str, Any] | None:
        """One user's counts, recent comments (newest first) and label trend; ``None``: unknown."""
        p = self.prefix
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{p}user:{user_id}")
            pipe.lrange(f"{p}recent:{user_id}", 0, recent - 1)
            pipe.zrevrank(f"{p}leaderboard:negative", user_id)
            pipe.zrevrange(f"{p}user_entities:{user_id}", 0, self.top - 1, withscores=True)
            raw, items, rank, named = await pipe.execute()
        if not raw:
            return None
        fields = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
        counts = {k: int(fields.get(k, 0) or 0) for k in COUNT_FIELDS if k != "dead_letters"}
        docs = [doc for r in items if (doc := _item(r)) is not None]
        labels = [d.get("label") for d in reversed(docs)]  # oldest first
        half = len(labels) // 2
        return {
            "user_id": user_id,
            "counts": counts,
            "first_seen_ms": int(fields.get("first_seen_ms", 0) or 0),
            "last_seen_ms": int(fields.get("last_seen_ms", 0) or 0),
            "last_label": fields.get("last_label"),
            "negative_rank": None if rank is None else int(rank) + 1,
            "trend": {
                "labels": labels,
                "negative_share_overall": _share(counts.get("negative", 0), counts["total"]),
                "negative_share_older": _share(labels[:half].count("negative"), half),
                "negative_share_newer": _share(labels[half:].count("negative"), len(labels) - half),
            },
            "recent": docs,
            "entities": [{"key": k.decode(errors="replace"), "comments": int(n)} for k, n in named],
        }


def _share(n: int, total: int) -> float | None:
    return round(n / total, 4) if total else None


@dataclass(frozen=True, slots=True)
class _Auth:
    token: bytes
    session: str  # the cookie value: HMAC of a constant under the token (not the token itself)

    @classmethod
    def of(cls, token: str) -> _Auth | None:
        if not token:
            return None
        key = token.encode()
        session = hmac.new(key, b"commentflow-dashboard-session", hashlib.sha256).hexdigest()
        return cls(key, session)

    def check(self, supplied: str | None) -> bool:
        return supplied is not None and hmac.compare_digest(supplied.encode(), self.token)

    def check_cookie(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.session.encode())


class _Hub:
    """One snapshot per interval and one pub/sub reader, shared by every open page."""

    def __init__(self, data: DashboardData, interval_s: float) -> None:
        self.data = data
        self.interval_s = interval_s
        self.clients: set[asyncio.Queue[bytes | None]] = set()
        self.snapshot: bytes | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._snapshots()), asyncio.create_task(self._feed())]

    async def stop(self) -> None:
        for q in self.clients:
            _offer(q, None)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def fresh_snapshot(self) -> bytes:
        return orjson.dumps(await self.data.snapshot())

    async def _snapshots(self) -> None:
        while True:
            if self.clients:
                try:
                    self.snapshot = await self.fresh_snapshot()
                    message = _sse("snapshot", self.snapshot)
                except (aioredis.RedisError, OSError) as exc:
                    log.warning("snapshot failed: %s", type(exc).__name__)
                    message = _sse("status", orjson.dumps({"redis": "unavailable"}))
                for q in list(self.clients):
                    _offer(q, message)
            await asyncio.sleep(self.interval_s)

    async def _feed(self) -> None:
        channel = f"{self.data.prefix}feed"
        delay = 0.5
        while True:
            pubsub = self.data.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    event = _sse("feed", message["data"])
                    for q in list(self.clients):
                        _offer(q, event)
            except (aioredis.RedisError, OSError) as exc:
                log.warning(
                    "feed subscription lost (%s), resubscribing in %.0fs",
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


def _offer(q: asyncio.Queue[bytes | None], item: bytes | None) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        q.put_nowait(item)


async def _found_or_404(lookup: Awaitable[Any], missing: str) -> web.Response:
    """The JSON of what ``lookup`` found; 404 ``missing`` when nothing, 503 when Redis fails."""
    try:
        found = await lookup
    except (aioredis.RedisError, OSError):
        return web.json_response({"error": "redis unavailable"}, status=503)
    if found is None:
        return web.json_response({"error": missing}, status=404)
    return web.Response(body=orjson.dumps(found), content_type="application/json")


def _sse(event: str, data: bytes) -> bytes:
    # feed items and snapshots are single-line JSON: no newline can break the frame
    return b"event: " + event.encode() + b"\ndata: " + data.replace(b"\n", b" ") + b"\n\n"


def build_app(
    client: aioredis.Redis,
    prefix: str,
    *,
    token: str = "",
    interval_s: float = 1.0,
) -> web.Application:
    """The dashboard as an aiohttp application on ``client`` (closed with the app)."""
    auth = _Auth.of(token)
    data = DashboardData(client, prefix)
    hub = _Hub(data, interval_s)

    @web.middleware
    async def security(request: web.Request, handler: Any) -> web.StreamResponse:
        if auth is not None and request.path != "/healthz":
            header = request.headers.get("Authorization", "")
            bearer = header[7:] if header.startswith("Bearer ") else None
            query = request.query.get("token")
            if auth.check(query):
                # once: trade the token in the URL for a cookie, and drop it from the URL
                rest = {k: v for k, v in request.query.items() if k != "token"}
                url = request.rel_url.with_query(rest)
                response = web.HTTPSeeOther(location=str(url))
                response.set_cookie(
                    COOKIE, auth.session, httponly=True, samesite="Strict", path="/"
                )
                raise response
            if not (auth.check(bearer) or auth.check_cookie(request.cookies.get(COOKIE))):
                response = web.Response(status=401, text="a dashboard token is required\n")
                response.headers["WWW-Authenticate"] = 'Bearer realm="commentflow"'
                response.headers.update(_SECURITY_HEADERS)
                return response
        response = await handler(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def static(request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        if name not in _STATIC:
            raise web.HTTPNotFound()
        body = resources.files("commentflow").joinpath("dashboard_static", name).read_bytes()
        return web.Response(body=body, content_type=_STATIC[name])

    async def snapshot(request: web.Request) -> web.Response:
        try:
            body = await hub.fresh_snapshot()
        except (aioredis.RedisError, OSError):
            return web.json_response({"error": "redis unavailable"}, status=503)
        return web.Response(body=body, content_type="application/json")

    async def user(request: web.Request) -> web.Response:
        user_id = request.query.get("id", "")
        if not user_id or len(user_id) > MAX_USER_ID:
            return web.json_response({"error": "id: 1-128 characters"}, status=400)
        return await _found_or_404(data.user(user_id), "unknown user")

    async def entity(request: web.Request) -> web.Response:
        key = request.query.get("key", "")
        if not key or len(key) > MAX_ENTITY_KEY:
            return web.json_response({"error": f"key: 1-{MAX_ENTITY_KEY} characters"}, status=400)
        return await _found_or_404(data.entity(key), "unknown entity")

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "X-Accel-Buffering": "no",
                **_SECURITY_HEADERS,
            }
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=500)
        hub.clients.add(queue)
        try:
            await response.write(b"retry: 2000\n\n")
            if hub.snapshot is not None:
                await response.write(_sse("snapshot", hub.snapshot))
            while (message := await queue.get()) is not None:
                await response.write(message)
        except ConnectionResetError:
            pass  # the page went away
        finally:
            hub.clients.discard(queue)
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def on_startup(app: web.Application) -> None:
        hub.start()

    async def on_shutdown(app: web.Application) -> None:
        await hub.stop()

    async def on_cleanup(app: web.Application) -> None:
        await client.aclose()

    app = web.Application(middlewares=[security])
    app.router.add_get("/", static)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/user", user)
    app.router.add_get("/api/entity", entity)
    app.router.add_get("/api/events", events)
    app.router.add_get("/healthz", healthz)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def start(settings: Settings, *, port: int | None = None) -> tuple[web.AppRunner, str]:
    """Serve the dashboard for ``settings`` in this event loop; returns the runner and its URL.

    ``port``: overrides ``dashboard_port`` (0: any free port).
    """
    client = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=15
    )
    app = build_app(client, settings.redis_prefix, token=settings.dashboard_token)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.dashboard_host, settings.dashboard_port if port is None else port
    )
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    host, bound = runner.addresses[0][:2]
    return runner, f"http://{host}:{bound}/"


def serve(settings: Settings, duration: float | None = None) -> int:
    """Serve the dashboard until SIGINT/SIGTERM or ``duration`` seconds; the exit status."""
    return asyncio.run(_serve(settings, duration))


async def _serve(settings: Settings, duration: float | None) -> int:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner, url = await start(settings)
    note = " (token required)" if settings.dashboard_token else ""
    print(f"commentflow dashboard on {url}{note}", flush=True)
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
    finally:
        await runner.cleanup()
    return 0
