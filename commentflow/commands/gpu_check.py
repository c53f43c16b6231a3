"""``commentflow gpu-check``: label parity CPU vs CUDA, model and stream throughput, one table."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "label parity CPU vs CUDA on 1,000 comments, model and stream throughput: one table"
EXAMPLE = "commentflow gpu-check --comments 1000 --out runs/gpu-check"
USES_SETTINGS = True

#: The defaults of :class:`model.evaluation.gpu_check.CheckOptions` (a test keeps them equal);
#: the model directory and the target device are the settings ``--model`` and ``--device``.
DEFAULTS = {
    "comments": 1000,
    "min_agreement": 0.99,
    "reference_device": "cpu",
    "batch_size": 32,
    "text_batch": 128,
    "text_items": 1024,
    "media_batch": 32,
    "media_items": 64,
    "threads": 0,
    "seed": 7,
}


def _share(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1: {value!r}")
    return x


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value!r}")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a, d = parser.add_argument, DEFAULTS
    a("--comments", type=_positive, default=d["comments"], help="comments in the parity set")
    a(
        "--min-agreement",
        type=_share,
        default=d["min_agreement"],
        help="label agreement below this: exit status 1",
    )
    a("--reference-device", default=d["reference_device"], help="the device compared against")
    a("--batch-size", type=_positive, default=d["batch_size"], help="parity batch size")
    a("--text-batch", type=_positive, default=d["text_batch"], help="throughput: text batch")
    a("--text-items", type=_positive, default=d["text_items"], help="throughput: text comments")
    a("--media-batch", type=_positive, default=d["media_batch"], help="throughput: media batch")
    a(
        "--media-items",
        type=int,
        default=d["media_items"],
        help="throughput: comments with new media (0 skips)",
    )
    a("--threads", type=int, default=d["threads"], help="torch CPU threads (0: torch's default)")
    a("--seed", type=int, default=d["seed"])
    a(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also a short `commentflow bench` (embedded broker, Redis, a worker) on the target",
    )
    a("--out", default=None, help="output folder (default runs/gpu-check-<timestamp>)")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from commentflow.gpu_check import run as gpu_check
    from model.evaluation.gpu_check import CheckOptions

    assert settings is not None
    options = CheckOptions(device=settings.device, **{k: getattr(args, k) for k in DEFAULTS})
    return gpu_check(options, settings, stream=args.stream, out=args.out)
