"""``commentflow bench-model``: the classifier alone, comments/s by batch size, per workload.

::

    commentflow bench-model --model models/multimodal --batch-sizes 1,8,32,128 [--device cuda]

Workloads through the serving path (``load_classifier(...).predict``), side by side:

* ``text``: text-only comments (the synthetic producer's texts);
* ``media_new``: a carrier text + one image (a sentence rendered into a picture) + one voice note
  (the sentence spoken by espeak-ng) per comment, every image and clip new: OCR, speech
  recognition, the image and the text encoder all run;
* ``media_cached``: the same media again: the content caches hold the OCR text, transcripts and
  image embeddings, so what is left is the text encoder, the acoustic encoder and the fusion.
  This is what a meme shared many times costs.
* ``media_new_1by1``: the same new media through the path before batched extraction (a second
  classifier on the same model: RapidOCR one image at a time, Whisper one clip at a time in a
  30 s window, OCR then ASR on one thread with all ``--threads`` each), timed on the same
  comments as ``media_new``, batch by batch in turns (:func:`measure_pair`), so the ratio
  ``media_new / media_new_1by1`` compares the two in one run under the same machine load. It
  also prints how far the two paths' OCR texts and transcripts are apart (identical items, word
  differences) and how many predicted labels agree.
* ``media_cached_1by1``: ``media_cached`` through that classifier (its own caches), in turns
  with ``media_cached``: warm caches must cost no more than before.

Unless ``--no-entities``, one more workload, ``text+entities``: the same text comments, each
batch through the classifier and then the entity stage (:mod:`model.entities`, the packaged
``en_core_web_sm``), one after the other, as a worker does; its ratio to ``text`` is the
stage's cost; the stage's share of the time, measured on the same batches, is printed too (the
steadier figure on a machine shared with other work). A text-only model runs the ``text``
workloads only. Each (workload, batch size) is warmed up on other comments, then timed over
``--items`` comments (``--media-items`` for ``media_new``, slow on a CPU). Prints the table with
each rate's ratio to ``text`` at the same batch size; saves ``results.json`` and
``throughput.png`` under ``--out``.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from model.base import CommentInput
from model.serving import load_classifier

__all__ = [
    "ENTITY_WORKLOAD",
    "FLOAT32_WORKLOAD",
    "WORKLOADS",
    "bench_model",
    "measure",
    "measure_entities",
    "measure_pair",
    "media_comments",
    "one_by_one",
    "parity",
    "text_precision",
    "word_errors",
]

WORKLOADS = ("text", "media_new_1by1", "media_new", "media_cached_1by1", "media_cached")
ENTITY_WORKLOAD = "text+entities"
#: Text through a float32 copy of the model when ``text`` runs bfloat16 (model.precision).
FLOAT32_WORKLOAD = "text_float32"


def text_precision(clf: Any) -> str:
    """``bfloat16`` if any of the classifier's text encoders computes in it, else ``float32``."""
    encoder = getattr(clf, "encoder", None) or getattr(clf, "extractor", None)
    encoder = getattr(encoder, "text_encoder", encoder)
    parts = getattr(encoder, "encoders", (encoder,))
    bf16 = any(getattr(e, "precision", "float32") == "bfloat16" for e in parts)
    return "bfloat16" if bf16 else "float32"


def media_comments(texts: list[str], seed: int, progress: bool = True) -> list[CommentInput]:
    """One comment per text: carrier text, the text as a picture and as a voice note."""
    from model.data import media as bd

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


def measure_pair(
    first: Any, second: Any, comments: list[CommentInput], size: int
) -> tuple[float, float]:
    """Comments/s of two classifiers over the same ``comments``, batch by batch in turns (each
    batch through ``first``, then through ``second``), so that a machine whose load drifts
    during the run slows both alike."""
    if not comments:
        raise ValueError("nothing to measure")
    spent = [0.0, 0.0]
    for i in range(0, len(comments), size):
        for k, clf in enumerate((first, second)):
            t0 = time.perf_counter()
            clf.predict(comments[i : i + size])
            spent[k] += time.perf_counter() - t0
    return len(comments) / spent[0], len(comments) / spent[1]


def one_by_one(model: str | Path, device: str, threads: int) -> Any:
    """The classifier of ``model`` with the media path before batching (``media_new_1by1``)."""
    from model.encoders import registry
    from model.encoders.text import resolve_device
    from model.format.directory import open_model_dir

    path, cfg, _kind = open_model_dir(model)
    enc = cfg["encoders"]
    ctx = registry.BuildContext(model_dir=path, device=resolve_device(device), threads=threads)
    old = {
        "ocr": registry.build("ocr", {**enc["ocr"], "batched": False, "threads": threads}, ctx),
        "asr": registry.build("asr", {**enc["asr"], "window": "full", "threads": threads}, ctx),
    }
    clf = load_classifier(path, device=device, threads=threads, components=old)
    clf.extractor.parallel_media = False
    return clf


