"""The live dashboard in headless Chromium, fed by the real pipeline.

Producer -> broker (tansu) -> worker process (tiny random model) -> Redis -> dashboard -> page.
Checks: the token is required; numbers appear and change as more predictions arrive, without a
page reload; the entity panel fills from the worker's entity stage; hostile comment text is shown
as literal text and no script runs; the per-user view works. Saves a screenshot under ``runs/``
(and to ``docs/dashboard.png`` when ``COMMENTFLOW_UPDATE_SCREENSHOT=1``). Uses Debian's
``chromium`` through Playwright (the browser is never downloaded: ``executable_path``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright
from support.stream import send, wait_predictions

from commentflow import dashboard
from commentflow.produce import synthetic_events
from model.testing import make_tiny_model_dir

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="window.__xss=1;alert(2)">'
TOKEN = "browser-test-token"


@pytest.fixture(scope="module")
def chromium() -> str:
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: make system-deps"
    return CHROMIUM


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model-dash") / "model")


def hostile(i: int, text: str) -> dict:
    return {
        "comment_id": f"hostile-{i}",
        "user_id": "hostile<b>user</b>",
        "text": text,
        "created_at": "2026-11-28T10:00:00Z",
    }


async def test_live_dashboard_in_chromium(
    topics, make_settings, tiny_model, redis_client, start_worker, chromium
):
    settings = make_settings(tiny_model, batch_max=16, dashboard_token=TOKEN, entities_enabled=True)
    first = list(synthetic_events(40, users=12, seed=31, prefix="dash")) + [
        hostile(1, SCRIPT),
        hostile(2, IMG),
    ]
    second = list(synthetic_events(30, users=12, seed=32, prefix="dash"))
    worker = start_worker(settings)
    runner, url = await dashboard.start(settings, port=0)
    try:
        await send(settings.kafka_bootstrap, settings.input_topic, first)
        await wait_predictions(settings, len(first), worker=worker, timeout_s=120)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                dialogs: list[str] = []

                async def on_dialog(dialog) -> None:  # an alert() would mean a script ran
                    dialogs.append(dialog.message)
                    await dialog.dismiss()

                page.on("dialog", on_dialog)
                # the token is required; ?token= once sets the cookie and leaves the URL
                denied = await page.goto(url)
                assert denied is not None and denied.status == 401
                assert (await page.goto(url + "?token=wrong")).status == 401
                ok = await page.goto(url + "?token=" + TOKEN)
                assert ok is not None and ok.status == 200 and "token" not in page.url

                # live numbers appear ...
                await page.wait_for_function(
                    "n => document.getElementById('total').textContent === String(n)",
                    arg=len(first),
                    timeout=30_000,
                )
                assert await page.text_content("#conn-text") == "live"
                assert int(await page.text_content("#hour-total")) == len(first)
                # checked before more arrive: the feed shows the latest 40 only, and the hostile
                # comments may be among the first processed
                texts = await page.eval_on_selector_all(
                    "#feed li .text", "els => els.map(e => e.textContent)"
                )
                assert SCRIPT in texts and IMG in texts
                # ... and change as more predictions arrive, without a reload
                await page.evaluate("window.__sameDocument = true")
                await send(settings.kafka_bootstrap, settings.input_topic, second)
                await page.wait_for_function(
                    "n => document.getElementById('total').textContent === String(n)",
                    arg=len(first) + len(second),
                    timeout=60_000,
                )
                assert await page.evaluate("window.__sameDocument") is True
                # the worker's entity stage (the packaged NER) fed the entity panel: the
                # synthetic comments name brands (commentflow.produce)
                await page.wait_for_selector("#ent-volume li", timeout=30_000)
                named = await page.eval_on_selector_all(
                    "#ent-volume .ent-name", "els => els.map(e => e.textContent)"
                )
                assert {"Amazon", "Spotify", "DHL", "Taylor Swift", "Nike"} & set(named), named
                feed_ids = await page.eval_on_selector_all(
                    "#feed li", "els => els.map(e => e.dataset.commentId)"
                )
                assert any(f.startswith("dash-32-") for f in feed_ids), feed_ids[:5]

                # hostile text is shown as text (checked above): no element was created from it,
                # nothing ran
                assert (
                    await page.eval_on_selector_all("#feed script, #feed img", "e => e.length") == 0
                )
                assert await page.evaluate("window.__xss") is None
                assert dialogs == []

                # the per-user view, opened from the hostile user's link in the feed
                await page.get_by_role("button", name="hostile<b>user</b>").first.click()
                await page.wait_for_function(
                    "() => document.getElementById('uv-id').textContent === 'hostile<b>user</b>'"
                )
                await page.wait_for_selector("#uv-recent li")
                recent = await page.eval_on_selector_all(
                    "#uv-recent .text", "els => els.map(e => e.textContent)"
                )
                assert sorted(recent) == sorted([SCRIPT, IMG])
                assert "total 2" in await page.text_content("#uv-counts")
                assert await page.eval_on_selector_all("#uv-recent img", "e => e.length") == 0

                shot = await page.screenshot(full_page=True)
                runs = ROOT / "runs"
                runs.mkdir(exist_ok=True)
                (runs / f"dashboard-{time.strftime('%Y%m%d-%H%M%S')}.png").write_bytes(shot)
                if os.environ.get("COMMENTFLOW_UPDATE_SCREENSHOT") == "1":
                    (ROOT / "docs" / "dashboard.png").write_bytes(shot)
                assert dialogs == [] and await page.evaluate("window.__xss") is None
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
