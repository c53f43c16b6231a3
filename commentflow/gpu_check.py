"""``commentflow gpu-check``: label parity CPU vs CUDA, the model's and the stream's throughput on
the target device, in one run and one table.

The model's part is :mod:`model.evaluation.gpu_check` (no broker). This module adds, unless
``stream`` is off, a short ``commentflow bench`` on the target device (embedded broker and Redis,
a worker process; see :mod:`commentflow.bench`) into ``out/bench``, and its end-to-end rows to the
table. Writes ``results.json`` and ``results.md`` into ``out``; the exit status is 1 when the label
agreement is below the threshold (or the bench fails), else 0.
"""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from commentflow.bench import BenchOptions
from commentflow.bench import run as bench
from commentflow.settings import Settings
from model.evaluation.gpu_check import (
    CheckOptions,
    load_texts,
    resolve_device,
    run_check,
    save_results,
)

__all__ = ["STREAM_BENCH", "run"]

#: The short end-to-end bench of the check: about a minute and a half plus two worker starts.
STREAM_BENCH = BenchOptions(
    events=1000,
    latency_seconds=5.0,
    model_events=256,
    naive_events=100,
    media_rate=4.0,
    media_seconds=10.0,
    batch_sizes=(),
)


def _stream(settings: Settings, device: str, out: Path) -> dict[str, Any]:
    """The short bench on ``device``; the summary the table shows."""
    options = dataclasses.replace(STREAM_BENCH, batch_sizes=(settings.batch_max,), out=str(out))
    status = bench(options, settings.replace(device=device))
    r = json.loads((out / "results.json").read_text())
    e, media = r["end_to_end"], r.get("media") or {}
    new = media.get("new_media", {})
    return {
        "status": status,
        "device": device,
        "throughput": e["throughput"],
        "latency_rate": e["latency_rate"],
        "p50_ms": e["p50_ms"],
        "p99_ms": e["p99_ms"],
        "media_text_p99_ms": new.get("text_p99_ms"),
        "media_p99_ms": new.get("media_p99_ms"),
        "results": str(out / "results.json"),
    }


def run(
    options: CheckOptions, settings: Settings, *, stream: bool = True, out: str | None = None
) -> int:
    """The check of ``settings.model_dir``; prints the table, returns the exit status."""
    started = time.perf_counter()
    folder = Path(out or f"runs/gpu-check-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    english, chinese = load_texts(options.seed)
    results = run_check(settings.model_dir, english, chinese, options)
    if stream:
        s = _stream(settings, resolve_device(options.device), folder / "bench")
        results["stream"] = s
    results["seconds"] = time.perf_counter() - started  # all of it: texts, models, stream
    table = save_results(results, folder)
    print("\n" + table)
    print(f"saved {folder / 'results.json'} and {folder / 'results.md'}")
    stream_ok = results.get("stream", {}).get("status", 0) == 0
    return 0 if results["passed"] and stream_ok else 1