def _words(text: str) -> list[str]:
    return "".join(ch if ch.isalnum() or ch == "'" else " " for ch in text.lower()).split()


def word_errors(hyp: str, ref: str) -> int:
    """Word-level edit distance (substitutions + insertions + deletions)."""
    h, r = _words(hyp), _words(ref)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        diag, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (rw != hw))
    return row[-1]


def parity(old: Any, new: Any, comments: Sequence[CommentInput]) -> dict[str, Any]:
    """How far the two classifiers' OCR texts, transcripts and labels are apart on ``comments``
    (already seen by both: the OCR and ASR answers come from their content caches)."""
    images = [im for c in comments for im in c.images]
    clips = [a for c in comments for a in c.audio]
    out: dict[str, Any] = {"items": len(comments)}
    for kind, a, b in (
        ("ocr", old.extractor.ocr.read(images), new.extractor.ocr.read(images)),
        ("asr", old.extractor.asr.transcribe(clips), new.extractor.asr.transcribe(clips)),
    ):
        words = sum(len(_words(x)) for x in a)
        errors = sum(word_errors(y, x) for x, y in zip(a, b, strict=True))
        out[kind] = {
            "identical": sum(x == y for x, y in zip(a, b, strict=True)),
            "of": len(a),
            "word_diff_rate": errors / max(1, words),
        }
    same = sum(
        x.label == y.label
        for x, y in zip(old.predict(comments), new.predict(comments), strict=True)
    )
    out["labels_agree"] = same
    return out


def measure_entities(
    classifier: Any, entities: Any, comments: list[CommentInput], size: int
) -> tuple[float, float]:
    """Comments/s of the classifier then the entity stage (an
    :class:`~model.entities.EntityRecognizer`) on each batch, and the stage's share of that
    time, timed on the same batches (so a machine busy with other work skews it less than
    two separate runs would)."""
    if not comments:
        raise ValueError("nothing to measure")
    model_s = stage_s = 0.0
    for i in range(0, len(comments), size):
        batch = comments[i : i + size]
        t0 = time.perf_counter()
        outs = classifier.predict(batch)
        t1 = time.perf_counter()
        entities.recognise(_entity_sources(batch, outs))
        model_s, stage_s = model_s + t1 - t0, stage_s + time.perf_counter() - t1
    return len(comments) / (model_s + stage_s), stage_s / (model_s + stage_s)


def _entity_sources(batch: Sequence[CommentInput], outs: Sequence[Any]) -> list[Any]:
    from model.entities import EntitySource

    return [
        EntitySource(c.text, o.ocr_text, o.transcript, o.language)
        for c, o in zip(batch, outs, strict=True)
    ]


