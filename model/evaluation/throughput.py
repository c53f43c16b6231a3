"""``commentflow bench-model``: the classifier alone, comments/s by batch size, per workload.

::

    commentflow bench-model --model models/multimodal --batch-sizes 1,8,32,128 [--device cuda]

Three workloads through the serving path (``load_classifier(...).predict``), side by side:

* ``text``: text-only comments (the synthetic producer's texts);
* ``media_new``: a carrier text + one image (a sentence rendered into a picture) + one voice note
  (the sentence spoken by espeak-ng) per comment, every image and clip new: OCR, speech
  recognition, the image and the text encoder all run;
* ``media_cached``: the same media again: the content caches hold the OCR text, transcripts and
  image embeddings, so what is left is the text encoder, the acoustic encoder and the fusion.
  This is what a meme shared many times costs.

A text-only model runs the ``text`` workload only. Each (workload, batch size) is warmed up on
other comments, then timed over ``--items`` comments (``--media-items`` for ``media_new``, slow on
a CPU). Prints the table with each rate's ratio to ``text`` at the same batch size; saves
``results.json`` and ``throughput.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from model import CommentInput, load_classifier

__all__ = ["add_arguments", "measure", "media_comments", "run"]

WORKLOADS = ("text", "media_new", "media_cached")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``commentflow bench-model``."""
    a = parser.add_argument
    a("--model", default="models/multimodal", help="model directory")
    a("--batch-sizes", default="1,8,32,128", help="comma-separated batch sizes")
    a("--items", type=int, default=512, help="timed comments per batch size (text, cached)")
    a("--media-items", type=int, default=64, help="timed comments per batch size (new media)")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a("--threads", type=int, default=2, help="torch / OCR / ASR CPU threads")
    a("--seed", type=int, default=7)
    a("--out", default=None, help="output folder (default: runs/bench-model-<timestamp>)")


def _texts(n: int, seed: int) -> list[str]:
    from commentflow.produce import synthetic_events

    return [e["text"] for e in synthetic_events(n, seed=seed)]


def media_comments(texts: list[str], seed: int, progress: bool = True) -> list[CommentInput]:
    """One comment per text: carrier text, the text as a picture and as a voice note."""
    from model.data import synthesis as bd

    fonts = bd.find_fonts()
    out = []
    with tempfile.TemporaryDirectory(prefix="commentflow-bench-") as tmp:
        for i, t in enumerate(tqdm(texts, desc="render media", unit="item", disable=not progress)):
            rng = random.Random(f"{seed}:{i}")
            img = np.asarray(bd.render_text_image(bd.display_text(t), rng, fonts=fonts))
            wav_path = Path(tmp) / f"{i}.wav"
            bd.synthesize_speech(bd.spoken_text(t), wav_path, rng)
            wav, _ = sf.read(wav_path, dtype="float32")
            out.append(CommentInput("look at this", images=(img[..., :3],), audio=(wav,)))
    return out


def measure(classifier: Any, comments: list[CommentInput], size: int) -> float:
    """Comments/s of ``classifier.predict`` over ``comments`` in batches of ``size``."""
    if not comments:
        raise ValueError("nothing to measure")
    t0 = time.perf_counter()
    for i in range(0, len(comments), size):
        classifier.predict(comments[i : i + size])
    return len(comments) / (time.perf_counter() - t0)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``commentflow bench-model``; returns the exit status."""
    torch.set_num_threads(max(1, args.threads))
    sizes = sorted({int(s) for s in args.batch_sizes.split(",")})
    out = Path(args.out or f"runs/bench-model-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    clf = load_classifier(args.model, device=args.device)
    multimodal = set(getattr(clf, "modalities", ("text",))) >= {"image", "audio"}
    workloads = WORKLOADS if multimodal else ("text",)
    texts = _texts(args.items + max(sizes), args.seed)
    rates: dict[str, dict[int, float]] = {w: {} for w in workloads}
    for size in tqdm(sizes, desc="text", unit="batch size"):
        clf.predict([CommentInput(t) for t in texts[-size:]])  # warm-up, other comments
        n = max(args.items, size) if size > 1 else max(32, args.items // 8)
        rates["text"][size] = measure(clf, [CommentInput(t) for t in texts[:n]], size)
    if multimodal:

        def n_media(size: int) -> int:
            return max(args.media_items, size) if size > 1 else max(4, args.media_items // 8)

        n_fresh = sum(n_media(s) for s in sizes)
        media = media_comments(_texts(n_fresh + max(sizes), args.seed + 1), args.seed)
        warm, fresh = media[: max(sizes)], media[max(sizes) :]
        for size in tqdm(sizes, desc="media (new, then cached)", unit="batch size"):
            clf.predict(warm[:size])  # warm-up: same code paths, other content
            batch, fresh = fresh[: n_media(size)], fresh[n_media(size) :]  # never seen: no cache
            rates["media_new"][size] = measure(clf, batch, size)
            rates["media_cached"][size] = measure(clf, batch, size)  # the same content again
    result = {
        "model": {"dir": str(args.model), "name": clf.name, "version": clf.version},
        "device": clf.device,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "comments_per_s": rates,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    _print(result)
    _plot(result, out / "throughput.png")
    print(f"\nsaved {out / 'results.json'} and {out / 'throughput.png'}")
    return 0


def _print(r: dict[str, Any]) -> None:
    rates = r["comments_per_s"]
    sizes = list(rates["text"])
    print(f"\n{r['model']['name']} {r['model']['version']} on {r['device']}, comments/s:")
    print(f"{'batch':>6} " + " ".join(f"{w:>22}" for w in rates))
    for s in sizes:
        cells = []
        for w, per in rates.items():
            ratio = "" if w == "text" else f" ({per[s] / rates['text'][s]:.3f}x)"
            cells.append(f"{per[s]:10.2f}{ratio:>12}")
        print(f"{s:>6} " + " ".join(f"{c:>22}" for c in cells))
    t, lo, hi = rates["text"], sizes[0], sizes[-1]
    print(f"batching: text batch {hi} / batch {lo} = {t[hi] / t[lo]:.2f}x")


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for w, per in r["comments_per_s"].items():
        ax.plot([int(s) for s in per], list(per.values()), "o-", label=w)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("comments / s")
    ax.set_title(f"{r['model']['name']} alone ({r['device']})")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``python -m model.throughput``: the same as ``commentflow bench-model``."""
    parser = argparse.ArgumentParser(prog="commentflow bench-model", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
