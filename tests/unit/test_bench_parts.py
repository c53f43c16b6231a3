"""The pieces of ``commentflow bench`` that need no broker: the media mix and the stage means."""

from __future__ import annotations

from commentflow.bench import _breakdown, _media_events
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
