"""``commentflow evaluate-multimodal``: a thin wrapper over :mod:`model.evaluate_multimodal`.

Temporary: the model restructure replaces this module (``--help`` still imports torch).
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "evaluate a fusion model by kind, with the text-only ablation"
EXAMPLE = "commentflow evaluate-multimodal --model models/multimodal --features .cache/mm/test.npz"
USES_SETTINGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from model import evaluate_multimodal

    evaluate_multimodal.add_arguments(parser)


def run(args: argparse.Namespace, settings: Any = None) -> int:
    from model import evaluate_multimodal

    return int(evaluate_multimodal.run(args) or 0)
