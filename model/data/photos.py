"""Real photos for the synthetic data set: photos without text, and memes drawn on photos.

No package ships labelled photos, but scikit-image ships about a dozen real photographs as sample
data (``skimage/data/*.png|jpg``, BSD-3 / public domain: see its ``README.txt``; installed with
``--no-deps``, the library itself is never imported). They give two kinds of item:

- a photo without text beside a comment (the picture says nothing about the sentiment; the OCR
  finds junk or nothing) or alone (neutral);
- a meme: a sentence in bold capitals with a dark outline, at the top and/or bottom of a photo.

Each split has its own photos (:data:`PHOTOS`), so a test meme never has a background the model
was trained on. A photo becomes many different pictures by random crop, scale, flip and colour
jitter (:func:`photo_variant`); everything follows from the ``random.Random`` passed in.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from model.data.media import BuildDataError, find_fonts
from model.data.packages import package_file

__all__ = ["PHOTOS", "noise_image", "photo_paths", "photo_variant", "render_meme"]

#: Sample photos per split (file names under ``skimage/data``). Text-bearing samples (page, text,
#: logo) and drawings (chessboard, phantom, horse) are left out.
PHOTOS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut.png",
        "motorcycle_left.png",
        "hubble_deep_field.jpg",
        "grass.png",
        "brick.png",
        "coins.png",
        "camera.png",
        "retina.jpg",
        "ihc.png",
    ),
    "val": ("gravel.png", "moon.png"),
    "test": ("chelsea.png", "coffee.png", "rocket.jpg"),
}
INSTALL = "pip install --no-deps scikit-image==0.26.0"
_BOLD = ("Bold", "bold", "Black", "Heavy")


@functools.lru_cache(maxsize=1)
def _data_dir() -> Path:
    try:
        return package_file("skimage", "data", "README.txt", install=INSTALL).parent
    except FileNotFoundError as exc:
        raise BuildDataError(str(exc)) from exc


def photo_paths(split: str) -> list[Path]:
    """The photo files of ``split`` (all must exist)."""
    root = _data_dir()
    paths = [root / name for name in PHOTOS[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise BuildDataError(f"scikit-image sample photos missing: {missing}")
    return paths


@functools.lru_cache(maxsize=16)
def _load(path: str) -> Image.Image:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def photo_variant(split: str, rng: random.Random) -> tuple[Image.Image, str]:
    """A random crop (30-100% of a side), scale (240-720 px wide), flip and colour jitter of one
    of ``split``'s photos; and the photo's name."""
    path = rng.choice(photo_paths(split))
    im = _load(str(path))
    w, h = im.size
    f = rng.uniform(0.3, 1.0)
    cw, ch = max(32, round(w * f)), max(32, round(h * f * rng.uniform(0.75, 1.33)))
    cw, ch = min(cw, w), min(ch, h)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = im.crop((x, y, x + cw, y + ch))
    width = rng.randint(240, 720)
    out = out.resize((width, max(32, round(ch * width / cw))), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.6, 1.4))
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.75, 1.25))
    return out, path.name


def noise_image(rng: random.Random) -> Image.Image:
    """A picture with no content: uniform noise, a flat colour or a blurred gradient."""
    np_rng = np.random.default_rng(rng.getrandbits(64))
    w, h = rng.randint(64, 512), rng.randint(64, 512)
    style = rng.choice(("noise", "flat", "gradient"))
    if style == "noise":
        arr = np_rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    elif style == "flat":
        arr = np.full((h, w, 3), [rng.randint(0, 255) for _ in range(3)], np.uint8)
    else:
        t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
        a, b = (np.asarray([rng.randint(0, 255) for _ in range(3)], np.float32) for _ in "ab")
        arr = np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr))


def _bold_fonts(fonts: Sequence[str]) -> list[str]:
    bold = [f for f in fonts if any(b in Path(f).name for b in _BOLD)]
    return bold or list(fonts)


def _wrap(words: Sequence[str], font: ImageFont.FreeTypeFont, max_w: float) -> list[str]:
    lines: list[str] = []
    cur = ""
    for word in words:
        cand = f"{cur} {word}".strip()
        if cur and font.getlength(cand) > max_w:
            lines.append(cur)
            cur = word
        else:
            cur = cand
    return lines + ([cur] if cur else [])


def render_meme(
    text: str, split: str, rng: random.Random, *, fonts: Sequence[str] | None = None
) -> Image.Image:
    """``text`` in bold capitals, white (or yellow) with a black outline, over a photo of ``split``.

    The words go to the top, the bottom or both halves; the font shrinks until they fit in 45% of
    the height each. Parameters used come back in ``image.info["render"]``.
    """
    fonts = _bold_fonts(list(find_fonts() if fonts is None else fonts))
    if not fonts:
        raise BuildDataError("no fonts for memes (apt-get install -y fonts-dejavu-core)")
    img, photo = photo_variant(split, rng)
    w, h = img.size
    if h < w * 0.6:  # room for two blocks of text
        img = img.resize((w, round(w * rng.uniform(0.7, 1.0))), Image.Resampling.BICUBIC)
        w, h = img.size
    words = text.upper().split()
    layouts = ("top", "bottom", "split") if len(words) > 3 else ("top", "bottom")
    layout = rng.choice(layouts)
    cut = max(1, len(words) // 2)
    blocks = {"top": [words], "bottom": [words], "split": [words[:cut], words[cut:]]}[layout]
    font_path = rng.choice(fonts)
    size = max(18, round(w * rng.uniform(0.08, 0.12)))
    fill = rng.choice(((255, 255, 255), (255, 255, 255), (255, 230, 0)))
    while True:
        font = ImageFont.truetype(font_path, size)
        wrapped = [_wrap(b, font, w * 0.92) for b in blocks]
        asc, desc = font.getmetrics()
        line_h = asc + desc
        if all(len(lines) * line_h <= h * 0.45 for lines in wrapped) or size <= 14:
            break
        size = max(14, round(size * 0.88))
    draw = ImageDraw.Draw(img)
    stroke = max(2, size // 12)
    anchors = {"top": ["top"], "bottom": ["bottom"], "split": ["top", "bottom"]}[layout]
    for lines, where in zip(wrapped, anchors, strict=True):
        y = round(h * 0.03) if where == "top" else h - round(h * 0.03) - len(lines) * line_h
        for line in lines:
            x = (w - font.getlength(line)) / 2
            draw.text(
                (round(x), y), line, font=font, fill=fill, stroke_width=stroke, stroke_fill="black"
            )
            y += line_h
    img.info["render"] = {
        "font": Path(font_path).name,
        "font_size": size,
        "layout": layout,
        "fill": fill,
        "photo": photo,
        "size": img.size,
    }
    return img
