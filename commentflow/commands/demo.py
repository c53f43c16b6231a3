"""``commentflow demo``: stack, workers and a synthetic producer with a live summary."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "stack + worker + synthetic producer, with a live summary, until Ctrl-C"
EXAMPLE = "commentflow demo --rate 40 --workers 2 --duration 60"
USES_SETTINGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--rate", type=float, default=40.0, help="synthetic comments per second")
    a("--users", type=int, default=100, help="distinct synthetic users")
    a("--workers", type=int, default=1, help="worker processes in the group")
    a("--malformed-every", type=int, default=50, help="every Nth event is malformed (0: none)")
    a("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    a("--kafka-port", type=int, default=None, help="broker port (default: a free one)")
    a("--redis-port", type=int, default=None, help="state Redis port (default: a free one)")
    a(
        "--no-entities",
        dest="entities",
        action="store_false",
        help="without the entity stage (the demo turns it on; workers default to off)",
    )


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from commentflow.demo import DemoOptions
    from commentflow.demo import run as demo

    assert settings is not None
    options = DemoOptions(
        rate=args.rate,
        users=args.users,
        workers=args.workers,
        malformed_every=args.malformed_every,
        duration=args.duration,
        kafka_port=args.kafka_port,
        redis_port=args.redis_port,
        entities=args.entities,
    )
    return demo(options, settings)
