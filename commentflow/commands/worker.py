"""``commentflow worker``: the stream processor (Faust) against the configured broker and Redis."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "run the stream processor against the configured broker and Redis"
EXAMPLE = (
    "commentflow worker --kafka-bootstrap localhost:9092 --redis-url redis://localhost:6379/0 "
    "--model models/multimodal"
)
USES_SETTINGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No flags of its own: the settings are the worker's configuration."""


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from streamer.app import run_worker

    assert settings is not None
    return run_worker(settings)
