"""``commentflow bench-model``: a thin wrapper over :mod:`model.throughput`.

Temporary: the model restructure replaces this module (``--help`` still imports torch).
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "the classifier alone: comments/s by batch size, text vs new vs cached media"
EXAMPLE = "commentflow bench-model --model models/multimodal --batch-sizes 1,8,32"
USES_SETTINGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from model import throughput

    throughput.add_arguments(parser)


def run(args: argparse.Namespace, settings: Any = None) -> int:
    from model import throughput

    return int(throughput.run(args) or 0)
