"""Peak memory of decoding hostile and large images, measured in a fresh subprocess.

Each case runs ``decode_image`` in its own interpreter and reports the growth of
``ru_maxrss`` (the peak resident set) across the decode, after a warm-up decode has loaded the
Pillow plugins. The bounds are deliberately generous (no timing, no tight byte counts):

* a 6300x6300 PNG "bomb" (a few hundred kB that would decode to 119 MB RGB, 790 MB peak before
  the limits) is refused from its header: almost no memory;
* a 15.9 MP PNG with alpha and a 15.9 MP EXIF-rotated JPEG stay under 4 bytes per source pixel
  plus 100 MB: one decode, then everything on the reduced image.

``python tests/unit/test_media_memory.py`` prints the measured table.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

_CHILD = r"""
import gc, io, json, resource, sys
from PIL import Image
from workers.address_policy import DecodeFailed
from workers.media_decode import DecodeConfig, decode_image
warm = io.BytesIO(); Image.new("RGBA", (64, 64)).save(warm, "PNG")
decode_image(warm.getvalue())
warm = io.BytesIO(); Image.new("RGB", (64, 64)).save(warm, "JPEG")
decode_image(warm.getvalue())
data = open(sys.argv[1], "rb").read()
gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    out = {"shape": list(decode_image(data, DecodeConfig(image_max_pixels=16_000_000)).shape)}
except DecodeFailed as exc:
    out = {"reason": exc.reason}
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["peak_mb"] = (after - before) / 1024  # ru_maxrss is in kB on Linux
out["file_kb"] = len(data) / 1024
print(json.dumps(out))
"""

_ROOT = Path(__file__).resolve().parents[2]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, alpha: bool) -> None:
    """A PNG written row by row (the generator itself never holds the image): a gradient, with
    a soft alpha ramp when ``alpha``. A constant image would be a decompression bomb."""
    import numpy as np

    channels = 4 if alpha else 3
    comp = zlib.compressobj(1)
    x = np.arange(width, dtype=np.uint32)
    with path.open("wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
        f.write(_chunk(b"IHDR", ihdr))
        for y in range(height):
            row = np.empty((width, channels), np.uint8)
            row[:, 0] = (x * 255 // width).astype(np.uint8)
            row[:, 1] = y * 255 // height
            row[:, 2] = ((x + y) % 256).astype(np.uint8)
            if alpha:
                row[:, 3] = ((x // 64 + y // 64) % 2) * 255  # opaque and transparent squares
            data = comp.compress(b"\x00" + row.tobytes())
            if data:
                f.write(_chunk(b"IDAT", data))
        f.write(_chunk(b"IDAT", comp.flush()))
        f.write(_chunk(b"IEND", b""))


def write_bomb(path: Path, side: int = 6300) -> None:
    """The issue's bomb: a flat RGB PNG of ``side`` x ``side`` (a few hundred kB on disk)."""
    comp = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * (side * 3)
    with path.open("wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)))
        body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
        f.write(_chunk(b"IDAT", body))
        f.write(_chunk(b"IEND", b""))


_JPEG = r"""
import sys
import numpy as np
from PIL import Image
w, h = int(sys.argv[2]), int(sys.argv[3])
yy, xx = np.mgrid[0:h, 0:w].astype(np.uint16)
rgb = np.stack([xx % 256, yy % 256, (xx // 8 + yy // 8) % 256], axis=2).astype(np.uint8)
del yy, xx
im = Image.fromarray(rgb)
exif = Image.Exif(); exif[0x0112] = 6  # rotated: exif_transpose must turn it upright
im.save(sys.argv[1], "JPEG", quality=85, exif=exif.tobytes())
"""


def write_jpeg(path: Path, width: int, height: int) -> None:
    """An EXIF-rotated JPEG, encoded in a subprocess (so the test process never holds it)."""
    subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _JPEG, str(path), str(width), str(height)],
        check=True, cwd=_ROOT, timeout=120,
    )


def peak(path: Path) -> dict[str, object]:
    proc = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _CHILD, str(path)],
        check=True, cwd=_ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(_ROOT), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


W, H = 4896, 3248  # 15.9 MP, just under the 16 MP limit
BOUND_MB = 4 * W * H / 2**20 + 100


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("big-images")
    paths = {"bomb": d / "bomb.png", "png_alpha": d / "alpha.png", "jpeg_exif": d / "exif.jpg"}
    write_bomb(paths["bomb"])
    write_png(paths["png_alpha"], W, H, alpha=True)
    write_jpeg(paths["jpeg_exif"], W, H)
    return paths


def test_png_bomb_is_refused_from_its_header(images: dict[str, Path]) -> None:
    got = peak(images["bomb"])
    assert got["reason"] == "too_large"
    assert got["peak_mb"] < 20  # the 119 MB of pixels were never allocated


def test_16_mp_png_with_alpha_peaks_under_the_bound(images: dict[str, Path]) -> None:
    got = peak(images["png_alpha"])
    assert got["shape"] == [297, 448, 3]
    assert got["peak_mb"] < BOUND_MB


def test_16_mp_rotated_jpeg_peaks_under_the_bound(images: dict[str, Path]) -> None:
    got = peak(images["jpeg_exif"])
    assert got["shape"] == [448, 297, 3]  # EXIF orientation 6: upright is portrait
    assert got["peak_mb"] < BOUND_MB


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_bomb(d / "bomb.png")
        write_png(d / "alpha.png", W, H, alpha=True)
        write_png(d / "opaque.png", W, H, alpha=False)
        write_jpeg(d / "exif.jpg", W, H)
        for name in ("bomb.png", "alpha.png", "opaque.png", "exif.jpg"):
            print(name, peak(d / name))
        print(f"bound: {BOUND_MB:.0f} MB")
