"""Text read from images (memes, screenshots) with RapidOCR: PP-OCRv4 detection + recognition.

``rapidocr-onnxruntime`` runs three ONNX models (text detection, 0/180 degree direction
classification, recognition) with onnxruntime on the CPU. Its defaults upscale an image until its
*short* side is 736 px before detection, which is slow and useless for the big text of memes, so
:class:`OcrReader` first shrinks an image to ``max_side`` px on its long side and caps the detector
to the same long side. Lines come back in reading order (top to bottom, left to right, as
RapidOCR sorts its boxes), joined by single spaces.

Blocking and not thread-safe by design: one dedicated inference thread owns a reader.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Sequence

import numpy as np

from model.encoders.image import to_rgb_uint8

__all__ = ["OcrReader"]


class OcrReader:
    """``read(images) -> list[str]``: the text in each RGB ``(H, W, 3) uint8`` image, or ``""``.

    ``threads`` caps onnxruntime's intra-op threads of each of the three sessions (they run one
    after another, never at once); ``max_side`` is the long side images are shrunk to;
    ``min_score`` drops recognised lines below that confidence; ``use_cls`` runs the
    upside-down text classifier (cheap; off saves ~5 %).
    """

    def __init__(
        self,
        threads: int = 2,
        *,
        max_side: int = 640,
        min_score: float = 0.5,
        unglue: bool = False,
        use_cls: bool = True,
    ) -> None:
        from rapidocr_onnxruntime import RapidOCR

        threads = max(1, min(int(threads), os.cpu_count() or 1))  # RapidOCR ignores > cpu_count
        self.threads = threads
        self.max_side = int(max_side)
        self.min_score = float(min_score)
        # FeatureExtractor splits glued words in what this reads (model.serving.unglue); the raw
        # text (and so the cache of it, keyed by ``identity``) does not change
        self.unglue = bool(unglue)
        self.use_cls = bool(use_cls)
        self.engine = RapidOCR(
            intra_op_num_threads=threads,
            inter_op_num_threads=1,
            det_limit_type="max",
            det_limit_side_len=self.max_side,
            text_score=self.min_score,
            print_verbose=False,
        )
        # RapidOCR's loggers are set to DEBUG with their own handler; keep worker logs readable.
        for name in ("RapidOCR", "OrtInferSession"):
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            ver = importlib.metadata.version("rapidocr-onnxruntime")
        except importlib.metadata.PackageNotFoundError:
            ver = "unknown"
        #: Changes when the text read could change (media cache keys).
        self.identity = (
            f"rapidocr-onnxruntime=={ver}|side{self.max_side}|score{self.min_score}"
            f"|cls{int(self.use_cls)}"
        )

    def _shrink(self, bgr: np.ndarray) -> np.ndarray:
        import cv2  # a dependency of rapidocr-onnxruntime

        h, w = bgr.shape[:2]
        scale = self.max_side / max(h, w)
        if scale >= 1.0:
            return bgr
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)

    def read_one(self, image: np.ndarray) -> str:
        """The lines found in one RGB image joined by spaces, ``""`` when none."""
        # RapidOCR takes a 3-channel ndarray as BGR (OpenCV order) and converts nothing.
        bgr = np.ascontiguousarray(to_rgb_uint8(image)[:, :, ::-1])
        result, _ = self.engine(self._shrink(bgr), use_cls=self.use_cls)
        if not result:
            return ""
        lines = (str(r[1]).strip() for r in result if float(r[2]) >= self.min_score)
        return " ".join(line for line in lines if line)

    def read(self, images: Sequence[np.ndarray]) -> list[str]:
        """The text of each image, in order (``""`` for an image without readable text)."""
        return [self.read_one(im) for im in images]
