"""``commentflow train``: a thin wrapper over :mod:`model.train`.

Temporary: the model restructure replaces this module (``--help`` still imports torch).
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "train the text classifier (defaults rebuild models/text)"
EXAMPLE = "commentflow train --out models/text"
USES_SETTINGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from model import train

    train.add_arguments(parser)


def run(args: argparse.Namespace, settings: Any = None) -> int:
    from model import train

    return int(train.run(args) or 0)
