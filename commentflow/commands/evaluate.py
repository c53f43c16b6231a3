"""``commentflow evaluate``: a thin wrapper over :mod:`model.evaluate`.

Temporary: the model restructure replaces this module (``--help`` still imports torch).
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "evaluate a model directory on labelled data (text or multimodal)"
EXAMPLE = "commentflow evaluate --model models/multimodal --data .cache/mm/test.npz"
USES_SETTINGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from model import evaluate

    evaluate.add_arguments(parser)


def run(args: argparse.Namespace, settings: Any = None) -> int:
    from model import evaluate

    return int(evaluate.run(args) or 0)
