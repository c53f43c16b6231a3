"""Text read from images (memes, screenshots) with RapidOCR: PP-OCRv4 detection + recognition.

``rapidocr-onnxruntime`` runs three ONNX models (text detection, 0/180 degree direction
classification, recognition) with onnxruntime on the CPU. Its defaults upscale an image until its
*short* side is 736 px before detection, which is slow and useless for the big text of memes, so
:class:`OcrReader` first shrinks an image to ``max_side`` px on its long side and caps the detector
to the same long side. Lines come back in reading order (top to bottom, left to right, as
RapidOCR sorts its boxes), joined by single spaces.

``read(images)`` (``batched=True``, the default) runs RapidOCR's three steps itself, over all
images of a call: detection per image (an image without a text box stops there: no
classification, no recognition), the direction classifier on every line of every image at once
(a fixed 48x192 input: batching it changes nothing), then recognition. Recognition batches pad
every line to the widest of its batch; on a CPU that padding costs more than the batch saves
(measured on the bench's memes: 0.24 s per image one line at a time vs 0.39 s in RapidOCR's
batches of 6) and it can change a character at a line's end, so the CPU recognises one line at
a time and CUDA batches ``rec_batch`` lines sorted by width. The sessions get onnxruntime's
CPU memory arena (RapidOCR turns it off; its dynamic shapes then allocate on every call) and
the providers of :func:`onnx_providers` (CUDA when onnxruntime has it: the ``gpu`` extra,
``onnxruntime-gpu``). ``batched=False`` is RapidOCR's own call per image, as before.

Blocking and not thread-safe by design: one dedicated inference thread owns a reader.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from model.encoders.image import to_rgb_uint8

__all__ = ["OcrReader", "onnx_providers"]

_CUDA_EP = "CUDAExecutionProvider"
_CPU_EP = "CPUExecutionProvider"


def onnx_providers(
    device: str = "auto", available: Sequence[str] | None = None
) -> list[str | tuple[str, dict[str, Any]]]:
    """onnxruntime providers for ``device`` (``auto``, ``cpu``, ``cuda[:i]``): CUDA first when
    ``available`` (default: ``onnxruntime.get_available_providers()``) has it and the device is
    not ``cpu``, always the CPU after it (for any operator CUDA lacks)."""
    kind, _, index = device.partition(":")
    if kind not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:i], not {device!r}")
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    if kind != "cpu" and _CUDA_EP in available:
        # every image has its own detector input size: an exhaustive cuDNN search per new
        # shape (onnxruntime's default) would cost more than the convolution it picks
        options = {"device_id": int(index or 0), "cudnn_conv_algo_search": "HEURISTIC"}
        return [(_CUDA_EP, options), _CPU_EP]
    return [_CPU_EP]


class OcrReader:
    """``read(images) -> list[str]``: the text in each RGB ``(H, W, 3) uint8`` image, or ``""``.

    ``threads`` caps onnxruntime's intra-op threads of each of the three sessions (they run one
    after another, never at once); ``max_side`` is the long side images are shrunk to;
    ``min_score`` drops recognised lines below that confidence; ``use_cls`` runs the
    upside-down text classifier (cheap; off saves ~5 %). ``device``: ``auto`` (CUDA when
    onnxruntime has it), ``cpu`` or ``cuda[:i]``; ``batched`` and ``rec_batch`` (lines per
    recognition call; default 1 on a CPU, 32 on CUDA): see the module docstring.
    """

    def __init__(
        self,
        threads: int = 2,
        *,
        max_side: int = 640,
        min_score: float = 0.5,
        unglue: bool = False,
        use_cls: bool = True,
        device: str = "auto",
        batched: bool = True,
        rec_batch: int | None = None,
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
        self.batched = bool(batched)
        self.providers = onnx_providers(device) if self.batched else [_CPU_EP]
        self.on_cuda = self.providers[0] != _CPU_EP
        if rec_batch is None:
            rec_batch = 32 if self.on_cuda else 1
        self.rec_batch = max(1, int(rec_batch))
        if self.batched:
            self._own_sessions(threads)
        try:
            ver = importlib.metadata.version("rapidocr-onnxruntime")
        except importlib.metadata.PackageNotFoundError:
            ver = "unknown"
        #: Changes when the text read could change (media cache keys).
        self.identity = (
            f"rapidocr-onnxruntime=={ver}|side{self.max_side}|score{self.min_score}"
            f"|cls{int(self.use_cls)}"
            + (f"|rec{self.rec_batch}" + ("|cuda" if self.on_cuda else "") if self.batched else "")
        )

    def _own_sessions(self, threads: int) -> None:
        """Replace RapidOCR's three sessions (same model files) with ours: arena, providers."""
        import onnxruntime as ort
        from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH
        from rapidocr_onnxruntime.utils import read_yaml
        from rapidocr_onnxruntime.utils.parse_parameters import update_model_path

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = True
        e = self.engine
        config = update_model_path(read_yaml(str(DEFAULT_CFG_PATH)))  # RapidOCR's model files
        # rapidocr-onnxruntime 1.4: each step holds an OrtInferSession around .session
        steps = (("Det", e.text_det.infer), ("Cls", e.text_cls.infer), ("Rec", e.text_rec.session))
        for step, holder in steps:
            holder.session = ort.InferenceSession(
                config[step]["model_path"], sess_options=opts, providers=self.providers
            )
        e.text_rec.rec_batch_num = self.rec_batch

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

    def _lines(self, rec: Sequence[Sequence[Any]]) -> str:
        lines = (str(r[0]).strip() for r in rec if float(r[1]) >= self.min_score)
        return " ".join(line for line in lines if line)

    def read(self, images: Sequence[np.ndarray]) -> list[str]:
        """The text of each image, in order (``""`` for an image without readable text)."""
        if not self.batched:
            return [self.read_one(im) for im in images]
        e = self.engine
        crops: list[np.ndarray] = []
        owner: list[int] = []
        for i, image in enumerate(images):  # RapidOCR.__call__'s steps up to the line crops
            bgr = np.ascontiguousarray(to_rgb_uint8(image)[:, :, ::-1])
            img, _, _ = e.preprocess(self._shrink(bgr))
            img, _ = e.maybe_add_letterbox(img, {})
            boxes, _ = e.auto_text_det(img)
            if boxes is None:  # no text: nothing to classify or recognise
                continue
            found = e.get_crop_img_list(img, boxes)
            crops.extend(found)
            owner.extend([i] * len(found))
        if not crops:
            return [""] * len(images)
        if self.use_cls:
            crops, _, _ = e.text_cls(crops)
        rec, _ = e.text_rec(crops)  # [(text, score), ...] in crop order
        per_image: list[list[Any]] = [[] for _ in images]
        for i, r in zip(owner, rec, strict=True):
            per_image[i].append(r)
        return [self._lines(r) for r in per_image]
