"""The media worker's bounds, unit by unit: byte budget, decode pool, audio rates, reduced
decoding, compact cache payloads (the end-to-end checks are in tests/integration/)."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from model.media.resample import _polyphase
from workers.address_policy import DecodeFailed, MediaBusy, MediaError
from workers.media_cache import CachedMedia, decode_media, encode_media, encode_payload
from workers.media_decode import (
    AUDIO_RATES,
    DecodeConfig,
    DecodePool,
    decode_audio,
    decode_image,
    quantize_pcm16,
    resample,
)
from workers.media_fetch import ByteBudget, RequestBudget

# -- byte budget


async def test_byte_budget_is_fifo_and_never_over_capacity() -> None:
    budget = ByteBudget(100)
    a = await budget.reserve(60)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        r = await budget.reserve(n)
        order.append(name)
        assert budget.used <= budget.capacity
        await asyncio.sleep(0.01)
        r.release()

    tasks = [asyncio.ensure_future(take("big", 90)), asyncio.ensure_future(take("small", 10))]
    await asyncio.sleep(0.01)
    assert order == []  # "small" would fit, but "big" came first: no starvation of big bodies
    a.release()
    a.release()  # idempotent
    await asyncio.gather(*tasks)
    assert order == ["big", "small"] and budget.used == 0 and budget.high_water == 100


async def test_byte_budget_deadline_shrink_and_clamp() -> None:
    budget = ByteBudget(100)
    held = await budget.reserve(80)
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await budget.reserve(50, loop.time() + 0.02)
    assert budget.waiting == 0 and budget.used == 80  # the timed-out waiter left no trace
    held.shrink(30)  # the body was smaller than reserved
    assert budget.used == 30
    late = asyncio.ensure_future(budget.reserve(70))
    await asyncio.sleep(0)
    assert late.done()
    (await late).release()
    held.release()
    huge = await budget.reserve(10**9)  # clamped: waits for (and takes) the whole budget
    assert huge.nbytes == 100 and budget.used == 100
    huge.release()
    assert budget.used == 0


def test_request_budget() -> None:
    requests = RequestBudget(2)
    requests.take()
    requests.take()
    with pytest.raises(MediaBusy, match="request_limit"):
        requests.take()


# -- decode pool


async def test_hung_decode_frees_its_slot_and_abandoned_ones_are_bounded() -> None:
    release = threading.Event()
    started = threading.Event()

    def hang(x: int) -> np.ndarray:
        started.set()
        release.wait(10)
        return np.full(1, x)

    def fast(x: int) -> np.ndarray:
        return np.full(1, x)

    pool = DecodePool(workers=1, max_abandoned=1)
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(MediaError, match="timeout"):
            await pool.run(hang, 1, deadline=loop.time() + 0.05)
        assert started.wait(1) and pool.abandoned == 1
        # The one slot is free again: a new decode does not wait behind the hung one.
        t0 = time.monotonic()
        assert (await pool.run(fast, 2, deadline=loop.time() + 1.0))[0] == 2
        assert time.monotonic() - t0 < 0.5
        # A second hang: now both threads are stuck, so new work is refused at once, not queued.
        with pytest.raises(MediaError, match="timeout"):
            await pool.run(hang, 3, deadline=loop.time() + 0.05)
        assert pool.abandoned == 2
        with pytest.raises(MediaBusy, match="busy"):
            await pool.run(fast, 4, deadline=loop.time() + 1.0)
        assert pool.refused == 1
        release.set()  # the hung decodes end: their threads come back
        for _ in range(100):
            if pool.abandoned == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.abandoned == 0
        assert (await pool.run(fast, 5, deadline=loop.time() + 1.0))[0] == 5
    finally:
        release.set()
        pool.close()


async def test_decode_pool_slot_wait_counts_against_the_deadline() -> None:
    release = threading.Event()
    pool = DecodePool(workers=1, max_abandoned=2)
    loop = asyncio.get_running_loop()
    try:
        slow = asyncio.ensure_future(
            pool.run(lambda: (release.wait(5), np.zeros(1))[1], deadline=loop.time() + 5)
        )
        await asyncio.sleep(0.05)
        with pytest.raises(MediaBusy, match="busy"):  # never got the slot
            await pool.run(np.zeros, 1, deadline=loop.time() + 0.05)
        release.set()
        assert (await slow).shape == (1,)
    finally:
        release.set()
        pool.close()


# -- audio sample rates


def _wav(rate: int, seconds: float = 1.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def test_odd_sample_rate_is_refused_before_any_filter_is_built() -> None:
    data = _wav(191_999, 0.2)
    before = _polyphase.cache_info()
    with pytest.raises(DecodeFailed, match="unsupported_sample_rate"):
        decode_audio(data)
    after = _polyphase.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)  # no filter built
    with pytest.raises(DecodeFailed, match="unsupported_sample_rate"):
        resample(np.zeros(10, np.float32), 191_999, 16_000)


def test_every_common_rate_decodes_with_a_small_filter() -> None:
    for rate in sorted(AUDIO_RATES):
        out = decode_audio(_wav(rate, 0.1))
        assert abs(out.size - 1_600) <= 2, rate
    coef, _half = _polyphase(640, 441)  # 11025 -> 16000, the largest ratio of the set
    assert coef.nbytes < 100_000
    assert _polyphase.cache_info().maxsize == 16
    with pytest.raises(ValueError, match="AUDIO_RATES"):
        DecodeConfig(audio_sample_rate=17_000)


# -- images: reduced before any full-size conversion


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _reference(im: Image.Image, max_side: int = 448) -> np.ndarray:
    """The straightforward pipeline: composite on white at full size, then resize."""
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.int16)


def test_alpha_image_reduced_in_strips_matches_the_full_size_pipeline() -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (1000, 1800, 4), dtype=np.uint8)  # reduced by 2, strip by strip
    rgba[:, :600, 3] = 0  # a fully transparent third, with colours that must not bleed
    rgba[:, 600:1200, 3] = 255
    im = Image.fromarray(rgba, "RGBA")
    got = decode_image(_png(im))
    ref = _reference(im)
    assert got.shape == ref.shape == (249, 448, 3)
    assert np.abs(got.astype(np.int16) - ref).mean() < 2.0
    assert got[:, 5:140].min() >= 250  # the transparent part is white


def test_palette_image_with_transparency_reduced_in_strips() -> None:
    im = Image.new("P", (2500, 1800), 1)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(0, (0, 0, 1250, 1800))
    im.info["transparency"] = 0  # the red left half is transparent
    got = decode_image(_png(im))
    assert got.shape == (323, 448, 3)
    assert got[:, :200].min() >= 250  # white, not red
    assert (got[:, 300:] == [0, 0, 255]).all()


# -- compact cache payloads


def test_cached_media_round_trip_is_bit_identical_and_compact() -> None:
    yy, xx = np.mgrid[0:336, 0:448]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8)
    meta, back = decode_media(encode_media(CachedMedia("image", image), {"variant": "v"}))
    assert meta["variant"] == "v" and back.kind == "image" and back.reason is None
    np.testing.assert_array_equal(back.array, image)
    assert not back.array.flags.writeable
    t = np.arange(16_000 * 5) / 16_000
    audio = quantize_pcm16((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    blob = encode_media(CachedMedia("audio", audio), {})
    _, back = decode_media(blob)
    np.testing.assert_array_equal(back.array, audio)
    assert back.array.dtype == np.float32
    assert len(blob) < audio.nbytes / 2
    assert np.abs(quantize_pcm16(np.array([0.1234567], np.float32)) - 0.1234567).max() < 1.6e-5
    _, marker = decode_media(encode_media(CachedMedia("image", reason="decode_error"), {}))
    assert marker == CachedMedia("image", None, "decode_error")
    with pytest.raises(ValueError, match="raw arrays"):  # the old format is a miss, not a hit
        decode_media(encode_payload(image, {"kind": "image"}))
