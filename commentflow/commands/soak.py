"""``commentflow soak``: one worker under mixed and hostile traffic; RSS and Redis over time."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "one worker under mixed and hostile traffic for --minutes: RSS and Redis memory over time"
EXAMPLE = "commentflow soak --minutes 30 --rate 20 --out docs/soak"
USES_SETTINGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--minutes", type=float, default=30.0, help="how long to offer traffic")
    a("--rate", type=float, default=20.0, help="offered messages per second")
    a("--out", default="docs/soak", help="where soak.json, soak.png, worker.log go")
    a("--sample-s", type=float, default=10.0, help="seconds between samples")
    a("--warmup-minutes", type=float, default=None, help="default: max(1, 20%% of --minutes)")
    a("--users", type=int, default=2000, help="distinct users")
    a("--seed", type=int, default=0, help="seed of the traffic")
    a("--drain-s", type=float, default=120.0, help="longest wait for the backlog")
    a(
        "--exclude",
        default="",
        help="comma-separated traffic kinds to leave out (absurd_date, slow, hostile_media, ...)",
    )


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    import asyncio
    import logging
    from pathlib import Path

    from commentflow.soak import SoakConfig, print_report, soak

    assert settings is not None
    config = SoakConfig(
        minutes=args.minutes,
        rate=args.rate,
        sample_s=args.sample_s,
        warmup_minutes=args.warmup_minutes,
        users=args.users,
        seed=args.seed,
        drain_s=args.drain_s,
        exclude=frozenset(x.strip() for x in args.exclude.split(",") if x.strip()),
    )
    out = Path(args.out)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # the table is the output
    try:
        report = asyncio.run(soak(settings, config, out))
    except (RuntimeError, ValueError) as exc:
        print(f"commentflow soak: {exc}", file=sys.stderr)
        return 1
    print_report(report)
    print(f"\nsaved {out / 'soak.json'} and {out / 'soak.png'}")
    return 0 if report["ok"] else 1
