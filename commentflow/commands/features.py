"""``commentflow features``: a thin wrapper over :mod:`model.features`.

Temporary: the model restructure replaces this module (``--help`` still imports torch).
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "extract multimodal features of a data file into an .npz"
EXAMPLE = (
    "commentflow features --data data/multimodal/test.jsonl --out .cache/mm/test.npz --limit 800"
)
USES_SETTINGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from model import features

    features.add_arguments(parser)


def run(args: argparse.Namespace, settings: Any = None) -> int:
    from model import features

    return int(features.run(args) or 0)
