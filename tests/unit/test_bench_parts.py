"""The pieces of ``commentflow bench`` that need no broker: the media mix, the stage means and
the CPU budget of (b)."""

from __future__ import annotations

import pytest

from commentflow.bench import _breakdown, _cpu_budget, _media_events
from workers.metrics import STAGES


def test_media_phases_carry_ten_percent_pictures_and_ten_percent_voice_notes():
    events = list(_media_events(100, "t", "new_media", 8080, True))
    kinds = [e["media"][0]["type"] for e in events if e.get("media")]
    assert kinds.count("image") == 10 and kinds.count("audio") == 10
    assert {e["media"][0]["url"].split("/")[3] for e in events if e.get("media")} == {
        "meme",
        "voice",
    }
    # the cached phase asks the very same URLs again, and the text-only phase none
    again = list(_media_events(100, "t", "cached_media", 8080, True))
    assert [e.get("media") for e in again] == [e.get("media") for e in events]
    assert not any(e.get("media") for e in _media_events(100, "t", "text_only", 8080, False))


def test_the_stage_breakdown_is_the_mean_between_two_scrapes():
    before = {s: (1.0, 10.0) for s in STAGES}
    after = {**before, "model": (3.0, 30.0), "publish": (1.5, 20.0)}
    assert _breakdown(before, after) == {
        "model": {"mean_ms": 100.0, "count": 20.0},
        "publish": {"mean_ms": 50.0, "count": 10.0},
    }


def test_the_cpu_budget_turns_cores_into_milliseconds_per_comment_and_a_bound():
    lanes = {"cpu_ms_per_comment": 1.6, "cpu_ms_per_comment_again": 1.4}
    e2e = {
        "throughput": 1000.0,
        "flood_cores": {
            "lanes": 1.4,
            "worker_other": 0.2,
            "broker": 0.05,
            "redis": 0.04,
            "redis_cache": 0.01,
            "bench": 0.1,
            "elsewhere": 0.0,
            "idle": 0.2,
            "cores": 2.0,
        },
    }
    b = _cpu_budget(lanes, e2e)
    assert b is not None
    assert b["model_alone_cpu_ms_per_comment"] == 1.4  # the faster (a) run's
    assert b["flood_cpu_ms_per_comment"]["worker_other"] == pytest.approx(0.2)
    assert b["rest_cpu_ms_per_comment"] == pytest.approx(0.3)  # the bench's client left out
    assert b["bound"] == pytest.approx(1.4 / 1.7)
    assert b["bound_worker_only"] == pytest.approx(1.4 / 1.6)
    # without the lanes' measurement (one lane) or the flood's breakdown (no /proc): none
    assert _cpu_budget(None, e2e) is None
    assert _cpu_budget(lanes, {"throughput": 1000.0, "flood_cores": None}) is None
