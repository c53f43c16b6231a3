"""``commentflow produce``: send comment events (JSON lines, or synthetic) to the input topic."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "send comment events (JSON lines from FILE or -, or --synthetic N)"
EXAMPLE = "commentflow produce --synthetic 1000 --rate 50    # or: commentflow produce events.jsonl"
USES_SETTINGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("file", nargs="?", help="JSON lines file, or - for stdin")
    a("--synthetic", type=int, metavar="N", help="send N synthetic comments instead")
    a("--users", type=int, default=200, help="distinct users for --synthetic")
    a("--seed", type=int, default=0, help="seed of --synthetic")
    a("--rate", type=float, help="events per second (default: as fast as possible)")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    import asyncio
    from collections.abc import Iterable

    from commentflow.produce import produce, read_lines, synthetic_events

    assert settings is not None
    if (args.file is None) == (args.synthetic is None):
        print("commentflow produce: give a FILE (or -) or --synthetic N", file=sys.stderr)
        return 2
    values: Iterable[bytes | dict[str, Any]]
    if args.synthetic is not None:
        values = synthetic_events(args.synthetic, users=args.users, seed=args.seed)
    else:
        values = read_lines(args.file)
    n = asyncio.run(
        produce(
            settings.kafka_bootstrap,
            settings.input_topic,
            values,
            rate=args.rate,
            progress=True,
            security=settings.kafka_security,
        )
    )
    print(f"sent {n} events to {settings.input_topic} on {settings.kafka_bootstrap}")
    return 0
