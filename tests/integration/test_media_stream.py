"""Comments with media through the real broker and a worker process, against a hostile server.

The media server runs on 127.0.0.1 and is reached as ``localhost``, the one host the worker is
configured to allow on a loopback address (``COMMENTFLOW_MEDIA_ALLOW_HOSTS``). Redirects to
127.0.0.1, [::1], 10.0.0.1 and 169.254.169.254 must be refused by the worker's address policy
(no test traffic leaves the machine: those addresses are refused before any connect).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.stream import send, wait_predictions

from commentflow.media_server import MediaServer
from model.testing.multimodal import make_tiny_multimodal_dir
from schemas.events import Prediction

pytestmark = pytest.mark.integration


# (path, media type, expected reason or None when it must work)
CASES = [
    ("/same/cat.png", "image", None),
    ("/tone/1.wav", "audio", None),
    ("/wrong-type/1", "image", "unsupported_type"),
    ("/tone/1.wav", "image", "unsupported_type"),
    ("/truncated/1", "image", "decode_error"),
    ("/bomb/png/1.png", "image", "too_large"),
    ("/status/404/1", "image", "http_404"),
    ("/status/500/1", "audio", "http_500"),
    ("/slow/1", "image", "timeout"),
    ("/huge/chunked/1", "audio", "too_large"),
    ("/to/loopback", "image", "blocked_address"),
    ("/to/v6-loopback", "image", "blocked_address"),
    ("/to/private", "image", "blocked_address"),
    ("/to/metadata", "image", "blocked_address"),
]


@pytest.fixture
async def media_server():
    async with MediaServer() as server:
        yield server


def url(server: MediaServer, path: str) -> str:
    return server.url("localhost", path)


async def test_media_comments_degrade_never_drop(
    topics, make_settings, media_server, start_worker, tmp_path: Path
):
    # a multimodal model (tiny, fake media encoders): it reports image/audio when it used them
    model = make_tiny_multimodal_dir(tmp_path / "model")
    settings = make_settings(
        model,
        batch_max=16,
        media_timeout_s=3.0,
        media_allow_hosts="localhost",
        media_max_audio_bytes=2 * 1024 * 1024,
    )
    events, expected = [], {}
    used: dict[str, list[str]] = {}
    for i, (path, kind, reason) in enumerate(CASES):
        cid = f"m-{i}"
        text = "" if i % 2 else "look"
        used[cid] = (["text"] if text else []) + ([] if reason else [kind])
        events.append(
            {
                "comment_id": cid,
                "user_id": f"u{i % 3}",
                "text": "" if i % 2 else "look",
                "media": [{"type": kind, "url": url(media_server, path) + "?token=SECRET"}],
                "created_at": "2026-11-28T10:00:00Z",
            }
        )
        expected[cid] = reason
    # the same image referenced by 30 comments, and one image under 10 different URLs
    for i in range(30):
        events.append(
            {
                "comment_id": f"same-url-{i}",
                "user_id": "meme-fan",
                "text": "lol",
                "media": [{"type": "image", "url": url(media_server, "/same/meme.png")}],
                "created_at": "2026-11-28T10:00:00Z",
            }
        )
        expected[f"same-url-{i}"] = None
        used[f"same-url-{i}"] = ["text", "image"]
    for i in range(10):
        events.append(
            {
                "comment_id": f"alias-{i}",
                "user_id": "meme-fan",
                "text": "lol",
                "media": [{"type": "image", "url": url(media_server, f"/same/{i}.png")}],
                "created_at": "2026-11-28T10:00:00Z",
            }
        )
        expected[f"alias-{i}"] = None
        used[f"alias-{i}"] = ["text", "image"]

    worker = start_worker(settings)
    await send(settings.kafka_bootstrap, settings.input_topic, events)
    docs = await wait_predictions(settings, len(events), worker=worker, timeout_s=180)
    worker.stop()
    log = (tmp_path / "worker.log").read_text()
    by_id = {d["comment_id"]: d for d in docs}
    assert len(docs) == len(by_id) == len(events), log[-3000:]
    for cid, reason in expected.items():
        doc = by_id[cid]
        Prediction.model_validate(doc)
        assert doc["modalities"] == used[cid], (cid, doc["modalities"])
        reasons = [e["reason"] for e in doc["media_errors"]]
        assert reasons == ([] if reason is None else [reason]), (cid, doc["media_errors"])
        for err in doc["media_errors"]:
            assert "SECRET" not in err["url"] and "?" not in err["url"]
    # one fetch for 30 comments sharing a URL (single flight + cache)
    assert media_server.paths["/same/meme.png"] == 1
    # the internal targets were never reached through the server either
    assert media_server.paths["/same/x.png"] == 0
    # privacy: no comment text, user ids or secret tokens in the worker's log
    assert "SECRET" not in log and "meme-fan" not in log