def bench_model(
    model: str | Path,
    make_texts: Callable[[int, int], list[str]],
    *,
    batch_sizes: Sequence[int] = (1, 8, 32, 128),
    items: int = 512,
    media_items: int = 64,
    device: str = "auto",
    threads: int = 2,
    seed: int = 7,
    out: str | Path | None = None,
    entities: bool = True,
    media: bool = True,
) -> int:
    """``commentflow bench-model``: comments/s of ``model`` per workload and batch size.

    ``make_texts(n, seed)`` gives ``n`` comment texts (the CLI passes the synthetic producer's).
    Writes ``results.json`` and ``throughput.png`` into ``out``; returns the exit status.
    ``entities``: add the ``text+entities`` workload; ``media``: False skips the media workloads.
    """
    torch.set_num_threads(max(1, threads))
    sizes = sorted(set(batch_sizes))
    out = Path(out or f"runs/bench-model-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    from model.format.directory import open_model_dir

    kind = open_model_dir(model)[2]
    extra = {"threads": threads} if kind == "multimodal" else {}  # OCR / ASR threads
    clf = load_classifier(model, device=device, **extra)
    multimodal = media and set(getattr(clf, "modalities", ("text",))) >= {"image", "audio"}
    workloads = WORKLOADS if multimodal else ("text",)
    recognizer = None
    if entities:
        from model.entities import load_packaged_recognizer

        recognizer = load_packaged_recognizer()
        workloads = (workloads[0], ENTITY_WORKLOAD, *workloads[1:])
    texts = make_texts(items + max(sizes), seed)
    rates: dict[str, dict[int, float]] = {w: {} for w in workloads}
    stage_share: dict[int, float] = {}
    # bfloat16 text encoders (model.precision): float32 beside them, in turns on the same batches
    fp32 = (
        load_classifier(model, device=device, precision="float32", **extra)
        if text_precision(clf) == "bfloat16"
        else None
    )
    if fp32 is not None:
        rates = {"text": {}, FLOAT32_WORKLOAD: {}, **{w: {} for w in workloads[1:]}}
    agree = [0, 0]  # labels equal in both precisions, of
    for size in tqdm(sizes, desc="text", unit="batch size"):
        warm = [CommentInput(t) for t in texts[-size:]]
        clf.predict(warm)  # warm-up, other comments
        n = max(items, size) if size > 1 else max(32, items // 8)
        timed = [CommentInput(t) for t in texts[:n]]
        if fp32 is None:
            rates["text"][size] = measure(clf, timed, size)
        else:
            fp32.predict(warm)
            rates[FLOAT32_WORKLOAD][size], rates["text"][size] = measure_pair(
                fp32, clf, timed, size
            )
            labels = [o.label for o in clf.predict(timed)]
            agree[0] += sum(a == o.label for a, o in zip(labels, fp32.predict(timed), strict=True))
            agree[1] += len(timed)
        if recognizer is not None:
            recognizer.recognise(_entity_sources(warm, clf.predict(warm)))
            rates[ENTITY_WORKLOAD][size], stage_share[size] = measure_entities(
                clf, recognizer, timed, size
            )
    if multimodal:

        def n_media(size: int) -> int:
            return max(media_items, size) if size > 1 else max(4, media_items // 8)

        n_fresh = sum(n_media(s) for s in sizes)
        media = media_comments(make_texts(n_fresh + max(sizes), seed + 1), seed)
        warm, fresh = media[: max(sizes)], media[max(sizes) :]
        old = one_by_one(model, device, threads)
        seen: list[CommentInput] = []
        for size in tqdm(sizes, desc="media (new 1by1, new, cached)", unit="batch size"):
            old.predict(warm[:size])  # warm-up: same code paths, other content
            clf.predict(warm[:size])
            batch, fresh = fresh[: n_media(size)], fresh[n_media(size) :]  # never seen: no cache
            # the same comments through both, batch by batch in turns
            rates["media_new_1by1"][size], rates["media_new"][size] = measure_pair(
                old, clf, batch, size
            )
            # the same content again, both from their caches
            rates["media_cached_1by1"][size], rates["media_cached"][size] = measure_pair(
                old, clf, batch, size
            )
            seen += batch
        media_parity = parity(old, clf, seen)
    result = {
        "model": {"dir": str(model), "name": clf.name, "version": clf.version},
        "device": clf.device,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "comments_per_s": rates,
        "entities": None
        if recognizer is None
        else {
            "name": recognizer.name,
            "version": recognizer.version,
            "stage_share_of_time": stage_share,
        },
    }
    if multimodal:
        result["media_parity"] = media_parity
    result["text_precision"] = text_precision(clf)
    if fp32 is not None:
        result["float32_labels_agree"] = {"equal": agree[0], "of": agree[1]}
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
    if FLOAT32_WORKLOAD in rates:
        f = rates[FLOAT32_WORKLOAD]
        cells = ", ".join(f"batch {s}: {t[s] / f[s]:.2f}x" for s in sizes)
        a = r["float32_labels_agree"]
        print(
            f"text encoders in {r['text_precision']} / float32 (model.precision): {cells}; "
            f"labels equal {a['equal']}/{a['of']}"
        )
    if "media_new_1by1" in rates:
        new, old = rates["media_new"], rates["media_new_1by1"]
        cells = ", ".join(f"batch {s}: {new[s] / old[s]:.2f}x" for s in sizes)
        print(f"new media, batched extraction / one by one: {cells}")
        new, old = rates["media_cached"], rates["media_cached_1by1"]
        cells = ", ".join(f"batch {s}: {new[s] / old[s]:.2f}x" for s in sizes)
        print(f"cached media, batched extraction / one by one: {cells}")
    p = r.get("media_parity")
    if p:
        o, a = p["ocr"], p["asr"]
        print(
            f"batched vs one by one on the {p['items']} new-media comments: OCR identical "
            f"{o['identical']}/{o['of']} (words differ {o['word_diff_rate']:.1%}), transcripts "
            f"identical {a['identical']}/{a['of']} (words differ {a['word_diff_rate']:.1%}), "
            f"labels agree {p['labels_agree']}/{p['items']}"
        )
    share = (r.get("entities") or {}).get("stage_share_of_time")
    if share:
        print(
            "entity stage, share of the text+entities time on the same batches: "
            + ", ".join(f"batch {s}: {v:.1%}" for s, v in share.items())
        )


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
