"""``commentflow train-fusion``: a thin wrapper over :mod:`model.train_fusion`.

Temporary: the model restructure replaces this module (``--help`` still imports torch).
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "train the multimodal fusion model on extracted features"
EXAMPLE = (
    "commentflow train-fusion --train .cache/mm/train.npz --val .cache/mm/val.npz "
    "--test .cache/mm/test.npz --text-model models/text --out models/multimodal"
)
USES_SETTINGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from model import train_fusion

    train_fusion.add_arguments(parser)


def run(args: argparse.Namespace, settings: Any = None) -> int:
    from model import train_fusion

    return int(train_fusion.run(args) or 0)
