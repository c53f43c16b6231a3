"""``commentflow build-data``: a thin wrapper over :mod:`model.build_data`.

Temporary: the model restructure replaces this module (``--help`` still imports torch).
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "build the multimodal training/test set (tweets as text, images and voice notes)"
EXAMPLE = "commentflow build-data --out data/multimodal"
USES_SETTINGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from model import build_data

    build_data.add_arguments(parser)


def run(args: argparse.Namespace, settings: Any = None) -> int:
    from model import build_data

    return int(build_data.run(args) or 0)
