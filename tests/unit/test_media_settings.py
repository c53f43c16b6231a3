"""``build_media_service``: every ``media_*`` setting reaches the object that enforces it."""

from __future__ import annotations

import pytest

from streamer.settings import Settings
from workers.config import MediaSettings, ProcessorConfig
from workers.media import build_media_service
from workers.media_fetch import AiohttpTransport, PolicyResolver, StaticResolver


def test_every_media_setting_is_wired() -> None:
    s = Settings(
        media_timeout_s=4.5,
        media_allow_hosts="*.hostile.test,media.test",
        media_deny_hosts="bad.test",
        media_max_image_bytes=1_000_000,
        media_max_audio_bytes=2_000_000,
        media_cache_redis=False,
        media_max_pixels=4_000_000,
        media_inflight_bytes=8_000_000,
        media_max_items_per_batch=7,
        media_max_requests_per_comment=5,
        media_per_domain_connections=3,
        media_resolve="*.hostile.test=127.0.0.1",
    )
    redis = object()
    svc = build_media_service(MediaSettings.of(s), redis)
    f = svc.fetcher
    assert (f.config.max_image_bytes, f.config.max_audio_bytes) == (1_000_000, 2_000_000)
    assert f.config.deadline_s == 4.5 and svc.config.item_timeout_s == 4.5
    assert f.budget.capacity == 8_000_000
    assert f.domains.per_domain == 3
    assert svc.config.max_items_per_batch == 7
    assert svc.config.max_requests_per_comment == 5
    assert svc.config.decode.image_max_pixels == 4_000_000
    assert f.policy.is_exempt("a.hostile.test") and f.policy.is_exempt("media.test")
    assert "bad.test" in f.policy.denied_hosts
    transport = f._transport  # noqa: SLF001 - the wiring is what this test checks
    assert isinstance(transport, AiohttpTransport)
    resolver = transport._resolver  # noqa: SLF001
    assert isinstance(resolver, PolicyResolver)  # the table's answers are still checked
    inner = resolver._inner  # noqa: SLF001
    assert isinstance(inner, StaticResolver) and inner.lookup("x.hostile.test") == ("127.0.0.1",)
    assert svc.cache._redis is None  # noqa: SLF001 - media_cache_redis=False
    with_cache = build_media_service(MediaSettings(media_cache_redis=True), redis)
    assert with_cache.cache._redis is redis  # noqa: SLF001


def test_defaults_and_a_bad_resolve_entry() -> None:
    svc = build_media_service(MediaSettings())
    assert svc.config.decode.image_max_pixels == 16_000_000
    assert svc.fetcher.budget.capacity == 96 * 1024 * 1024
    assert svc.config.max_items_per_batch == 64 and svc.config.max_requests_per_comment == 24
    assert svc.fetcher.domains.per_domain == 16
    with pytest.raises(ValueError, match="media_resolve"):
        build_media_service(MediaSettings(media_resolve="no-address-here"))


@pytest.mark.parametrize("config", [MediaSettings, ProcessorConfig])
def test_the_workers_configs_are_projections_of_the_settings(config) -> None:
    """Each field of a worker config is the Settings field of that name, with the same default."""
    s = Settings()
    assert config.of(s) == config()
    assert {n for n in Settings.__dataclass_fields__ if n.startswith("media_")} - {
        "media_enabled"
    } <= set(MediaSettings.__dataclass_fields__)
