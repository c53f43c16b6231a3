"""The soak's bookkeeping without a broker: the outcome check and the memory summary."""

from __future__ import annotations

import pytest

from commentflow.soak import summarize
from commentflow.soak_traffic import MALFORMED, Ledger, Planned, Traffic
from workers.validation import parse_event


def _planned(category: str, cid: str, expect: str) -> Planned:
    return Planned(category, "text", b"{}", b"u", cid, expect)


def test_the_check_finds_missing_unexpected_and_duplicate_outcomes():
    ledger = Ledger("in")
    ledger.on_sent(_planned("text", "a", "prediction"), 0, 0)
    ledger.on_sent(_planned("text", "b", "prediction"), 0, 1)
    ledger.on_sent(_planned("duplicate", "a", "nothing"), 0, 2)
    ledger.on_sent(_planned("malformed", "bad-1", "dead_letter"), 1, 0)
    ledger.on_sent(_planned("malformed", "bad-2", "dead_letter"), 1, 1)
    ledger.on_sent(_planned("text", "c", "prediction"), 1, 2)
    for cid in ("a", "a", "bad-2"):
        ledger.on_prediction({"comment_id": cid, "modalities": ["text"], "media_errors": []})
    ledger.on_dead_letter({"source": {"topic": "in", "partition": 1, "offset": 0}, "error": {}})
    ledger.on_dead_letter({"source": {"topic": "in", "partition": 1, "offset": 2}, "error": {}})
    ledger.on_dead_letter({"source": {"topic": "other", "partition": 0, "offset": 1}})

    check = ledger.check()
    assert not check["ok"]
    assert [m["comment_id"] for m in check["missing_examples"]] == ["b"]
    assert sorted(u["comment_id"] for u in check["unexpected_examples"]) == ["bad-2", "c"]
    assert check["duplicate_predictions"] == 1
    assert ledger.backlog == 1  # 5 outcomes due, 4 distinct ones seen (a, bad-2, two dead letters)


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_every_malformed_kind_is_rejected_by_the_contract(kind):
    value = MALFORMED[kind]("soak-x-bad-1")
    with pytest.raises(Exception, match=".") as info:
        parse_event(value, max_bytes=256 * 1024)
    assert type(info.value).__name__ in {
        "InvalidJson", "InvalidEncoding", "SchemaViolation", "TooLarge", "UnsupportedSchema",
    }  # fmt: skip


def test_traffic_mixes_every_category_and_honours_exclude():
    traffic = Traffic(
        "t",
        lambda host, path: f"http://{host}:1{path}",
        hosts=("media.soak.test",),
        wildcard_domain="wild.soak.test",
        exclude=frozenset({"absurd_date", "slow"}),
        duplicate_after=20,
    )
    seen = [next(traffic) for _ in range(3000)]
    assert {p.category for p in seen} == {"text", "good_media", "hostile_media", "malformed",
                                          "duplicate"}  # fmt: skip
    assert not any(p.kind == "absurd_date" or "slow" in p.kind for p in seen)
    valid = [p for p in seen if p.expect == "prediction"]
    assert len({p.comment_id for p in valid}) == len(valid)
    assert {p.comment_id for p in seen if p.category == "duplicate"} <= {
        p.comment_id for p in valid
    }
    with pytest.raises(ValueError, match="unknown"):
        Traffic("t", str, hosts=("h",), wildcard_domain="w", exclude=frozenset({"nope"}))


def test_summary_growth_and_slope_after_warm_up():
    def row(t: float, rss: float, phase: str = "run") -> dict:
        redis = {"state": {"used_memory_mb": 1.0, "maxmemory_mb": 0, "policy": "noeviction"}}
        return {"t_s": t, "phase": phase, "restarted": False, "rss_mb": rss, "threads": 4,
                "fds": 9, "redis": redis, "produced": 10 * t, "predicted": 9 * t,
                "dead_lettered": 0, "backlog": 0}  # fmt: skip

    rows = [row(t, 100 + (t if t >= 60 else 3 * t)) for t in range(0, 181, 10)]
    rows.append(row(190, 999, phase="drain"))
    rss = summarize(rows, warmup_s=60)["worker_rss_mb"]
    assert rss["at_warmup_end"] == 160 and rss["end"] == 280 and rss["max"] == 999
    assert rss["growth_after_warmup_pct"] == pytest.approx(75.0)
    assert rss["slope_per_h"] == pytest.approx(3600.0)
    assert rss["post_warmup_samples"] == 13
