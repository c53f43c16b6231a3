"""Where a new consumer group starts (``consumer_auto_offset_reset``), on the real broker.

``earliest`` (the default) makes a first deploy process the input topic's whole retention; the
other integration tests rely on it (they send before the worker joins). ``latest`` starts a new
group at the end: what was in the topic before the worker joined is never processed.

tansu's ListOffsets "latest" answers the last *batch's* base offset + 1 (see ASSETS.md), so the
messages that must be skipped are sent one per batch here; a real Kafka has no such caveat.
"""

from __future__ import annotations

import time

from support.stream import read_all, send, wait_predictions

from commentflow.local import read_topic
from commentflow.produce import synthetic_events
from model.testing import make_tiny_model_dir


async def test_a_new_group_at_latest_skips_what_was_already_in_the_topic(
    topics, make_settings, start_worker, tmp_path
):
    settings = make_settings(
        make_tiny_model_dir(tmp_path / "model"), consumer_auto_offset_reset="latest"
    )
    old = list(synthetic_events(8, seed=41, prefix="old"))
    for event in old:  # one batch each: see the module docstring
        await send(settings.kafka_bootstrap, settings.input_topic, [event])
    worker = start_worker(settings, "latest")

    # The group's start position is set when partitions are assigned; until then new messages
    # are skipped too. Probe until one comes back: from then on everything new is processed.
    deadline = time.monotonic() + 120
    probe = 0
    while True:
        assert worker.alive(), worker.log_tail()
        assert time.monotonic() < deadline, ("no probe was ever processed", worker.log_tail())
        event = next(iter(synthetic_events(1, seed=probe, prefix="probe")))
        await send(settings.kafka_bootstrap, settings.input_topic, [event])
        probe += 1
        if await read_topic(
            settings.kafka_bootstrap,
            settings.predictions_topic,
            until=lambda docs: len(docs) >= 1,
            timeout_s=2.0,
        ):
            break

    new = list(synthetic_events(8, seed=42, prefix="new"))
    await send(settings.kafka_bootstrap, settings.input_topic, new)
    await wait_predictions(settings, {e["comment_id"] for e in new}, worker=worker)
    predicted = {
        d["comment_id"]
        for d in await read_all(settings.kafka_bootstrap, settings.predictions_topic)
    }
    assert not predicted & {e["comment_id"] for e in old}, sorted(predicted)
