"""The fusion model: one token per modality slot, a small Transformer, one linear layer per head.

Inputs are the per-comment features of :mod:`model.serving.features` (a batch: dict of tensors)::

    text    (B, Dt)   MiniLM of the comment text          slot 0
    image   (B, Di)   EfficientNet-Lite0, mean of images   slot 1
    ocr     (B, Dt)   MiniLM of the text read in images    slot 2
    speech  (B, Dt)   MiniLM of the audio transcripts      slot 3
    mel     (B, T, M) + mel_lengths (B,)  log-mel frames   slot 4 (acoustic, encoded here)
    present (B, 5)    bool, which slots the comment has (PRESENCE order)

Forward pass, top to bottom:

1. every slot becomes one ``d_model`` token: per-feature standardisation (training mean / std,
   stored as buffers), LayerNorm + Linear of its features (text, ocr and
   speech share one projection when ``share_text_proj``: they live in the same MiniLM space, so
   what the 28k text tweets teach transfers to text read from memes and voice notes), the
   acoustic slot goes through the trainable :class:`~model.nn.acoustic.AcousticEncoder` first; a
   learned type embedding per slot says which slot a token is;
2. an ABSENT slot's token is replaced by a learned per-slot "missing" embedding (so its input
   values never matter) and masked out of attention as a key; the CLS token starts as
   ``cls + sum of the missing embeddings of the absent slots``, so the model still knows *which*
   modalities are missing, and CLS is always a valid key (a comment with nothing present still
   gets an output);
3. in training, modality dropout marks present slots absent at random (never all of them);
4. a pre-norm TransformerEncoder over ``[CLS, text, image, ocr, speech, acoustic]``;
5. the final CLS state goes through one ``nn.Linear`` per head (``nn.ModuleDict``): more heads can
   be added later without breaking stored weights of the existing ones;
6. **text expert** (``text_expert_hidden > 0``): a frozen copy of the text model's sentiment MLP
   (``models/text``, trained on 28k tweets) reads each present text-space slot (the comment
   text, the text read in the images, the transcript) on its own, and the sentiment logits are
   ``head(CLS) + sum over present slots of gate_s(CLS) * expert(slot)`` with
   ``gate = softplus(Linear(CLS))`` (B, 3). The gates start at 1 and the head at 0, so an
   untrained model *is* the text model on text-only comments; training learns when to trust
   which slot ("see pic" + a meme: the OCR) and what the image and acoustic tokens add.
   Absent slots contribute nothing, by the mask. The expert may be an ensemble
   (``text_expert_members``: its members' logits are averaged, as in the text model);
7. **text-only routing** (``text_only_expert``): a comment whose only present slot is its text
   gets the expert's logits on that text, unchanged: the default model *is* its text model on
   text-only comments (never worse, same calibration input, and no Transformer for them: the
   text-only throughput is the text model's). The Transformer runs only on comments with media.
   :meth:`FusionModel.expert_rows` says which rows take that route (the serving path calibrates
   the two routes with their own temperatures, :mod:`model.format.calibration`).

``forward(batch) -> {head: logits (B, C)}``. Checkpoints carry their config and a format
version (:func:`fusion_state` / :func:`load_fusion_state`); safetensors only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from model.base import LABELS, SENTIMENT_HEAD
from model.errors import ModelFormatError
from model.nn.acoustic import AcousticEncoder, AcousticEncoderConfig
from model.nn.heads import HeadConfig, MLPHead

__all__ = [
    "FUSION_FORMAT_VERSION",
    "SLOTS",
    "FusionConfig",
    "FusionModel",
    "fusion_state",
    "load_fusion_state",
    "modality_dropout",
    "text_only_rows",
]

#: Columns of the ``present`` mask (the features' slots), in order.
PRESENCE: tuple[str, ...] = ("text", "image", "ocr", "speech", "acoustic")
#: Token slots, in :data:`PRESENCE` order.
SLOTS: tuple[str, ...] = PRESENCE
#: Version of the fusion weights layout (keys and config fields) in ``model.safetensors``.
FUSION_FORMAT_VERSION = 1
_TEXT_SPACE = ("text", "ocr", "speech")  # slots holding text-encoder features
EXPERT_HEAD = SENTIMENT_HEAD  # the head the text expert adds to (the text model's head)


@dataclass(frozen=True)
class FusionConfig:
    """Everything that fixes the fusion model's shapes (stored as ``fusion`` in config.json)."""

    text_dim: int = 384  # text-encoder width: text, ocr and speech slots
    image_dim: int = 1280  # image-encoder width
    acoustic: AcousticEncoderConfig = AcousticEncoderConfig()  # log-mel CNN (trained here)
    d_model: int = 192
    n_heads: int = 4
    n_layers: int = 2
    ff_mult: int = 4
    dropout: float = 0.1
    modality_dropout: float = 0.25  # per present slot, training only; never drops all
    share_text_proj: bool = True
    text_expert_hidden: int = 0  # hidden width of the frozen text-model head (0: no expert)
    text_expert_members: int = 1  # ensemble members of that head (logits averaged)
    text_only_expert: bool = False  # text-only comments: the expert's logits, no Transformer
    heads: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {SENTIMENT_HEAD: LABELS})

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ModelFormatError(
                f"d_model {self.d_model} not divisible by n_heads {self.n_heads}"
            )
        if min(self.text_dim, self.image_dim, self.d_model, self.n_layers, self.ff_mult) <= 0:
            raise ModelFormatError(f"bad fusion dimensions: {self}")
        if self.text_expert_hidden < 0 or self.text_expert_members < 1:
            raise ModelFormatError(f"bad text expert shape: {self}")
        if self.text_only_expert and not self.text_expert_hidden:
            raise ModelFormatError("text_only_expert needs a text expert (text_expert_hidden > 0)")
        if self.text_expert_hidden and EXPERT_HEAD not in self.heads:
            raise ModelFormatError(f"a text expert needs a {EXPERT_HEAD!r} head")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.modality_dropout < 1.0):
            raise ModelFormatError(f"dropouts must be in [0, 1): {self}")
        if not self.heads:
            raise ModelFormatError("a fusion model needs at least one head")
        for name, labels in self.heads.items():
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise ModelFormatError(f"head {name!r} needs >= 2 distinct labels, got {labels}")
        object.__setattr__(self, "heads", {k: tuple(v) for k, v in self.heads.items()})

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["acoustic"] = self.acoustic.to_json()
        d["heads"] = {k: list(v) for k, v in self.heads.items()}
        return d

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FusionConfig:
        d = dict(data)
        try:
            d["acoustic"] = AcousticEncoderConfig.from_json(dict(d.get("acoustic", {})))
            d["heads"] = {k: tuple(v) for k, v in dict(d.get("heads", {})).items()} or {
                SENTIMENT_HEAD: LABELS
            }
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"bad fusion section: {exc}") from exc


