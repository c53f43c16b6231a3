"""``commentflow dashboard``: the live dashboard (reads only Redis), until Ctrl-C."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "serve the live dashboard (reads only Redis), until Ctrl-C"
EXAMPLE = "commentflow dashboard --redis-url redis://localhost:6379/0 --dashboard-port 8080"
USES_SETTINGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds to serve (default: until Ctrl-C)"
    )


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from commentflow.dashboard import serve

    assert settings is not None
    return serve(settings, args.duration)
