"""Decoding real files made here: images (EXIF, bombs, truncation) and audio (WAV/FLAC/OGG)."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from workers.address_policy import DecodeFailed
from workers.media_decode import (
    DecodeConfig,
    decode,
    decode_async,
    decode_audio,
    decode_image,
    resample,
    sniff,
)

# -- builders


def image_bytes(im: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def halves(size: tuple[int, int] = (200, 100)) -> Image.Image:
    """Left half red, right half blue."""
    im = Image.new("RGB", size, (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return im


def jpeg_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image_bytes(halves(), "JPEG", quality=95, exif=exif.tobytes())


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` but carries a tiny IDAT: a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def sine(rate: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def audio_bytes(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * rate / x.size)


HTML = b"<!doctype html><html><body>not an image</body></html>"
PNG = image_bytes(halves(), "PNG")
WAV = audio_bytes(sine(16_000, 0.5), 16_000, "WAV")

# -- sniffing


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (PNG, "png"),
        (image_bytes(halves(), "JPEG"), "jpeg"),
        (image_bytes(halves(), "GIF"), "gif"),
        (image_bytes(halves(), "WEBP"), "webp"),
        (image_bytes(halves(), "BMP"), "bmp"),
        (WAV, "wav"),
        (audio_bytes(sine(16_000, 0.2), 16_000, "FLAC"), "flac"),
        (audio_bytes(sine(16_000, 0.2), 16_000, "OGG"), "ogg"),
        (HTML, None),
        (b"BM this is text", None),
        (b"", None),
        (b"\x1f\x8b\x08\x00gzip", None),
    ],
)
def test_sniff_reads_magic_bytes_only(data: bytes, fmt: str | None) -> None:
    assert sniff(data) == fmt


# -- images


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_decode_every_image_format(fmt: str) -> None:
    arr = decode_image(image_bytes(halves(), fmt))
    assert arr.shape == (100, 200, 3)
    assert arr.dtype == np.uint8
    left, right = arr[50, 20], arr[50, 180]
    assert left[0] > 200 and left[2] < 60  # red
    assert right[2] > 200 and right[0] < 60  # blue


def test_exif_orientation_6_is_rotated_upright() -> None:
    arr = decode_image(jpeg_with_orientation(6))  # stored 200x100, shown rotated 90 clockwise
    assert arr.shape == (200, 100, 3)  # H, W: portrait now
    top, bottom = arr[20, 50], arr[180, 50]
    assert top[0] > 200 and top[2] < 60  # the stored left (red) is on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_orientation_3_is_rotated_180() -> None:
    arr = decode_image(jpeg_with_orientation(3))
    assert arr.shape == (100, 200, 3)
    assert arr[50, 20][2] > 200  # blue now on the left
    assert arr[50, 180][0] > 200


def test_modes_become_rgb_and_transparency_goes_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert decode_image(image_bytes(rgba, "PNG"))[0, 0].tolist() == [255, 255, 255]
    gray = Image.new("L", (10, 10), 128)
    assert decode_image(image_bytes(gray, "PNG"))[0, 0].tolist() == [128, 128, 128]
    pal = halves().convert("P")
    assert decode_image(image_bytes(pal, "PNG")).shape == (100, 200, 3)
    cmyk = Image.new("CMYK", (10, 10), (0, 0, 0, 0))
    assert decode_image(image_bytes(cmyk, "JPEG")).shape == (10, 10, 3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_resize_longer_side_to_configured_size(fmt: str) -> None:
    big = image_bytes(halves((1600, 800)), fmt)
    assert decode_image(big).shape == (224, 448, 3)
    assert decode_image(big, DecodeConfig(image_max_side=100)).shape == (50, 100, 3)
    small = image_bytes(halves((40, 20)), fmt)
    assert decode_image(small).shape == (20, 40, 3)  # never upscaled


def test_decompression_bomb_refused_before_decoding() -> None:
    # 8000 x 8000 = 64 Mpx of 1-bit pixels: a few kB of PNG, ~192 MB once decoded to RGB.
    bomb = image_bytes(Image.new("1", (8000, 8000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(DecodeFailed) as info:
        decode_image(bomb)
    assert info.value.reason == "too_large"
    # Far past Pillow's own limit: its DecompressionBombError is reported the same way.
    with pytest.raises(DecodeFailed, match="too_large"):
        decode_image(png_header_only(60_000, 60_000))
    with pytest.raises(DecodeFailed, match="too_large"):
        decode_image(PNG, DecodeConfig(image_max_pixels=100 * 100))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_image_is_decode_error(fmt: str) -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    data = image_bytes(noisy, fmt)
    with pytest.raises(DecodeFailed) as info:
        decode_image(data[: len(data) // 2])
    assert info.value.reason == "decode_error"


def test_corrupt_header_is_decode_error() -> None:
    with pytest.raises(DecodeFailed, match="decode_error"):
        decode_image(PNG[:20])
    with pytest.raises(DecodeFailed, match="decode_error"):
        decode_image(b"\xff\xd8\xff" + b"\x00" * 100)


@pytest.mark.parametrize(
    ("data", "kind"),
    [(HTML, "image"), (WAV, "image"), (PNG, "audio"), (HTML, "audio"), (b"", "image")],
)
def test_wrong_type_is_unsupported_type(data: bytes, kind: str) -> None:
    with pytest.raises(DecodeFailed) as info:
        decode(data, kind)
    assert info.value.reason == "unsupported_type"


def test_unknown_kind() -> None:
    with pytest.raises(DecodeFailed, match="unsupported_type"):
        decode(PNG, "video")


# -- audio


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [
        ("WAV", "PCM_16", 16_000, 1),
        ("WAV", "PCM_16", 44_100, 2),
        ("WAV", "FLOAT", 8_000, 1),
        ("WAV", "PCM_24", 48_000, 2),
        ("FLAC", None, 48_000, 2),
        ("FLAC", None, 22_050, 1),
        ("OGG", None, 22_050, 2),
        ("OGG", None, 44_100, 1),
    ],
)
def test_audio_to_mono_16k(fmt: str, subtype: str | None, rate: int, channels: int) -> None:
    data = audio_bytes(sine(rate, 1.0, 440.0, channels), rate, fmt, subtype)
    out = decode_audio(data)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - 16_000) <= 2
    assert abs(peak_hz(out, 16_000) - 440.0) < 5
    assert 0.4 < float(np.abs(out[1000:-1000]).max()) < 0.6  # amplitude kept by the downmix


def test_stereo_downmix_is_the_mean() -> None:
    left = sine(16_000, 0.5)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    out = decode_audio(audio_bytes(stereo, 16_000, "WAV", "FLOAT"))
    np.testing.assert_allclose(out, left / 2, atol=1e-6)


def test_audio_duration_is_capped() -> None:
    data = audio_bytes(sine(8_000, 40.0), 8_000, "WAV")
    assert decode_audio(data).size == 30 * 16_000
    assert decode_audio(data, DecodeConfig(audio_max_seconds=2.5)).size == 40_000


def test_audio_custom_rate() -> None:
    data = audio_bytes(sine(44_100, 1.0, 1000.0), 44_100, "WAV")
    out = decode_audio(data, DecodeConfig(audio_sample_rate=24_000))
    assert abs(out.size - 24_000) <= 2
    assert abs(peak_hz(out, 24_000) - 1000.0) < 5


def test_corrupt_audio_is_decode_error() -> None:
    with pytest.raises(DecodeFailed, match="decode_error"):
        decode_audio(b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunkjunk")
    flac = audio_bytes(sine(16_000, 0.5), 16_000, "FLAC")
    with pytest.raises(DecodeFailed, match="decode_error"):
        decode_audio(flac[:30])  # STREAMINFO cut
    with pytest.raises(DecodeFailed, match="decode_error"):
        decode_audio(b"OggS" + b"\x00" * 60)


def test_truncated_audio_keeps_what_arrived_or_fails_cleanly() -> None:
    wav = audio_bytes(sine(16_000, 1.0), 16_000, "WAV")
    out = decode_audio(wav[: len(wav) // 2])  # a cut WAV still has its first half
    assert 0 < out.size <= 8_000
    ogg = audio_bytes(sine(16_000, 1.0), 16_000, "OGG")
    try:
        out = decode_audio(ogg[: len(ogg) // 2])
    except DecodeFailed as exc:
        assert exc.reason == "decode_error"
    else:
        assert out.dtype == np.float32 and out.size < 16_000


# -- resampling


@pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 32_000, 44_100, 48_000])
def test_resample_keeps_frequency_and_length(rate: int) -> None:
    x = sine(rate, 0.5, 1000.0)
    y = resample(x, rate, 16_000)
    assert abs(y.size - 8_000) <= 1  # 0.5 s of 11025 Hz is 5512 samples
    assert abs(peak_hz(y, 16_000) - 1000.0) < 5
    assert 0.45 < float(np.abs(y[200:-200]).max()) < 0.55


def test_resample_filters_what_cannot_be_represented() -> None:
    y = resample(sine(48_000, 0.5, 12_000.0), 48_000, 16_000)  # 12 kHz > 8 kHz Nyquist
    assert float(np.sqrt(np.mean(y[200:-200] ** 2))) < 1e-3  # removed, not aliased to 4 kHz


def test_resample_identity_and_empty() -> None:
    x = sine(16_000, 0.1)
    np.testing.assert_array_equal(resample(x, 16_000, 16_000), x)
    assert resample(np.zeros(0, np.float32), 44_100, 16_000).size == 0


# -- async wrapper


async def test_decode_async_runs_in_the_given_executor() -> None:
    with ThreadPoolExecutor(1, thread_name_prefix="decode-test") as pool:
        arr = await decode_async(PNG, "image", DecodeConfig(), pool)
        assert arr.shape == (100, 200, 3)
        with pytest.raises(DecodeFailed, match="unsupported_type"):
            await decode_async(HTML, "image", DecodeConfig(), pool)
