"""``commentflow train-char-expert``: a text model's character n-gram expert for one language."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "fit a text model's character n-gram expert for one language (Chinese by default)"
EXAMPLE = "commentflow train-char-expert --model models/text-multilingual --data mix:-hutto_amazon"
USES_SETTINGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", required=True, help="the text model directory to add the expert to")
    a(
        "--data",
        required=True,
        help="the data spec the model was trained on (its :train rows fit the expert, its :val "
        "rows choose the weight), e.g. mix:-hutto_amazon",
    )
    a("--language", default="zh", help="the script-detected language it reads (zh, ja, ko)")
    a("--c", type=float, default=4.0, help="inverse L2 strength of the logistic regression")
    a("--split-seed", type=int, default=13, help="seed of the data spec's split")
    a("--threads", type=int, default=2, help="torch CPU threads")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    import torch

    from model.training.char_expert import train_char_expert

    torch.set_num_threads(max(1, args.threads))
    train_char_expert(
        args.model, args.data, language=args.language, c=args.c, split_seed=args.split_seed
    )
    return 0
