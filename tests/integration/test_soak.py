"""``commentflow soak`` for half a minute against the session's broker and Redis, tiny model.

Checks the report's shape and the outcome check, never the memory numbers or any timing: those
are for people to read from a long run (the README quotes one).
"""

from __future__ import annotations

import orjson

from commentflow.settings import Settings
from commentflow.soak import SoakConfig, soak
from model.testing.multimodal import make_tiny_multimodal_dir


async def test_a_short_soak_reports_samples_outcomes_and_a_plot(stack, tmp_path):
    model_dir = make_tiny_multimodal_dir(tmp_path / "model")
    out = tmp_path / "soak"
    config = SoakConfig(
        minutes=0.5,
        rate=8,
        sample_s=3,
        warmup_minutes=0.1,
        users=50,
        drain_s=90,
        ready_timeout_s=180,
        # a created_at that overflows when normalised to UTC crashes today's worker (reported)
        exclude=frozenset({"absurd_date"}),
    )
    # Settings() directly: a developer's COMMENTFLOW_* must not leak in
    report = await soak(Settings(model_dir=str(model_dir)), config, out, stack=stack)

    saved = orjson.loads((out / "soak.json").read_bytes())
    assert saved["tag"] == report["tag"]
    assert len(saved["samples"]) >= 3
    assert all(r["rss_mb"] for r in saved["samples"]), saved["samples"]
    assert all("used_memory_mb" in r["redis"]["state"] for r in saved["samples"])
    outcomes = saved["outcomes"]
    assert outcomes["ok"], (outcomes, (out / "worker.log").read_text()[-3000:])
    assert outcomes["missing"] == outcomes["unexpected"] == 0
    assert outcomes["valid_comments"] > 0 and outcomes["malformed"] > 0
    assert saved["worker_restarts"] == []
    assert saved["ok"]
    assert saved["summary"]["worker_rss_mb"]["post_warmup_samples"] >= 2
    assert (out / "soak.png").stat().st_size > 10_000
