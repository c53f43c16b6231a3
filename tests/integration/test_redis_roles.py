"""The two Redis roles of the embedded stack (state: noeviction; cache: bounded, allkeys-lru)
and a lone :class:`~commentflow.stack.EmbeddedRedis`."""

from __future__ import annotations

import redis.asyncio as aioredis

from commentflow.stack import EmbeddedRedis, EmbeddedStack


async def _config(url: str, *names: str) -> dict[str, str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        out: dict[str, str] = {}
        for name in names:
            out.update(await client.config_get(name))
        return out
    finally:
        await client.aclose()


async def test_stack_runs_a_state_and_a_cache_redis(stack: EmbeddedStack, make_settings) -> None:
    assert stack.redis_cache_url != stack.redis_url
    assert stack.redis_cache_process is not None and stack.redis_cache_process.poll() is None
    state = await _config(stack.redis_url, "maxmemory-policy", "appendonly", "save")
    assert state == {"maxmemory-policy": "noeviction", "appendonly": "no", "save": ""}
    cache = await _config(stack.redis_cache_url, "maxmemory-policy", "maxmemory", "appendonly")
    assert cache == {
        "maxmemory-policy": "allkeys-lru",
        "maxmemory": str(256 * 1024 * 1024),
        "appendonly": "no",
    }
    assert stack.env()["COMMENTFLOW_REDIS_CACHE_URL"] == stack.redis_cache_url
    settings = make_settings()
    assert (settings.redis_url, settings.redis_cache_url) == (
        stack.redis_url,
        stack.redis_cache_url,
    )


def test_env_for_stack_names_the_cache(stack: EmbeddedStack, env_for_stack) -> None:
    assert env_for_stack["COMMENTFLOW_REDIS_CACHE_URL"] == stack.redis_cache_url


async def test_embedded_redis_alone() -> None:
    server = EmbeddedRedis()
    async with server:
        client = aioredis.Redis.from_url(server.url)
        try:
            assert await client.ping() is True
        finally:
            await client.aclose()
        process = server.process
    assert process is not None and process.poll() is not None
    await server.stop()  # idempotent
