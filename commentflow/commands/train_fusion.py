"""``commentflow train-fusion``: train the multimodal fusion model on extracted features."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "train the multimodal fusion model on extracted features"
EXAMPLE = (
    "commentflow train-fusion --train .cache/mm/train.npz --val .cache/mm/val.npz "
    "--test .cache/mm/test.npz --out models/multimodal"
)
USES_SETTINGS = False

# The defaults of model.training.fusion.FusionTrainConfig (kept equal by
# tests/unit/test_model_commands.py; not imported: --help must not import torch).
DEFAULTS = {
    "seed": 13,
    "split_seed": 13,
    "epochs": 12,
    "patience": 4,
    "text_per_batch": 224,
    "mm_per_batch": 32,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "d_model": 192,
    "n_heads": 4,
    "n_layers": 2,
    "ff_mult": 4,
    "dropout": 0.1,
    "modality_dropout": 0.25,
    "swap_prob": 0.3,
    "copy_prob": 0.1,
    "mismatch_prob": 0.25,
    "photo_prob": 0.15,
    "crop_seconds": 4.0,
    "class_weights": "balanced",
    "label_smoothing": 0.05,
    "val_fraction": 0.15,
    "text_model": "models/text-multilingual",
    "text_data": "",
    "text_only_expert": True,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = argparse.Namespace(**DEFAULTS)
    a = parser.add_argument
    a("--train", default=".cache/mm/train.npz", help="multimodal train features (.npz)")
    a("--val", default=None, help="multimodal val features; default: hold out --val-fraction")
    a("--test", default=".cache/mm/test.npz", help="multimodal test features, scored once")
    a("--out", default="models/multimodal", help="model directory to write (format v2)")
    a("--seed", type=int, default=d.seed)
    a("--split-seed", type=int, default=d.split_seed, help="seed of the text data's split")
    a("--epochs", type=int, default=d.epochs, help="max passes over the text train split")
    a("--patience", type=int, default=d.patience)
    a("--text-per-batch", type=int, default=d.text_per_batch)
    a("--mm-per-batch", type=int, default=d.mm_per_batch)
    a("--lr", type=float, default=d.lr)
    a("--weight-decay", type=float, default=d.weight_decay)
    a("--d-model", type=int, default=d.d_model)
    a("--n-heads", type=int, default=d.n_heads)
    a("--n-layers", type=int, default=d.n_layers)
    a("--ff-mult", type=int, default=d.ff_mult, help="feed-forward width / d_model")
    a("--dropout", type=float, default=d.dropout)
    a("--modality-dropout", type=float, default=d.modality_dropout)
    a("--swap-prob", type=float, default=d.swap_prob, help="text row -> OCR/speech slot")
    a("--copy-prob", type=float, default=d.copy_prob, help="text row copied to OCR/speech too")
    a(
        "--mismatch-prob",
        type=float,
        default=d.mismatch_prob,
        help="text row + another label's text in OCR/speech (labelled by the comment)",
    )
    a("--photo-prob", type=float, default=d.photo_prob, help="text row + a photo embedding")
    a("--crop-seconds", type=float, default=d.crop_seconds, help="random log-mel crop in training")
    a("--class-weights", choices=("none", "balanced"), default=d.class_weights)
    a("--label-smoothing", type=float, default=d.label_smoothing)
    a("--val-fraction", type=float, default=d.val_fraction)
    a(
        "--text-model",
        default=d.text_model,
        help="text model dir whose head becomes the frozen text expert ('none': no expert)",
    )
    a(
        "--text-data",
        default=d.text_data,
        help="the text rows of each step (default: the text model's training data)",
    )
    a(
        "--no-text-only-expert",
        dest="text_only_expert",
        action="store_false",
        help="text-only comments go through the Transformer too (default: the text model's "
        "logits, unchanged)",
    )
    a("--text-cache-dir", default=".cache/features", help="the text model's feature cache")
    a("--checkpoint-dir", default=None, help="default: .cache/checkpoints/<name of --out>")
    a("--resume", action="store_true")
    a("--threads", type=int, default=2)
    a("--no-progress", action="store_true")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from model.training.fusion import FusionData, FusionTrainConfig, train_fusion

    argv = sys.argv[2:] if sys.argv[1:2] == ["train-fusion"] else sys.argv[1:]
    return train_fusion(
        FusionTrainConfig(**{k: getattr(args, k) for k in DEFAULTS}),
        FusionData(
            train=args.train, val=args.val, test=args.test, text_cache_dir=args.text_cache_dir
        ),
        out=Path(args.out),
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        resume=args.resume,
        threads=args.threads,
        progress=not args.no_progress,
        command=("commentflow train-fusion " + shlex.join(argv)).strip(),
    )