def modality_dropout(present: torch.Tensor, p: float, generator: torch.Generator | None = None):
    """``present`` (B, S) bool with each True dropped with probability ``p``, never all of a row.

    A row that would lose every present slot keeps one of them, picked uniformly at random.
    Rows with nothing present stay empty.
    """
    if p <= 0:
        return present
    r = torch.rand(present.shape, generator=generator, device=present.device)  # (B, S)
    kept = present & (r >= p)  # (B, S)
    lost_all = present.any(1) & ~kept.any(1)  # (B,)
    if lost_all.any():
        pick = torch.rand(present.shape, generator=generator, device=present.device)
        one = (pick * present).argmax(1)  # (B,) a random present slot
        rescue = torch.zeros_like(present)
        rescue[torch.arange(present.shape[0], device=present.device), one] = True
        kept = kept | (rescue & lost_all[:, None])
    return kept


def text_only_rows(present: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: the rows of ``present`` ``(B, S)`` whose only present slot is the text."""
    present = present.bool()
    return present[:, 0] & ~present[:, 1:].any(1)


class FusionModel(nn.Module):
    """Per-modality tokens -> TransformerEncoder -> CLS -> one Linear per head."""

    def __init__(self, config: FusionConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or FusionConfig()
        d = c.d_model

        def proj(width: int) -> nn.Sequential:
            return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d))

        # One projection per distinct feature space; slot -> projection name.
        self.slot_proj = {s: ("text" if c.share_text_proj else s) for s in _TEXT_SPACE}
        self.slot_proj |= {"image": "image", "acoustic": "acoustic"}
        text_projs = ("text",) if c.share_text_proj else _TEXT_SPACE
        self.proj = nn.ModuleDict({name: proj(c.text_dim) for name in text_projs})
        self.proj["image"] = proj(c.image_dim)
        self.acoustic = AcousticEncoder(c.acoustic)
        self.proj["acoustic"] = proj(c.acoustic.dim)

        # Per-feature standardisation of the frozen features (training-set mean / std, stored).
        for space, width in (("text", c.text_dim), ("image", c.image_dim)):
            self.register_buffer(f"{space}_mean", torch.zeros(width))
            self.register_buffer(f"{space}_std", torch.ones(width))

        n = len(SLOTS)
        self.type_emb = nn.Parameter(torch.randn(n, d) * 0.02)  # (S, D)
        self.missing_emb = nn.Parameter(torch.randn(n, d) * 0.02)  # (S, D)
        self.cls_emb = nn.Parameter(torch.randn(d) * 0.02)  # (D,)
        layer = nn.TransformerEncoderLayer(
            d,
            c.n_heads,
            dim_feedforward=c.ff_mult * d,
            dropout=c.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.heads = nn.ModuleDict({k: nn.Linear(d, len(v)) for k, v in c.heads.items()})

        self.text_expert: MLPHead | None = None
        if c.text_expert_hidden:
            labels = c.heads[EXPERT_HEAD]
            self.text_expert = MLPHead(
                HeadConfig(
                    c.text_dim,
                    c.text_expert_hidden,
                    standardize=True,
                    members=c.text_expert_members,
                    labels=labels,
                )
            )
            self.text_expert.requires_grad_(False)  # frozen: load_text_expert() fills it
            self.expert_gate = nn.Linear(d, len(_TEXT_SPACE))
            nn.init.zeros_(self.expert_gate.weight)
            nn.init.constant_(self.expert_gate.bias, math.log(math.e - 1))  # softplus(b) = 1
            nn.init.zeros_(self.heads[EXPERT_HEAD].weight)  # the head learns a residual
            nn.init.zeros_(self.heads[EXPERT_HEAD].bias)

    def load_text_expert(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy a text model's sentiment head (its ``model.safetensors`` keys
        ``heads.sentiment.*``) into the frozen expert."""
        if self.text_expert is None:
            raise ModelFormatError("this fusion config has no text expert (text_expert_hidden=0)")
        prefix = f"heads.{EXPERT_HEAD}."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            self.text_expert.load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            raise ModelFormatError(f"text model head does not fit the expert: {exc}") from exc

    def train(self, mode: bool = True) -> FusionModel:
        super().train(mode)
        if self.text_expert is not None:
            self.text_expert.eval()  # frozen: no dropout, ever
        return self

    def set_standardization(self, space: str, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training features' mean / std of ``space`` (``text`` or ``image``).

        A feature that hardly varies in training gets the std floor ``0.1 * median std``, not
        its own near-zero std: otherwise a picture unlike the training ones (a real photo after
        synthetic renders) turns that feature into a z-score of thousands.
        """
        floor = max(1e-4, 0.1 * float(std.median()))
        getattr(self, f"{space}_mean").copy_(mean)
        getattr(self, f"{space}_std").copy_(std.clamp(min=floor))

    def tokens(self, batch: Mapping[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """The raw slot tokens ``(B, S, D)`` before masking (absent rows are garbage).

        The acoustic encoder only runs on comments whose acoustic slot is ``present``.
        """
        b = present.shape[0]
        out = []
        for s in SLOTS:
            if s == "acoustic":
                emb = self._acoustic(batch, present[:, SLOTS.index(s)])  # (B, Da)
            else:
                space = "image" if s == "image" else "text"
                mean, std = getattr(self, f"{space}_mean"), getattr(self, f"{space}_std")
                emb = (batch[s].float() - mean) / std  # (B, Dt) or (B, Di)
            out.append(self.proj[self.slot_proj[s]](emb))  # (B, D)
        return torch.stack(out, 1).reshape(b, len(SLOTS), -1)  # (B, S, D)

    def _acoustic(self, batch: Mapping[str, torch.Tensor], has_audio: torch.Tensor):
        """Acoustic embeddings ``(B, Da)``, computed only for comments with audio (zeros else)."""
        b = has_audio.shape[0]
        out = torch.zeros(b, self.config.acoustic.dim, device=has_audio.device)  # (B, Da)
        idx = has_audio.nonzero().flatten()
        if len(idx):
            mel = batch["mel"][idx].float()  # (b', T, M)
            emb = self.acoustic(mel, batch["mel_lengths"][idx])  # (b', Da)
            out = out.index_copy(0, idx, emb.to(out.dtype))
        return out

    def expert_rows(self, present: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: the rows (of an eval-mode forward) whose sentiment logits are the text
        expert's, not the Transformer's: text-only comments, when ``text_only_expert`` is set."""
        if not self.config.text_only_expert:
            return torch.zeros(len(present), dtype=torch.bool, device=present.device)
        return text_only_rows(present)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        present = batch["present"].bool()  # (B, S)
        if self.training and self.config.modality_dropout > 0:
            present = modality_dropout(present, self.config.modality_dropout)
        if not self.config.text_only_expert:
            return self._fused(batch, present)
        assert self.text_expert is not None
        only_text = text_only_rows(present)  # (B,)
        if not only_text.any():
            return self._fused(batch, present)
        # Text-only rows: the expert's logits. The Transformer runs on the other rows (on every
        # row when there are other heads, which have no expert to fall back on).
        rows = torch.arange(len(present), device=present.device)
        fuse = rows if len(self.heads) > 1 else rows[~only_text]
        out = {}
        if len(fuse):
            sub = {k: v[fuse] for k, v in batch.items() if torch.is_tensor(v) and v.dim() > 0}
            out = self._fused(sub, present[fuse])
        text_logits = self.text_expert(batch["text"][only_text].float())  # (b', C)
        sentiment = torch.zeros(
            len(present), text_logits.shape[-1], device=present.device, dtype=text_logits.dtype
        )  # (B, C)
        if EXPERT_HEAD in out:
            sentiment = sentiment.index_copy(0, fuse, out[EXPERT_HEAD].to(sentiment.dtype))
        idx = only_text.nonzero().flatten()
        out[EXPERT_HEAD] = sentiment.index_copy(0, idx, text_logits)
        return out

    def _fused(
        self, batch: Mapping[str, torch.Tensor], present: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Every head's logits from the Transformer (plus the gated expert), for every row."""
        tok = self.tokens(batch, present)  # (B, S, D)
        keep = present[..., None]  # (B, S, 1)
        tok = torch.where(keep, tok, self.missing_emb.to(tok.dtype)) + self.type_emb  # (B, S, D)
        absent = (~present).to(tok.dtype)  # (B, S)
        cls = self.cls_emb + absent @ self.missing_emb  # (B, D)
        x = torch.cat([cls[:, None, :], tok], 1)  # (B, 1 + S, D)
        pad = torch.cat([torch.zeros_like(present[:, :1]), ~present], 1)  # (B, 1 + S) True=ignore
        x = self.encoder(x, src_key_padding_mask=pad)  # (B, 1 + S, D)
        h = self.norm(x[:, 0])  # (B, D)
        out = {name: head(h) for name, head in self.heads.items()}  # {head: (B, C)}
        if self.text_expert is not None:
            out[EXPERT_HEAD] = out[EXPERT_HEAD] + self._expert(batch, present, h)
        return out

    def _expert(self, batch: Mapping[str, torch.Tensor], present: torch.Tensor, h: torch.Tensor):
        """Gated sum of the frozen text head over the present text-space slots: (B, C)."""
        assert self.text_expert is not None
        x = torch.stack([batch[s].float() for s in _TEXT_SPACE], 1)  # (B, 3, Dt)
        b, k, dt = x.shape
        logits = self.text_expert(x.reshape(b * k, dt)).reshape(b, k, -1)  # (B, 3, C)
        idx = [SLOTS.index(s) for s in _TEXT_SPACE]
        gate = nn.functional.softplus(self.expert_gate(h)) * present[:, idx].to(h.dtype)  # (B, 3)
        return (gate[..., None] * logits.to(h.dtype)).sum(1)  # (B, C)


# --------------------------------------------------------------------------- checkpoints


def fusion_state(model: FusionModel) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CPU float32 tensors and safetensors metadata (config + format version) of ``model``."""
    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    meta = {
        "fusion_format_version": str(FUSION_FORMAT_VERSION),
        "fusion_config": json.dumps(model.config.to_json(), sort_keys=True),
    }
    return tensors, meta


def load_fusion_state(
    config: FusionConfig, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str] | None
) -> FusionModel:
    """A :class:`FusionModel` of ``config`` with ``tensors`` loaded (strict), in eval mode."""
    if meta is not None and meta.get("fusion_format_version", "1") != str(FUSION_FORMAT_VERSION):
        raise ModelFormatError(
            f"fusion weights format {meta.get('fusion_format_version')!r}, this code reads "
            f"{FUSION_FORMAT_VERSION}"
        )
    model = FusionModel(config)
    try:
        model.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:
        raise ModelFormatError(f"fusion weights do not match the config: {exc}") from exc
    return model.eval()
