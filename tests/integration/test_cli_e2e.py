"""The command line end to end, with the real default model (MiniLM + the committed head).

``commentflow worker`` and ``commentflow produce`` run as subprocesses, configured only through
``COMMENTFLOW_*`` variables, against the session's broker and Redis.
"""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from commentflow.local import read_topic
from commentflow.processes import stop_process
from commentflow.settings import DEFAULT_MODEL_DIR

CLEAR = {
    "pos-1": ("I absolutely love this, best day ever! Thank you so much", "positive"),
    "pos-2": ("Wonderful news, I'm so happy and grateful :)", "positive"),
    "neg-1": ("This is the worst service, I hate it and I want a refund", "negative"),
    "neg-2": ("Awful, disgusting and disappointing. Never again.", "negative"),
}


@pytest.mark.slow
async def test_cli_worker_and_producer_with_the_default_model(topics, env_for_stack, tmp_path):
    assert (DEFAULT_MODEL_DIR / "model.safetensors").exists(), f"{DEFAULT_MODEL_DIR} is missing"
    lines = [
        orjson.dumps(
            {
                "comment_id": cid,
                "user_id": f"u-{cid[:3]}",
                "text": text,
                "created_at": "2026-11-28T10:00:00+01:00",
            }
        )
        for cid, (text, _) in CLEAR.items()
    ]
    lines.append(b"{broken json")
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "commentflow.cli", "worker"],
        env={
            **env_for_stack,
            "COMMENTFLOW_MODEL_DIR": str(DEFAULT_MODEL_DIR),
            "COMMENTFLOW_ENTITIES_ENABLED": "true",  # and the packaged NER
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        produced = subprocess.run(
            [sys.executable, "-m", "commentflow.cli", "produce", str(events)],
            env=env_for_stack,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert produced.returncode == 0, produced.stderr
        assert "sent 5 events" in produced.stdout
        synthetic = subprocess.run(
            [
                sys.executable,
                "-m",
                "commentflow.cli",
                "produce",
                "--synthetic",
                "40",
                "--seed",
                "3",
            ],
            env=env_for_stack,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert synthetic.returncode == 0, synthetic.stderr
        bootstrap = env_for_stack["COMMENTFLOW_KAFKA_BOOTSTRAP"]
        docs = await read_topic(
            bootstrap,
            env_for_stack["COMMENTFLOW_PREDICTIONS_TOPIC"],
            until=lambda d: len(d) >= 44,
            timeout_s=240,
        )
        dead = await read_topic(
            bootstrap,
            env_for_stack["COMMENTFLOW_DLQ_TOPIC"],
            until=lambda d: len(d) >= 1,
            timeout_s=30,
        )
    finally:
        stop_process(worker, 60)
        log.close()
    by_id = {d["comment_id"]: d for d in docs}
    assert len(docs) == len(by_id) == 44, (tmp_path / "worker.log").read_text()[-3000:]
    for cid, (_, label) in CLEAR.items():
        assert by_id[cid]["label"] == label, by_id[cid]
        assert by_id[cid]["created_at"] == "2026-11-28T09:00:00Z"
    model = by_id["pos-1"]["model"]
    config = orjson.loads((DEFAULT_MODEL_DIR / "config.json").read_bytes())
    assert (model["name"], model["version"]) == (config["name"], config["version"])
    assert [d["error"]["code"] for d in dead] == ["invalid_json"]
    assert worker.returncode == 0
    # the entity stage: every prediction says it ran; the synthetic comments name brands
    assert {d["entities_status"] for d in docs} == {"ok"}
    keys = {e["key"] for d in docs for e in d["entities"]}
    assert keys & {"amazon", "apple", "spotify", "taylor swift", "dhl", "nike", "samsung"}, keys
    from commentflow.produce import synthetic_events

    texts = {cid: text for cid, (text, _) in CLEAR.items()}
    texts |= {e["comment_id"]: e["text"] for e in synthetic_events(40, seed=3)}
    for d in docs:
        for e in d["entities"]:
            assert e["modality"] == "text"
            assert texts[d["comment_id"]][e["start"] : e["end"]] == e["text"], e


@pytest.mark.slow
def test_demo_shows_predictions_flowing(tmp_path):
    """`commentflow demo` (what `make demo` runs) starts everything and shows live numbers."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("COMMENTFLOW_")}
    env["COMMENTFLOW_APP_ID"] = f"demo-test-{tmp_path.name}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "commentflow.cli",
            "demo",
            "--duration",
            "40",
            "--rate",
            "30",
            "--no-web-enabled",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if "predicted" in line]
    assert lines, done.stdout[-3000:]
    last = lines[-1].split()
    predicted = int(last[last.index("predicted") + 1])
    dead = int(last[last.index("letters") + 1])
    assert predicted > 0 and dead > 0, lines[-1]
    assert "kafka bootstrap" in done.stdout and "redis" in done.stdout
    assert "dashboard        http://127.0.0.1:" in done.stdout
