"""The dashboard's "what people are talking about" panel in headless Chromium.

Fed through the real entity aggregates (:class:`workers.aggregates.AggregateStore` on the real
Redis), with hostile entity names and comment texts: the rankings by volume and by negative
share, the drill-down to the comments that name an entity, and escaping (entity text is user
text: it must show as literal text, and no script may run). Saves a screenshot of the panel
under ``runs/`` (and to ``docs/dashboard-entities.png`` when ``COMMENTFLOW_UPDATE_SCREENSHOT=1``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest
from playwright.async_api import async_playwright

from commentflow import dashboard
from workers.aggregates import AggregateStore, PredictionRecord
from workers.entity_aggregates import EntityRecord

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="window.__xss=1;alert(2)">'
HOSTILE_NAME = '<img src=x onerror="window.__xss=1;alert(3)">'


def _record(i: int, label: str, name: str, key: str, text: str) -> PredictionRecord:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    item = {
        "comment_id": f"e{i}",
        "user_id": f"user-{i % 5}",
        "label": label,
        "scores": {label: 1.0},
        "modalities": ["text"],
        "text": text,
        "created_at": now,
        "processed_at": now,
    }
    return PredictionRecord(
        f"e{i}",
        f"user-{i % 5}",
        label,
        ("text",),
        orjson.dumps(item),
        (EntityRecord(key, name, ("ORG",), ("text",)),),
    )


def _records() -> list[PredictionRecord]:
    plan = [  # (name, key, negative, other)
        ("DHL", "dhl", 6, 2),
        ("Taylor Swift", "taylor swift", 1, 9),
        ("Amazon", "amazon", 3, 4),
        (HOSTILE_NAME, "img src=x", 2, 1),
        (SCRIPT, "script", 1, 0),
    ]
    out, i = [], 0
    for name, key, negative, other in plan:
        for label in ["negative"] * negative + ["positive"] * other:
            text = f"comment {i} about {name}" if name != "DHL" else f"{IMG} the DHL courier"
            out.append(_record(i, label, name, key, text))
            i += 1
    return out


@pytest.fixture(scope="module")
def chromium() -> str:
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: make system-deps"
    return CHROMIUM


async def test_entity_panel_in_chromium(stack, names, make_settings, redis_client, chromium):
    settings = make_settings()
    store = AggregateStore(
        redis_client,
        prefix=settings.redis_prefix,
        dedup_ttl_s=3600,
        recent_per_user=5,
        feed_length=50,
        minute_ttl_s=7200,
    )
    records = _records()
    now_ms = int(time.time() * 1000)
    await store.apply(records, [], now_ms=now_ms)
    await store.apply(records[:10], [], now_ms=now_ms)  # a redelivery: no change
    runner, url = await dashboard.start(settings, port=0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                dialogs: list[str] = []

                async def on_dialog(dialog) -> None:
                    dialogs.append(dialog.message)
                    await dialog.dismiss()

                page.on("dialog", on_dialog)
                await page.goto(url)
                await page.wait_for_selector("#ent-volume li", timeout=30_000)

                async def names_in(list_id: str) -> list[str]:
                    return await page.eval_on_selector_all(
                        f"#{list_id} .ent-name", "els => els.map(e => e.textContent)"
                    )

                assert await names_in("ent-volume") == [
                    "Taylor Swift",
                    "DHL",
                    "Amazon",
                    HOSTILE_NAME,
                    SCRIPT,
                ]
                # 3+ comments only; DHL 6/8, the hostile one 2/3, Amazon 3/7, Taylor Swift 1/10
                assert await names_in("ent-negative") == [
                    "DHL",
                    HOSTILE_NAME,
                    "Amazon",
                    "Taylor Swift",
                ]
                first = await page.text_content("#ent-negative li")
                assert first is not None and "8" in first and "75% neg" in first
                assert await page.is_hidden("#ent-empty")

                # the drill-down: the comments that name DHL, newest first, as literal text
                await page.locator("#ent-volume .ent-name", has_text="DHL").click()
                await page.wait_for_function(
                    "() => document.getElementById('ev-name').textContent === 'DHL'"
                )
                await page.wait_for_selector("#ev-mentions li")
                texts = await page.eval_on_selector_all(
                    "#ev-mentions .text", "els => els.map(e => e.textContent)"
                )
                assert len(texts) == 8 and all(t == f"{IMG} the DHL courier" for t in texts)
                counts = await page.text_content("#ev-counts")
                assert counts is not None and "comments 8" in counts and "negative 6" in counts
                assert "ORG 8" in (await page.text_content("#ev-detail") or "")

                # a user's view says what the user talks about (user_entities:{id})
                await page.locator("#ev-mentions .meta button").first.click()
                await page.wait_for_function(
                    "() => document.getElementById('uv-entities').textContent.includes('dhl')"
                )

                # the hostile entity: its name is text, in the list and in the drill-down
                await page.locator("#ent-volume li", has_text="onerror").locator("button").click()
                await page.wait_for_function(
                    "n => document.getElementById('ev-name').textContent === n",
                    arg=HOSTILE_NAME,
                )
                panel = "#entities-row img, #entities-row script, #user-view img"
                assert await page.eval_on_selector_all(panel, "e => e.length") == 0
                assert await page.evaluate("window.__xss") is None
                assert dialogs == []

                # the API refuses what it cannot answer
                status = await page.evaluate(
                    "async () => (await fetch('/api/entity?key=' + 'x'.repeat(1001))).status"
                )
                assert status == 400
                status = await page.evaluate(
                    "async () => (await fetch('/api/entity?key=nobody')).status"
                )
                assert status == 404

                shot = await page.locator("#entities-row").screenshot()
                runs = ROOT / "runs"
                runs.mkdir(exist_ok=True)
                (runs / f"dashboard-entities-{time.strftime('%Y%m%d-%H%M%S')}.png").write_bytes(
                    shot
                )
                if os.environ.get("COMMENTFLOW_UPDATE_SCREENSHOT") == "1":
                    (ROOT / "docs" / "dashboard-entities.png").write_bytes(shot)
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
