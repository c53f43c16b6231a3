"""Micro-benchmark: media fetch + decode throughput, cold cache vs warm cache.

``python -m workers.media_bench [N]`` serves N distinct items (3 JPEG photos, 1024x768, for every
WAV clip, 5 s at 44.1 kHz) from a local aiohttp server on 127.0.0.1 and resolves them all through
one :class:`~workers.media.MediaService`, twice: cold (fetch + decode every item) and warm (the
same URLs again: in-process cache hits). Prints items/s of both and their ratio.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time

import numpy as np
from aiohttp import web
from PIL import Image

from workers.address_policy import AddressPolicy
from workers.media import MediaConfig, MediaService
from workers.media_fetch import FetchConfig, MediaFetcher

__all__ = ["bench_media"]


def _content(n: int, audio_every: int) -> dict[str, tuple[bytes, str]]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:768, 0:1024]
    texture = rng.integers(0, 24, (768, 1024, 1), dtype=np.uint8)  # JPEG-realistic entropy
    t = np.arange(5 * 44_100) / 44_100
    items: dict[str, tuple[bytes, str]] = {}
    for i in range(n):
        buf = io.BytesIO()
        if audio_every and i % audio_every == audio_every - 1:
            import soundfile as sf

            tone = 0.3 * np.sin(2 * np.pi * (200 + i) * t)
            sf.write(buf, np.stack([tone, tone], 1).astype(np.float32), 44_100, format="WAV")
            items[f"/a/{i}.wav"] = (buf.getvalue(), "audio")
        else:
            base = np.stack([(xx + i) % 256, (yy + 3 * i) % 256, (xx + yy + i // 256) % 256], -1)
            Image.fromarray((base + texture).astype(np.uint8)).save(buf, "JPEG", quality=85)
            items[f"/i/{i}.jpg"] = (buf.getvalue(), "image")
    return items


async def _bench(n: int, audio_every: int, batch: int) -> dict[str, float]:
    items = _content(n, audio_every)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=items[request.path][0])

    app = web.Application()
    app.router.add_get("/{kind}/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    refs = [{"type": kind, "url": f"http://127.0.0.1:{port}{path}"} for path, (_, kind) in
            items.items()]
    policy = AddressPolicy(allow_hosts_any_address=frozenset({"127.0.0.1"}))
    fetcher = MediaFetcher(policy, FetchConfig(limit_per_host=32))
    rates: dict[str, float] = {}
    try:
        async with MediaService(fetcher, config=MediaConfig(item_timeout_s=60)) as svc:
            for phase in ("cold", "warm"):
                start = time.perf_counter()
                for lo in range(0, len(refs), batch):
                    results = await svc.resolve_batch([[r] for r in refs[lo : lo + batch]])
                    failed = [e for r in results for e in r.media_errors]
                    if failed:
                        raise RuntimeError(f"bench items failed: {failed[:3]}")
                rates[phase] = len(refs) / (time.perf_counter() - start)
            stats = svc.stats
    finally:
        await runner.cleanup()
    rates["ratio"] = rates["warm"] / rates["cold"]
    print(
        f"media bench: {n} items ({stats.fetches} fetched, {stats.decodes} decoded, "
        f"{stats.url_hits} cache hits), batches of {batch}\n"
        f"  cold (fetch + decode): {rates['cold']:10.1f} items/s\n"
        f"  warm (cache hits):     {rates['warm']:10.1f} items/s\n"
        f"  warm / cold:           {rates['ratio']:10.1f}x"
    )
    return rates


def bench_media(n: int = 200, *, audio_every: int = 4, batch: int = 64) -> dict[str, float]:
    """Run the benchmark on ``n`` items; returns ``{"cold": items/s, "warm": items/s, "ratio"}``."""
    return asyncio.run(_bench(n, audio_every, batch))


if __name__ == "__main__":
    bench_media(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
