"""``commentflow bench``: model-only, end-to-end, naive-baseline and media throughput."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "model-only, end-to-end, naive-baseline throughput and media latency in one run"
EXAMPLE = "commentflow bench --events 3000 --batch-sizes 1,8,32,64 --out runs/bench"
USES_SETTINGS = True


def _sizes(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive: {value!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--events", type=int, default=3000, help="events for the end-to-end flood (b)")
    a("--latency-seconds", type=float, default=15.0, help="paced latency phase of (b)")
    a("--model-events", type=int, default=1024, help="comments per batch size (a)")
    a("--naive-events", type=int, default=300, help="events for the baseline (c)")
    a("--media-rate", type=float, default=5.0, help="offered comments/s of (d); 0 skips it")
    a("--media-seconds", type=float, default=60.0, help="length of each phase of (d)")
    a("--batch-sizes", type=_sizes, default=(1, 8, 32, 64, 128), help="batch sizes for (a)")
    a("--out", default=None, help="output folder (default runs/bench-<time>)")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from commentflow.bench import BenchOptions
    from commentflow.bench import run as bench

    assert settings is not None
    options = BenchOptions(
        events=args.events,
        latency_seconds=args.latency_seconds,
        model_events=args.model_events,
        naive_events=args.naive_events,
        media_rate=args.media_rate,
        media_seconds=args.media_seconds,
        batch_sizes=args.batch_sizes,
        out=args.out,
    )
    return bench(options, settings)
